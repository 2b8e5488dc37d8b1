"""The README's loop loses nothing on the broker's defaults (issue: no
silent drops): a burst of 200,000 16-byte messages, published with one
``await client.publish(...)`` each and read with ``async for`` on a second
connection in the same process, all arrives, in order, with nothing
reported dropped. The broker runs with no configuration at all.
"""

from __future__ import annotations

import asyncio

import blipmq

BURST = 200_000


async def test_the_readme_loop_loses_nothing_on_a_burst_at_defaults(addr: str) -> None:
    consumer = await blipmq.connect(addr)
    producer = await blipmq.connect(addr)
    drops = []
    subscription = await consumer.subscribe("burst", on_drop=drops.append)
    received = 0

    async def consume() -> None:
        nonlocal received
        async for message in subscription:
            assert int.from_bytes(message.payload[:8], "big") == received, "in order"
            received += 1
            if received == BURST:
                return

    reading = asyncio.create_task(consume())
    for i in range(BURST):
        await producer.publish("burst", i.to_bytes(8, "big") + b"16-byte!")
    await producer.flush()
    try:
        await asyncio.wait_for(reading, timeout=60)
    finally:
        await consumer.close()
        await producer.close()
    assert received == BURST
    assert drops == [] and subscription.dropped == 0
