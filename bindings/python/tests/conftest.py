"""Fixtures: the real `blipmq` broker binary on 127.0.0.1:0.

The binary comes from BLIPMQ_BIN (scripts/test-python.sh sets it). Each
test gets its own broker; it starts in milliseconds. The TLS tests' throwaway
certificates come from `blipmq-test-pki` (BLIPMQ_TEST_PKI, also set by the
script), made once per session.
"""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

READY_TIMEOUT = 10.0


class Broker:
    """A `blipmq` process; `restart()` brings it back on the same port."""

    def __init__(self, binary: str, env: Optional[Dict[str, str]] = None) -> None:
        self.binary = binary
        # A log directory of its own, kept across restarts (one broker per
        # directory; the fixture removes it).
        self.data = tempfile.TemporaryDirectory(prefix="blipmq-test-")
        self.env = {"BLIPMQ_WAL_DIR": os.path.join(self.data.name, "wal"), **(env or {})}
        self.addr = ""
        self.process: Optional[subprocess.Popen[bytes]] = None

    def start(self, bind: str = "127.0.0.1:0") -> str:
        env = {
            **os.environ,
            "BLIPMQ_SERVER_BIND_ADDR": bind,
            "BLIPMQ_METRICS_BIND_ADDR": "127.0.0.1:0",
            "RUST_LOG": "warn",
            **self.env,
        }
        self.process = subprocess.Popen(
            [self.binary], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
        )
        self.addr = _ready_addr(self.process)
        return self.addr

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            assert self.process.stdout is not None
            self.process.stdout.close()
            self.process = None

    def restart(self) -> None:
        """Stop, then start again on the same port."""
        self.stop()
        self.start(self.addr)


def _ready_addr(process: subprocess.Popen[bytes]) -> str:
    """Parse `blipmq ready clients=ADDR metrics=ADDR` from stdout."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    if not selector.select(READY_TIMEOUT):
        process.kill()
        raise RuntimeError("the broker did not print its ready line in time")
    line = process.stdout.readline().decode()
    fields = dict(f.split("=", 1) for f in line.split()[2:])
    if not line.startswith("blipmq ready") or "clients" not in fields:
        process.kill()
        raise RuntimeError(f"unexpected broker output: {line!r}")
    return fields["clients"]


@pytest.fixture(scope="session")
def broker_bin() -> str:
    binary = os.environ.get("BLIPMQ_BIN", "")
    if not os.access(binary, os.X_OK):
        pytest.fail("set BLIPMQ_BIN to the blipmq broker binary (scripts/test-python.sh does)")
    return binary


@pytest.fixture
def make_broker(broker_bin: str) -> Iterator[object]:
    """`make_broker(env)` starts a broker with extra environment."""
    started: List[Broker] = []

    def make(env: Optional[Dict[str, str]] = None) -> Broker:
        broker = Broker(broker_bin, env)
        broker.start()
        started.append(broker)
        return broker

    yield make
    for broker in started:
        broker.stop()
        broker.data.cleanup()


@pytest.fixture(scope="session")
def pki() -> Iterator[Path]:
    """A directory of test certificates (ca.pem, broker.pem/.key, client.pem/.key,
    client-ca.pem, other-ca.pem, expired.pem/.key, stranger.pem/.key)."""
    tool = os.environ.get("BLIPMQ_TEST_PKI", "")
    if not os.access(tool, os.X_OK):
        pytest.fail("set BLIPMQ_TEST_PKI to the blipmq-test-pki binary (scripts/test-python.sh does)")
    with tempfile.TemporaryDirectory(prefix="blipmq-pki-") as directory:
        subprocess.run([tool, directory], check=True, stdout=subprocess.DEVNULL)
        yield Path(directory)


@pytest.fixture
def make_tls_broker(make_broker, pki: Path):  # type: ignore[no-untyped-def]
    """`make_tls_broker(cert="broker", client_ca=False)` starts a broker
    speaking TLS with `pki`'s `cert`.pem/.key; with `client_ca`, mutual TLS
    (client certificates from client-ca.pem)."""

    def make(cert: str = "broker", client_ca: bool = False) -> Broker:
        env = {
            "BLIPMQ_TLS_CERT_FILE": str(pki / f"{cert}.pem"),
            "BLIPMQ_TLS_KEY_FILE": str(pki / f"{cert}.key"),
        }
        if client_ca:
            env["BLIPMQ_TLS_CLIENT_CA_FILE"] = str(pki / "client-ca.pem")
        broker: Broker = make_broker(env)
        return broker

    return make


@pytest.fixture
def broker(make_broker) -> Broker:  # type: ignore[no-untyped-def]
    return make_broker()


@pytest.fixture
def addr(broker: Broker) -> str:
    return broker.addr


@pytest.fixture
def closed_addr() -> str:
    """An address where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"
