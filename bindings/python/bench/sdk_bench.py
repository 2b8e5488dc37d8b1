"""The Python SDK beside nats-py: the same workloads through both clients.

Started by ``scripts/bench-python.sh``, which builds the release wheel,
makes a virtualenv with it and nats-py, and starts the servers. Run by hand:

    python sdk_bench.py run --blipmq 127.0.0.1:PORT --nats 127.0.0.1:PORT

Workloads (each bounded in count and time, run ``--rounds`` times; the
report gives medians):

- publish: one client publishes ``--count`` messages as fast as it can and
  flushes (the server has handled them all); msgs/s = count / time from the
  first publish to the end of the flush. No subscriber.
- receive 1→1: a subscriber process and a publisher process (same SDK, one
  connection each). msgs/s = messages received / time from the publisher's
  first publish to the subscriber's last receipt (CLOCK_MONOTONIC, shared by
  the processes). The subscriber reads each payload.
- latency: one process, a publisher connection paced at ``--latency-rate``
  msgs/s for ``--latency-secs`` and a subscriber connection; 16 B payloads
  carry the send time; p50/p99/p99.9 of publish-to-receipt.

BlipMQ receives with ``Subscription.next_batch`` and nats-py with a message
callback: each client's fastest documented way. Both publish with one
``await client.publish(...)`` per message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence

SIZES = (16, 1024)
#: Largest batch the BlipMQ subscriber takes per crossing into Rust.
BATCH = 1024
#: A receiving run ends this long after the last message when some are missing.
IDLE_SECS = 3.0
#: Hard cap on any one child process (its own loops are bounded well below).
CHILD_TIMEOUT_SECS = 120.0
SYSTEMS = ("blipmq", "nats")
TITLES = {"blipmq": "BlipMQ (blipmq SDK)", "nats": "NATS (nats-py)"}


# ------------------------------------------------------------------ clients


class BlipClient:
    """The BlipMQ Python SDK behind the bench's small interface."""

    def __init__(self, native: Any) -> None:
        self.client = native

    @staticmethod
    async def connect(addr: str) -> "BlipClient":
        import blipmq

        return BlipClient(await blipmq.connect(addr, name="sdk-bench"))

    def publisher(self, topic: str, nowait: bool = False) -> Callable[[bytes], Optional[Awaitable[Any]]]:
        publish = self.client.publish
        if not nowait:
            return lambda payload: publish(topic, payload)
        import blipmq

        publish_nowait = self.client.publish_nowait

        def send(payload: bytes) -> Optional[Awaitable[Any]]:
            try:
                publish_nowait(topic, payload)
                return None
            except blipmq.QueueFullError:
                return publish(topic, payload)  # waits for room

        return send

    async def flush(self) -> None:
        await self.client.flush()

    async def receive(self, topic: str, on_batch: Callable[[List[bytes]], None]) -> "Receiver":
        subscription = await self.client.subscribe(topic)

        async def loop() -> None:
            next_batch = subscription.next_batch
            while True:
                batch = await next_batch(BATCH)
                on_batch([message.payload for message in batch])

        return Receiver(asyncio.ensure_future(loop()), subscription.unsubscribe)

    async def close(self) -> None:
        await self.client.close()


class NatsClient:
    """nats-py behind the same interface."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc

    @staticmethod
    async def connect(addr: str) -> "NatsClient":
        import nats

        return NatsClient(await nats.connect(f"nats://{addr}", name="sdk-bench"))

    def publisher(self, topic: str, nowait: bool = False) -> Callable[[bytes], Optional[Awaitable[Any]]]:
        # nats-py has one way to publish: a coroutine.
        publish = self.nc.publish
        return lambda payload: publish(topic, payload)

    async def flush(self) -> None:
        await self.nc.flush(timeout=60)

    async def receive(self, topic: str, on_batch: Callable[[List[bytes]], None]) -> "Receiver":
        async def callback(message: Any) -> None:
            on_batch([message.data])

        # No pending limits (0 disables both): the client must not drop
        # messages here, we measure how fast it hands them over.
        subscription = await self.nc.subscribe(
            topic, cb=callback, pending_msgs_limit=0, pending_bytes_limit=0
        )
        await self.nc.flush(timeout=10)  # the server has the subscription
        return Receiver(None, subscription.unsubscribe)

    async def close(self) -> None:
        await self.nc.close()


@dataclass
class Receiver:
    task: Optional["asyncio.Future[None]"]
    unsubscribe: Callable[[], Awaitable[None]]

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
        try:
            await self.unsubscribe()
        except Exception:
            pass


async def connect(system: str, addr: str) -> Any:
    if system == "blipmq":
        return await BlipClient.connect(addr)
    return await NatsClient.connect(addr)


# ------------------------------------------------------------ child roles


def payload_of(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


async def role_publish(args: argparse.Namespace) -> Dict[str, Any]:
    """Publish --count messages as fast as possible, then flush."""
    client = await connect(args.system, args.addr)
    publish = client.publisher(args.topic, nowait=args.nowait)
    payload = payload_of(args.size)
    deadline = time.monotonic() + args.max_secs
    cpu_before = time.process_time()
    started = time.monotonic_ns()
    sent = 0
    while sent < args.count:
        # Check the clock every 1,024 messages: bounded in time, cheap.
        for _ in range(min(1024, args.count - sent)):
            waiting = publish(payload)
            if waiting is not None:
                await waiting
        sent += min(1024, args.count - sent)
        if time.monotonic() > deadline:
            break
    await client.flush()
    ended = time.monotonic_ns()
    cpu = time.process_time() - cpu_before
    await client.close()
    return {"sent": sent, "start_ns": started, "end_ns": ended, "cpu_secs": cpu}


async def role_subscribe(args: argparse.Namespace) -> Dict[str, Any]:
    """Subscribe, say `ready`, count messages until --count or idle."""
    client = await connect(args.system, args.addr)
    state = {"received": 0, "bytes": 0, "first_ns": 0, "last_ns": 0}
    done = asyncio.Event()

    def on_batch(payloads: List[bytes]) -> None:
        state["bytes"] += sum(map(len, payloads))
        state["received"] += len(payloads)
        state["last_ns"] = time.monotonic_ns()
        if state["first_ns"] == 0:
            state["first_ns"] = state["last_ns"]
        if state["received"] >= args.count:
            done.set()

    receiver = await client.receive(args.topic, on_batch)
    print("ready", flush=True)
    cpu_before = time.process_time()
    deadline = time.monotonic() + args.max_secs
    ended = "complete"
    while not done.is_set():
        before = state["received"]
        try:
            await asyncio.wait_for(done.wait(), IDLE_SECS)
        except asyncio.TimeoutError:
            if state["received"] == before and before > 0:
                ended = "idle"
                break
        if time.monotonic() > deadline:
            ended = "time cap"
            break
    cpu = time.process_time() - cpu_before
    await receiver.stop()
    await client.close()
    return {**state, "ended": ended, "cpu_secs": cpu}


async def role_latency(args: argparse.Namespace) -> Dict[str, Any]:
    """Paced publishing and receipt in one process; latencies in µs."""
    subscriber = await connect(args.system, args.addr)
    publisher = await connect(args.system, args.addr)
    latencies: List[float] = []
    unpack = struct.Struct("<Q").unpack_from
    clock = time.perf_counter_ns

    def on_batch(payloads: List[bytes]) -> None:
        now = clock()
        for payload in payloads:
            latencies.append((now - unpack(payload)[0]) / 1000.0)

    receiver = await subscriber.receive(args.topic, on_batch)
    publish = publisher.publisher(args.topic)
    pad = bytes(8)
    total = int(args.rate * args.secs)
    sent = 0
    started = clock()
    while sent < total:
        due = min(total, int((clock() - started) / 1e9 * args.rate) + 1)
        while sent < due:
            waiting = publish(struct.pack("<Q", clock()) + pad)
            if waiting is not None:
                await waiting
            sent += 1
        await asyncio.sleep(0.001)
    await publisher.flush()
    deadline = time.monotonic() + 2.0
    while len(latencies) < sent and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await receiver.stop()
    await publisher.close()
    await subscriber.close()
    latencies.sort()
    return {
        "sent": sent,
        "received": len(latencies),
        "p50": percentile(latencies, 0.50),
        "p99": percentile(latencies, 0.99),
        "p999": percentile(latencies, 0.999),
    }


def percentile(sorted_values: Sequence[float], q: float) -> Optional[float]:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return sorted_values[index]


ROLES = {"publish": role_publish, "subscribe": role_subscribe, "latency": role_latency}


def child_main(args: argparse.Namespace) -> None:
    result = asyncio.run(ROLES[args.role](args))
    print(json.dumps(result), flush=True)


# -------------------------------------------------------------- the driver


class ChildFailed(Exception):
    pass


def child_command(role: str, system: str, addr: str, **options: Any) -> List[str]:
    command = [sys.executable, os.path.abspath(__file__), "child", role,
               "--system", system, "--addr", addr]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    return command


def last_json(output: str) -> Dict[str, Any]:
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ChildFailed(f"no result in the output: {output[-500:]!r}")


def run_child(command: List[str]) -> Dict[str, Any]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_SECS)
    except subprocess.TimeoutExpired as e:
        raise ChildFailed(f"timed out after {CHILD_TIMEOUT_SECS} s") from e
    if done.returncode != 0:
        raise ChildFailed(f"exit {done.returncode}: {done.stderr.strip()[-800:]}")
    return last_json(done.stdout)


def measure_publish(system: str, addr: str, size: int, count: int, topic: str, max_secs: float,
                    nowait: bool = False) -> Dict[str, Any]:
    result = run_child(child_command("publish", system, addr, topic=topic, size=size,
                                     count=count, max_secs=max_secs, nowait=int(nowait)))
    secs = (result["end_ns"] - result["start_ns"]) / 1e9
    return {
        "rate": result["sent"] / secs,
        "sent": result["sent"],
        "cpu_us_per_msg": result["cpu_secs"] * 1e6 / result["sent"],
    }


def measure_receive(system: str, addr: str, size: int, count: int, topic: str, max_secs: float) -> Dict[str, Any]:
    subscriber = subprocess.Popen(
        child_command("subscribe", system, addr, topic=topic, size=size, count=count,
                      max_secs=max_secs + 2 * IDLE_SECS),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert subscriber.stdout is not None
        line = subscriber.stdout.readline()
        if line.strip() != "ready":
            subscriber.kill()
            _, err = subscriber.communicate(timeout=10)
            raise ChildFailed(f"subscriber not ready ({line!r}): {err.strip()[-800:]}")
        published = run_child(child_command("publish", system, addr, topic=topic, size=size,
                                            count=count, max_secs=max_secs, nowait=1))
        out, err = subscriber.communicate(timeout=CHILD_TIMEOUT_SECS)
    except BaseException:
        subscriber.kill()
        subscriber.wait()
        raise
    if subscriber.returncode != 0:
        raise ChildFailed(f"subscriber exit {subscriber.returncode}: {err.strip()[-800:]}")
    received = last_json(out)
    if received["received"] == 0:
        raise ChildFailed("the subscriber received nothing")
    secs = (received["last_ns"] - published["start_ns"]) / 1e9
    return {
        "rate": received["received"] / secs,
        "sent": published["sent"],
        "received": received["received"],
        "ended": received["ended"],
        "cpu_us_per_msg": received["cpu_secs"] * 1e6 / received["received"],
        "publisher_cpu_us_per_msg": published["cpu_secs"] * 1e6 / published["sent"],
    }


def measure_latency(system: str, addr: str, rate: float, secs: float, topic: str) -> Dict[str, Any]:
    return run_child(child_command("latency", system, addr, topic=topic, rate=rate, secs=secs))


@dataclass
class Cell:
    """One workload's rounds for one system."""

    rounds: List[Dict[str, Any]] = field(default_factory=list)

    def median(self, key: str) -> Optional[float]:
        values = sorted(r[key] for r in self.rounds if r.get(key) is not None)
        if not values:
            return None
        n = len(values)
        return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def workloads(args: argparse.Namespace) -> List[Any]:
    """(key, label, measure(system, addr, topic)) for every workload."""
    items: List[Any] = []
    for size in SIZES:
        items.append((f"publish-{size}", f"publish, {size_label(size)}",
                      lambda s, a, t, size=size: measure_publish(s, a, size, args.count, t, args.max_secs)))
    for size in SIZES:
        items.append((f"nowait-{size}", f"publish_nowait (nats-py: publish), {size_label(size)}",
                      lambda s, a, t, size=size: measure_publish(s, a, size, args.count, t, args.max_secs,
                                                                 nowait=True)))
    for size in SIZES:
        items.append((f"receive-{size}", f"receive 1→1, {size_label(size)}",
                      lambda s, a, t, size=size: measure_receive(s, a, size, args.count, t, args.max_secs)))
    items.append(("latency", "latency",
                  lambda s, a, t: measure_latency(s, a, args.latency_rate, args.latency_secs, t)))
    return items


def size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def driver_main(args: argparse.Namespace) -> None:
    addrs = {"blipmq": args.blipmq, "nats": args.nats}
    systems = [s for s in SYSTEMS if addrs[s]]
    load_before = loadavg()
    started = time.monotonic()
    results: Dict[str, Dict[str, Cell]] = {}
    errors: List[str] = []
    for round_no in range(args.rounds):
        for key, label, measure in workloads(args):
            # Take turns, in an order rotated every round.
            order = systems[round_no % len(systems):] + systems[:round_no % len(systems)]
            for system in order:
                if key.startswith("nowait-") and system != "blipmq":
                    continue  # nats-py has one publish; its row is "publish"
                topic = f"bench.{key}.r{round_no}"
                try:
                    figures = measure(system, addrs[system], topic)
                except ChildFailed as e:
                    errors.append(f"round {round_no + 1}, {label}, {system}: {e}")
                    figures = {"error": str(e)}
                results.setdefault(key, {}).setdefault(system, Cell()).rounds.append(figures)
                print(f"round {round_no + 1}/{args.rounds} {label:<22} {system:<7} {brief(figures)}",
                      file=sys.stderr, flush=True)
    report = render(args, systems, results, errors, load_before, loadavg(), time.monotonic() - started)
    print(report)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(report)
    if errors:
        sys.exit(1)


def brief(figures: Dict[str, Any]) -> str:
    if "error" in figures:
        return f"FAILED: {figures['error']}"
    if "rate" in figures:
        text = f"{figures['rate']:,.0f} msgs/s"
        if figures.get("received") is not None and figures["received"] < figures["sent"]:
            text += f" (received {figures['received']:,} of {figures['sent']:,}, {figures['ended']})"
        text += f", CPU {figures['cpu_us_per_msg']:.2f} µs/msg"
        if "publisher_cpu_us_per_msg" in figures:
            text += f" (publisher {figures['publisher_cpu_us_per_msg']:.2f})"
        return text
    return f"p50 {figures['p50']:.0f} µs, p99 {figures['p99']:.0f} µs, {figures['received']:,}/{figures['sent']:,}"


def loadavg() -> str:
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def machine() -> str:
    model = "?"
    memory = "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo", encoding="utf-8") as f:
            kib = int(f.readline().split()[1])
            memory = f"{kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{os.cpu_count()} cores (os.cpu_count), CPU model \"{model}\", {memory} memory, "
            f"{platform.system()} {platform.release()}")


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def fmt_rate(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:,.0f}"


def fmt_us(value: Optional[float]) -> str:
    return "–" if value is None else (f"{value:,.0f}" if value >= 100 else f"{value:.1f}")


def fmt_ratio(a: Optional[float], b: Optional[float]) -> str:
    return "–" if a is None or b is None or b == 0 else f"{a / b:.2f}×"


def render(args: argparse.Namespace, systems: List[str], results: Dict[str, Dict[str, Cell]],
           errors: List[str], load_before: str, load_after: str, secs: float) -> str:
    def cell(key: str, system: str) -> Cell:
        return results.get(key, {}).get(system, Cell())

    lines = [
        "# The Python SDK beside nats-py",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {secs:.0f} s of measuring by:",
        "",
        "```",
        args.command or "python sdk_bench.py run ...",
        "```",
        "",
        f"- **Machine**: {machine()}. Servers, publishers and subscribers share these cores; "
        f"the machine is shared and noisy (load average {load_before} before measuring, {load_after} after).",
        f"- **Clients**: blipmq {package_version('blipmq')} (this tree, release wheel), "
        f"nats-py {package_version('nats-py')}; CPython {platform.python_version()}, asyncio.",
    ]
    for server in args.server_version:
        lines.append(f"- **Server**: {server}")
    lines += [
        f"- **Method**: {args.rounds} rounds, systems take turns in an order rotated each round; "
        "every figure is the median over rounds. Each run is a fresh process with its own connections.",
        f"  - *publish*: one client publishes {args.count:,} messages with one `await publish(...)` each, "
        "then flushes; msgs/s = messages ÷ time from the first publish to the end of the flush. No subscriber. "
        "*publish_nowait*: the same through BlipMQ's `client.publish_nowait(...)` (a plain call that "
        "queues the message or raises `QueueFull`, then one `await publish(...)` waits for room), beside "
        "nats-py's `await publish(...)`, its only way to publish.",
        f"  - *receive 1→1*: a subscriber process and a publisher process (same SDK, its fastest publish: "
        f"`publish_nowait` / nats-py `await publish`); {args.count:,} messages; msgs/s = messages received ÷ "
        "time from the first publish to the last receipt. The subscriber reads every payload: BlipMQ "
        f"through `await sub.next_batch({BATCH})`, nats-py through a message callback (pending limits "
        "lifted so it drops nothing). BlipMQ runs with the `block` overflow policy (lossless). "
        "*CPU µs/msg* (every round table) is the subscriber process's CPU time (all its threads) per "
        "message received: what receiving costs, whatever else the machine is doing.",
        f"  - *latency*: one process, a publisher connection paced at {args.latency_rate:,.0f} msgs/s "
        f"for {args.latency_secs:g} s (bursts every ~1 ms), a subscriber connection; 16 B payloads "
        "carry the send time; publish call to receipt in the subscriber's code.",
        "",
        "## Throughput, msgs/s (higher is better)",
        "",
        "| workload | " + " | ".join(TITLES[s] for s in systems) + " | BlipMQ/nats-py |",
        "|---|" + "---:|" * (len(systems) + 1),
    ]
    for key, label, _ in workloads(args):
        if key == "latency":
            continue
        # nats-py's side of a publish_nowait row is its only publish.
        medians = [cell(key if s == "blipmq" else key.replace("nowait-", "publish-"), s).median("rate")
                   for s in systems]
        ratio = fmt_ratio(medians[0], medians[1]) if len(systems) == 2 else "–"
        lines.append(f"| {label} | " + " | ".join(fmt_rate(m) for m in medians) + f" | {ratio} |")
    lines += [
        "",
        "## Receive cost: CPU µs per message in the subscriber process (lower is better)",
        "",
        "All of its threads; a figure that holds however busy the machine is.",
        "",
        "| workload | " + " | ".join(TITLES[s] for s in systems) + " | nats-py/BlipMQ |",
        "|---|" + "---:|" * (len(systems) + 1),
    ]
    for size in SIZES:
        key = f"receive-{size}"
        medians = [cell(key, s).median("cpu_us_per_msg") for s in systems]
        ratio = fmt_ratio(medians[1], medians[0]) if len(systems) == 2 else "–"
        lines.append(f"| receive 1→1, {size_label(size)} | "
                     + " | ".join("–" if m is None else f"{m:.2f}" for m in medians) + f" | {ratio} |")
    lines += [
        "",
        f"## Latency at {args.latency_rate:,.0f} msgs/s, 16 B (µs, lower is better; "
        "a ratio below 1 means BlipMQ is faster)",
        "",
        "| percentile | " + " | ".join(TITLES[s] for s in systems) + " | BlipMQ/nats-py |",
        "|---|" + "---:|" * (len(systems) + 1),
    ]
    for key, label in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
        medians = [cell("latency", s).median(key) for s in systems]
        ratio = fmt_ratio(medians[0], medians[1]) if len(systems) == 2 else "–"
        lines.append(f"| {label} | " + " | ".join(fmt_us(m) for m in medians) + f" | {ratio} |")
    lines += [
        "",
        "## Every round",
        "",
        "msgs/s (CPU µs per message of the publishing or, for receive, the subscribing process) per round; "
        "latency: p50 / p99 µs.",
        "",
        "| workload | system | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " |",
        "|---|---|" + "---:|" * args.rounds,
    ]
    for key, label, _ in workloads(args):
        for system in systems:
            figures = [round_figure(r) for r in cell(key, system).rounds]
            if figures:
                lines.append(f"| {label} | {TITLES[system]} | " + " | ".join(figures) + " |")
    if errors:
        lines += ["", "## Failed runs", ""] + [f"- {e}" for e in errors]
    return "\n".join(lines) + "\n"


def round_figure(figures: Dict[str, Any]) -> str:
    if "error" in figures:
        return "failed"
    if "rate" in figures:
        text = f"{fmt_rate(figures['rate'])} ({figures['cpu_us_per_msg']:.2f} µs)"
        if figures.get("received") is not None and figures["received"] < figures["sent"]:
            lost = 1 - figures["received"] / figures["sent"]
            text += f" (lost {lost:.1%})"
        return text
    text = f"{fmt_us(figures['p50'])} / {fmt_us(figures['p99'])}"
    if figures["received"] < figures["sent"]:
        text += f" (lost {1 - figures['received'] / figures['sent']:.1%})"
    return text


# ------------------------------------------------------------------ the CLI


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command_name", required=True)

    run = commands.add_parser("run", help="measure every workload on both systems, print the report")
    run.add_argument("--blipmq", default="", help="BlipMQ broker address (host:port)")
    run.add_argument("--nats", default="", help="nats-server address (host:port)")
    run.add_argument("--rounds", type=int, default=3)
    run.add_argument("--count", type=int, default=1_000_000, help="messages per throughput run")
    run.add_argument("--max-secs", type=float, default=30.0, help="cap on publishing per run")
    run.add_argument("--latency-rate", type=float, default=5_000.0, help="msgs/s")
    run.add_argument("--latency-secs", type=float, default=3.0)
    run.add_argument("--out", default="", help="also write the report to this file")
    run.add_argument("--command", default="", help="the command line to show in the report")
    run.add_argument("--server-version", action="append", default=[], help="a line for the report")

    child = commands.add_parser("child", help="one run of one workload (used by `run`)")
    child.add_argument("role", choices=sorted(ROLES))
    child.add_argument("--system", choices=SYSTEMS, required=True)
    child.add_argument("--addr", required=True)
    child.add_argument("--topic", required=True)
    child.add_argument("--size", type=int, default=16)
    child.add_argument("--count", type=int, default=1_000_000)
    child.add_argument("--max-secs", type=float, default=30.0)
    child.add_argument("--rate", type=float, default=5_000.0)
    child.add_argument("--secs", type=float, default=3.0)
    child.add_argument("--nowait", type=int, default=0, help="1: BlipMQ publishes with publish_nowait")

    args = parser.parse_args(argv)
    if args.command_name == "run":
        if not (args.blipmq or args.nats):
            parser.error("give --blipmq and/or --nats")
        if args.rounds < 1 or args.count < 1:
            parser.error("--rounds and --count must be at least 1")
        driver_main(args)
    else:
        child_main(args)


if __name__ == "__main__":
    main()
