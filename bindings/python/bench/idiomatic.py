"""One idiomatic burst through the Python SDK or through nats-py.

Each side is written the way its README shows, nothing tuned:

- blipmq: ``await client.publish(topic, payload)`` in a loop on one
  connection, ``async for message in subscription`` on a second one.
- nats-py: ``await nc.publish(subject, payload)`` in a loop on one
  connection, ``async for msg in sub.messages`` on a second one (its
  default pending limits kept).

Both in one process, on one asyncio loop; the subscriber is subscribed
(BlipMQ: confirmed by the broker; nats-py: a ``flush()`` round trip after
the SUB) and its loop started before the first publish. After the loop the
publisher ``flush()``es. The run ends at the last message, or ``--quiet``
seconds after publishing ended without a new receipt (messages lost), or
at ``--limit`` seconds. Prints one JSON line:

    python idiomatic.py blipmq|nats --addr HOST:PORT [--count 200000]
        [--size 16] [--quiet 3] [--limit 120]

Run by scripts/bench-idiomatic.sh.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from importlib import metadata

TOPIC = "bench.idiomatic"


class Tally:
    def __init__(self) -> None:
        self.received = 0
        self.last = 0.0
        self.reported = 0  # drops the client library told the code about
        self.at_publish_end = 0  # received when the publish loop and flush ended


async def wait_for(consumer: asyncio.Task, tally: Tally, published_at: float,
                   quiet: float, deadline: float) -> None:
    """Until the consumer is done, or quiet for `quiet` s after publishing."""
    while not consumer.done():
        await asyncio.wait({consumer}, timeout=0.05)
        now = time.perf_counter()
        if now - max(tally.last, published_at) > quiet or now > deadline:
            consumer.cancel()
            break
    try:
        await consumer
    except asyncio.CancelledError:
        pass


async def run_blipmq(addr: str, count: int, size: int, quiet: float, limit: float) -> dict:
    import blipmq

    payload = bytes(size)
    tally = Tally()
    async with await blipmq.connect(addr) as subscriber, await blipmq.connect(addr) as client:
        subscription = await subscriber.subscribe(TOPIC)

        async def consume() -> None:
            async for message in subscription:
                tally.received += 1
                tally.last = time.perf_counter()
                if tally.received == count:
                    return

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0)  # the consumer is waiting before the first publish
        cpu = time.process_time()
        started = time.perf_counter()
        deadline = started + limit
        published = 0
        for _ in range(count):
            await client.publish(TOPIC, payload)
            published += 1
        await client.flush()
        published_at = time.perf_counter()
        tally.at_publish_end = tally.received
        await wait_for(consumer, tally, published_at, quiet, deadline)
        cpu = time.process_time() - cpu
        tally.reported = subscription.dropped
    return finish("blipmq", "blipmq " + metadata.version("blipmq"), count, size, published,
                  tally, started, published_at, cpu)


async def run_nats(addr: str, count: int, size: int, quiet: float, limit: float) -> dict:
    import nats
    from nats.errors import SlowConsumerError

    payload = bytes(size)
    tally = Tally()
    errors: list[str] = []

    async def error_cb(error: Exception) -> None:
        # nats-py drops a message when a subscription's pending limits are
        # exceeded and tells error_cb (SlowConsumerError), once per message.
        if isinstance(error, SlowConsumerError):
            tally.reported += 1
        else:
            errors.append(repr(error))

    subscriber = await nats.connect(f"nats://{addr}", error_cb=error_cb)
    nc = await nats.connect(f"nats://{addr}", error_cb=error_cb)
    try:
        sub = await subscriber.subscribe(TOPIC)
        await subscriber.flush()  # the server has the SUB before the first publish

        async def consume() -> None:
            async for msg in sub.messages:
                tally.received += 1
                tally.last = time.perf_counter()
                if tally.received == count:
                    return

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0)
        cpu = time.process_time()
        started = time.perf_counter()
        deadline = started + limit
        published = 0
        for _ in range(count):
            await nc.publish(TOPIC, payload)
            published += 1
        await nc.flush()
        published_at = time.perf_counter()
        tally.at_publish_end = tally.received
        await wait_for(consumer, tally, published_at, quiet, deadline)
        cpu = time.process_time() - cpu
    finally:
        await nc.close()
        await subscriber.close()
    result = finish("nats", "nats-py " + metadata.version("nats-py"), count, size, published,
                    tally, started, published_at, cpu)
    if errors:
        result["errors"] = errors[:5]
    return result


def finish(system: str, client: str, count: int, size: int, published: int, tally: Tally,
           started: float, published_at: float, cpu: float) -> dict:
    # Time = first publish to last receipt; with nothing received, to the
    # end of publishing.
    end = tally.last if tally.received else published_at
    seconds = end - started
    return {
        "sdk": "python",
        "system": system,
        "client": client,
        "runtime": f"CPython {sys.version.split()[0]}, asyncio",
        "count": count,
        "size": size,
        "published": published,
        "received": tally.received,
        "lost": published - tally.received,
        "reported_drops": tally.reported,
        "received_at_publish_end": tally.at_publish_end,
        "seconds": round(seconds, 6),
        "publish_seconds": round(published_at - started, 6),
        "rate": round(tally.received / seconds) if seconds > 0 else 0,
        "cpu_us_per_msg": round(cpu * 1e6 / max(tally.received, 1), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=["blipmq", "nats"])
    parser.add_argument("--addr", required=True)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--quiet", type=float, default=3.0)
    parser.add_argument("--limit", type=float, default=120.0)
    args = parser.parse_args()
    run = run_blipmq if args.system == "blipmq" else run_nats
    result = asyncio.run(run(args.addr, args.count, args.size, args.quiet, args.limit))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
