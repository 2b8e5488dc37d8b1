"""No silent drops (QUEUE-6): discarded messages reach `on_drop`, once each,
where they were lost.

The live tests stall a consumer behind a broker that drops what overflows
a small queue, then read; the scripted ones drive `Subscription` over a
stand-in for the native subscription, to pin down the order of calls.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from typing import Any, List, Optional, Sequence, Tuple

import pytest

import blipmq
from blipmq import _client

# A queue of 4 that drops the newest, one message per delivery: a consumer
# that stops reading loses messages at the broker (as in client-rs's
# a_consumer_that_fell_behind* test).
DROPPING_BROKER = {
    "BLIPMQ_QUEUES_SUBSCRIBER_CAPACITY": "4",
    "BLIPMQ_QUEUES_OVERFLOW_POLICY": "drop_new",
    "BLIPMQ_DELIVERY_MAX_BATCH": "1",
    "BLIPMQ_DELIVERY_MAX_BATCH_BYTES": "1",
}
# 64 KiB each: a flood of them outgrows the socket buffers.
SIZE = 64 * 1024
QUIET = 0.5


def indexed(index: int) -> bytes:
    """A payload whose first 4 bytes are its index (big-endian)."""
    return struct.pack(">I", index) + bytes(SIZE - 4)


def index_of(payload: bytes) -> int:
    return int(struct.unpack(">I", payload[:4])[0])


class Tally:
    """What a consumer saw, in order: the counts given to on_drop, and the
    messages each receive returned (a receive returning a batch has told
    the gaps before its messages by the time it returns)."""

    def __init__(self) -> None:
        self.seen: List[Tuple[str, Any]] = []

    def on_drop(self, count: int) -> None:
        self.seen.append(("drop", count))

    def received(self, messages: Sequence[Any]) -> None:
        self.seen.append(("received", [(index_of(m.payload), m.dropped_before) for m in messages]))

    def check(self, total: int, dropped: int) -> None:
        """Every index is received or told as dropped, once; each gap is
        told before the receive that returns the message after it, and no
        earlier; what `dropped` counts is what on_drop was told."""
        expected = 0  # the next index
        told: List[int] = []  # told, not yet matched to a gap
        received = told_in_all = in_line = 0
        for kind, what in self.seen:
            if kind == "drop":
                told.append(what)
                told_in_all += what
                continue
            for index, dropped_before in what:
                gap = index - expected
                # A gap may be told in parts (some while the consumer
                # waited, the rest in line), never one count for two gaps.
                while gap > 0:
                    assert told and told[0] <= gap, (index, gap, told, self.seen[:40])
                    gap -= told.pop(0)
                assert dropped_before <= index - expected
                in_line += dropped_before
                expected = index + 1
                received += 1
            assert not told, f"told ahead of its gap: {told} after {what[-1]}"
        # What no message follows is told too, the same way.
        assert sum(told) == total - expected and all(told)
        assert told_in_all > 0, "the consumer fell behind and lost messages"
        assert received + told_in_all == total
        assert in_line <= told_in_all
        assert dropped == told_in_all


async def flood(addr: str, topic: str, count: int) -> None:
    async with await blipmq.connect(addr) as producer:
        for index in range(count):
            await producer.publish(topic, indexed(index))
        await producer.flush()


@pytest.mark.parametrize("reader", ["next", "next_batch", "async_for"])
async def test_a_stalled_consumer_is_told_of_every_message_it_lost(make_broker, reader: str) -> None:  # type: ignore[no-untyped-def]
    broker = make_broker(DROPPING_BROKER)
    total = 1500
    tally = Tally()
    async with await blipmq.connect(broker.addr, subscription_capacity=1) as consumer:
        sub = await consumer.subscribe("behind", on_drop=tally.on_drop)
        await flood(broker.addr, "behind", total)  # the consumer reads nothing meanwhile
        while True:
            try:
                if reader == "next":
                    batch = [await sub.next(timeout=QUIET)]
                elif reader == "next_batch":
                    batch = await sub.next_batch(64, timeout=QUIET)
                else:
                    batch = [await asyncio.wait_for(sub.__anext__(), QUIET)]
            except (blipmq.TimeoutError, asyncio.TimeoutError):
                break
            if not batch:
                break
            tally.received(batch)
        tally.check(total, sub.dropped)


async def test_without_on_drop_each_gap_is_a_warning(make_broker, caplog) -> None:  # type: ignore[no-untyped-def]
    broker = make_broker(DROPPING_BROKER)
    total = 600
    caplog.set_level(logging.WARNING, logger="blipmq")
    async with await blipmq.connect(broker.addr, subscription_capacity=1) as consumer:
        sub = await consumer.subscribe("unwatched")
        await flood(broker.addr, "unwatched", total)
        while await sub.next_batch(64, timeout=QUIET):
            pass
        warnings = [r for r in caplog.records if r.name == "blipmq" and r.levelno == logging.WARNING]
        assert warnings, "a discard is never silent"
        assert all("'unwatched'" in r.getMessage() for r in warnings)
        told = sum(int(r.args[0]) for r in warnings)  # type: ignore[index]
        assert told == sub.dropped > 0


def test_the_blocking_api_reports_drops(make_broker) -> None:  # type: ignore[no-untyped-def]
    broker = make_broker(DROPPING_BROKER)
    total = 600
    tally = Tally()
    with blipmq.connect_sync(broker.addr, subscription_capacity=1) as consumer:
        sub = consumer.subscribe("sync.behind", on_drop=tally.on_drop)
        with blipmq.connect_sync(broker.addr) as producer:
            for index in range(total):
                producer.publish("sync.behind", indexed(index))
            producer.flush()
        while True:
            try:
                message = sub.next(timeout=QUIET)
            except blipmq.TimeoutError:
                break
            tally.received([message])
        tally.check(total, sub.dropped)


async def test_on_drop_must_be_callable(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        with pytest.raises(TypeError):
            await client.subscribe("t", on_drop=3)  # type: ignore[arg-type]


# Scripted: Subscription over a stand-in native subscription.

Result = Tuple[List[Any], int, int]


class Scripted:
    """Plays `next_batch` results in order, as the native subscription
    would return them; then waits out the timeout and returns nothing."""

    pattern = "scripted"
    dropped = 0

    def __init__(self, results: Sequence[Result]) -> None:
        self.results = list(results)
        self.timeouts: List[Optional[float]] = []

    async def next_batch(self, max_messages: int, timeout: Optional[float] = None) -> Result:
        self.timeouts.append(timeout)
        if self.results:
            return self.results.pop(0)
        await asyncio.sleep(timeout if timeout is not None else 3600)
        return ([], 0, 0)


class Fake:
    def __init__(self, index: int, dropped_before: int = 0) -> None:
        self.index = index
        self.dropped_before = dropped_before

    def __repr__(self) -> str:
        return f"Fake({self.index}, {self.dropped_before})"


def batch(*messages: Fake, after: int = 0) -> Result:
    return (list(messages), sum(m.dropped_before for m in messages), after)


def scripted(results: Sequence[Result], seen: List[Any], on_drop: Any = None) -> Tuple[_client.Subscription, Scripted]:
    native = Scripted(results)

    def record(count: int) -> None:
        seen.append(count)

    return _client.Subscription(native, on_drop or record), native  # type: ignore[arg-type]


async def test_a_gap_reported_while_waiting_is_told_and_the_wait_goes_on() -> None:
    seen: List[Any] = []
    sub, native = scripted([([], 0, 3), batch(Fake(4))], seen)
    message = await sub.next(timeout=5)
    assert (seen, message.index) == ([3], 4)
    first, second = native.timeouts
    assert first == 5 and second is not None and 4 < second <= 5

    # Told while waiting, nothing after it: still a timeout, but after the
    # whole timeout, not at the report.
    seen.clear()
    sub, native = scripted([([], 0, 2)], seen)
    started = time.monotonic()
    with pytest.raises(blipmq.TimeoutError):
        await sub.next(timeout=0.2)
    assert seen == [2] and time.monotonic() - started >= 0.19


async def test_gaps_are_told_in_order_before_the_message_after_them() -> None:
    seen: List[Any] = []
    sub, _ = scripted([batch(Fake(0), Fake(2, 1), Fake(3), Fake(7, 3), after=2)], seen)
    messages = await sub.next_batch(10, timeout=1)
    assert [m.index for m in messages] == [0, 2, 3, 7]
    # The gap after 7 waits until the consumer asks for what follows.
    assert seen == [1, 3]
    assert await sub.next_batch(10, timeout=0.05) == []
    assert seen == [1, 3, 2]

    # A smaller receive hands over part of a batch; the rest keeps its gaps.
    seen.clear()
    sub, _ = scripted([batch(Fake(0), Fake(2, 1), Fake(5, 2))], seen)
    assert (await sub.next(timeout=1)).index == 0 and seen == []
    assert (await sub.next(timeout=1)).index == 2 and seen == [1]
    assert (await sub.next(timeout=1)).index == 5 and seen == [1, 2]


async def test_concurrent_receives_tell_a_gap_once_and_before_the_message_after_it() -> None:
    # Two receives wait at once; the first comes back with a gap after its
    # message, the second with the rest of that gap before its message.
    # Together they are one gap, told before the second's message.
    seen: List[Any] = []

    class Queued(Scripted):
        def __init__(self) -> None:
            super().__init__([])
            self.queue: asyncio.Queue[Result] = asyncio.Queue()

        async def next_batch(self, max_messages: int, timeout: Optional[float] = None) -> Result:
            return await self.queue.get()

    native = Queued()
    sub = _client.Subscription(native, seen.append)  # type: ignore[arg-type]
    first = asyncio.ensure_future(sub.next_batch(10, timeout=1))
    second = asyncio.ensure_future(sub.next_batch(10, timeout=1))
    await asyncio.sleep(0)
    native.queue.put_nowait(batch(Fake(0), after=2))
    assert [m.index for m in await first] == [0] and seen == []
    native.queue.put_nowait(batch(Fake(5, 2)))
    assert [m.index for m in await second] == [5]
    assert seen == [4]


async def test_what_on_drop_raises_reaches_the_caller_and_loses_no_message() -> None:
    told: List[int] = []

    def on_drop(count: int) -> None:
        told.append(count)
        if count == 3:
            raise RuntimeError("stop")

    sub, native = scripted([batch(Fake(0), Fake(2, 1), Fake(6, 3), Fake(7))], [], on_drop)
    with pytest.raises(RuntimeError):
        await sub.next_batch(10, timeout=1)
    # The next receive hands the batch over without waiting, each gap told once.
    messages = await sub.next_batch(10, timeout=1)
    assert [m.index for m in messages] == [0, 2, 6, 7]
    assert told == [1, 3]
    assert len(native.timeouts) == 1


async def test_async_for_tells_gaps_and_ends_with_the_subscription() -> None:
    seen: List[Any] = []

    class Ending(Scripted):
        async def next_batch(self, max_messages: int, timeout: Optional[float] = None) -> Result:
            if not self.results:
                raise blipmq.ClientClosedError("ended", 603, "ClientClosed")
            return await super().next_batch(max_messages, timeout)

    native = Ending([batch(Fake(1, 1), after=4)])
    sub = _client.Subscription(native, seen.append)  # type: ignore[arg-type]
    assert [m.index async for m in sub] == [1]
    assert seen == [1, 4]  # the last gap is told before the end



async def test_a_receive_cancelled_after_its_message_arrived_loses_nothing(addr: str) -> None:
    """The message a receive took reaches the next receive even when the
    receive is cancelled after the Rust side had it, before the event loop
    handed it over (the loop is blocked meanwhile, so the window is sure)."""
    consumer = await blipmq.connect(addr)
    subscription = await consumer.subscribe("race")
    waiting = asyncio.ensure_future(subscription.next())
    await asyncio.sleep(0.05)  # the receive now waits in the native layer
    # Published from another thread while this loop is blocked: the native
    # receive completes and its result waits for the loop.
    producer = blipmq.connect_sync(addr)
    try:
        producer.publish("race", b"kept")
        producer.flush()
    finally:
        producer.close()
    time.sleep(0.3)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    message = await subscription.next(timeout=5)
    assert message.payload == b"kept"
    await consumer.close()
