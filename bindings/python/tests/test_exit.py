"""The interpreter exits cleanly whatever the clients are doing: the
extension shuts its runtime down at exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCENARIOS = {
    "open async client and pending receive": """
        import asyncio, blipmq
        async def main():
            client = await blipmq.connect(ADDR)
            sub = await client.subscribe("x")
            asyncio.ensure_future(sub.next())
            for _ in range(1000):
                await client.publish("x", b"payload")
            await asyncio.sleep(0.01)
        asyncio.run(main())
    """,
    "open sync client mid-stream": """
        import blipmq
        client = blipmq.connect_sync(ADDR)
        sub = client.subscribe("y")
        for _ in range(1000):
            client.publish("y", b"payload")
        sub.next(timeout=5)
    """,
    "loop closed with a receive in flight": """
        import asyncio, blipmq
        loop = asyncio.new_event_loop()
        client = loop.run_until_complete(blipmq.connect(ADDR))
        sub = loop.run_until_complete(client.subscribe("z"))
        pending = asyncio.ensure_future(sub.next(), loop=loop)
        loop.run_until_complete(asyncio.sleep(0.01))
        loop.close()
    """,
    "import only": "import blipmq",
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_exit_is_clean(addr: str, name: str) -> None:
    script = textwrap.dedent(SCENARIOS[name]).replace("ADDR", repr(addr))
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        assert "Fatal Python error" not in done.stderr
        assert "panicked" not in done.stderr
