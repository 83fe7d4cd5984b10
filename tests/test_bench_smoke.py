"""Smoke tests of the benches: tiny runs over real sockets, a real server and Redis.

They check that ``python -m bench e2e``, ``core``, the locust scenarios (headless) and (where
valgrind is installed) ``cost`` run start to finish and that their results have the headline
keys, with nothing lost or duplicated; not how fast anything is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REQUIRED = (
    "offered_rate", "achieved_rate", "p50_ms", "p99_ms", "lost", "duplicated", "agents",
    "bare_pipeline_rate", "ratio_to_bare_pipeline", "rss_kib_per_idle_console",
    "bare_rss_kib_per_connection",
)  # fmt: skip


def test_e2e_bench_runs_and_counts_every_offer(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "bench", "e2e", "--seconds", "2", "--agents", "20",
            "--rate", "50", "--supervisors", "1", "--json", "--results", str(tmp_path)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    missing = [k for k in REQUIRED if k not in result]
    assert not missing, f"missing keys {missing}"
    assert result["lost"] == 0 and result["duplicated"] == 0, result["e2e"]["errors"]
    assert result["agents"] >= 20
    assert result["achieved_rate"] > 0 and result["p99_ms"] is not None
    assert result["bare_pipeline_rate"] and result["rss_kib_per_idle_console"] is not None
    run_dir = next(tmp_path.iterdir())
    for name in ("result.json", "summary.md", "latency_vs_rate.png", "timeline.png"):
        assert (run_dir / name).exists(), name
    # the AOF rewrites that began in each phase are counted (the latency phases start on a
    # freshly rewritten AOF: at this rate none should begin in them)
    phases = result["e2e"]["phases"]
    assert all(isinstance(p.get("aof_rewrites"), int) for p in phases.values()), phases
    assert phases["main"]["aof_rewrites"] == 0 and phases["freed"]["aof_rewrites"] == 0
    assert "AOF rewritten before the phase" in done.stderr
    # a supervisor's page refreshed all along, and the server's own pauses were read
    watched = result["e2e"]["supervisors"]
    assert watched["refreshes"] >= 5 and watched["failed"] == 0, watched
    assert result["e2e"]["server_pauses"]["loop_lag_count"] > 0


def test_locust_scenarios_run_headless_and_account_for_every_case() -> None:
    locust = Path(sys.executable).with_name("locust")
    argv = [str(locust), "-f", "bench/locustfile.py", "--headless", "-u", "7", "-r", "7",
            "-t", "4s", "--sb-agents", "5", "--sb-bridges", "2", "--sb-rate", "20",
            "--sb-think-ms", "50", "--sb-handle-ms", "200", "--only-summary"]  # fmt: skip
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    tally = [line for line in done.stderr.splitlines() if "cases acked" in line]
    assert tally, done.stderr[-3000:]
    # e.g. "locustfile: 80 cases acked, 80 offered; still waiting 0, offered as the agents
    # stopped 0, lost 0, duplicated 0"
    words = tally[-1].replace(",", "").replace(";", "").split()
    acked = int(words[words.index("cases") - 1])
    assert acked > 0, tally
    assert words[words.index("lost") + 1] == "0", tally
    assert words[words.index("duplicated") + 1] == "0", tally
    for latency in ("event→ack", "ingest→offer", "accept→ack", "complete→ack"):
        assert latency in done.stdout + done.stderr, latency


CORE_REQUIRED = (
    "routed_per_s", "lifecycle_per_s", "raw_evalsha_per_s", "ratio_to_raw", "p50_ms", "p99_ms",
    "unbatched_routed_per_s", "ratio_to_unbatched",
)  # fmt: skip


def test_core_bench_runs_and_counts_every_offer() -> None:
    argv = [sys.executable, "-m", "bench", "core", "--seconds", "1", "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    missing = [k for k in CORE_REQUIRED if k not in result]
    assert not missing, f"missing keys {missing}"
    assert result["lost_offers"] == 0 and result["duplicate_offers"] == 0, result["errors"]
    assert result["routed_per_s"] > 0 and result["unbatched_routed_per_s"] > 0


def test_cost_bench_counts_redis_instructions_per_case() -> None:
    if shutil.which("valgrind") is None:
        if os.environ.get("CI"):
            pytest.fail("valgrind is not installed: CI must run the cost bench (.ci/run)")
        pytest.skip("valgrind is not installed (apt-get install valgrind)")
    argv = [sys.executable, "-m", "bench", "cost", "--cases", "40", "--agents", "40", "--json",
            "--keep", ""]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["cases"] >= 40
    # a routed case is three transitions of dozens of commands: far more than a few thousand
    # instructions, and counted only while cases were routed (not the start-up and set-up)
    assert 100_000 < result["instructions_per_case"] < 50_000_000, result
    assert result["redis_commands_per_case"] > 10, result
