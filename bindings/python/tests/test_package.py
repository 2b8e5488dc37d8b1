"""The installed package: where it comes from, its public names, its types."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import blipmq


def test_imported_from_the_installed_wheel() -> None:
    # Run from outside the source tree: a packaging mistake must fail here.
    assert "site-packages" in blipmq.__file__, blipmq.__file__
    package = Path(blipmq.__file__).parent
    assert (package / "py.typed").exists()
    assert (package / "_native.pyi").exists()


def test_public_names_are_documented() -> None:
    assert blipmq.__version__
    for name in blipmq.__all__:
        item = getattr(blipmq, name)
        if name in ("Headers", "ClientEvent", "DisconnectKind"):  # type aliases, documented in their modules
            continue
        assert item.__doc__, name
        for attr, member in vars(item).items() if isinstance(item, type) else []:
            if not attr.startswith("_") and callable(member):
                assert member.__doc__, f"{name}.{attr}"


def test_stub_matches_the_native_module() -> None:
    pytest.importorskip("mypy")
    done = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "blipmq._native"],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_public_api_type_checks(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    example = tmp_path / "example.py"
    example.write_text(textwrap.dedent(
        """
        import blipmq
        from typing import List, Optional

        async def main(addr: str) -> None:
            async with await blipmq.connect(addr, api_key=None) as client:
                sub = await client.subscribe("a.*", qos=0)
                watched = await client.subscribe("a.*", on_drop=lambda count: None)
                lost: int = watched.dropped
                message_id: Optional[int] = await client.publish(
                    "a.b", b"x", ttl_ms=5, headers={"k": "v"})
                message: blipmq.Message = await sub.next(timeout=1.5)
                payload: bytes = message.payload
                gap: int = message.dropped_before
                headers = message.headers
                batch: List[blipmq.Message] = await sub.next_batch(10)
                await message.ack()
                async for m in sub:
                    topic: str = m.topic
                await sub.unsubscribe()
                status: str = client.status
                async for event in client.events():
                    if isinstance(event, blipmq.Reconnected):
                        connection: int = event.connection_id
                    elif isinstance(event, blipmq.ServerError):
                        error: blipmq.BlipMQError = event.error
                next_event: blipmq.ClientEvent = await client.events().next(timeout=1)
            tls = blipmq.TLS(cafile="ca.pem", certfile="client.pem", keyfile="client.key",
                             server_hostname="broker.example")
            async with await blipmq.connect("tls://broker:7878", tls=tls) as secure:
                name: Optional[str] = tls.server_hostname

        def sync(addr: str) -> None:
            with blipmq.connect_sync(addr, tls=True):
                pass
            with blipmq.connect_sync(addr) as client:
                with client.subscribe("a", on_drop=print) as sub:
                    client.publish("a", b"x", headers=[("k", b"v")])
                    for m in sub:
                        m.ack()
                        count: int = m.delivery_count
                        before: int = m.dropped_before
                    total: int = sub.dropped
                for event in client.events():
                    if isinstance(event, blipmq.Disconnected):
                        reason: str = event.reason
                        why: Optional[blipmq.DisconnectKind] = event.kind
                        wire: Optional[int] = event.code
                        io: Optional[str] = event.io_kind
            try:
                pass
            except blipmq.BlipMQError as e:
                code: int = e.code
        """
    ))
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", str(example)],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "MYPYPATH": ""},
    )
    assert done.returncode == 0, done.stdout + done.stderr
