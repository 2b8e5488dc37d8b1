"""The asyncio API against a live broker."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

import blipmq


async def test_round_trip_has_every_field(addr: str) -> None:
    async with await blipmq.connect(addr, name="py-test") as client:
        sub = await client.subscribe("orders.*")
        before = int(time.time() * 1000)
        assert await client.publish("orders.created", b"order #1") is None
        message = await sub.next(timeout=5)
        assert isinstance(message, blipmq.Message)
        assert message.topic == "orders.created"
        assert message.payload == b"order #1"
        assert message.headers == []
        assert isinstance(message.id, int) and message.id > 0
        assert before - 1000 <= message.timestamp_ms <= int(time.time() * 1000) + 1000
        assert message.delivery_count == 1
        assert message.delivery_id == 0  # QoS 0: nothing to ack
        assert await message.ack() is None
        assert "orders.created" in repr(message)
        assert sub.pattern == "orders.*"


async def test_gathered_qos1_publishes_are_in_flight_together_and_keep_order(addr: str) -> None:
    # Each publish waits only for its place in the outgoing queue, not for
    # the confirm of the one before: ids grow in call order, and the
    # messages (mixed with QoS 0) arrive in that order.
    async with await blipmq.connect(addr) as client:
        sub = await client.subscribe("pipelined")
        count = 2000
        ids = await asyncio.gather(
            *(
                client.publish("pipelined", str(i).encode(), qos=0 if i % 5 == 4 else 1)
                for i in range(count)
            )
        )
        confirmed = [message_id for message_id in ids if message_id is not None]
        assert len(confirmed) == count - count // 5
        assert confirmed == sorted(confirmed) and len(set(confirmed)) == len(confirmed)
        received = [(await sub.next(timeout=5)).payload for _ in range(count)]
        assert received == [str(i).encode() for i in range(count)]
        await client.flush()


async def test_payloads_are_byte_exact(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        sub = await client.subscribe("bin")
        payloads = [b"", b"\x00\xff" * 100, bytes(range(256)), b"x" * 100_000]
        for payload in payloads:
            await client.publish("bin", payload)
        await client.publish("bin", bytearray(b"from a bytearray"))
        received = [(await sub.next(timeout=5)).payload for _ in range(len(payloads) + 1)]
        assert received == payloads + [b"from a bytearray"]


async def test_headers_round_trip_in_order(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        sub = await client.subscribe("h")
        await client.publish("h", b"1", headers={"content-type": "text/plain", "bin": b"\x00\x01"})
        await client.publish("h", b"2", headers=[("a", b"1"), ("b", "2"), ("a", b"3")])
        await client.publish("h", b"3", headers=(("k", "ü"),))
        first, second, third = [await sub.next(timeout=5) for _ in range(3)]
        assert first.headers == [("content-type", b"text/plain"), ("bin", b"\x00\x01")]
        assert second.headers == [("a", b"1"), ("b", b"2"), ("a", b"3")]
        assert third.headers == [("k", "ü".encode())]


async def test_bad_header_types_are_type_errors(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        with pytest.raises(TypeError):
            await client.publish("h", b"", headers=[("k", 1)])
        with pytest.raises(ValueError):
            await client.publish("h", b"", headers=[("k",)])


async def test_wildcards(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        one = await client.subscribe("a.*.c")
        rest = await client.subscribe("a.>")
        for topic in ["a.b.c", "a.b.d", "a.x.c.d"]:
            await client.publish(topic, topic.encode())
        assert (await one.next(timeout=5)).topic == "a.b.c"
        assert [(await rest.next(timeout=5)).topic for _ in range(3)] == ["a.b.c", "a.b.d", "a.x.c.d"]
        assert await one.next_batch(10, timeout=0.2) == []


async def test_async_for_ends_when_the_client_closes(addr: str) -> None:
    client = await blipmq.connect(addr)
    sub = await client.subscribe("t")
    for i in range(3):
        await client.publish("t", b"%d" % i)
    await client.flush()
    received = []
    async for message in sub:
        received.append(message.payload)
        if len(received) == 3:
            await client.close()
    assert received == [b"0", b"1", b"2"]


async def test_next_times_out_with_code_601(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        sub = await client.subscribe("quiet")
        started = time.monotonic()
        with pytest.raises(blipmq.TimeoutError) as caught:
            await sub.next(timeout=0.2)
        assert 0.15 <= time.monotonic() - started < 2
        assert (caught.value.code, caught.value.name) == (601, "Timeout")
        assert isinstance(caught.value, TimeoutError)  # the builtin, too
        with pytest.raises(blipmq.InvalidArgumentError):
            await sub.next(timeout=-1)


async def test_cancelling_a_pending_next_loses_nothing(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        sub = await client.subscribe("c")
        pending = asyncio.ensure_future(sub.next())
        await asyncio.sleep(0.05)
        assert not pending.done()
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        await client.publish("c", b"after cancel")
        assert (await sub.next(timeout=5)).payload == b"after cancel"
        # asyncio.wait_for cancels on timeout the same way.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(sub.next(), 0.05)
        await client.publish("c", b"after wait_for")
        assert (await sub.next(timeout=5)).payload == b"after wait_for"


async def test_publish_nowait_queues_in_order_with_publish(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        sub = await client.subscribe("nowait.>")
        for i in range(1000):
            if i % 100 == 0:
                await client.publish("nowait.a", str(i).encode())
            else:
                assert client.publish_nowait("nowait.a", str(i).encode()) is None
        client.publish_nowait("nowait.b", bytearray(b"last"), ttl_ms=60_000, headers={"k": "v"})
        received = []
        while len(received) < 1001:
            received += await sub.next_batch(256, timeout=5)
        assert [m.payload for m in received[:1000]] == [str(i).encode() for i in range(1000)]
        assert (received[1000].topic, received[1000].payload) == ("nowait.b", b"last")
        assert received[1000].headers == [("k", b"v")]


async def test_publish_nowait_raises_queue_full_402_and_sends_nothing_then(make_broker) -> None:  # type: ignore[no-untyped-def]
    # `block`: the broker holds the burst for the subscriber instead of
    # dropping what overflows its queue, so every queued message arrives.
    broker = make_broker({"BLIPMQ_QUEUES_OVERFLOW_POLICY": "block"})
    async with await blipmq.connect(broker.addr) as receiver, await blipmq.connect(broker.addr) as client:
        sub = await receiver.subscribe("full")
        payload = bytes(1024)
        queued = 0
        # A stopped broker reads nothing: the socket buffers fill, then the
        # client's outgoing queue (bounded, so is this loop).
        os.kill(broker.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(blipmq.QueueFullError) as raised:
                for _ in range(1_000_000):
                    client.publish_nowait("full", payload)
                    queued += 1
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
        assert (raised.value.code, raised.value.name) == (402, "QueueFull")
        assert queued > 0
        received = 0
        while received < queued:
            batch = await sub.next_batch(1024, timeout=10)
            assert batch, f"{received} of {queued} messages arrived"
            received += len(batch)
        assert received == queued
        assert await sub.next_batch(10, timeout=0.2) == []


async def test_publish_nowait_errors(addr: str) -> None:
    client = await blipmq.connect(addr)
    with pytest.raises(blipmq.InvalidTopicError):
        client.publish_nowait("bad..topic", b"x")
    with pytest.raises(TypeError):
        client.publish_nowait("t", "not bytes")  # type: ignore[arg-type]
    await client.close()
    with pytest.raises(blipmq.ClientClosedError):
        client.publish_nowait("t", b"x")


async def test_next_batch(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        sub = await client.subscribe("b")
        assert await sub.next_batch(10, timeout=0.05) == []
        for i in range(100):
            await client.publish("b", b"%d" % i)
        await client.flush()
        received = []
        while len(received) < 100:
            batch = await sub.next_batch(64, timeout=5)
            assert 1 <= len(batch) <= 64
            received += [m.payload for m in batch]
        assert received == [b"%d" % i for i in range(100)]


async def test_unsubscribe_ends_a_pending_next(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        sub = await client.subscribe("u")
        pending = asyncio.ensure_future(sub.next())
        await asyncio.sleep(0.05)
        await sub.unsubscribe()
        with pytest.raises(blipmq.ClientClosedError) as caught:
            await pending
        assert caught.value.code == 603
        await sub.unsubscribe()  # again: nothing to do
        with pytest.raises(blipmq.ClientClosedError):
            await sub.next_batch(10)
        assert [m async for m in sub] == []


async def test_subscription_context_manager_unsubscribes(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        other = await client.subscribe("cm")
        async with await client.subscribe("cm") as sub:
            await client.publish("cm", b"1")
            assert (await sub.next(timeout=5)).payload == b"1"
        await client.publish("cm", b"2")
        assert (await other.next(timeout=5)).payload == b"1"
        assert (await other.next(timeout=5)).payload == b"2"
        with pytest.raises(blipmq.ClientClosedError):
            await sub.next(timeout=1)
    # Exiting a subscription's block after its client closed is fine.
    client = await blipmq.connect(addr)
    async with await client.subscribe("cm"):
        await client.close()


async def test_client_context_manager_closes(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        sub = await client.subscribe("x")
        assert client.max_message_size > 0
    for call in (
        lambda: client.publish("x", b""),
        lambda: client.subscribe("x"),
        lambda: client.flush(),
    ):
        with pytest.raises(blipmq.ClientClosedError) as caught:
            await call()
        assert caught.value.code == 603
    with pytest.raises(blipmq.ClientClosedError):
        await sub.next(timeout=1)
    await client.close()  # twice is harmless


async def test_ttl_is_accepted(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        sub = await client.subscribe("ttl")
        await client.publish("ttl", b"fresh", ttl_ms=60_000)
        assert (await sub.next(timeout=5)).payload == b"fresh"


async def test_many_publishers_and_subscribers_in_parallel(addr: str) -> None:
    publishers, subscribers, count = 8, 8, 250
    async with await blipmq.connect(addr) as client:
        subs = [await client.subscribe("load.>") for _ in range(subscribers)]

        async def publish(p: int) -> None:
            for i in range(count):
                await client.publish(f"load.{p}", b"%d" % i)

        async def consume(sub: blipmq.Subscription) -> dict:
            seen: dict = {}
            for _ in range(publishers * count):
                message = await sub.next(timeout=10)
                seen.setdefault(message.topic, []).append(int(message.payload))
            return seen

        consumers = [asyncio.ensure_future(consume(s)) for s in subs]
        await asyncio.gather(*(publish(p) for p in range(publishers)))
        for seen in await asyncio.gather(*consumers):
            # Every message arrives, in order per publisher.
            assert seen == {f"load.{p}": list(range(count)) for p in range(publishers)}


async def test_many_clients_in_parallel(addr: str) -> None:
    clients = await asyncio.gather(*(blipmq.connect(addr) for _ in range(20)))
    subs = await asyncio.gather(*(c.subscribe(f"c.{i}") for i, c in enumerate(clients)))
    await asyncio.gather(*(c.publish(f"c.{i}", b"%d" % i) for i, c in enumerate(clients)))
    messages = await asyncio.gather(*(s.next(timeout=5) for s in subs))
    assert [m.payload for m in messages] == [b"%d" % i for i in range(20)]
    await asyncio.gather(*(c.close() for c in clients))


async def test_reconnects_after_a_broker_restart(broker) -> None:  # type: ignore[no-untyped-def]
    async with await blipmq.connect(broker.addr) as client:
        sub = await client.subscribe("r")
        await client.publish("r", b"before")
        assert (await sub.next(timeout=5)).payload == b"before"
        broker.restart()
        # The client reconnects and subscribes again by itself; publish
        # until a message makes it through.
        deadline = time.monotonic() + 20
        while True:
            try:
                await client.publish("r", b"after")
                message = await sub.next(timeout=0.2)
                break
            except (blipmq.TimeoutError, blipmq.ConnectionClosedError):
                assert time.monotonic() < deadline, "no message after the restart"
        assert message.payload == b"after"


async def test_without_reconnect_a_lost_broker_closes_the_client(broker) -> None:  # type: ignore[no-untyped-def]
    client = await blipmq.connect(broker.addr, reconnect=False)
    events = client.events()
    sub = await client.subscribe("r")
    broker.stop()
    with pytest.raises(blipmq.ClientClosedError):
        await sub.next(timeout=10)
    assert client.status == "closed"
    kinds = [type(event) async for event in events]
    assert kinds[-2:] == [blipmq.Disconnected, blipmq.Closed], kinds
    await client.close()


async def test_events_of_a_broker_restart_in_order(broker) -> None:  # type: ignore[no-untyped-def]
    async with await blipmq.connect(broker.addr) as client:
        assert client.status == "connected"
        events = client.events()
        with pytest.raises(blipmq.TimeoutError):
            await events.next(timeout=0.05)  # nothing has happened yet
        broker.restart()
        seen = []
        while not seen or not isinstance(seen[-1], blipmq.Reconnected):
            seen.append(await events.next(timeout=20))
        # A broker stopping gracefully says so first (an error that answers
        # no call), then the connection ends; failed attempts may follow
        # while it starts again.
        shutdown, disconnected, *failed, reconnected = seen
        assert isinstance(shutdown, blipmq.ServerError)
        assert isinstance(shutdown.error, blipmq.BlipMQError)
        assert shutdown.error.name == "ShuttingDown"
        assert str(shutdown.error).startswith("ShuttingDown (")
        assert isinstance(disconnected, blipmq.Disconnected) and disconnected.reason
        # ... and why as a type: the broker closed the connection.
        assert (disconnected.kind, disconnected.code, disconnected.io_kind) == ("broker_closed", 602, None)
        for attempt in failed:
            assert isinstance(attempt, blipmq.ReconnectFailed), failed
            assert attempt.attempt >= 1 and attempt.error
        assert isinstance(reconnected.connection_id, int) and reconnected.connection_id > 0
        assert client.status == "connected"
    # Closing (on leaving the block) is the last event; the iterator ends.
    assert [event async for event in events] == [blipmq.Closed()]
    with pytest.raises(blipmq.ClientClosedError):
        await events.next()


async def test_a_broker_that_sends_garbage_is_a_protocol_disconnect(addr: str) -> None:
    # A fake broker in front of the real one: it passes the handshake on,
    # then (once the test listens for events) sends a frame whose body is
    # not an Envelope.
    host, port = addr.rsplit(":", 1)
    listening = asyncio.Event()

    async def read_frame(reader: asyncio.StreamReader) -> bytes:
        prefix = await reader.readexactly(4)
        return prefix + await reader.readexactly(int.from_bytes(prefix, "little"))

    async def fake(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        broker_reader, broker_writer = await asyncio.open_connection(host, int(port))
        broker_writer.write(await read_frame(client_reader))  # Hello
        client_writer.write(await read_frame(broker_reader))  # Welcome
        await listening.wait()
        client_writer.write(bytes([8, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4]))
        await client_reader.read()  # until the client gives up on it
        for writer in (client_writer, broker_writer):
            writer.close()

    server = await asyncio.start_server(fake, "127.0.0.1", 0)
    try:
        fake_addr = "127.0.0.1:%d" % server.sockets[0].getsockname()[1]
        client = await blipmq.connect(fake_addr, reconnect=False)
        events = client.events()
        listening.set()
        disconnected = await events.next(timeout=10)
        assert isinstance(disconnected, blipmq.Disconnected), disconnected
        assert (disconnected.kind, disconnected.code, disconnected.io_kind) == ("protocol", 100, None)
        assert "bad frame" in disconnected.reason, disconnected.reason
        assert await events.next(timeout=10) == blipmq.Closed()
        await client.close()
    finally:
        server.close()


async def test_each_failed_reconnect_attempt_is_an_event(broker) -> None:  # type: ignore[no-untyped-def]
    client = await blipmq.connect(broker.addr)
    try:
        events = client.events()
        broker.stop()
        assert isinstance(await events.next(timeout=10), blipmq.ServerError)
        assert isinstance(await events.next(timeout=10), blipmq.Disconnected)
        failures = [await events.next(timeout=10) for _ in range(2)]
        assert all(isinstance(f, blipmq.ReconnectFailed) and f.error for f in failures), failures
        assert [f.attempt for f in failures if isinstance(f, blipmq.ReconnectFailed)] == [1, 2]
        assert client.status == "reconnecting"
    finally:
        await client.close()
    # Whatever attempts came before the close, the events end with it.
    rest = [event async for event in events]
    assert rest[-1] == blipmq.Closed() and client.status == "closed"


async def test_every_events_iterator_gets_every_event_and_a_cancelled_wait_loses_none(addr: str) -> None:
    client = await blipmq.connect(addr)
    first, second = client.events(), client.events()
    waiting = asyncio.ensure_future(first.next())
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await client.close()
    assert await first.next(timeout=5) == blipmq.Closed()
    assert await second.next(timeout=5) == blipmq.Closed()


async def test_durable_subscription_survives_leaving_async_with_until_acked(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        async with await client.subscribe("jobs", qos=1, durable="py-worker") as sub:
            message_id = await client.publish("jobs", b"one", qos=1)
            first = await sub.next(timeout=5)
            assert (first.payload, first.id, first.delivery_count) == (b"one", message_id, 1)
            assert first.delivery_id > 0
            # Not acked: leaving the block only detaches the durable subscription.
        await client.publish("jobs", b"two", qos=1)
        async with await client.subscribe("jobs", qos=1, durable="py-worker") as sub:
            again = await sub.next(timeout=5)
            assert (again.payload, again.delivery_count) == (b"one", 2)
            assert again.delivery_id == first.delivery_id  # a redelivery keeps its id
            await again.ack()
            second = await sub.next(timeout=5)
            assert second.payload == b"two"
            await second.ack()
            # unsubscribe() deletes it: a new one with the name starts empty.
            await sub.unsubscribe()
        await client.publish("jobs", b"three", qos=1)
        async with await client.subscribe("jobs", qos=1, durable="py-worker") as sub:
            with pytest.raises(blipmq.TimeoutError):
                await sub.next(timeout=0.3)
