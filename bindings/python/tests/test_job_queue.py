"""Job-queue controls of a QoS 1 message against a live broker (whose own
ack timeout is 30 s): nak with and without a delay, term to the dead-letter
topic, in_progress against the subscription's own ack_timeout, and
max_deliveries, in the asyncio and the sync API."""

from __future__ import annotations

import time

import pytest

import blipmq


async def nothing_within(sub: blipmq.Subscription, seconds: float) -> None:
    with pytest.raises(TimeoutError):
        await sub.next(timeout=seconds)


async def test_nak_redelivers_and_a_delay_holds_it_back(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        sub = await client.subscribe("jobs", qos=1, durable="worker")
        await client.publish("jobs", b"retry me", qos=1)
        first = await sub.next(timeout=5)
        assert first.delivery_count == 1
        await first.nak()
        second = await sub.next(timeout=5)
        assert (second.delivery_id, second.delivery_count) == (first.delivery_id, 2)
        naked = time.monotonic()
        await second.nak(delay=0.3)
        await nothing_within(sub, 0.15)
        third = await sub.next(timeout=5)
        assert time.monotonic() - naked >= 0.3
        assert third.delivery_count == 3
        await third.ack()
        await nothing_within(sub, 0.2)


async def test_term_moves_the_message_to_the_dead_letter_topic(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        dead = await client.subscribe("$dlq.worker")
        sub = await client.subscribe("jobs", qos=1, durable="worker")
        await client.publish("jobs", b"poison", qos=1)
        poison = await sub.next(timeout=5)
        await poison.term()
        letter = await dead.next(timeout=5)
        assert letter.payload == b"poison"
        assert letter.id == poison.id
        assert ("blipmq-dead-letter-reason", b"terminated") in letter.headers
        await nothing_within(sub, 0.2)


async def test_in_progress_holds_off_the_subscriptions_ack_timeout(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        sub = await client.subscribe("jobs", qos=1, durable="worker", ack_timeout=0.2)
        await client.publish("jobs", b"long", qos=1)
        job = await sub.next(timeout=5)
        started = time.monotonic()
        while time.monotonic() - started < 0.6:
            await job.in_progress()
            await nothing_within(sub, 0.1)
        await job.ack()
        # Without in_progress, the 0.2 s timeout (not the broker's 30 s) applies.
        await client.publish("jobs", b"stalled", qos=1)
        stalled = await sub.next(timeout=5)
        again = await sub.next(timeout=5)
        assert (again.delivery_id, again.delivery_count) == (stalled.delivery_id, 2)
        await again.ack()


async def test_max_deliveries_dead_letters_after_naks(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        dead = await client.subscribe("$dlq.worker")
        sub = await client.subscribe("jobs", qos=1, durable="worker", max_deliveries=2)
        await client.publish("jobs", b"flaky", qos=1)
        for count in (1, 2):
            message = await sub.next(timeout=5)
            assert message.delivery_count == count
            await message.nak()
        letter = await dead.next(timeout=5)
        assert ("blipmq-deliveries", b"2") in letter.headers
        assert ("blipmq-dead-letter-reason", b"max_deliveries") in letter.headers


async def test_bad_values_raise_invalid_argument(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        for options in (
            {"ack_timeout": 0.001},
            {"ack_timeout": -1.0},
            {"max_deliveries": 10_001},
        ):
            with pytest.raises(blipmq.InvalidArgumentError) as caught:
                await client.subscribe("jobs", qos=1, durable="worker", **options)
            assert caught.value.code == 301
        with pytest.raises(blipmq.InvalidArgumentError):
            await client.subscribe("news", ack_timeout=1.0)
        sub = await client.subscribe("jobs", qos=1, durable="worker")
        await client.publish("jobs", b"x", qos=1)
        message = await sub.next(timeout=5)
        with pytest.raises(blipmq.InvalidArgumentError):
            await message.nak(delay=-0.5)
        await message.ack()


def test_the_sync_api_has_the_same_controls(addr: str) -> None:
    with blipmq.connect_sync(addr) as client:
        dead = client.subscribe("$dlq.worker")
        sub = client.subscribe("jobs", qos=1, durable="worker", ack_timeout=5.0)
        client.publish("jobs", b"one", qos=1)
        message = sub.next(timeout=5)
        message.in_progress()
        message.nak(0.05)
        again = sub.next(timeout=5)
        assert again.delivery_count == 2
        again.term()
        letter = dead.next(timeout=5)
        assert letter.payload == b"one"
