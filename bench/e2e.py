"""``python -m bench e2e``: Switchboard end to end over real sockets, next to the bare limits.

An open-loop asyncio driver (uvloop, msgpack, the hand-framed client): it starts Redis and one
``switchboard serve`` (or attaches to one with ``--url``), connects bridges and agent consoles,
and runs these phases, printing progress every second:

1. **open loop** (after a 1 s warm-up) at ``--rate`` events/s for ``--seconds``: ingest →
   offer and accept → ack latency, achieved rate; agents accept after ``--think-ms`` and
   complete after ``--handle-ms`` (each times 0.5-1.5 at random).
2. **freed** (``--sat-seconds``, default ``--seconds``): ``--freed-agents`` backlog agents
   (voice capacity 1) in front of a standing queue of calls; agent freed → next offer
   (``case.complete`` written → next offer received).
3. **saturated** (``--sat-seconds``): a closed loop of ``--window`` (256) events in flight,
   agents accepting and completing at once: sustained routed cases/s (offered, accepted and
   completed) over the whole window, its per-second rates, and server CPU per case.
4. **step** (``--step``): open loop at rising rates; the knee is the highest rate whose
   p99 ingest → offer stays under ``--p99-bound-ms`` (and that is achieved, nothing lost).
Before these: **idle consoles** on a server of their own (a workspace of ``--idle-conns``
agents): that many consoles that only connect, server RSS growth per console; and one event
per queue primes the routing server (a queue's first case defines its agent pool, a one-off
scan of every agent, kept out of the measured phases).

Then the bare limits of the same stack (:func:`bench.bare.measure_bare`) unless ``--no-bare``,
and the report (:mod:`bench.report`): JSON, markdown and plots in
``bench/results/<timestamp>/``; ``--json`` prints the result as one JSON object, last. Exit
status 1 if any case was lost or duplicated. The load is :mod:`bench.e2e_load`; how a phase is
counted and the progress line, :mod:`bench.e2e_run`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import uvloop

from bench import report
from bench.bare_os import quiet_gc, raise_nofile_limit, set_affinity
from bench.core_harness import latency_ms
from bench.e2e_load import Load, open_idle
from bench.e2e_probe import Probe
from bench.e2e_run import DRAIN_S, Run
from bench.e2e_supervisors import Supervisors
from bench.server_proc import (
    BRIDGE_KEY,
    SECRET,
    SUPERVISORS,
    Cores,
    Server,
    attach,
    bench_server,
)  # fmt: skip

__all__ = ["main", "run"]

log = logging.getLogger("bench.e2e")
STEP_RATES = (100, 250, 500, 750, 1000, 1250, 1500, 2000, 2500, 3000, 4000)


def _affinities(probe: Probe) -> dict[str, list[int] | None]:
    """Where the parties actually run (checked, not assumed)."""

    def of(proc: Any) -> list[int] | None:
        try:
            return sorted(proc.cpu_affinity()) if proc is not None else None
        except psutil.Error:  # gone, or not ours to ask
            return None

    return {
        "server": of(probe.server),
        "redis": of(probe.redis),
        "load_generator": sorted(os.sched_getaffinity(0)),
    }


async def _phases(run: Run) -> dict[str, Any]:
    args, load = run.args, run.load
    phases: dict[str, Any] = {}
    # the latency phases start on a freshly rewritten AOF; the saturated one takes the rewrites
    # its load brings, whose work is part of each case's cost (bench/README.md)
    await run.fresh_aof()
    await run.open_loop("warmup", args.rate, min(1.0, args.seconds))
    phases["main"] = await run.open_loop("main", args.rate, args.seconds)
    short = args.sat_seconds
    depth = max(2 * args.freed_agents, 20)
    await run.fresh_aof()
    phases["freed"] = await run.phase(
        "freed", short, load.count(short), load.closed_loop(depth, backlog=True)
    )
    think, handle = load.think_s, load.handle_s
    load.think_s = load.handle_s = 0.0
    try:
        phases["saturated"] = await run.phase(
            "saturated", short, load.count(short), load.closed_loop(args.window)
        )
    finally:
        load.think_s, load.handle_s = think, handle
    steps: list[dict[str, Any]] = []
    if args.step:
        for rate in args.step_rates:
            await run.fresh_aof()
            step = await run.open_loop(f"step-{rate}", rate, args.step_seconds)
            steps.append(step)
            p99 = step["ingest_offer_p99_ms"] or math.inf
            if p99 > 20 * args.p99_bound_ms or step["offers_per_s"] < 0.9 * rate:
                break  # one step past the knee shows it
    return {"phases": phases, "steps": steps}


async def _idle(server: Server, conns: int, budget_s: float) -> dict[str, Any]:
    """Server RSS growth per idle console, measured on the second half of the consoles.

    The first half soaks up what the process had already allocated and freed (applying a
    workspace of thousands of agents leaves freed heap behind, which new consoles reuse);
    the second half's growth is what each further console costs. Both are reported.
    """
    probe = Probe(server.pid, server.redis_pid)
    warm, _ = await open_idle(server, [f"i{i}" for i in range(32)])
    for c in warm:
        c.close()
    await asyncio.sleep(1.0)
    half = conns // 2
    print(f"e2e idle: opening {conns} consoles", file=sys.stderr, flush=True)
    rss = [probe.rss_kib()]
    clients: list[Any] = []
    opened_ok: list[int] = []
    opened = 0.0
    for part in (range(half), range(half, conns)):
        t0 = time.perf_counter()
        more, ok = await open_idle(server, [f"i{i}" for i in part], within=budget_s / 2)
        opened += time.perf_counter() - t0
        clients += more
        opened_ok.append(ok)
        await asyncio.sleep(1.0)
        rss.append(probe.rss_kib())
    for c in clients:
        c.close()
    await _until_disconnected(server, 0, 60.0)
    ok = sum(opened_ok)
    mib = " → ".join(f"{r / 1024:.0f}" for r in rss)
    print(f"e2e idle: {ok} consoles in {opened:.1f} s, RSS {mib} MiB", file=sys.stderr, flush=True)
    # Fewer consoles than this in a half: heap noise (a few MiB) swamps their memory.
    measured = bool(rss[0]) and min(opened_ok) >= min(500, half)
    return {
        "idle_requested": conns,
        "idle_consoles": ok,
        "idle_failed": conns - ok,
        "idle_connect_per_s": ok / opened if opened else None,
        "idle_rss_kib": rss,
        "rss_kib_per_idle_console": (rss[2] - rss[1]) / opened_ok[1] if measured else None,
        "rss_kib_per_idle_console_all": (rss[2] - rss[0]) / max(ok, 1) if rss[0] else None,
    }


async def _metrics(server: Server) -> str | None:
    """The server's ``/metrics`` page; None if it cannot be read."""
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            return (await http.get(f"{server.url}/metrics")).text
    except httpx.HTTPError:
        return None


async def _agent_connections(server: Server) -> float | None:
    """The server's own count of open consoles (``/metrics``); None if it cannot be read."""
    text = await _metrics(server)
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith('switchboard_connections{endpoint="agent"}'):
            return float(line.rpartition(" ")[2])
    return None


async def _pauses(server: Server) -> dict[str, dict[str, float]]:
    """The server's event-loop lag and GC pause histograms (``/metrics``): upper bound as
    written -> cumulative count, plus ``sum``; empty if they cannot be read."""
    text = await _metrics(server)
    if text is None:
        return {}
    out: dict[str, dict[str, float]] = {}
    for name in ("switchboard_event_loop_lag_seconds", "switchboard_gc_pause_seconds"):
        h = out[name] = {}
        for line in text.splitlines():
            if line.startswith(f'{name}_bucket{{le="'):
                h[line.split('"')[1]] = float(line.rpartition(" ")[2])
            elif line.startswith(f"{name}_sum "):
                h["sum"] = float(line.rpartition(" ")[2])
    return out


def _pauses_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the phases added: loop lags over 10 and 50 ms (a timer every 50 ms), the
    largest bucket reached; GC pauses, their total and largest bucket."""
    out: dict[str, Any] = {}
    for name, short in (("switchboard_event_loop_lag_seconds", "loop_lag"),
                        ("switchboard_gc_pause_seconds", "gc_pause")):  # fmt: skip
        a, b = after.get(name) or {}, before.get(name) or {}
        if not a:
            continue
        d = {k: v - b.get(k, 0.0) for k, v in a.items()}
        bounds = [k for k in d if k != "sum"]
        total = d.get("+Inf", 0.0)
        prevs = [0.0, *[d[x] for x in bounds[:-1]]]
        reached = [k for k, prev in zip(bounds, prevs, strict=True) if d[k] > prev]
        out[f"{short}_count"] = int(total)
        out[f"{short}_sum_s"] = round(d.get("sum", 0.0), 3)
        out[f"{short}_max_le_s"] = reached[-1] if reached else None
        if short == "loop_lag":
            out["loop_lag_over_10ms"] = int(total - d.get("0.01", 0.0))
            out["loop_lag_over_50ms"] = int(total - d.get("0.05", 0.0))
    return out


async def _until_disconnected(server: Server, expected: int, seconds: float) -> None:
    """Wait until the server has handled every console's disconnect (its presence script),
    so that work does not spill into the next phase."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        n = await _agent_connections(server)
        if n is None or n <= expected:
            return
        await asyncio.sleep(0.2)


async def _drive(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    load = Load(server, think_s=args.think_ms / 1000, handle_s=args.handle_ms / 1000)
    load.backlog_handle_s = args.freed_handle_ms / 1000
    run = Run(server, load, args)
    out: dict[str, Any] = {}
    try:
        print(f"e2e: connecting {args.agents} + {args.freed_agents} agents and {args.bridges} "
              "bridges", file=sys.stderr, flush=True)  # fmt: skip
        t0 = time.perf_counter()
        await load.connect_agents([f"r{i}" for i in range(args.agents)], backlog=False)
        await load.connect_agents([f"b{i}" for i in range(args.freed_agents)], backlog=True)
        await load.connect_bridges(args.bridges)
        connect_s = time.perf_counter() - t0
        agents = load.connected_agents()
        out["affinity"] = _affinities(run.probe)
        await load.prime(DRAIN_S)
        watching = Supervisors(server, args.supervisors)
        await watching.start()
        before = await _pauses(server)
        try:
            with quiet_gc():
                async with run.monitor():
                    out |= await _phases(run)
        finally:
            await watching.stop()
        out["server_pauses"] = _pauses_between(before, await _pauses(server))
        refreshes, failed = watching.take()
        out["supervisors"] = {
            "pages": args.supervisors, "refreshes": len(refreshes), "failed": failed,
            **{f"refresh_{k}": v for k, v in latency_ms(refreshes).items()},
        }  # fmt: skip
        drained = await load.drain(DRAIN_S)
        out |= {
            "agents": agents, "agents_connect_s": round(connect_s, 2),
            "hello_kib": round(load.hello_bytes / 1024, 1),
            "lost": load.lost(), "duplicated": load.duplicated, "reoffered": load.reoffered,
            "rescinded": load.rescinded, "delivered": load.delivered,
            "unacked": load.in_flight()["unacked"],
            "not_created": dict(load.not_created), "errors": dict(load.errors),
            "drained": drained, "cases_acked": len(load.acked),
        }  # fmt: skip
        out["timeline"] = run.timeline
        return out
    finally:
        load.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole e2e bench (servers, phases, bare limits); return the result.

    Idle consoles are measured on a server of their own, started fresh with a workspace of
    that many agents (their consoles need declared agents); the routing phases run on another
    with just the routing and backlog agents. Attached (``--url``), both use that server.
    """
    raise_nofile_limit()
    affinity = os.sched_getaffinity(0)
    cores = Cores(None, None) if args.no_pin else Cores.plan()
    try:
        if cores.client is not None:
            set_affinity(0, {cores.client})
        if args.url:
            server = attach(args.url, secret=args.secret, bridge_key=args.bridge_key)
            args._redis_url = args.redis_url
            idle = {}
            if args.idle_conns:
                idle = await _idle(server, args.idle_conns, args.idle_budget_s)
            e2e = await _drive(server, args) | idle | {"attached": args.url}
        else:
            idle = {}
            if args.idle_conns:
                print(f"e2e: a server with {args.idle_conns} agents for the idle consoles",
                      file=sys.stderr, flush=True)  # fmt: skip
                idle_workspace = max(args.idle_conns, 32)
                async with _started(args, cores, 0, 0, idle_workspace) as started:
                    server, startup = started
                    idle = await _idle(server, args.idle_conns, args.idle_budget_s)
                    idle["idle_server_startup_s"] = startup
            print("e2e: starting Redis and the server", file=sys.stderr, flush=True)
            async with _started(args, cores, args.agents, args.freed_agents, 0) as started:
                server, startup = started
                args._redis_url = server.redis_url
                e2e = await _drive(server, args) | idle
                e2e["server_startup_s"] = startup
    finally:
        set_affinity(0, affinity)
    e2e["pinning"] = cores.describe()
    if not args.no_bare:
        from bench.bare import measure_bare

        print(f"e2e: bare limits, {args.bare_seconds:g} s per measurement", file=sys.stderr)
        with quiet_gc():
            e2e["bare"] = await measure_bare(
                args.bare_seconds,
                idle_conns=args.idle_conns or 2000,
                pipeline_seconds=args.sat_seconds,
                pinned=not args.no_pin,
            )
    return report.summarize(e2e, args)


@contextlib.asynccontextmanager
async def _started(
    args: argparse.Namespace, cores: Cores, agents: int, backlog: int, idle: int
) -> AsyncIterator[tuple[Server, float]]:
    """A fresh Redis + server with this workspace; (server, seconds it took to be ready).
    The server's log tail is printed if the run fails."""
    t0 = time.perf_counter()
    async with bench_server(
        agents=agents, backlog_agents=backlog, idle_agents=idle, redis_url=args.redis_url,
        cores=cores,
    ) as server:  # fmt: skip
        try:
            yield server, round(time.perf_counter() - t0, 2)
        except BaseException:
            print(server.log_tail(), file=sys.stderr)
            raise


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench e2e", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    a = p.add_argument
    a("--seconds", type=float, default=10.0, help="open-loop phase (default 10)")
    a("--rate", type=float, default=1000.0, help="open-loop events/s (default 1000)")
    a("--agents", type=int, default=1000, help="routing agents connected (default 1000)")
    a("--bridges", type=int, default=4, help="bridge connections (default 4)")
    a("--think-ms", type=float, default=20.0, help="offer → accept (default 20)")
    a("--handle-ms", type=float, default=200.0, help="accept → complete (default 200)")
    a("--freed-agents", type=int, help="backlog agents (default: as many as --agents, ≤ 50)")
    a("--freed-handle-ms", type=float, default=100.0, help="their handle time (default 100)")
    a("--window", type=int, default=256, help="events in flight when saturated (default 256)")
    a("--supervisors", type=int, default=0, choices=range(SUPERVISORS + 1), metavar="N",
      help=f"supervisor pages refreshing each second through every phase, as web/supervisor.js "
           f"does (0-{SUPERVISORS}; default 0)")  # fmt: skip
    a("--idle-conns", type=int, help="idle consoles (default 10 per agent, 200-2000; 0 = skip)")
    a("--idle-budget-s", type=float, default=120.0, help="give up opening consoles after this")
    a("--step", action="store_true", help="step the open-loop rate up to find the knee")
    a("--step-rates", type=lambda s: [float(x) for x in s.split(",")], default=list(STEP_RATES))
    a("--step-seconds", type=float, help="per step (default: half of --seconds, at least 2)")
    a("--p99-bound-ms", type=float, default=10.0, help="the knee's p99 bound (default 10)")
    a("--bare-seconds", type=float, help="per bare measurement (default --seconds/4, 0.5-5)")
    a(
        "--sat-seconds",
        type=float,
        help="the freed and saturated phases, and the bare pipeline's saturated run (default "
        "--seconds, at least 2)",
    )
    a("--no-bare", action="store_true", help="skip the bare limits (no ratios)")
    a(
        "--no-pin",
        action="store_true",
        help="leave every process to the scheduler (the bare limits too) instead of pinning",
    )
    a("--url", help="attach to a server started with python -m bench.server_proc")
    a("--secret", default=SECRET, help="its SWITCHBOARD_SECRET (to mint console tokens)")
    a("--bridge-key", default=BRIDGE_KEY, help="its bridge key")
    a("--redis-url", help="Redis for the server we start (default: one of our own)")
    a("--profile", default="", help="py-spy the server in these phases, e.g. main,saturated")
    a("--results", type=Path, default=Path("bench/results"), help="where runs are written")
    a("--publish", type=Path, help="also copy the plots and summary here (e.g. docs/bench)")
    a("--json", action="store_true", help="print the result as one JSON object, last")
    return p


def parse(argv: list[str] | None) -> argparse.Namespace:
    args = parser().parse_args(argv)
    if args.idle_conns is None:
        args.idle_conns = min(2000, max(200, 10 * args.agents))
    if args.freed_agents is None:
        args.freed_agents = min(50, args.agents)
    if args.step_seconds is None:
        args.step_seconds = max(2.0, args.seconds / 2)
    if args.sat_seconds is None:
        args.sat_seconds = max(2.0, args.seconds)
    if args.bare_seconds is None:
        args.bare_seconds = min(5.0, max(0.5, args.seconds / 4))
    args._out_dir = args.results / time.strftime("%Y%m%d-%H%M%S")
    args._out_dir.mkdir(parents=True, exist_ok=True)
    return args


async def _run_cli(args: argparse.Namespace) -> dict[str, Any]:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run(args)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S")  # fmt: skip
    try:
        result = uvloop.run(_run_cli(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("e2e: interrupted; everything started was stopped", file=sys.stderr)
        return 130
    report.write(result, args._out_dir, publish=args.publish)
    print(report.console_table(result), file=sys.stderr)
    print(f"e2e: results in {args._out_dir}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, default=str))
    return 1 if result["lost"] or result["duplicated"] else 0


if __name__ == "__main__":
    sys.exit(main())
