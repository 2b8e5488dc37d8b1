"""Drives testee.py against a real blipmq broker over the NDJSON contract.

Run from the repository root (after `cargo build -p blipmq-broker --bin blipmq`):

    .venv/bin/python -m pytest conformance-tests/testees/python-protocol

BLIPMQ_BIN overrides the broker binary (default: target/debug/blipmq).
"""

import base64
import json
import os
import select
import signal
import struct
import subprocess
import tempfile
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
TESTEE = HERE / "testee.py"
READY_PREFIX = "blipmq ready "
REPLY_TIMEOUT_S = 20.0


def b64(data):
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------
# The broker


class Broker:
    def __init__(self):
        binary = Path(os.environ.get("BLIPMQ_BIN", "target/debug/blipmq"))
        if not binary.is_absolute():
            binary = REPO_ROOT / binary
        if not binary.exists():
            pytest.fail("broker binary %s not found; build it with "
                        "`cargo build -p blipmq-broker --bin blipmq` or set BLIPMQ_BIN" % binary)
        env = dict(os.environ)
        env["BLIPMQ_SERVER_BIND_ADDR"] = "127.0.0.1:0"
        env["BLIPMQ_METRICS_BIND_ADDR"] = "127.0.0.1:0"
        # QoS 1 writes a log: keep it out of the source tree.
        self.data = tempfile.TemporaryDirectory()
        env["BLIPMQ_WAL_DIR"] = os.path.join(self.data.name, "wal")
        self.lines = []
        self.proc = subprocess.Popen(
            [str(binary)], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.addr = self._wait_ready(timeout_s=30.0)
        self._drain = threading.Thread(target=self._drain_output, daemon=True)
        self._drain.start()

    def _wait_ready(self, timeout_s):
        deadline = time.monotonic() + timeout_s
        buf = b""
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not readable:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                line = raw.decode("utf-8", "replace")
                self.lines.append(line)
                if line.startswith(READY_PREFIX):
                    fields = dict(f.split("=", 1) for f in line[len(READY_PREFIX):].split())
                    return fields["clients"]
        self.stop()
        pytest.fail("broker did not print its ready line; output:\n" + "\n".join(self.lines))

    def _drain_output(self):
        for raw in iter(self.proc.stdout.readline, b""):
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def signal(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# --------------------------------------------------------------------------
# The testee


class TesteeProcess:
    __test__ = False  # not a test class, despite its name

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, str(TESTEE)], cwd=str(REPO_ROOT),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.buf = b""
        self.next_id = 0

    def send_line(self, line):
        self.proc.stdin.write(line.encode("utf-8") + b"\n")
        self.proc.stdin.flush()

    def read_reply(self, timeout_s=REPLY_TIMEOUT_S):
        deadline = time.monotonic() + timeout_s
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("testee did not reply within %.1f s" % timeout_s)
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError("testee closed its stdout (exit code %r)" % self.proc.poll())
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, op, actor=None, timeout_s=REPLY_TIMEOUT_S, **args):
        self.next_id += 1
        rid = "r%d" % self.next_id
        request = {"id": rid, "op": op, "args": args}
        if actor is not None:
            request["actor"] = actor
        self.send_line(json.dumps(request))
        reply = self.read_reply(timeout_s)
        assert reply["id"] == rid, reply
        assert len([k for k in ("ok", "err", "skipped") if k in reply]) == 1, reply
        return reply

    def ok(self, op, actor=None, **args):
        reply = self.call(op, actor, **args)
        assert "ok" in reply, reply
        return reply["ok"]

    def err(self, op, actor=None, **args):
        reply = self.call(op, actor, **args)
        assert "err" in reply, reply
        assert isinstance(reply["err"]["code"], int), reply
        assert isinstance(reply["err"]["message"], str), reply
        return reply["err"]

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc.stdout.close()


@pytest.fixture
def broker():
    b = Broker()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def testee():
    t = TesteeProcess()
    try:
        yield t
    finally:
        t.stop()


@pytest.fixture
def connected(broker, testee):
    """A testee whose actor "a" is connected to the broker."""
    assert testee.ok("connect", "a", addr=broker.addr, name="pytest") == {}
    return testee


# --------------------------------------------------------------------------
# Tests


def test_hello(testee):
    reply = testee.ok("hello")
    assert reply["sdk"] == "python-protocol"
    assert reply["version"] == "0.1.0"
    assert set(reply["capabilities"]) == {"pubsub", "raw", "headers", "qos1", "job_queue"}


def test_publish_subscribe_receive(broker, testee):
    testee.ok("connect", "sub", addr=broker.addr)
    testee.ok("connect", "pub", addr=broker.addr, name="publisher")
    assert testee.ok("subscribe", "sub", sub="s", pattern="greet.*") == {}
    payload = b"hello \x00\xff world"
    before_ms = int(time.time() * 1000)
    assert testee.ok("publish", "pub", topic="greet.en", payload=b64(payload)) == {}
    assert testee.ok("publish", "pub", topic="greet.fr", payload="") == {}
    reply = testee.ok("receive", "sub", sub="s", count=2, timeout_ms=5000)
    msgs = reply["messages"]
    assert [m["topic"] for m in msgs] == ["greet.en", "greet.fr"]
    first, second = msgs
    assert base64.b64decode(first["payload"]) == payload
    assert second["payload"] == ""
    for m in msgs:
        assert isinstance(m["id"], str) and m["id"].isdigit()
        assert isinstance(m["timestamp_ms"], str) and m["timestamp_ms"].isdigit()
        assert int(m["timestamp_ms"]) >= before_ms - 1000
        assert m["delivery_count"] == 1
    assert int(second["id"]) > int(first["id"])  # PUB-5


def test_receive_timeout_returns_empty(connected):
    connected.ok("subscribe", "a", sub="s", pattern="quiet")
    start = time.monotonic()
    assert connected.ok("receive", "a", sub="s", count=1, timeout_ms=300) == {
        "messages": [], "dropped": 0, "dropped_total": 0}
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 5.0


def test_deliveries_for_other_subscriptions_are_buffered(connected):
    connected.ok("subscribe", "a", sub="one", pattern="m.one")
    connected.ok("subscribe", "a", sub="two", pattern="m.two")
    connected.ok("subscribe", "a", sub="all", pattern="m.>")
    for topic in ("m.one", "m.two", "m.one"):
        connected.ok("publish", "a", topic=topic, payload=b64(topic.encode()))
    connected.ok("flush", "a")
    two = connected.ok("receive", "a", sub="two", count=5, timeout_ms=500)["messages"]
    assert [m["topic"] for m in two] == ["m.two"]
    one = connected.ok("receive", "a", sub="one", count=2, timeout_ms=2000)["messages"]
    assert [m["topic"] for m in one] == ["m.one", "m.one"]
    every = connected.ok("receive", "a", sub="all", count=3, timeout_ms=2000)["messages"]
    assert [m["topic"] for m in every] == ["m.one", "m.two", "m.one"]  # SUB-2, PUB-6
    # Nothing consumed by the testee leaks into read_frame.
    assert connected.ok("read_frame", "a", timeout_ms=100) == {"timeout": True}


def test_unsubscribe_stops_deliveries(connected):
    connected.ok("subscribe", "a", sub="s", pattern="u.t")
    assert connected.ok("unsubscribe", "a", sub="s") == {}
    connected.ok("publish", "a", topic="u.t", payload=b64(b"x"))
    connected.ok("flush", "a")
    assert connected.ok("read_frame", "a", timeout_ms=200) == {"timeout": True}
    assert connected.err("unsubscribe", "a", sub="s")["code"] == 302


def test_invalid_topic_publish_error_reaches_read_frame(connected):
    # QoS 0 with publish_id 0: publish itself succeeds, the broker's Error
    # (request_id 0) is an unconsumed frame.
    assert connected.ok("publish", "a", topic="a..b", payload=b64(b"x")) == {}
    reply = connected.ok("read_frame", "a", timeout_ms=5000)
    frame = reply["frame"]
    assert frame["type"] == "Error"
    assert frame["code"] == 300
    assert frame["request_id"] == "0"
    assert isinstance(frame["message"], str)


def test_invalid_pattern_subscribe_is_an_err(connected):
    assert connected.err("subscribe", "a", sub="s", pattern="a.>.b")["code"] == 300
    # The connection stays open (TOPIC-4).
    assert connected.ok("flush", "a") == {}


def test_qos1_publish_is_answered(connected):
    # QOS-1: a QoS 1 publish is confirmed with the broker's message id.
    reply = connected.ok("publish", "a", topic="q.one", payload=b64(b"x"), qos=1)
    assert reply["message_id"].isdigit()
    assert connected.err("publish", "a", topic="q.one", payload="", qos=7)["code"] == 301


def test_nak_term_and_in_progress_reach_the_broker(connected):
    # QOS-20/21/22: a nak brings the delivery back counted; a term sends it
    # to the dead-letter topic; terms out of bounds are refused.
    assert connected.err("subscribe", "a", sub="bad", pattern="jobs", qos=1,
                         durable="w", ack_timeout_ms=5)["code"] == 301
    connected.ok("subscribe", "a", sub="dead", pattern="$dlq.w")
    connected.ok("subscribe", "a", sub="s", pattern="jobs", qos=1, durable="w",
                 ack_timeout_ms=60000, max_deliveries=5)
    connected.ok("publish", "a", topic="jobs", payload=b64(b"j"), qos=1)
    first = connected.ok("receive", "a", sub="s", count=1, timeout_ms=5000)["messages"][0]
    connected.ok("in_progress", "a", sub="s", delivery_id=first["delivery_id"])
    connected.ok("nak", "a", sub="s", delivery_id=first["delivery_id"], delay_ms=50)
    again = connected.ok("receive", "a", sub="s", count=1, timeout_ms=5000)["messages"][0]
    assert (again["delivery_id"], again["delivery_count"]) == (first["delivery_id"], 2)
    connected.ok("term", "a", sub="s", delivery_id=again["delivery_id"])
    letter = connected.ok("receive", "a", sub="dead", count=1, timeout_ms=5000)["messages"][0]
    assert {"key": "blipmq-dead-letter-reason", "value": b64(b"terminated")} in letter["headers"]


def test_send_raw_garbage_gives_error_frame(connected):
    garbage = struct.pack("<I", 12) + b"not a flatbuf"[:12]
    assert connected.ok("send_raw", "a", bytes=b64(garbage)) == {}
    frame = connected.ok("read_frame", "a", timeout_ms=5000)["frame"]
    assert frame["type"] == "Error"
    assert frame["code"] in (100, 400)
    # FRAME-3: the length prefix keeps the stream in step.
    assert connected.ok("flush", "a") == {}


def test_oversized_frame_is_skipped(connected):
    # FRAME-4: a prefix well over the frame limit (max_message_size, default
    # 1 MiB, plus room for topic, headers and envelope) gets MessageTooLarge,
    # its body is skipped and the connection stays usable.
    size = 1024 * 1024 + 64 * 1024
    connected.ok("send_raw", "a", bytes=b64(struct.pack("<I", size) + b"\0" * size))
    frame = connected.ok("read_frame", "a", timeout_ms=5000)["frame"]
    assert (frame["type"], frame["code"], frame["request_id"]) == ("Error", 400, "0")
    assert connected.ok("flush", "a") == {}


def test_shutdown_is_reported_then_closed(broker, connected):
    broker.signal(signal.SIGTERM)
    frame = connected.ok("read_frame", "a", timeout_ms=5000)["frame"]
    assert (frame["type"], frame["code"]) == ("Error", 501)  # CONN-2
    assert connected.ok("read_frame", "a", timeout_ms=5000) == {"closed": True}
    assert connected.err("flush", "a")["code"] == 602


def test_client_side_errors(broker, testee):
    assert testee.err("flush", "nobody")["code"] == 603
    assert testee.err("connect", "a", addr=broker.addr.rsplit(":", 1)[0] + ":1")["code"] == 600
    testee.ok("connect", "a", addr=broker.addr)
    assert testee.ok("close", "a") == {}
    assert testee.err("publish", "a", topic="t", payload="")["code"] == 603


def test_unknown_and_malformed_requests(connected):
    assert connected.call("frobnicate", "a")["skipped"] == "unknown op"
    assert connected.err("publish", "a", topic="t", payload="***")["code"] == 301
    assert connected.err("publish", "a", payload="")["code"] == 301
    connected.send_line("this is not json")
    reply = connected.read_reply()
    assert reply["id"] is None and reply["err"]["code"] == 301
    assert connected.ok("hello")["sdk"] == "python-protocol"  # still serving
    assert connected.ok("flush", "a") == {}


def test_exits_zero_on_stdin_eof(testee):
    testee.ok("hello")
    testee.proc.stdin.close()
    assert testee.proc.wait(timeout=10) == 0
