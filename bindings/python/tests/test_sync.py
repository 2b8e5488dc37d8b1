"""The blocking API, fork safety and Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import blipmq


def test_round_trip_and_iteration(addr: str) -> None:
    with blipmq.connect_sync(addr) as client:
        assert isinstance(client, blipmq.SyncClient)
        with client.subscribe("s.*") as sub:
            client.publish("s.a", b"one", headers={"k": "v"})
            message = sub.next(timeout=5)
            assert (message.topic, message.payload, message.headers) == ("s.a", b"one", [("k", b"v")])
            assert message.id > 0 and message.timestamp_ms > 0 and message.delivery_count == 1
            message.ack()
            assert "s.a" in repr(message)
            for i in range(3):
                client.publish("s.b", b"%d" % i)
            client.flush()
            received = []
            for message in sub:  # a plain iterator
                received.append(message.payload)
                if len(received) == 3:
                    break
            assert received == [b"0", b"1", b"2"]
            assert sub.pattern == "s.*"
        # The block unsubscribed.
        with pytest.raises(blipmq.ClientClosedError):
            sub.next(timeout=1)
    with pytest.raises(blipmq.ClientClosedError) as caught:
        client.publish("s.a", b"")
    assert caught.value.code == 603


def test_iteration_ends_when_the_client_closes(addr: str) -> None:
    client = blipmq.connect_sync(addr)
    sub = client.subscribe("e")
    client.publish("e", b"last")
    client.flush()
    client.close()
    assert [m.payload for m in sub] in ([b"last"], [])


def test_events_end_with_the_close(broker) -> None:  # type: ignore[no-untyped-def]
    client = blipmq.connect_sync(broker.addr)
    events = client.events()
    broker.restart()
    event = events.next(timeout=10)
    assert isinstance(event, blipmq.ServerError) and event.error.name == "ShuttingDown"
    while not isinstance(event, blipmq.Reconnected):
        event = events.next(timeout=20)
    assert client.status == "connected"
    client.close()
    assert list(events) == [blipmq.Closed()]
    assert client.status == "closed"


def test_timeouts_and_batches(addr: str) -> None:
    with blipmq.connect_sync(addr) as client:
        sub = client.subscribe("b")
        with pytest.raises(blipmq.TimeoutError) as caught:
            sub.next(timeout=0.1)
        assert caught.value.code == 601
        assert sub.next_batch(5, timeout=0.05) == []
        for i in range(10):
            client.publish("b", b"%d" % i)
        client.flush()
        got = []
        while len(got) < 10:
            got += [m.payload for m in sub.next_batch(4, timeout=5)]
        assert got == [b"%d" % i for i in range(10)]
        sub.unsubscribe()
        sub.unsubscribe()


def test_errors_keep_codes(addr: str, closed_addr: str) -> None:
    with pytest.raises(blipmq.ConnectError) as refused:
        blipmq.connect_sync(closed_addr)
    assert refused.value.code == 600
    with blipmq.connect_sync(addr) as client:
        with pytest.raises(blipmq.InvalidTopicError) as invalid:
            client.publish("no spaces", b"")
        assert invalid.value.code == 300
        assert client.max_message_size > 0


def test_publish_nowait(addr: str) -> None:
    with blipmq.connect_sync(addr) as client:
        with client.subscribe("sync.nowait") as sub:
            client.publish_nowait("sync.nowait", b"quick")
            assert sub.next(timeout=5).payload == b"quick"
            with pytest.raises(blipmq.InvalidTopicError):
                client.publish_nowait("bad..topic", b"x")


def test_a_forked_child_gets_its_own_runtime(addr: str) -> None:
    # The parent has a running runtime and a sync loop thread before fork.
    parent = blipmq.connect_sync(addr)
    parent_sub = parent.subscribe("fork.parent")
    pid = os.fork()
    if pid == 0:  # the child: only os._exit leaves it
        code = 1
        try:
            with blipmq.connect_sync(addr) as child:
                sub = child.subscribe("fork.child")
                child.publish("fork.child", b"from the child")
                child.publish("fork.parent", b"child to parent")
                if sub.next(timeout=5).payload == b"from the child":
                    code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    # The parent is unaffected.
    assert parent_sub.next(timeout=5).payload == b"child to parent"
    parent.publish("fork.parent", b"parent still works")
    assert parent_sub.next(timeout=5).payload == b"parent still works"
    parent.close()


def test_ctrl_c_interrupts_a_blocking_call(addr: str) -> None:
    script = textwrap.dedent(
        f"""
        import blipmq, sys
        client = blipmq.connect_sync({addr!r})
        sub = client.subscribe("nothing.comes")
        try:
            print("waiting", flush=True)
            sub.next()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            client.publish("still.works", b"")
            client.close()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "waiting"
    time.sleep(0.3)  # into the blocking call
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=10)
    assert child.returncode == 0, err
    assert out.strip() == "interrupted"
