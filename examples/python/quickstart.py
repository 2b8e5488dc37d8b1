"""BlipMQ from Python: publish and subscribe, then a QoS 1 publish that the
broker confirms once it is on disk, received and acked.

    pip install blipmq          # the wheel scripts/test-python.sh builds
    python examples/python/quickstart.py 127.0.0.1:7878
"""

import asyncio
import sys

import blipmq


async def main(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        # QoS 0: subscribe (returns once the broker has it), publish, receive.
        async with await client.subscribe("orders.*") as orders:
            await client.publish("orders.created", b"order #1")
            order = await orders.next(timeout=10)
            print(f"received {order.topic}: {order.payload.decode()}")

        # QoS 1: the publish returns once the broker has stored the message;
        # the subscriber acks it, or it is delivered again.
        async with await client.subscribe("jobs.>", qos=1) as jobs:
            await client.publish("jobs.resize", b"img-1", qos=1)
            print("confirmed jobs.resize")
            job = await jobs.next(timeout=10)
            await job.ack()
            print(f"acked {job.topic}: {job.payload.decode()}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:7878"))
