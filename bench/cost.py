"""``python -m bench cost``: Redis's instructions per routed case, counted, not timed.

The wall-clock benches compare ratios because this machine is shared and its speed drifts by
tens of per cent within an hour; a change to the Lua scripts worth 3 % cannot be seen that way.
This one runs the core bench's workload (:mod:`bench.workload`, every case ingested, accepted
and completed through a :class:`~router.switch.Switch`) against a private ``redis-server``
under valgrind's callgrind, counts only while ``--cases`` cases are routed, and reports
instructions per case: the same code gives the same count within about 1 % (what varies is how
many transitions share an ``EVALSHA``, which depends on timing).

Needs ``valgrind`` (Debian: ``apt-get install valgrind``). Redis runs about 50 times slower
under it, so a run takes a minute or two. Compare two checkouts by running it in each::

    python -m bench cost --cases 1000 --agents 1000
    callgrind_annotate --inclusive=yes <the file it names>   # where the instructions go
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

from bench.core_harness import Bench, run_phase, setup
from bench.workload import workspace
from router.embedded import EmbeddedRedis
from router.store import Store, connect

__all__ = ["main", "measure_cost"]

log = logging.getLogger("bench.cost")

PRODUCERS = 16


class _CallgrindRedis(EmbeddedRedis):
    """The embedded Redis, its configuration unchanged, started under callgrind with counting
    off; ``count(True/False)`` turns counting on and off, ``dump()`` writes the counts."""

    def __init__(self, data_dir: Path, out: Path, redis_args: list[str]) -> None:
        super().__init__(data_dir, restart=False, start_timeout=120, extra_args=redis_args)
        self.out = out

    async def _spawn(self) -> None:
        self._argv = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=yes",
            f"--callgrind-out-file={self.out}", *self._argv,
        ]  # fmt: skip
        await super()._spawn()

    def control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.pid)], check=True, capture_output=True)


async def _until(done: Callable[[], bool], within: float) -> None:
    """Poll ``done`` every 50 ms until it holds; ``TimeoutError`` after ``within`` seconds."""
    async with asyncio.timeout(within):
        while not done():  # noqa: ASYNC110 -- polls counters that many callbacks change
            await asyncio.sleep(0.05)


def _largest(out: Path) -> tuple[int, Path]:
    """The largest event total among callgrind's output files (the server's counted part, not
    a child's or the uncounted start's), and that file."""
    best, where = 0, out
    for f in out.parent.glob(out.name + "*"):
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")) and int(line.split()[1]) > best:
                best, where = int(line.split()[1]), f
    return best, where


async def measure_cost(
    cases: int, agents: int, keep: Path | None, redis_args: list[str]
) -> dict[str, Any]:
    """Route ``cases`` cases with counting on; return instructions per case and friends."""
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        out = Path(tmp) / "callgrind.out"
        server = _CallgrindRedis(Path(tmp) / "redis", out, redis_args)
        await server.start()
        try:
            store = Store(connect(server.url))
            await store.load()
            decl = workspace(agents)
            bench = Bench(store, [a["id"] for a in decl["agents"]])
            await setup(bench, decl)
            await run_phase(bench, "warm", [bench.closed_loop] * PRODUCERS, 1.0)
            await bench.store.redis.config_resetstat()
            calls0, batches0, start = store.calls, store.batches, bench.tally.ingested
            server.control("--instr=on")
            bench.phase, bench.producing = "counted", True
            tasks = [asyncio.create_task(bench.closed_loop()) for _ in range(PRODUCERS)]
            await _until(lambda: bench.tally.ingested - start >= cases, 600)
            bench.producing = False
            await asyncio.gather(*tasks)
            await _until(lambda: bench.agents.accepted == bench.agents.completed, 60)
            server.control("--instr=off")
            server.control("--dump")
            done = bench.tally.ingested - start
            stats = await bench.store.redis.info("commandstats")
            by_command = {
                k.removeprefix("cmdstat_"): v["calls"]
                for k, v in stats.items()
                if k not in ("cmdstat_evalsha", "cmdstat_config", "cmdstat_info")
            }
            commands = sum(by_command.values())
            transitions, batches = store.calls - calls0, store.batches - batches0
            await bench.agents.stop()
            await store.close()
        finally:
            await server.stop()
        total, counted = _largest(out)
        if keep is not None:
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(counted, keep)
    return {
        "cases": done,
        "instructions_per_case": round(total / max(1, done)),
        "redis_commands_per_case": round(commands / max(1, done), 1),
        "transitions_per_evalsha": round(transitions / max(1, batches), 1),
        "commands_per_case": {
            k: round(v / max(1, done), 2)
            for k, v in sorted(by_command.items(), key=lambda kv: -kv[1])
        },
        "agents": agents,
        "redis_args": redis_args,
        "callgrind_file": str(keep) if keep else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench cost", description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=1000, help="cases counted (default 1000)")
    p.add_argument("--agents", type=int, default=1000, help="agents in the workspace (1000)")
    p.add_argument("--keep", default="bench/results/callgrind.out",
                   help="copy callgrind's file here, for callgrind_annotate ('' = no)")  # fmt: skip
    p.add_argument("--redis-arg", action="append", default=[], metavar="ARG",
                   help="an extra redis-server argument, e.g. --redis-arg=--hash-max-ziplist-value "
                   "--redis-arg=64")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("bench cost needs valgrind (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    keep = Path(args.keep) if args.keep else None
    result = uvloop.run(measure_cost(args.cases, args.agents, keep, args.redis_arg))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['instructions_per_case']:,} Redis instructions per routed case "
              f"({result['cases']} cases, {result['redis_commands_per_case']} commands each, "
              f"{result['transitions_per_evalsha']} transitions per EVALSHA); "
              f"callgrind_annotate {result['callgrind_file']}")  # fmt: skip
    return 0
