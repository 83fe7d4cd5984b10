"""The e2e bench's report: headline figures next to the bare limits, floors, JSON, markdown, plots.

:func:`summarize` turns what a run measured into the result (the headline keys first; the
details under ``e2e``); :func:`write` puts ``result.json``, ``summary.md`` and two plots in the
run's folder (and, with ``publish``, copies the summary and plots there too).
``python -m bench.report median DIR...`` prints the median of several runs as the markdown
table bench/README.md shows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.report_plots import plots

__all__ = ["console_table", "machine", "main", "median_table", "summarize", "write"]

IDLE_FLOOR_CONSOLES = 10_000


def machine() -> dict[str, Any]:
    """nproc, CPU model, Python, and the commit (``+dirty`` when the work tree has changes)."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                         "")  # fmt: skip
    except OSError:
        pass

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if commit and git("status", "--porcelain", "--untracked-files=no"):
        commit += "+dirty"
    return {
        "nproc": os.cpu_count(), "cpu_model": model or platform.processor(),
        "python": platform.python_version(), "commit": commit or "unknown",
    }  # fmt: skip


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _floor(name: str, value: float | None, bound: float, *, at_least: bool = False,
           applies: bool = True, note: str = "") -> dict[str, Any]:  # fmt: skip
    """One floor: passes when ``value`` is ≤ (or with ``at_least``, ≥) ``bound``. ``margin``
    is value / bound: how far from the bound, in the floor's own direction."""
    if value is None:
        return {"floor": name, "value": None, "bound": bound, "pass": False, "applies": applies,
                "margin": None, "note": note or "not measured"}  # fmt: skip
    ok = value >= bound if at_least else value <= bound
    return {"floor": name, "value": value, "bound": bound, "pass": ok, "applies": applies,
            "margin": _ratio(value, bound), "note": note}  # fmt: skip


def _rewrite_note(phase: dict[str, Any]) -> str:
    """A latency phase starts on a fresh AOF; say so when Redis rewrote it during the phase
    anyway (a fork stall and copy-on-write in the p99)."""
    n = phase.get("aof_rewrites")
    if not n:
        return ""
    return f"an AOF rewrite began in the phase (fork stall {_fmt(phase.get('fork_ms'))} ms)"


def _idle_floor(e2e: dict[str, Any], ratio: float | None) -> dict[str, Any]:
    """Memory per idle console, with every one of the consoles asked for actually open."""
    asked, opened = e2e.get("idle_requested", 0), e2e.get("idle_consoles", 0)
    rate = e2e.get("idle_connect_per_s") or 0.0
    note = f"{opened} of {asked} consoles open ({rate:.0f} connects/s)"
    if ratio is None and opened < asked:
        note += "; too few to measure memory"
    floor = _floor("10k idle consoles, RSS each ≤ 1.5 x bare relay's", ratio, 1.5,
                   applies=asked >= IDLE_FLOOR_CONSOLES, note=note)  # fmt: skip
    if opened < asked:
        floor["pass"] = False
    return floor


def _knee(steps: list[dict[str, Any]], bound: float) -> float | None:
    good = [
        s["offered_rate"] for s in steps
        if (s["ingest_offer_p99_ms"] or 1e9) <= bound and s["offers_per_s"] >= 0.95 * s[
            "offered_rate"] and s["drained"]
    ]  # fmt: skip
    return max(good) if good else None


def summarize(e2e: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The result of a run: headline figures, ratios to the bare limits, floors, details."""
    main, freed, sat = (e2e["phases"][k] for k in ("main", "freed", "saturated"))
    bare = e2e.get("bare") or {}
    # Sustained: completed cases over the whole saturated window, which includes what Redis's
    # AOF rewrites cost when one lands in it (a forked child on Redis's core: our cost, not
    # noise). The median of the window's per-second rates is shown beside it, as is the bare
    # pipeline's, measured over as many seconds.
    sustained = sat["completed_per_s"]
    bare_rate = bare.get("bare_pipeline_rate")
    idle = e2e.get("rss_kib_per_idle_console")
    bare_rss = bare.get("bare_rss_kib_per_connection")
    result: dict[str, Any] = {
        "offered_rate": args.rate,
        "achieved_rate": main["offers_per_s"],
        "p50_ms": main["ingest_offer_p50_ms"],
        "p99_ms": main["ingest_offer_p99_ms"],
        "p999_ms": main["ingest_offer_p999_ms"],
        "lost": e2e["lost"],
        "duplicated": e2e["duplicated"],
        "agents": e2e["agents"],
        "accept_ack_p50_ms": main["accept_ack_p50_ms"],
        "accept_ack_p99_ms": main["accept_ack_p99_ms"],
        "freed_p50_ms": freed["freed_p50_ms"],
        "freed_p99_ms": freed["freed_p99_ms"],
        "freed_rate": freed["offers_per_s"],
        "sustained_rate": sustained,
        "sustained_rate_median_s": sat.get("completed_per_s_median"),
        "sustained_rates_per_s": sat.get("completed_per_s_seconds"),
        "sustained_us_per_case": sat["us_per_case"],
        "sustained_p99_ms": sat["ingest_offer_p99_ms"],
        "main_server_cpu": main["server_cpu"],
        "main_redis_cpu": main["redis_cpu"],
        "main_other_cpu": main["other_cpu"],
        "main_server_core_other_cpu": main.get("server_core_other_cpu"),
        "saturated_server_cpu": sat["server_cpu"],
        "saturated_other_cpu": sat["other_cpu"],
        "saturated_server_core_other_cpu": sat.get("server_core_other_cpu"),
        "redis_us_per_case": sat.get("redis_us_per_case"),
        "redis_commands_per_case": sat["redis_commands_per_case"],
        "knee_rate": _knee(e2e["steps"], args.p99_bound_ms),
        "p99_bound_ms": args.p99_bound_ms,
        "idle_consoles": e2e.get("idle_consoles", 0),
        "console_connects_per_s": e2e.get("idle_connect_per_s"),
        "hello_kib": e2e.get("hello_kib"),
        "supervisors": (e2e.get("supervisors") or {}).get("pages", 0),
        "supervisor_refresh_p99_ms": (e2e.get("supervisors") or {}).get("refresh_p99_ms"),
        "server_startup_s": e2e.get("server_startup_s"),
        "rss_kib_per_idle_console": idle,
        "bare_pipeline_rate": bare_rate,
        "ratio_to_bare_pipeline": _ratio(sustained, bare_rate),
        "bare_pipeline_rate_median_s": bare.get("bare_pipeline_rate_median_s"),
        "bare_pipeline_rates_per_s": bare.get("bare_pipeline_rates_per_s"),
        "ratio_to_bare_pipeline_median_s": _ratio(
            sat.get("completed_per_s_median"), bare.get("bare_pipeline_rate_median_s")
        ),
        "bare_pipeline_us_per_case": bare.get("bare_pipeline_us_per_case"),
        "ratio_cpu_per_case_to_bare": _ratio(sat["us_per_case"],
                                             bare.get("bare_pipeline_us_per_case")),
        "bare_pipeline_p99_ms": bare.get("bare_pipeline_p99_ms"),
        "bare_rss_kib_per_connection": bare_rss,
        "ratio_rss_to_bare": _ratio(idle, bare_rss),
        "raw_evalsha_per_s": bare.get("raw_evalsha_per_s"),
        "pipelined_evalsha_per_s": bare.get("pipelined_evalsha_per_s"),
        "bare_relay_frames_per_s": bare.get("bare_relay_frames_per_s"),
        "best_ws_impl": bare.get("best_ws_impl"),
        "pinning": e2e["pinning"],
        **machine(),
    }  # fmt: skip
    at_floor_load = args.rate == 1000 and e2e["agents"] >= 1000
    cpu_ratio = result["ratio_cpu_per_case_to_bare"]
    notes = []
    if result["ratio_to_bare_pipeline_median_s"] is not None:
        notes.append(f"median seconds: {result['ratio_to_bare_pipeline_median_s']:.2f}")
    if cpu_ratio:
        notes.append(f"by server CPU per case: {1 / cpu_ratio:.2f}")
    result["floors"] = [
        _floor("sustained cases/s ≥ 0.5 x bare pipeline", result["ratio_to_bare_pipeline"],
               0.5, at_least=True, note="; ".join(notes)),
        _floor("p99 ingest → offer ≤ 10 ms at 1,000/s, 1,000 agents", result["p99_ms"], 10.0,
               applies=at_floor_load,
               note=_rewrite_note(main) if at_floor_load
               else f"ran at {args.rate:g}/s, {e2e['agents']} agents"),
        _floor("p99 agent freed → next offer ≤ 5 ms", result["freed_p99_ms"], 5.0,
               note=_rewrite_note(freed)),
        _idle_floor(e2e, result["ratio_rss_to_bare"]),
        _floor("zero lost, zero duplicated", result["lost"] + result["duplicated"], 0),
    ]  # fmt: skip
    result["e2e"] = e2e
    return result


# -- text -----------------------------------------------------------------------------------


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    return str(v)


HEADLINE = (
    # key, label, bare key, ratio key
    ("sustained_rate", "sustained routed cases/s (saturated)", "bare_pipeline_rate",
     "ratio_to_bare_pipeline"),
    ("sustained_rate_median_s", "— its median second", "bare_pipeline_rate_median_s",
     "ratio_to_bare_pipeline_median_s"),
    ("sustained_us_per_case", "server CPU µs per case (saturated)", "bare_pipeline_us_per_case",
     "ratio_cpu_per_case_to_bare"),
    ("p50_ms", "ingest → offer p50, ms", None, None),
    ("p99_ms", "ingest → offer p99, ms", "bare_pipeline_p99_ms", None),
    ("freed_p99_ms", "agent freed → next offer p99, ms", None, None),
    ("accept_ack_p99_ms", "accept → ack p99, ms", None, None),
    ("knee_rate", "knee: highest rate with p99 under the bound, /s", None, None),
    ("rss_kib_per_idle_console", "RSS per idle console, KiB", "bare_rss_kib_per_connection",
     "ratio_rss_to_bare"),
    ("redis_us_per_case", "Redis CPU µs per case (saturated)", None, None),
    ("redis_commands_per_case", "Redis commands per case", None, None),
    ("console_connects_per_s", "console connects/s (to hello)", None, None),
    ("hello_kib", "hello frame, KiB", None, None),
    ("supervisors", "supervisor pages refreshing each second", None, None),
    ("supervisor_refresh_p99_ms", "— a refresh's p99 (stats, waiting cases), ms", None, None),
    ("lost", "lost", None, None),
    ("duplicated", "duplicated", None, None),
)  # fmt: skip


def _headline_rows(r: dict[str, Any]) -> list[str]:
    rows = ["| figure | Switchboard | bare limit | ratio |", "|---|---:|---:|---:|"]
    for key, label, bare_key, ratio_key in HEADLINE:
        bare = _fmt(r.get(bare_key)) if bare_key else ""
        ratio = _fmt(r.get(ratio_key), 2) if ratio_key else ""
        rows.append(f"| {label} | {_fmt(r.get(key))} | {bare} | {ratio} |")
    return rows


def _floor_rows(r: dict[str, Any]) -> list[str]:
    rows = ["| floor | value | pass | value / bound | note |", "|---|---:|:-:|---:|---|"]
    for f in r["floors"]:
        verdict = ("pass" if f["pass"] else "**FAIL**") if f["applies"] else "n/a"
        rows.append(f"| {f['floor']} | {_fmt(f['value'], 2)} | {verdict} | "
                    f"{_fmt(f['margin'], 2)} | {f['note']} |")  # fmt: skip
    return rows


def summary_md(r: dict[str, Any]) -> str:
    e2e = r["e2e"]
    lines = [
        f"# Switchboard e2e bench — {r['commit']}",
        "",
        f"Machine: {r['nproc']} x {r['cpu_model']}, Python {r['python']}; {r['pinning']}. "
        f"{r['agents']} agents connected; open loop at {_fmt(r['offered_rate'])}/s "
        f"(achieved {_fmt(r['achieved_rate'])}/s); bare limits on {r['best_ws_impl']}.",
        "",
        *_headline_rows(r),
        "",
        *_floor_rows(r),
        "",
        "## Phases",
        "",
        "| phase | s | offers/s | completed/s | p50 | p99 | p99.9 | freed p99 | accept p99 "
        "| server CPU | others on its core | Redis CPU | other CPU, all cores | server µs/case "
        "| Redis µs/case | Redis cmds/case | AOF rewrites (fork stall) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    all_phases = list(e2e["phases"].values()) + e2e["steps"]
    for p in all_phases:
        lines.append(
            f"| {p['phase']} | {_fmt(p['seconds'])} | {_fmt(p['offers_per_s'])} | "
            f"{_fmt(p['completed_per_s'])} | {_fmt(p['ingest_offer_p50_ms'], 2)} | "
            f"{_fmt(p['ingest_offer_p99_ms'], 2)} | {_fmt(p['ingest_offer_p999_ms'], 2)} | "
            f"{_fmt(p['freed_p99_ms'], 2)} | {_fmt(p['accept_ack_p99_ms'], 2)} | "
            f"{p['server_cpu']:.0%} | {_pct(p.get('server_core_other_cpu'))} | "
            f"{p['redis_cpu']:.0%} | {p['other_cpu']:.0%} | "
            f"{_fmt(p['us_per_case'])} | {_fmt(p.get('redis_us_per_case'))} | "
            f"{_fmt(p['redis_commands_per_case'])} | {_rewrites(p)} |"
        )
    counters = ("cases_acked", "lost", "duplicated", "reoffered", "rescinded", "delivered",
                "unacked", "errors", "not_created")  # fmt: skip
    lines += ["", "Outcome counters: " + ", ".join(f"{k} {e2e.get(k)}" for k in counters)]
    for p in all_phases:
        if "profile" in p:
            lines += ["", *_profile_md(p["phase"], p["profile"])]
    lines += ["", "![latency against offered rate](latency_vs_rate.png)", "",
              "![throughput and p99 over time](timeline.png)", ""]  # fmt: skip
    return "\n".join(lines)


def _rewrites(p: dict[str, Any]) -> str:
    n = p.get("aof_rewrites")
    if not n:
        return "-" if n is None else "0"
    return f"{n} ({_fmt(p.get('fork_ms'))} ms)"


def _profile_md(phase: str, prof: dict[str, Any]) -> list[str]:
    lines = [f"## Profile of the server, phase {phase} ({prof['samples']} samples, py-spy)", "",
             "Leaf time by package: " + ", ".join(
                 f"{k} {v:.0%}" for k, v in prof["by_package"].items()), "",
             "| self | function | | inclusive | function |", "|---:|---|---|---:|---|"]  # fmt: skip
    for own, incl in zip(prof["self"], prof["inclusive"], strict=False):
        lines.append(f"| {own['share']:.1%} | `{own['function']}` | | {incl['share']:.1%} | "
                     f"`{incl['function']}` |")  # fmt: skip
    return lines


def console_table(r: dict[str, Any]) -> str:
    return "\n".join([*_headline_rows(r), "", *_floor_rows(r)])


def write(r: dict[str, Any], out: Path, *, publish: Path | None = None) -> None:
    """Write result.json, summary.md, latency_vs_rate.png and timeline.png into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(r, indent=1, default=str))
    (out / "summary.md").write_text(summary_md(r))
    plots(r, out)
    if publish is not None:
        publish.mkdir(parents=True, exist_ok=True)
        for name in ("summary.md", "latency_vs_rate.png", "timeline.png"):
            shutil.copy(out / name, publish / name)


# -- medians of several runs -------------------------------------------------------------------

MEDIAN_KEYS = (
    "sustained_rate", "bare_pipeline_rate", "ratio_to_bare_pipeline", "sustained_rate_median_s",
    "bare_pipeline_rate_median_s", "ratio_to_bare_pipeline_median_s", "sustained_us_per_case",
    "bare_pipeline_us_per_case", "ratio_cpu_per_case_to_bare", "achieved_rate", "p50_ms",
    "p99_ms", "p999_ms", "bare_pipeline_p99_ms", "freed_p50_ms", "freed_p99_ms",
    "accept_ack_p99_ms", "knee_rate", "rss_kib_per_idle_console", "bare_rss_kib_per_connection",
    "ratio_rss_to_bare", "idle_consoles", "console_connects_per_s", "hello_kib",
    "redis_us_per_case", "redis_commands_per_case", "raw_evalsha_per_s",
    "bare_relay_frames_per_s", "main_server_cpu", "main_server_core_other_cpu",
    "saturated_server_cpu", "saturated_server_core_other_cpu", "lost", "duplicated",
)  # fmt: skip


def median_table(results: list[dict[str, Any]]) -> str:
    """A markdown table: each figure's median over the runs, and every run's value."""
    lines = ["| figure | median | runs |", "|---|---:|---|"]
    for key in MEDIAN_KEYS:
        values = [r.get(key) for r in results]
        nums = [v for v in values if isinstance(v, int | float)]
        med = statistics.median(nums) if nums else None
        lines.append(f"| {key} | {_fmt(med, 2)} | {', '.join(_fmt(v, 2) for v in values)} |")
    verdicts = []
    for i, floor in enumerate(results[0]["floors"]):
        passes = sum(1 for r in results if r["floors"][i]["pass"])
        verdicts.append(f"| {floor['floor']} | {passes} of {len(results)} runs pass |")
    return "\n".join([*lines, "", "| floor | verdict |", "|---|---|", *verdicts])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("median", help="median of several runs' result.json, as markdown")
    m.add_argument("dirs", nargs="+", type=Path)
    args = p.parse_args(argv)
    results = [json.loads((d / "result.json").read_text()) for d in args.dirs]
    print(median_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
