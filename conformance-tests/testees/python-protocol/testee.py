#!/usr/bin/env python3
"""A BlipMQ conformance testee that speaks the wire protocol directly.

Written only from conformance-tests/README.md (the testee contract),
schema/SPEC.md (the protocol rules) and schema/blipmq.fbs (the wire schema),
with the Python code flatc generates from that schema (in ./generated, see
scripts/regen-codegen.sh) and the `flatbuffers` runtime package. It exists to
show that those documents suffice to write a compatible client.

Requests arrive on stdin and replies leave on stdout, one JSON object per
line; logs go to stderr. The testee never judges: it reports what happened.
"""

import base64
import binascii
import json
import os
import select
import socket
import struct
import sys
import time
from collections import deque

sys.dont_write_bytecode = True  # keep generated/ free of __pycache__
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "generated"))

import flatbuffers  # noqa: E402
from blipmq.wire import (  # noqa: E402
    Ack,
    AckKind,
    Body,
    Confirm,
    Delivery,
    Dropped,
    Envelope,
    Error,
    Header,
    Hello,
    Ping,
    Pong,
    Publish,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Welcome,
)

SDK = "python-protocol"
VERSION = "0.1.0"
CAPABILITIES = ["pubsub", "raw", "headers", "qos1", "job_queue"]

PROTOCOL_VERSION = 1
DEFAULT_TIMEOUT_S = 10.0
READ_CHUNK = 64 * 1024

U8_MAX = (1 << 8) - 1
U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1

# Wire error codes (schema ErrorCode / SPEC.md error table) used by the client.
INVALID_ARGUMENT = 301
UNKNOWN_SUBSCRIPTION = 302
CONNECT_FAILED = 600
TIMEOUT = 601
CONNECTION_CLOSED = 602
CLIENT_CLOSED = 603

BODY_NAMES = {
    value: name
    for name, value in vars(Body.Body).items()
    if not name.startswith("_") and isinstance(value, int)
}


def log(*parts):
    print("[python-protocol]", *parts, file=sys.stderr, flush=True)


class OpError(Exception):
    """An operation failed with a wire error code (answered as `err`)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class Skipped(Exception):
    """The testee cannot do this operation (answered as `skipped`)."""


class ConnClosed(Exception):
    """The broker closed the connection (or it broke)."""


class ConnTimeout(Exception):
    """No complete frame arrived before the deadline."""


# --------------------------------------------------------------------------
# Encoding


def _finish(builder, body_type, body):
    Envelope.EnvelopeStart(builder)
    Envelope.EnvelopeAddBodyType(builder, body_type)
    Envelope.EnvelopeAddBody(builder, body)
    builder.Finish(Envelope.EnvelopeEnd(builder))
    data = bytes(builder.Output())
    return struct.pack("<I", len(data)) + data


def _string(builder, text):
    try:
        return builder.CreateString(text.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise OpError(INVALID_ARGUMENT, "string cannot be encoded as UTF-8: %s" % e)


def encode_hello(client_name, api_key):
    b = flatbuffers.Builder(128)
    name = _string(b, client_name) if client_name is not None else None
    key = _string(b, api_key) if api_key is not None else None
    Hello.HelloStart(b)
    Hello.HelloAddProtocolVersion(b, PROTOCOL_VERSION)
    # This client understands Dropped notices (QUEUE-6).
    Hello.HelloAddDropNotices(b, True)
    if name is not None:
        Hello.HelloAddClientName(b, name)
    if key is not None:
        Hello.HelloAddApiKey(b, key)
    return _finish(b, Body.Body.Hello, Hello.HelloEnd(b))


def encode_publish(publish_id, topic, payload, ttl_ms, qos, headers=()):
    b = flatbuffers.Builder(len(payload) + len(topic) * 4 + 128)
    hv = None
    if headers:
        offsets = []
        for key, value in headers:
            k = _string(b, key)
            v = b.CreateByteVector(value)
            Header.HeaderStart(b)
            Header.HeaderAddKey(b, k)
            Header.HeaderAddValue(b, v)
            offsets.append(Header.HeaderEnd(b))
        Publish.PublishStartHeadersVector(b, len(offsets))
        for o in reversed(offsets):
            b.PrependUOffsetTRelative(o)
        hv = b.EndVector()
    t = _string(b, topic)
    p = b.CreateByteVector(payload)
    Publish.PublishStart(b)
    if hv is not None:
        Publish.PublishAddHeaders(b, hv)
    Publish.PublishAddPublishId(b, publish_id)
    Publish.PublishAddTopic(b, t)
    Publish.PublishAddPayload(b, p)
    Publish.PublishAddTtlMs(b, ttl_ms)
    Publish.PublishAddQos(b, qos)
    return _finish(b, Body.Body.Publish, Publish.PublishEnd(b))


def encode_subscribe(request_id, pattern, qos, durable, group, ack_timeout_ms=0, max_deliveries=0):
    b = flatbuffers.Builder(256)
    pat = _string(b, pattern)
    dur = _string(b, durable) if durable is not None else None
    grp = _string(b, group) if group is not None else None
    Subscribe.SubscribeStart(b)
    Subscribe.SubscribeAddRequestId(b, request_id)
    Subscribe.SubscribeAddPattern(b, pat)
    Subscribe.SubscribeAddQos(b, qos)
    if dur is not None:
        Subscribe.SubscribeAddDurableName(b, dur)
    if grp is not None:
        Subscribe.SubscribeAddQueueGroup(b, grp)
    # 0 is the broker's default and the field's: omitted, as older clients do.
    if ack_timeout_ms:
        Subscribe.SubscribeAddAckTimeoutMs(b, ack_timeout_ms)
    if max_deliveries:
        Subscribe.SubscribeAddMaxDeliveries(b, max_deliveries)
    return _finish(b, Body.Body.Subscribe, Subscribe.SubscribeEnd(b))


def encode_unsubscribe(request_id, subscription_id):
    b = flatbuffers.Builder(64)
    Unsubscribe.UnsubscribeStart(b)
    Unsubscribe.UnsubscribeAddRequestId(b, request_id)
    Unsubscribe.UnsubscribeAddSubscriptionId(b, subscription_id)
    return _finish(b, Body.Body.Unsubscribe, Unsubscribe.UnsubscribeEnd(b))


def encode_ack(subscription_id, delivery_id, kind=AckKind.AckKind.Ack, delay_ms=0):
    b = flatbuffers.Builder(64)
    Ack.AckStart(b)
    Ack.AckAddSubscriptionId(b, subscription_id)
    Ack.AckAddDeliveryId(b, delivery_id)
    # A plain ack leaves both at their defaults, byte for byte as before.
    if kind != AckKind.AckKind.Ack:
        Ack.AckAddKind(b, kind)
    if delay_ms:
        Ack.AckAddDelayMs(b, delay_ms)
    return _finish(b, Body.Body.Ack, Ack.AckEnd(b))


def encode_ping(nonce):
    b = flatbuffers.Builder(32)
    Ping.PingStart(b)
    Ping.PingAddNonce(b, nonce)
    return _finish(b, Body.Body.Ping, Ping.PingEnd(b))


# --------------------------------------------------------------------------
# Decoding: a frame becomes a dict {"type": <body name>, <snake_case field>: value}
# with native Python values (ints, str, bytes); render_frame() makes it JSON.

# Fields that are u64 on the wire and travel as decimal strings.
U64_FIELDS = {
    "connection_id", "publish_id", "message_id", "request_id", "subscription_id",
    "delivery_id", "timestamp_ms", "nonce",
}


def _text(raw):
    return None if raw is None else raw.decode("utf-8", errors="replace")


def _ubyte_vector(table, vtable_offset):
    """The bytes of a [ubyte] field, read as one slice.

    The generated code only offers per-byte access (`Payload(j)`) or a numpy
    view, so this reads the vector through the table accessor that the
    generated code itself uses.
    """
    tab = table._tab
    o = tab.Offset(vtable_offset)
    if o == 0:
        return b""
    start = tab.Vector(o)
    n = tab.VectorLen(o)
    if start + n > len(tab.Bytes):
        raise ValueError("vector runs past the end of the frame")
    return bytes(tab.Bytes[start:start + n])


def _init(cls, union_table):
    obj = cls()
    obj.Init(union_table.Bytes, union_table.Pos)
    return obj


def decode_frame(data):
    """Decode one Envelope. The Python runtime has no verifier, so garbage is
    caught as whatever exception reading it raises and reported as Malformed."""
    try:
        env = Envelope.Envelope.GetRootAs(data, 0)
        body_type = env.BodyType()
        name = BODY_NAMES.get(body_type)
        if name is None:
            return {"type": "Unknown", "body_type": body_type}
        if body_type == Body.Body.NONE:
            return {"type": "NONE"}
        table = env.Body()
        if table is None:
            return {"type": name, "missing_body": True}
        return _DECODERS[body_type](table)
    except Exception as e:  # noqa: BLE001 - anything unreadable is "malformed"
        log("undecodable frame (%d bytes): %r" % (len(data), e))
        return {"type": "Malformed", "bytes": bytes(data)}


def _d_hello(t):
    m = _init(Hello.Hello, t)
    return {"type": "Hello", "protocol_version": m.ProtocolVersion(),
            "client_name": _text(m.ClientName()), "api_key": _text(m.ApiKey())}


def _d_welcome(t):
    m = _init(Welcome.Welcome, t)
    return {"type": "Welcome", "protocol_version": m.ProtocolVersion(),
            "server_name": _text(m.ServerName()), "server_version": _text(m.ServerVersion()),
            "max_message_size": m.MaxMessageSize(), "connection_id": m.ConnectionId()}


def _d_publish(t):
    m = _init(Publish.Publish, t)
    return {"type": "Publish", "publish_id": m.PublishId(), "topic": _text(m.Topic()),
            "payload": _ubyte_vector(m, 8), "ttl_ms": m.TtlMs(), "qos": m.Qos()}


def _d_confirm(t):
    m = _init(Confirm.Confirm, t)
    return {"type": "Confirm", "publish_id": m.PublishId(), "message_id": m.MessageId()}


def _d_subscribe(t):
    m = _init(Subscribe.Subscribe, t)
    return {"type": "Subscribe", "request_id": m.RequestId(), "pattern": _text(m.Pattern()),
            "qos": m.Qos(), "durable_name": _text(m.DurableName()),
            "queue_group": _text(m.QueueGroup()), "ack_timeout_ms": m.AckTimeoutMs(),
            "max_deliveries": m.MaxDeliveries()}


def _d_subscribed(t):
    m = _init(Subscribed.Subscribed, t)
    return {"type": "Subscribed", "request_id": m.RequestId(),
            "subscription_id": m.SubscriptionId()}


def _d_unsubscribe(t):
    m = _init(Unsubscribe.Unsubscribe, t)
    return {"type": "Unsubscribe", "request_id": m.RequestId(),
            "subscription_id": m.SubscriptionId()}


def _d_unsubscribed(t):
    m = _init(Unsubscribed.Unsubscribed, t)
    return {"type": "Unsubscribed", "request_id": m.RequestId(),
            "subscription_id": m.SubscriptionId()}


def _d_delivery(t):
    m = _init(Delivery.Delivery, t)
    route = m.Route()
    if route is None:  # `route` is (required); a broker must always send it
        raise ValueError("Delivery without its required route")
    return {"type": "Delivery",
            "route": {"subscription_id": route.SubscriptionId(),
                      "delivery_id": route.DeliveryId(),
                      "delivery_count": route.DeliveryCount()},
            "topic": _text(m.Topic()) or "", "payload": _ubyte_vector(m, 8),
            "message_id": m.MessageId(), "timestamp_ms": m.TimestampMs(),
            # Header.value is field 1 of its table: vtable offset 6.
            "headers": [(_text(m.Headers(j).Key()) or "", _ubyte_vector(m.Headers(j), 6))
                        for j in range(m.HeadersLength())]}


def _d_dropped(t):
    m = _init(Dropped.Dropped, t)
    return {"type": "Dropped", "subscription_id": m.SubscriptionId(), "count": m.Count()}


def _d_ack(t):
    m = _init(Ack.Ack, t)
    return {"type": "Ack", "subscription_id": m.SubscriptionId(), "delivery_id": m.DeliveryId(),
            "kind": m.Kind(), "delay_ms": m.DelayMs()}


def _d_ping(t):
    return {"type": "Ping", "nonce": _init(Ping.Ping, t).Nonce()}


def _d_pong(t):
    return {"type": "Pong", "nonce": _init(Pong.Pong, t).Nonce()}


def _d_error(t):
    m = _init(Error.Error, t)
    return {"type": "Error", "code": m.Code(), "message": _text(m.Message()) or "",
            "request_id": m.RequestId()}


_DECODERS = {
    Body.Body.Hello: _d_hello,
    Body.Body.Welcome: _d_welcome,
    Body.Body.Publish: _d_publish,
    Body.Body.Confirm: _d_confirm,
    Body.Body.Subscribe: _d_subscribe,
    Body.Body.Subscribed: _d_subscribed,
    Body.Body.Unsubscribe: _d_unsubscribe,
    Body.Body.Unsubscribed: _d_unsubscribed,
    Body.Body.Delivery: _d_delivery,
    Body.Body.Dropped: _d_dropped,
    Body.Body.Ack: _d_ack,
    Body.Body.Ping: _d_ping,
    Body.Body.Pong: _d_pong,
    Body.Body.Error: _d_error,
}


def render(value, key=None):
    """Native decoded values -> the contract's JSON (u64 as strings, bytes b64)."""
    if isinstance(value, dict):
        return {k: render(v, k) for k, v in value.items() if v is not None}
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and key in U64_FIELDS:
        return str(value)
    return value


def render_message(delivery):
    return {
        "topic": delivery["topic"],
        "payload": base64.b64encode(delivery["payload"]).decode("ascii"),
        "id": str(delivery["message_id"]),
        "timestamp_ms": str(delivery["timestamp_ms"]),
        "delivery_count": delivery["route"]["delivery_count"],
        "delivery_id": str(delivery["route"]["delivery_id"]),
        "headers": [{"key": k, "value": base64.b64encode(v).decode("ascii")}
                    for k, v in delivery["headers"]],
    }


# --------------------------------------------------------------------------
# The connection: a socket plus a read buffer that yields whole frames.


class Connection:
    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.eof = False       # the broker closed (or the socket failed)
        self.broken = False    # a write failed half-way: the stream is out of step

    def send(self, data, deadline):
        if self.broken:
            raise ConnClosed("connection broken by an earlier failed write")
        view = memoryview(data)
        try:
            while view:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise socket.timeout()
                self.sock.settimeout(remaining)
                sent = self.sock.send(view)
                view = view[sent:]
        except socket.timeout:
            if len(view) != len(data):
                self.broken = True
            raise ConnTimeout("write timed out")
        except OSError as e:
            self.broken = True
            raise ConnClosed("write failed: %s" % e)

    def _take_frame(self):
        if len(self.buf) < 4:
            return None
        (n,) = struct.unpack_from("<I", self.buf, 0)
        if len(self.buf) < 4 + n:
            return None
        data = bytes(self.buf[4:4 + n])
        del self.buf[:4 + n]
        return data

    def next_frame(self, deadline):
        """The next whole frame's bytes. Raises ConnTimeout once the deadline
        passes (after one non-blocking look at the socket) or ConnClosed."""
        while True:
            frame = self._take_frame()
            if frame is not None:
                return frame
            if self.eof:
                raise ConnClosed("connection closed by the broker")
            remaining = max(0.0, deadline - time.monotonic())
            try:
                readable, _, _ = select.select([self.sock], [], [], remaining)
            except (OSError, ValueError) as e:
                self.eof = True
                raise ConnClosed("select failed: %s" % e)
            if not readable:
                raise ConnTimeout("no frame in time")
            try:
                self.sock.setblocking(False)
                chunk = self.sock.recv(READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                log("recv failed: %s" % e)
                chunk = b""
            if not chunk:
                self.eof = True
            else:
                self.buf += chunk

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# One actor = one client connection with its subscriptions and buffers.


class Client:
    def __init__(self, conn):
        self.conn = conn
        self.next_id = 0
        self.subs = {}          # label -> subscription_id
        self.deliveries = {}    # subscription_id -> deque of decoded Delivery / Dropped
        self.dropped = {}       # subscription_id -> discards reported in all
        self.unconsumed = deque()  # frames for read_frame

    def fresh_id(self):
        # One counter for publish_id, request_id and nonce: an Error's
        # request_id may answer either a publish_id or a request_id, so the
        # two must never collide on one connection. Never 0.
        self.next_id += 1
        return self.next_id

    def _route(self, frame):
        """Keep a frame nobody waited for: deliveries of our subscriptions go
        to their buffer, everything else to read_frame's queue."""
        if frame["type"] in ("Delivery", "Dropped"):
            sid = (frame["route"]["subscription_id"] if frame["type"] == "Delivery"
                   else frame["subscription_id"])
            if sid in self.deliveries:
                self.deliveries[sid].append(frame)
                return
        self.unconsumed.append(frame)

    def wait_for(self, match, deadline):
        """Read frames until `match(frame)` is true; return that frame."""
        while True:
            try:
                raw = self.conn.next_frame(deadline)
            except ConnTimeout:
                raise OpError(TIMEOUT, "no answer from the broker in time")
            except ConnClosed as e:
                raise OpError(CONNECTION_CLOSED, str(e))
            frame = decode_frame(raw)
            if match(frame):
                return frame
            self._route(frame)

    def send(self, data, deadline):
        if self.conn.eof:
            raise OpError(CONNECTION_CLOSED, "connection closed by the broker")
        try:
            self.conn.send(data, deadline)
        except ConnTimeout as e:
            raise OpError(TIMEOUT, str(e))
        except ConnClosed as e:
            raise OpError(CONNECTION_CLOSED, str(e))

    def request(self, data, answer_types, request_id, deadline, id_field="request_id"):
        """Send a frame and wait for the answer carrying request_id: one of
        answer_types, or an Error (-> OpError with the broker's code)."""
        self.send(data, deadline)

        def match(f):
            if f["type"] == "Error":
                return f["request_id"] == request_id
            return f["type"] in answer_types and f.get(id_field) == request_id

        frame = self.wait_for(match, deadline)
        if frame["type"] == "Error":
            raise OpError(frame["code"], frame["message"])
        return frame


def err_from_error_frame(frame):
    return OpError(frame["code"], frame["message"])


# --------------------------------------------------------------------------
# Argument helpers: a missing or ill-typed argument is a malformed request.


def arg(args, name, kind, default=None, required=False):
    if name not in args or args[name] is None:
        if required:
            raise OpError(INVALID_ARGUMENT, "missing argument %r" % name)
        return default
    value = args[name]
    if kind is int:
        if isinstance(value, bool):
            raise OpError(INVALID_ARGUMENT, "argument %r must be an integer" % name)
        if isinstance(value, str):  # tolerate u64-style decimal strings
            try:
                return int(value, 10)
            except ValueError:
                raise OpError(INVALID_ARGUMENT, "argument %r must be an integer" % name)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not isinstance(value, int):
            raise OpError(INVALID_ARGUMENT, "argument %r must be an integer" % name)
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise OpError(INVALID_ARGUMENT, "argument %r must be true or false" % name)
        return value
    if kind is str:
        if not isinstance(value, str):
            raise OpError(INVALID_ARGUMENT, "argument %r must be a string" % name)
        return value
    if kind is bytes:
        if not isinstance(value, str):
            raise OpError(INVALID_ARGUMENT, "argument %r must be a base64 string" % name)
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as e:
            raise OpError(INVALID_ARGUMENT, "argument %r is not base64: %s" % (name, e))
    if kind is list:
        if not isinstance(value, list):
            raise OpError(INVALID_ARGUMENT, "argument %r must be a list" % name)
        return value
    raise AssertionError(kind)


def in_range(name, value, hi):
    if not 0 <= value <= hi:
        raise OpError(INVALID_ARGUMENT, "%s=%d cannot be encoded (0..%d)" % (name, value, hi))
    return value


def deadline_after(seconds):
    return time.monotonic() + seconds


def parse_addr(addr):
    if addr.startswith("["):  # [v6]:port
        host, sep, port = addr[1:].partition("]:")
    else:
        host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise OpError(INVALID_ARGUMENT, "addr must be host:port, got %r" % addr)
    return host, int(port)


# --------------------------------------------------------------------------
# The operations.


class Testee:
    def __init__(self):
        self.clients = {}  # actor -> Client

    def client(self, actor):
        c = self.clients.get(actor)
        if c is None:
            raise OpError(CLIENT_CLOSED, "actor %r has no client" % actor)
        return c

    def op_hello(self, actor, args):
        return {"sdk": SDK, "version": VERSION, "capabilities": list(CAPABILITIES)}

    def op_connect(self, actor, args):
        host, port = parse_addr(arg(args, "addr", str, required=True))
        api_key = arg(args, "api_key", str)
        name = arg(args, "name", str)
        hello = encode_hello(name, api_key)
        old = self.clients.pop(actor, None)
        if old is not None:
            old.conn.close()
        deadline = deadline_after(DEFAULT_TIMEOUT_S)
        try:
            sock = socket.create_connection((host, port), timeout=DEFAULT_TIMEOUT_S)
        except OSError as e:
            raise OpError(CONNECT_FAILED, "cannot connect to %s:%d: %s" % (host, port, e))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = Client(Connection(sock))
        try:
            try:
                client.conn.send(hello, deadline)
            except ConnClosed as e:
                # The broker may have answered (e.g. TooManyConnections) and
                # closed before our Hello went out: read what it said.
                log("sending Hello failed: %s" % e)
            except ConnTimeout:
                raise OpError(TIMEOUT, "sending Hello timed out")
            # Hello carries no id, so any Error before Welcome answers it.
            frame = client.wait_for(lambda f: f["type"] in ("Welcome", "Error"), deadline)
        except OpError:
            client.conn.close()
            raise
        if frame["type"] == "Error":
            client.conn.close()
            raise err_from_error_frame(frame)
        log("actor %r connected: connection_id=%d server=%s %s max_message_size=%d" % (
            actor, frame["connection_id"], frame["server_name"], frame["server_version"],
            frame["max_message_size"]))
        self.clients[actor] = client
        return {}

    def op_connect_raw(self, actor, args):
        """A TCP connection with no handshake, for raw scenarios."""
        host, port = parse_addr(arg(args, "addr", str, required=True))
        old = self.clients.pop(actor, None)
        if old is not None:
            old.conn.close()
        try:
            sock = socket.create_connection((host, port), timeout=DEFAULT_TIMEOUT_S)
        except OSError as e:
            raise OpError(CONNECT_FAILED, "cannot connect to %s:%d: %s" % (host, port, e))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.clients[actor] = Client(Connection(sock))
        return {}

    def op_close(self, actor, args):
        client = self.client(actor)
        del self.clients[actor]
        client.conn.close()
        return {}

    def op_publish(self, actor, args):
        client = self.client(actor)
        topic = arg(args, "topic", str, required=True)
        payload = arg(args, "payload", bytes, required=True)
        ttl_ms = in_range("ttl_ms", arg(args, "ttl_ms", int, 0), U32_MAX)
        qos = in_range("qos", arg(args, "qos", int, 0), U8_MAX)
        # publish_id 0 means "no answer wanted" and is only valid at QoS 0;
        # any other qos (even an invalid one) gets an id so that the broker's
        # answer can be matched.
        publish_id = 0 if qos == 0 else client.fresh_id()
        headers = []
        for entry in arg(args, "headers", list, []):
            if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
                raise OpError(INVALID_ARGUMENT, "headers must be a list of {key, value}")
            try:
                value = base64.b64decode(entry.get("value", ""), validate=True)
            except (ValueError, TypeError):
                raise OpError(INVALID_ARGUMENT, "header value is not base64")
            headers.append((entry["key"], value))
        frame = encode_publish(publish_id, topic, payload, ttl_ms, qos, headers)
        deadline = deadline_after(DEFAULT_TIMEOUT_S)
        if publish_id == 0:
            client.send(frame, deadline)
            return {}
        confirm = client.request(frame, ("Confirm",), publish_id, deadline, id_field="publish_id")
        return {"message_id": str(confirm["message_id"])}

    def op_subscribe(self, actor, args):
        client = self.client(actor)
        label = arg(args, "sub", str, required=True)
        pattern = arg(args, "pattern", str, required=True)
        qos = in_range("qos", arg(args, "qos", int, 0), U8_MAX)
        durable = arg(args, "durable", str)
        group = arg(args, "group", str)
        ack_timeout_ms = in_range("ack_timeout_ms", arg(args, "ack_timeout_ms", int, 0), U32_MAX)
        max_deliveries = in_range("max_deliveries", arg(args, "max_deliveries", int, 0), U32_MAX)
        request_id = client.fresh_id()
        frame = encode_subscribe(request_id, pattern, qos, durable, group,
                                 ack_timeout_ms, max_deliveries)
        # Deliveries can only follow Subscribed, so the buffer is registered
        # when the answer arrives (inside request(), before any Delivery).
        answer = client.request(frame, ("Subscribed",), request_id,
                                deadline_after(DEFAULT_TIMEOUT_S))
        sid = answer["subscription_id"]
        client.subs[label] = sid
        client.deliveries.setdefault(sid, deque())
        return {}

    def op_unsubscribe(self, actor, args):
        client = self.client(actor)
        label = arg(args, "sub", str, required=True)
        if label not in client.subs:
            raise OpError(UNKNOWN_SUBSCRIPTION, "actor %r has no subscription %r" % (actor, label))
        sid = client.subs[label]
        request_id = client.fresh_id()
        client.request(encode_unsubscribe(request_id, sid), ("Unsubscribed",), request_id,
                       deadline_after(DEFAULT_TIMEOUT_S))
        del client.subs[label]
        if sid not in client.subs.values():
            client.deliveries.pop(sid, None)
        return {}

    def op_receive(self, actor, args):
        client = self.client(actor)
        label = arg(args, "sub", str, required=True)
        count = arg(args, "count", int, required=True)
        timeout_ms = arg(args, "timeout_ms", int, required=True)
        if label not in client.subs:
            raise OpError(UNKNOWN_SUBSCRIPTION, "actor %r has no subscription %r" % (actor, label))
        sid = client.subs[label]
        count_dropped = arg(args, "count_dropped", bool, False)
        buffered = client.deliveries.setdefault(sid, deque())
        messages = []
        # Dropped notices come in line with the deliveries (QUEUE-6): each
        # message carries the ones just before it; `dropped` counts them all.
        state = {"dropped": 0, "carry": 0}

        def take(frame):
            if frame["type"] == "Dropped":
                state["dropped"] += frame["count"]
                state["carry"] += frame["count"]
                client.dropped[sid] = client.dropped.get(sid, 0) + frame["count"]
                return
            message = render_message(frame)
            message["dropped_before"] = state["carry"]
            state["carry"] = 0
            messages.append(message)

        def wanted():
            return len(messages) + (state["dropped"] if count_dropped else 0) < count

        while buffered and wanted():
            take(buffered.popleft())
        deadline = deadline_after(max(0, timeout_ms) / 1000.0)
        while wanted():
            try:
                raw = client.conn.next_frame(deadline)
            except ConnTimeout:
                break
            except ConnClosed as e:
                if messages:
                    break  # report what arrived; the next op sees the close
                raise OpError(CONNECTION_CLOSED, str(e))
            frame = decode_frame(raw)
            if frame["type"] == "Delivery" and frame["route"]["subscription_id"] == sid:
                take(frame)
            elif frame["type"] == "Dropped" and frame["subscription_id"] == sid:
                take(frame)
            else:
                client._route(frame)
        return {"messages": messages, "dropped": state["dropped"],
                "dropped_total": client.dropped.get(sid, 0)}

    def op_ack(self, actor, args):
        """QoS1-5: name a delivery of a subscription; the broker answers
        nothing (acks are idempotent), so nothing is awaited."""
        client = self.client(actor)
        label = arg(args, "sub", str, required=True)
        delivery_id = arg(args, "delivery_id", int, required=True)
        if label not in client.subs:
            raise OpError(UNKNOWN_SUBSCRIPTION, "no subscription %r" % label)
        client.send(encode_ack(client.subs[label], delivery_id), deadline_after(DEFAULT_TIMEOUT_S))
        return {}

    def _settle(self, actor, args, kind, delay_ms=0):
        """QOS-20, -21, -23: an Ack of another kind; like an ack, the broker
        answers nothing, so nothing is awaited."""
        client = self.client(actor)
        label = arg(args, "sub", str, required=True)
        delivery_id = arg(args, "delivery_id", int, required=True)
        if label not in client.subs:
            raise OpError(UNKNOWN_SUBSCRIPTION, "no subscription %r" % label)
        frame = encode_ack(client.subs[label], delivery_id, kind, delay_ms)
        client.send(frame, deadline_after(DEFAULT_TIMEOUT_S))
        return {}

    def op_nak(self, actor, args):
        delay_ms = in_range("delay_ms", arg(args, "delay_ms", int, 0), U32_MAX)
        return self._settle(actor, args, AckKind.AckKind.Nak, delay_ms)

    def op_term(self, actor, args):
        return self._settle(actor, args, AckKind.AckKind.Term)

    def op_in_progress(self, actor, args):
        return self._settle(actor, args, AckKind.AckKind.InProgress)

    def op_flush(self, actor, args):
        client = self.client(actor)
        nonce = client.fresh_id()
        deadline = deadline_after(DEFAULT_TIMEOUT_S)
        client.send(encode_ping(nonce), deadline)
        # Errors (request_id 0 or for a QoS 0 publish) that arrive meanwhile
        # are not the answer to the Ping: they stay queued for read_frame.
        client.wait_for(lambda f: f["type"] == "Pong" and f["nonce"] == nonce, deadline)
        return {}

    def op_send_raw(self, actor, args):
        client = self.client(actor)
        data = arg(args, "bytes", bytes, required=True)
        client.send(data, deadline_after(DEFAULT_TIMEOUT_S))
        return {}

    def op_read_frame(self, actor, args):
        client = self.client(actor)
        timeout_ms = arg(args, "timeout_ms", int, int(DEFAULT_TIMEOUT_S * 1000))
        if client.unconsumed:
            return {"frame": render(client.unconsumed.popleft())}
        deadline = deadline_after(max(0, timeout_ms) / 1000.0)
        while True:
            try:
                raw = client.conn.next_frame(deadline)
            except ConnTimeout:
                return {"timeout": True}
            except ConnClosed:
                return {"closed": True}
            frame = decode_frame(raw)
            client._route(frame)
            if client.unconsumed:
                return {"frame": render(client.unconsumed.popleft())}

    OPS_WITHOUT_ACTOR = {"hello"}

    def handle(self, request):
        op = request.get("op")
        args = request.get("args")
        if args is None:
            args = {}
        actor = request.get("actor")
        if not isinstance(op, str):
            raise OpError(INVALID_ARGUMENT, "request without an op")
        method = getattr(self, "op_" + op, None)
        if method is None:
            raise Skipped("unknown op")
        if not isinstance(args, dict):
            raise OpError(INVALID_ARGUMENT, "args must be an object")
        if op not in self.OPS_WITHOUT_ACTOR and not isinstance(actor, str):
            raise OpError(INVALID_ARGUMENT, "op %r needs an actor" % op)
        return method(actor, args)

    def close_all(self):
        for client in self.clients.values():
            client.conn.close()
        self.clients.clear()


def main():
    testee = Testee()
    out = sys.stdout
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        rid = None
        try:
            request = json.loads(line.decode("utf-8"))
            if not isinstance(request, dict):
                raise ValueError("a request must be a JSON object")
            rid = request.get("id")
            if not isinstance(rid, str):
                raise ValueError("a request needs a string id")
            reply = {"id": rid, "ok": testee.handle(request)}
        except Skipped as e:
            reply = {"id": rid, "skipped": str(e)}
        except OpError as e:
            reply = {"id": rid, "err": {"code": e.code, "message": e.message}}
        except (ValueError, UnicodeDecodeError) as e:
            reply = {"id": rid, "err": {"code": INVALID_ARGUMENT,
                                        "message": "malformed request: %s" % e}}
        except Exception as e:  # noqa: BLE001 - a testee answers, it does not crash
            log("internal error on %r: %r" % (line[:200], e))
            reply = {"id": rid, "err": {"code": 500, "message": "testee bug: %r" % e}}
        out.write(json.dumps(reply, separators=(",", ":")) + "\n")
        out.flush()
    testee.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
