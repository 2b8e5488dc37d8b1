"""Writes bench/results/sdk-idiomatic.md from the runs of scripts/bench-idiomatic.sh.

    python3 bench/idiomatic/report.py --runs RUNS.jsonl --meta META.json --out FILE.md

RUNS.jsonl: one JSON object per run, as the bench programs print them
(bindings/*/bench/idiomatic.*), plus "round" (1-based) and "order" (0 or
1: its place in the round). META.json: what the script knows (command,
versions, load averages, times, what was skipped). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from collections import defaultdict

SDKS = {
    "python": ("Python", "blipmq (Python SDK)", "nats-py"),
    "node": ("Node", "blipmq (Node SDK)", "nats (npm)"),
    "kotlin": ("Kotlin", "blipmq (Kotlin SDK)", "jnats"),
    "web": ("Browser (headless Chromium)", "@blipmq/web (wasm SDK)", "nats.ws"),
}

HOW = {
    "python": (
        "`await client.publish(topic, payload)` in a loop; `async for message in subscription` "
        "on a second connection; one asyncio loop in one process",
        "`await nc.publish(subject, payload)` in a loop; `async for msg in sub.messages` on a "
        "second connection (default pending limits: 512k messages / 128 MiB)",
    ),
    "node": (
        "`await client.publish(topic, payload)` in a loop; `for await (const m of sub)` on a "
        "second connection; one process",
        "`nc.publish(subject, payload)` in a loop (returns nothing); `for await (const m of sub)` "
        "on a second connection",
    ),
    "kotlin": (
        "`client.publish(topic, payload)` (suspend) in a loop in `runBlocking`; "
        "`subscription.take(count).collect { }` on a second client, on `Dispatchers.Default`; "
        "one JVM",
        "`nc.publish(subject, payload)` in a loop; `sub.nextMessage(Duration)` in a loop on a "
        "thread, on a second connection (the synchronous subscription, the first way jnats's "
        "README shows; default pending limits: 512k messages / 64 MiB)",
    ),
    "web": (
        "in one page: `await client.publish(topic, payload)` in a loop; "
        "`for await (const msg of sub)` on a second client (WebSocket)",
        "in one page: `nc.publish(subject, payload)` in a loop; `for await (const m of sub)` "
        "on a second connection (WebSocket)",
    ),
}


# What the SDK's own README says about a per-message cost that the
# measurements above show (quoted as context, beside the measured figure).
README_CONTEXT = {
    "kotlin": ("bindings/uniffi/README.md says uniffi's Kotlin bindings call through JNA, which costs "
               "tens of microseconds per call on this machine, and a publish is one such call"),
    "web": ("bindings/wasm/README.md says where a publish's time goes in the page: the JavaScript "
            "layer and the call into wasm (frames travel packed, many to a WebSocket message)"),
}
DEFAULT_QUEUE_BYTES = 64 * 1024 * 1024


def fmt(n: float) -> str:
    return f"{round(n):,}"


def size_name(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def machine() -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f"{round(kib / 1024 / 1024)} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{os.cpu_count()} cores, CPU model \"{model}\", {mem} memory, "
            f"{platform.system()} {platform.release()}")


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", required=True)
    parser.add_argument("--meta", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.meta) as f:
        meta = json.load(f)
    runs = []
    with open(args.runs) as f:
        for line in f:
            line = line.strip()
            if line:
                runs.append(json.loads(line))

    by = defaultdict(list)  # (sdk, size, system) -> runs, in round order
    for run in sorted(runs, key=lambda r: r["round"]):
        by[(run["sdk"], run.get("size"), run["system"])].append(run)
    clients = {}
    runtimes = {}
    for run in runs:
        if "client" in run:
            client = run["client"]
            if run["sdk"] in ("python", "node") and run["system"] == "blipmq":
                client += " (release build of this tree)"
            clients[(run["sdk"], run["system"])] = client
        if "runtime" in run:
            runtimes[run["sdk"]] = run["runtime"]

    out = []
    w = out.append
    w("# Each SDK the way its README shows, beside its NATS peer, both servers on defaults")
    w("")
    w(f"Generated {meta['generated']} in {meta['seconds']} s of measuring by:")
    w("")
    w("```")
    w(meta["command"])
    w("```")
    w("")
    w(f"- **Machine**: {machine()}. Servers, publishers and subscribers share these cores; "
      f"the machine is shared and noisy (load average {meta['load_before']} before measuring, "
      f"{meta['load_after']} after).")
    w(f"- **Server**: {meta['blipmq_version']}: no configuration at all (defaults: "
      "`overflow_policy = drop_oldest`, subscriber queues of 1,048,576 messages / 64 MiB); "
      "the script sets only the listen address (127.0.0.1, a free port) and, for the browser, "
      "turns on the WebSocket listener (off by default).")
    w(f"- **Server**: {meta['nats_version']}: `nats-server -a 127.0.0.1 -p PORT`, no configuration "
      "(its slow-consumer handling as shipped: `max_pending` and `write_deadline` at their "
      "defaults). For nats.ws only, a configuration file with just `listen: 127.0.0.1:PORT` and "
      "`websocket { host: 127.0.0.1, port: N, no_tls: true }`: the default apart from enabling "
      "WebSocket, which nats.ws needs.")
    clients_line = "; ".join(
        f"{SDKS[sdk][0]}: {clients.get((sdk, 'blipmq'), '?')} beside {clients.get((sdk, 'nats'), '?')}"
        + (f" ({runtimes[sdk]})" if sdk in runtimes else "")
        for sdk in SDKS if any(k[0] == sdk for k in by))
    w(f"- **Clients**: {clients_line}.")
    w(f"- **Method**: a burst of {meta['count']:,} messages per run, payloads of "
      f"{', '.join(size_name(s) for s in meta['sizes'])}, QoS 0, one topic. Publisher and "
      "subscriber are two connections of one process (one page for the browser); the subscriber "
      "is subscribed (BlipMQ: its subscribe resumes once the broker confirms; NATS: a `flush()` "
      "round trip after the SUB) and its receive loop started before the first publish; the "
      "publisher publishes as fast as the idiomatic loop goes, then flushes. "
      "**Delivered/s** = messages received ÷ time from the first publish to the last receipt; "
      f"a run that is still missing messages ends {meta['quiet']} s after publishing ended "
      "without a new receipt. **Lost** = published − received. Nobody's limits are lifted. "
      f"{meta['rounds']} round{'s' if meta['rounds'] != 1 else ''}; in each the two systems take turns, BlipMQ first in odd rounds, "
      "the peer first in even ones; every figure is the median over rounds. Each run is a fresh "
      "process (a fresh page) with its own connections; the servers are started fresh for each "
      "SDK. *CPU µs/msg* is the client process's CPU time (all threads, publisher and subscriber "
      "together, not the server's) from the first publish to the end, per message received "
      "(not measured in the browser). *Publish loop* = messages ÷ time the publish loop and "
      "flush took.")
    w("- **Target** (README, issue \"no silent drops\"): each SDK's idiomatic path delivers ≥ 2× "
      "its peer's rate with 0 loss.")
    if meta.get("skipped"):
        w(f"- **Not measured**: {meta['skipped']}")
    w("")

    verdicts = []
    summary = []
    sections_start = len(out)
    for sdk, (title, ours, peer) in SDKS.items():
        sizes = sorted({k[1] for k in by if k[0] == sdk})
        if not sizes:
            continue
        w(f"## {title}: {ours} beside {peer}")
        w("")
        w(f"- BlipMQ side: {HOW[sdk][0]}.")
        w(f"- Peer side: {HOW[sdk][1]}.")
        w("")
        w(f"| payload | {ours} delivered/s | {peer} delivered/s | BlipMQ/peer | BlipMQ lost "
          f"| {peer} lost | BlipMQ publish loop/s | {peer} publish loop/s | BlipMQ CPU µs/msg "
          f"| {peer} CPU µs/msg | target met |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        notes = []
        sdk_ok = True
        for size in sizes:
            a = [r for r in by[(sdk, size, "blipmq")] if "error" not in r]
            b = [r for r in by[(sdk, size, "nats")] if "error" not in r]
            ra, rb = med([r["rate"] for r in a]), med([r["rate"] for r in b])
            la = [r["lost"] for r in a]
            lb = [r["lost"] for r in b]
            pa = med([r["published"] / r["publish_seconds"] for r in a if r["publish_seconds"]])
            pb = med([r["published"] / r["publish_seconds"] for r in b if r["publish_seconds"]])
            ca, cb = med([r.get("cpu_us_per_msg") for r in a]), med([r.get("cpu_us_per_msg") for r in b])
            ratio = ra / rb if ra and rb else None
            ok = bool(a) and ratio is not None and ratio >= 2 and all(x == 0 for x in la)
            sdk_ok = sdk_ok and ok
            lost = lambda xs: (f"{fmt(med(xs))}" + (f" (max {fmt(max(xs))})" if max(xs) != med(xs) else "")) if xs else "—"
            summary.append(
                f"| {title} | {size_name(size)} | {fmt(ra) if ra else '—'} | {peer}: {fmt(rb) if rb else '—'} | "
                f"{f'{ratio:.2f}×' if ratio else '—'} | {lost(la)} | {lost(lb)} | {'yes' if ok else '**no**'} |")
            w(f"| {size_name(size)} | {fmt(ra) if ra else '—'} | {fmt(rb) if rb else '—'} | "
              f"{f'{ratio:.2f}×' if ratio else '—'} | {lost(la)} | {lost(lb)} | "
              f"{fmt(pa) if pa else '—'} | {fmt(pb) if pb else '—'} | "
              f"{f'{ca:.2f}' if ca is not None else '—'} | {f'{cb:.2f}' if cb is not None else '—'} | "
              f"{'yes' if ok else 'no'} |")
            errors = [r for r in by[(sdk, size, "blipmq")] + by[(sdk, size, "nats")] if "error" in r]
            for r in errors:
                notes.append(f"round {r['round']}, {size_name(size)}, {r['system']}: failed: {r['error']}")
            # What the figures say about each side (measured, not guessed).
            if a and b:
                ta = med([r["seconds"] for r in a])
                tpa = med([r["publish_seconds"] for r in a])
                tb = med([r["seconds"] for r in b])
                tpb = med([r["publish_seconds"] for r in b])
                rep_a = med([r.get("reported_drops", 0) for r in a])
                rep_b = med([r.get("reported_drops", 0) for r in b])
                sha = med([r["publish_seconds"] / r["seconds"] for r in a if r["seconds"]])
                shb = med([r["publish_seconds"] / r["seconds"] for r in b if r["seconds"]])
                s = (f"{size_name(size)}: BlipMQ's publish loop and flush took {tpa:.2f} s of its "
                     f"{ta:.2f} s run ({100 * sha:.0f}%), {peer}'s {tpb:.2f} s of {tb:.2f} s "
                     f"({100 * shb:.0f}%) (medians)")
                wa = med([r.get("received_at_publish_end") for r in a])
                wb = med([r.get("received_at_publish_end") for r in b])
                if wa is not None and wb is not None:
                    s += (f"; received by the time publishing ended: BlipMQ {fmt(wa)}, "
                          f"{peer} {fmt(wb)} of {meta['count']:,}")
                if med(lb):
                    s += (f"; {peer} lost a median {fmt(med(lb))} of {meta['count']:,} "
                          f"({100 * med(lb) / meta['count']:.1f}%), its client reported {fmt(rep_b)} "
                          "of them to the code (slow-consumer events or dropped counts)")
                if med(la):
                    s += (f"; BlipMQ lost a median {fmt(med(la))}, and its subscription reported "
                          f"{fmt(rep_a)} as dropped by the broker")
                notes.append(s + ".")
                if not ok:
                    why = []
                    if ratio is not None and ratio < 2:
                        if sha >= 0.9:
                            why.append(
                                f"BlipMQ's rate is bound by its publish loop: {fmt(pa)} publishes/s, "
                                f"{1e6 / pa:.2f} µs per idiomatic `publish` call (SDK layer and client), "
                                f"and the subscriber kept up with it")
                            if sdk in README_CONTEXT:
                                why.append(README_CONTEXT[sdk])
                        else:
                            why.append(
                                f"BlipMQ's rate is bound by receiving: the publish loop ended after "
                                f"{tpa:.2f} s, the last message arrived {ta - tpa:.2f} s later")
                        if ca is not None and cb is not None:
                            why.append(f"the BlipMQ client process spent {ca:.2f} µs of CPU per message "
                                       f"against {peer}'s {cb:.2f} µs")
                        if med(lb):
                            why.append(f"{peer}'s rate counts only what it delivered: it lost "
                                       f"{fmt(med(lb))} messages")
                    if any(la):
                        told = sum(r.get("reported_drops", 0) for r in a)
                        burst = meta["count"] * size / 1024 / 1024
                        text = (f"BlipMQ lost messages in {sum(1 for x in la if x)} of {len(la)} rounds "
                                f"({fmt(max(la))} at most); the broker reported {fmt(told)} of the "
                                f"{fmt(sum(la))} lost as dropped to the subscription, in line with the "
                                f"messages ({'every one' if told == sum(la) else 'not all'} of them). "
                                f"The burst is {burst:,.0f} MiB of payload against the default subscriber "
                                f"queue bound of {DEFAULT_QUEUE_BYTES >> 20} MiB (`drop_oldest`)")
                        if wa is not None:
                            text += (f", and by the end of the publish loop and flush the subscriber had taken only "
                                     f"{fmt(wa)} messages and {fmt(med([r['received'] - r.get('received_at_publish_end', 0) for r in a]))} "
                                     f"arrived after it (medians): publisher and subscriber share one "
                                     f"{'event loop' if sdk in ('python', 'node', 'web') else 'process'}, "
                                     f"and the publish loop ran ahead of the receive loop")
                        why.append(text)
                    if why:
                        notes.append(f"{size_name(size)}, why the target is missed: " + "; ".join(why) + ".")
        w("")
        if notes:
            w("Measured, per payload:")
            w("")
            for n in notes:
                w(f"- {n}")
            w("")
        analysis = meta.get("analysis", {}).get(sdk)
        verdict = "**holds**" if sdk_ok else "**does not hold**"
        w(f"Target (≥ 2× {peer}'s delivered rate with 0 loss): {verdict}" +
          (" at every payload measured." if sdk_ok else " (see the table and the lines above).") +
          (f" {analysis}" if analysis else ""))
        w("")
        verdicts.append((title, sdk_ok))

    out[sections_start:sections_start] = [
        "## Summary: delivered msgs/s (medians) and loss",
        "",
        "| SDK | payload | BlipMQ | peer | BlipMQ/peer | BlipMQ lost | peer lost | target met (≥ 2×, 0 lost) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
        *summary,
        "",
        "Lost: median over rounds (max when it differs). Per SDK below: how each side is written, "
        "what was measured, and why the target is missed where it is.",
        "",
    ]
    w("## Every round")
    w("")
    w("Delivered msgs/s (lost; CPU µs/msg where measured) per round.")
    w("")
    rounds = meta["rounds"]
    w("| SDK | payload | client | " + " | ".join(f"round {i}" for i in range(1, rounds + 1)) + " |")
    w("|---|---|---|" + "---:|" * rounds)
    for sdk, (title, ours, peer) in SDKS.items():
        for size in sorted({k[1] for k in by if k[0] == sdk}):
            for system, name in (("blipmq", ours), ("nats", peer)):
                cells = []
                for i in range(1, rounds + 1):
                    rs = [r for r in by[(sdk, size, system)] if r["round"] == i]
                    if not rs:
                        cells.append("—")
                    elif "error" in rs[0]:
                        cells.append("failed")
                    else:
                        r = rs[0]
                        cpu = f"; {r['cpu_us_per_msg']:.2f} µs" if r.get("cpu_us_per_msg") is not None else ""
                        cells.append(f"{fmt(r['rate'])} ({fmt(r['lost'])} lost{cpu})")
                w(f"| {title} | {size_name(size)} | {name} | " + " | ".join(cells) + " |")
    w("")
    with open(args.out, "w") as f:
        f.write("\n".join(out))
    print("\n".join(out))


if __name__ == "__main__":
    main()
