"""Errors keep their wire codes and map to exception classes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import blipmq


def test_hierarchy_and_attributes() -> None:
    error = blipmq.InvalidTopicError("bad", 300, "InvalidTopic")
    assert isinstance(error, blipmq.BlipMQError) and isinstance(error, ValueError)
    assert (error.code, error.name, error.message) == (300, "InvalidTopic", "bad")
    assert str(error) == "InvalidTopic (300): bad"
    assert issubclass(blipmq.TimeoutError, TimeoutError)
    for cls in (blipmq.MessageTooLargeError, blipmq.InvalidHeaderError, blipmq.HeadersTooLargeError,
                blipmq.InvalidArgumentError):
        assert issubclass(cls, ValueError)
    for cls in (blipmq.ConnectError, blipmq.ConnectionClosedError):
        assert issubclass(cls, ConnectionError)


def test_every_wire_code_has_its_class_named_as_in_every_sdk() -> None:
    # Copied beside the tests by scripts/test-python.sh from schema/.
    table = json.loads((Path(__file__).parent / "error-classes.json").read_text())
    assert len(table["codes"]) > 20
    for row in table["codes"]:
        cls = getattr(blipmq, row["class"] + "Error")
        assert cls.__name__ == row["class"] + "Error"
        assert row["class"] + "Error" in blipmq.__all__
        error = blipmq.error_from_code(row["code"], row["name"], "the detail")
        assert type(error) is cls and isinstance(error, blipmq.BlipMQError)
        assert (error.code, error.name, str(error)) == (
            row["code"], row["name"], f"{row['name']} ({row['code']}): the detail")
    # A code a newer broker might send: UnknownError, keeping the number.
    future = blipmq.error_from_code(406, "Unknown", "new")
    assert type(future) is blipmq.UnknownError and future.code == 406


async def test_connect_refused_is_600(closed_addr: str) -> None:
    with pytest.raises(blipmq.ConnectError) as caught:
        await blipmq.connect(closed_addr, connect_timeout=2)
    assert (caught.value.code, caught.value.name) == (600, "ConnectFailed")


async def test_invalid_topic_is_300(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        for call in (lambda: client.publish("bad topic", b""),
                     lambda: client.publish("a.*", b""),
                     lambda: client.subscribe("a..b")):
            with pytest.raises(blipmq.InvalidTopicError) as caught:
                await call()
            assert (caught.value.code, caught.value.name) == (300, "InvalidTopic")


async def test_too_large_is_400(make_broker) -> None:  # type: ignore[no-untyped-def]
    broker = make_broker({"BLIPMQ_SERVER_MAX_MESSAGE_SIZE_BYTES": "1024"})
    async with await blipmq.connect(broker.addr) as client:
        assert client.max_message_size == 1024
        with pytest.raises(blipmq.MessageTooLargeError) as caught:
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
        with pytest.raises(blipmq.InvalidHeaderError) as caught:
            await client.publish("h", b"", headers={"bad key": "v"})
        assert caught.value.code == 304
        with pytest.raises(blipmq.HeadersTooLargeError) as too_many:
            await client.publish("h", b"", headers=[(f"k{i}", "v") for i in range(1000)])
        assert too_many.value.code == 404


async def test_qos_out_of_range_is_301(addr: str) -> None:
    async with await blipmq.connect(addr) as client:
        with pytest.raises(blipmq.InvalidArgumentError) as caught:
            await client.publish("q", b"", qos=2)
        assert caught.value.code == 301
        with pytest.raises(blipmq.InvalidArgumentError):
            await client.subscribe("q", qos=7)


async def test_bad_group_and_durable_names_are_invalid_argument(addr: str) -> None:
    """The broker refuses malformed names with 301 InvalidArgument, which
    surfaces with its code; the connection stays usable."""
    async with await blipmq.connect(addr) as client:
        with pytest.raises(blipmq.InvalidArgumentError) as caught:
            await client.subscribe("q1", group="two words")
        assert (caught.value.code, caught.value.name) == (301, "InvalidArgument")
        with pytest.raises(blipmq.InvalidArgumentError):
            await client.subscribe("q1", qos=1, durable="two words")
        sub = await client.subscribe("q0")
        await client.publish("q0", b"still fine")
        assert (await sub.next(timeout=5)).payload == b"still fine"
