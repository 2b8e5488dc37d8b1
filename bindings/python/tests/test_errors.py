"""Errors keep their wire codes and map to exception classes."""

from __future__ import annotations

import pytest

import blipmq


def test_hierarchy_and_attributes() -> None:
    error = blipmq.InvalidTopic("bad", 300, "InvalidTopic")
    assert isinstance(error, blipmq.BlipMQError) and isinstance(error, ValueError)
    assert (error.code, error.name, error.message) == (300, "InvalidTopic", "bad")
    assert str(error) == "InvalidTopic (300): bad"
    assert issubclass(blipmq.TimeoutError, TimeoutError)
    for cls in (blipmq.PayloadTooLarge, blipmq.InvalidHeader, blipmq.HeadersTooLarge,
                blipmq.InvalidArgument):
        assert issubclass(cls, ValueError)


async def test_connect_refused_is_600(closed_addr: str) -> None:
    with pytest.raises(blipmq.ConnectError) as caught:
        await blipmq.connect(closed_addr, connect_timeout=2)
    assert (caught.value.code, caught.value.name) == (600, "ConnectFailed")


async def test_invalid_topic_is_300(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        for call in (lambda: client.publish("bad topic", b""),
                     lambda: client.publish("a.*", b""),
                     lambda: client.subscribe("a..b")):
            with pytest.raises(blipmq.InvalidTopic) as caught:
                await call()
            assert (caught.value.code, caught.value.name) == (300, "InvalidTopic")


async def test_too_large_is_400(make_broker) -> None:  # type: ignore[no-untyped-def]
    broker = make_broker({"BLIPMQ_SERVER_MAX_MESSAGE_SIZE_BYTES": "1024"})
    async with await blipmq.connect(broker.addr) as client:
        assert client.max_message_size == 1024
        with pytest.raises(blipmq.PayloadTooLarge) as caught:
            await client.publish("big", b"x" * 1025)
        assert (caught.value.code, caught.value.name) == (400, "MessageTooLarge")
        await client.publish("big", b"x" * 1024)  # the limit itself is fine


async def test_auth_is_200(make_broker) -> None:  # type: ignore[no-untyped-def]
    broker = make_broker({"BLIPMQ_AUTH_API_KEYS": "k1,k2"})
    for key in (None, "wrong"):
        with pytest.raises(blipmq.AuthError) as caught:
            await blipmq.connect(broker.addr, api_key=key)
        assert (caught.value.code, caught.value.name) == (200, "AuthFailed")
    async with await blipmq.connect(broker.addr, api_key="k2") as client:
        sub = await client.subscribe("ok")
        await client.publish("ok", b"authenticated")
        assert (await sub.next(timeout=5)).payload == b"authenticated"


async def test_header_errors(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        with pytest.raises(blipmq.InvalidHeader) as caught:
            await client.publish("h", b"", headers={"bad key": "v"})
        assert caught.value.code == 304
        with pytest.raises(blipmq.HeadersTooLarge) as too_many:
            await client.publish("h", b"", headers=[(f"k{i}", "v") for i in range(1000)])
        assert too_many.value.code == 404


async def test_qos_out_of_range_is_301(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        with pytest.raises(blipmq.InvalidArgument) as caught:
            await client.publish("q", b"", qos=2)
        assert caught.value.code == 301
        with pytest.raises(blipmq.InvalidArgument):
            await client.subscribe("q", qos=7)


async def test_bad_group_and_durable_names_are_invalid_argument(addr: str) -> None:
    """The broker refuses malformed names with 301 InvalidArgument, which
    surfaces with its code; the connection stays usable."""
    async with await blipmq.connect(addr) as client:
        with pytest.raises(blipmq.InvalidArgument) as caught:
            await client.subscribe("q1", group="two words")
        assert (caught.value.code, caught.value.name) == (301, "InvalidArgument")
        with pytest.raises(blipmq.InvalidArgument):
            await client.subscribe("q1", qos=1, durable="two words")
        sub = await client.subscribe("q0")
        await client.publish("q0", b"still fine")
        assert (await sub.next(timeout=5)).payload == b"still fine"
