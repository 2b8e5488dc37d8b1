"""The conformance testee for the Python SDK (`blipmq`, bindings/python).

Speaks the testee contract of conformance-tests/README.md: one JSON request
per line on stdin, one reply per request on stdout, in order; logs on
stderr. Requests are handled one at a time with the SDK's asyncio API. At
the end of stdin every client is closed and the process exits 0.

Run it with an interpreter that has the `blipmq` wheel installed, e.g. the
virtualenv scripts/test-python.sh leaves at target/python-venv.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import blipmq

INVALID_ARGUMENT = 301
CLIENT_CLOSED = 603


class Failure(Exception):
    """An `err` reply: a wire code and a message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> Failure:
    return Failure(INVALID_ARGUMENT, message)


class Args:
    """A request's `args`; a missing or mistyped argument answers 301."""

    def __init__(self, args: Dict[str, Any]) -> None:
        self.args = args

    def opt(self, name: str, kind: type) -> Any:
        value = self.args.get(name)
        if value is None:
            return None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise invalid(f"`{name}` must be a {kind.__name__}")
        if isinstance(value, int) and value < 0:
            raise invalid(f"`{name}` must be a non-negative integer")
        return value

    def flag(self, name: str) -> bool:
        value = self.args.get(name)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise invalid(f"`{name}` must be true or false")
        return value

    def req(self, name: str, kind: type) -> Any:
        value = self.opt(name, kind)
        if value is None:
            raise invalid(f"missing `{name}`")
        return value

    def data(self, name: str) -> bytes:
        return decode(self.req(name, str), name)

    def headers(self) -> List[Tuple[str, bytes]]:
        entries = self.args.get("headers") or []
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("key"), str) and isinstance(e.get("value"), str)
            for e in entries
        ):
            raise invalid("`headers` must be a list of {key, value}")
        return [(e["key"], decode(e["value"], "header value")) for e in entries]


def decode(text: str, name: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise invalid(f"`{name}` is not base64: {e}") from None


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode()


class DropTally:
    """A subscription's `on_drop`: counts what the SDK told the application
    was discarded. The SDK calls it inside the receiving call, in order with
    the messages."""

    def __init__(self) -> None:
        self.count = 0
        # Set by a `receive` with `count_dropped`, to hear of each report
        # while the SDK waits on (it may be all the receive wants).
        self.reported: Optional[asyncio.Event] = None

    def __call__(self, count: int) -> None:
        self.count += count
        if self.reported is not None:
            self.reported.set()


class Subscribed:
    """A subscription and its `on_drop`."""

    def __init__(self, subscription: blipmq.Subscription, drops: DropTally) -> None:
        self.subscription = subscription
        self.drops = drops


class Actor:
    def __init__(self, client: blipmq.Client) -> None:
        self.client = client
        # From the connect on, for `events`.
        self.events = client.events()
        self.subscriptions: Dict[str, Subscribed] = {}
        # Received QoS 1 deliveries not acked yet, by (sub, delivery id).
        self.unacked: Dict[Tuple[str, int], blipmq.Message] = {}

    def subscription(self, name: str) -> Subscribed:
        try:
            return self.subscriptions[name]
        except KeyError:
            raise invalid(f"no subscription `{name}`") from None


class Testee:
    def __init__(self) -> None:
        self.actors: Dict[str, Actor] = {}

    async def handle(self, request: Dict[str, Any]) -> Dict[str, Any]:
        op = request.get("op")
        if op in ("send_raw", "read_frame"):
            return {"skipped": f"`{op}` needs raw protocol access, which the Python SDK does not expose"}
        handler = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
        if handler is None:
            return {"skipped": f"unknown op `{op}`"}
        args = request.get("args") or {}
        if not isinstance(args, dict):
            raise invalid("`args` must be an object")
        if op == "hello":
            return {"ok": await handler(Args(args))}
        name = request.get("actor")
        if not isinstance(name, str):
            raise invalid(f"`{op}` needs an `actor`")
        return {"ok": await handler(name, Args(args))}

    async def close_all(self) -> None:
        for actor in self.actors.values():
            await actor.client.close()
        self.actors.clear()

    def actor(self, name: str) -> Actor:
        try:
            return self.actors[name]
        except KeyError:
            raise Failure(CLIENT_CLOSED, f"actor `{name}` has no client") from None

    async def op_hello(self, args: Args) -> Dict[str, Any]:
        return {"sdk": "python", "version": blipmq.__version__, "capabilities": ["pubsub", "headers", "qos1", "events", "tls", "addresses", "job_queue"]}

    async def op_connect(self, name: str, args: Args) -> Dict[str, Any]:
        # A list of addresses to try in order, or the one broker.
        addresses = args.opt("addresses", list)
        addr = addresses if addresses is not None else args.req("addr", str)
        api_key = args.opt("api_key", str)
        client_name = args.opt("name", str)
        capacity = args.opt("subscription_capacity", int)
        # The runner's TLS mode: a tls:// address and the test CA's file.
        ca = args.opt("tls_ca", str)
        tls = blipmq.TLS(cafile=ca) if ca is not None else None
        previous = self.actors.pop(name, None)
        if previous is not None:
            await previous.client.close()
        client = await blipmq.connect(
            addr,
            api_key=api_key,
            name=client_name,
            reconnect=args.flag("reconnect"),
            subscription_capacity=capacity,
            tls=tls,
        )
        self.actors[name] = Actor(client)
        return {}

    async def op_close(self, name: str, args: Args) -> Dict[str, Any]:
        actor = self.actor(name)
        del self.actors[name]
        await actor.client.close()
        return {}

    async def op_publish(self, name: str, args: Args) -> Dict[str, Any]:
        actor = self.actor(name)
        message_id = await actor.client.publish(
            args.req("topic", str),
            args.data("payload"),
            ttl_ms=args.opt("ttl_ms", int) or 0,
            qos=args.opt("qos", int) or 0,
            headers=args.headers(),
        )
        return {} if message_id is None else {"message_id": str(message_id)}

    async def op_subscribe(self, name: str, args: Args) -> Dict[str, Any]:
        actor = self.actor(name)
        sub = args.req("sub", str)
        drops = DropTally()
        ack_timeout_ms = args.opt("ack_timeout_ms", int)
        subscription = await actor.client.subscribe(
            args.req("pattern", str),
            qos=args.opt("qos", int) or 0,
            durable=args.opt("durable", str),
            group=args.opt("group", str),
            on_drop=drops,
            ack_timeout=None if ack_timeout_ms is None else ack_timeout_ms / 1000,
            max_deliveries=args.opt("max_deliveries", int),
        )
        # A name used again names the new subscription; the old one is
        # dropped, which unsubscribes it.
        actor.subscriptions[sub] = Subscribed(subscription, drops)
        return {}

    async def op_unsubscribe(self, name: str, args: Args) -> Dict[str, Any]:
        actor = self.actor(name)
        sub = args.req("sub", str)
        subscription = actor.subscription(sub).subscription
        del actor.subscriptions[sub]
        await subscription.unsubscribe()
        return {}

    async def op_ack(self, name: str, args: Args) -> Dict[str, Any]:
        await self.received(name, args, keep=False).ack()
        return {}

    async def op_nak(self, name: str, args: Args) -> Dict[str, Any]:
        # A redelivery comes back through `receive` as a message of its own.
        message = self.received(name, args, keep=False)
        await message.nak(delay=(args.opt("delay_ms", int) or 0) / 1000)
        return {}

    async def op_term(self, name: str, args: Args) -> Dict[str, Any]:
        await self.received(name, args, keep=False).term()
        return {}

    async def op_in_progress(self, name: str, args: Args) -> Dict[str, Any]:
        await self.received(name, args, keep=True).in_progress()
        return {}

    def received(self, name: str, args: Args, keep: bool) -> blipmq.Message:
        """The message `receive` returned with that `delivery_id`; taken
        from the unacked ones unless `keep`."""
        actor = self.actor(name)
        sub = args.req("sub", str)
        text = args.req("delivery_id", str)
        try:
            delivery_id = int(text)
        except ValueError:
            raise invalid("`delivery_id` must be a decimal string") from None
        key = (sub, delivery_id)
        message = actor.unacked.get(key) if keep else actor.unacked.pop(key, None)
        if message is None:
            raise invalid(f"no unacked delivery {delivery_id} on `{sub}`")
        return message

    async def op_flush(self, name: str, args: Args) -> Dict[str, Any]:
        await self.actor(name).client.flush()
        return {}

    async def op_events(self, name: str, args: Args) -> Dict[str, Any]:
        """The events since the connect or the last `events`, up to the
        first of kind `until` or until `timeout_ms` passes; failed reconnect
        attempts left out."""
        actor = self.actor(name)
        until = args.req("until", str)
        deadline = time.monotonic() + args.req("timeout_ms", int) / 1000
        events: List[Dict[str, Any]] = []
        while True:
            remaining = max(deadline - time.monotonic(), 0.0)
            try:
                event = await actor.events.next(timeout=remaining)
            except (blipmq.TimeoutError, blipmq.ClientClosedError):
                break
            if isinstance(event, blipmq.ServerError):
                events.append({"kind": "server_error", "code": event.error.code})
            elif isinstance(event, blipmq.Disconnected):
                events.append({"kind": "disconnected"})
            elif isinstance(event, blipmq.Reconnected):
                events.append({"kind": "reconnected"})
            elif isinstance(event, blipmq.Closed):
                events.append({"kind": "closed"})
            else:
                continue  # a failed reconnect attempt
            if events[-1]["kind"] == until:
                break
        return {"events": events}

    async def op_receive(self, name: str, args: Args) -> Dict[str, Any]:
        """Up to `count` messages within `timeout_ms` in all; what is already
        buffered is returned even once the time is up. `dropped` is what the
        subscription's `on_drop` was told meanwhile; with `count_dropped` it
        counts towards `count`, and the receive ends as soon as the two make
        `count`, even while the SDK waits (the wait is cancelled, which
        loses no message)."""
        actor = self.actor(name)
        sub = args.req("sub", str)
        subscribed = actor.subscription(sub)
        subscription, drops = subscribed.subscription, subscribed.drops
        count = args.req("count", int)
        count_dropped = args.flag("count_dropped")
        deadline = time.monotonic() + args.req("timeout_ms", int) / 1000
        messages: List[Dict[str, Any]] = []
        drops.count = 0

        def wanted() -> int:
            return count - len(messages) - (drops.count if count_dropped else 0)

        while wanted() > 0:
            remaining = max(deadline - time.monotonic(), 0.0)
            try:
                batch = await self.next_batch(subscription, drops, count_dropped, wanted(), remaining)
            except blipmq.ClientClosedError:
                break  # the subscription ended and its buffer is drained
            if batch is None:
                break  # the reports made `count`
            for message in batch:
                # Nothing is acked here: QoS 1 deliveries wait for `ack`.
                if message.delivery_id != 0:
                    actor.unacked[(sub, message.delivery_id)] = message
                messages.append(
                    {
                        "topic": message.topic,
                        "payload": encode(message.payload),
                        "id": str(message.id),
                        "timestamp_ms": str(message.timestamp_ms),
                        "delivery_count": message.delivery_count,
                        "delivery_id": str(message.delivery_id),
                        "headers": [{"key": k, "value": encode(v)} for k, v in message.headers],
                        "dropped_before": message.dropped_before,
                    }
                )
            if not batch or remaining == 0.0:
                break
        return {"messages": messages, "dropped": drops.count, "dropped_total": subscription.dropped}

    @staticmethod
    async def next_batch(
        subscription: blipmq.Subscription, drops: DropTally, count_dropped: bool, wanted: int, timeout: float
    ) -> Optional[List[blipmq.Message]]:
        """`subscription.next_batch`, or `None` when, with `count_dropped`,
        the drops reported while it waits make up what is `wanted`."""
        if not count_dropped:
            return await subscription.next_batch(wanted, timeout=timeout)
        told_before = drops.count
        reported = drops.reported = asyncio.Event()
        receiving = asyncio.ensure_future(subscription.next_batch(wanted, timeout=timeout))
        try:
            while True:
                heard = asyncio.ensure_future(reported.wait())
                await asyncio.wait({receiving, heard}, return_when=asyncio.FIRST_COMPLETED)
                heard.cancel()
                if receiving.done():
                    return receiving.result()
                if drops.count - told_before >= wanted:
                    return None  # the wait is cancelled below
                reported.clear()
        finally:
            drops.reported = None
            if not receiving.done():
                receiving.cancel()


def log(*parts: Any) -> None:
    print("blipmq-testee-python:", *parts, file=sys.stderr, flush=True)


async def serve(testee: Testee) -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.buffer.readline)
        if not line:
            return
        if not line.strip():
            continue
        request_id: Optional[Any] = None
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise invalid("a request is a JSON object")
            request_id = request.get("id")
            if not isinstance(request_id, str):
                raise invalid("`id` must be a string")
            reply = await testee.handle(request)
        except blipmq.BlipMQError as e:
            # The SDK's own errors name their class, which the runner checks.
            reply = {"err": {"code": e.code, "message": e.message, "class": type(e).__name__}}
        except Failure as e:
            reply = {"err": {"code": e.code, "message": e.message}}
        except json.JSONDecodeError as e:
            reply = {"err": {"code": INVALID_ARGUMENT, "message": f"not JSON: {e}"}}
        except (TypeError, ValueError, OverflowError) as e:  # an argument the SDK refused
            reply = {"err": {"code": INVALID_ARGUMENT, "message": str(e)}}
        if "err" in reply:
            log(request_id, reply["err"]["code"], reply["err"]["message"])
        sys.stdout.write(json.dumps({"id": request_id, **reply}) + "\n")
        sys.stdout.flush()


async def main() -> None:
    testee = Testee()
    try:
        await serve(testee)
    finally:
        await testee.close_all()


if __name__ == "__main__":
    asyncio.run(main())
