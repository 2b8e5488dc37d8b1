"""Several broker addresses: connect skips a dead one, the error of all
dead names each, a lost broker hands over to the next address."""

from __future__ import annotations

import socket

import pytest

import blipmq


def dead_address() -> str:
    """An address nobody listens on: a port the OS handed out and took back."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return "127.0.0.1:%d" % sock.getsockname()[1]


async def test_a_dead_first_address_is_skipped_for_the_next(broker) -> None:  # type: ignore[no-untyped-def]
    dead = dead_address()
    async with await blipmq.connect([dead, broker.addr]) as client:
        sub = await client.subscribe("listed")
        await client.publish("listed", b"via the second")
        assert (await sub.next(timeout=5)).payload == b"via the second"
    # Any sequence, or one comma-separated string.
    async with await blipmq.connect((dead, broker.addr)) as client:
        assert client.status == "connected"
    async with await blipmq.connect(f"{dead}, {broker.addr}") as client:
        assert client.status == "connected"


def test_the_blocking_api_takes_a_list_too(broker) -> None:  # type: ignore[no-untyped-def]
    with blipmq.connect_sync([dead_address(), broker.addr]) as client:
        sub = client.subscribe("listed")
        client.publish("listed", b"sync")
        assert sub.next(timeout=5).payload == b"sync"


async def test_when_every_address_is_dead_the_error_names_each() -> None:
    first, second = dead_address(), dead_address()
    with pytest.raises(blipmq.ConnectError) as caught:
        await blipmq.connect([first, second], connect_timeout=2)
    assert caught.value.code == 600
    message = str(caught.value)
    assert f"[{first}]" in message and f"[{second}]" in message, message
    assert message.index(f"[{first}]") < message.index(f"[{second}]")


async def test_no_address_is_an_invalid_argument() -> None:
    with pytest.raises(blipmq.InvalidArgumentError) as caught:
        await blipmq.connect([])
    assert caught.value.code == 301


async def test_a_lost_broker_hands_over_to_the_next_address(make_broker) -> None:  # type: ignore[no-untyped-def]
    first, second = make_broker(), make_broker()
    async with await blipmq.connect([first.addr, second.addr]) as client:
        events = client.events()
        sub = await client.subscribe("moves")
        first.stop()
        event = await events.next(timeout=10)
        while not isinstance(event, blipmq.Reconnected):
            event = await events.next(timeout=10)
        assert event.address == second.addr
        await client.flush()
        async with await blipmq.connect(second.addr) as other:
            await other.publish("moves", b"on the second")
        assert (await sub.next(timeout=5)).payload == b"on the second"
