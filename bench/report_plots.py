"""The e2e bench's two plots (:mod:`bench.report` writes them with the summary): latency
percentiles against offered rate, and throughput, p99 and CPU over the run's timeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plots"]


def plots(r: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e2e = r["e2e"]
    points = e2e["steps"] or [e2e["phases"]["main"]]
    rates = [p["offered_rate"] for p in points]
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
        lat.plot(rates, [p[f"ingest_offer_{key}_ms"] for p in points], "o-", label=label)
    lat.axhline(r["p99_bound_ms"], color="grey", ls="--", lw=1, label="p99 bound")
    if r.get("bare_pipeline_p99_ms"):
        lat.plot([1000], [r["bare_pipeline_p99_ms"]], "kx", label="bare pipeline p99 @1000/s")
    lat.set(xlabel="offered events/s", ylabel="ingest → offer, ms", yscale="log",
            title="Latency against offered rate")  # fmt: skip
    lat.legend(fontsize=8)
    lat.grid(alpha=0.3)
    thr.plot(rates, [p["offers_per_s"] for p in points], "o-", label="achieved (offers/s)")
    thr.plot(rates, rates, ":", color="grey", label="offered")
    if r.get("bare_pipeline_rate"):
        thr.axhline(r["bare_pipeline_rate"], color="k", ls="--", lw=1,
                    label="bare pipeline, saturated")  # fmt: skip
    thr.axhline(r["sustained_rate"], color="C3", ls="-.", lw=1, label="Switchboard, saturated")
    thr.set(xlabel="offered events/s", ylabel="cases/s", title="Throughput against offered rate")
    thr.legend(fontsize=8)
    thr.grid(alpha=0.3)
    fig.suptitle(f"Switchboard e2e — {r['commit']}, {r['nproc']} cores, {r['agents']} agents",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(out / "latency_vs_rate.png", dpi=110)
    plt.close(fig)

    tl = e2e["timeline"]
    t = [p["t"] for p in tl]
    fig, (top, mid, bottom) = plt.subplots(3, 1, figsize=(11, 7.5), sharex=True)
    top.plot(t, [p["offers_per_s"] for p in tl], label="offers/s")
    top.plot(t, [p["completed_per_s"] for p in tl], label="completed/s", alpha=0.7)
    top.plot(t, [p["offered_rate"] or None for p in tl], ":", color="grey", label="offered")
    top.set(ylabel="per second", title="Throughput, p99 and CPU over time")
    mid.plot(t, [p["p99_ms"] for p in tl], color="C3", label="ingest → offer p99")
    mid.plot(t, [p["p50_ms"] for p in tl], color="C2", label="p50")
    mid.axhline(r["p99_bound_ms"], color="grey", ls="--", lw=1)
    mid.set(ylabel="ms", yscale="log")
    for key, label in (
        ("server_cpu", "server"),
        ("server_core_other_cpu", "others on the server's core"),
        ("redis_cpu", "Redis"),
        ("client_cpu", "load generator"),
        ("other_cpu", "others, all cores"),
    ):
        bottom.plot(t, [100 * (p.get(key) or 0) for p in tl], label=label)
    bottom.set(ylabel="% of a core", xlabel="seconds")
    for ax in (top, mid, bottom):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
        _shade_phases(ax, tl)
    fig.tight_layout()
    fig.savefig(out / "timeline.png", dpi=110)
    plt.close(fig)


def _shade_phases(ax: Any, tl: list[dict[str, Any]]) -> None:
    start = 0
    for i in range(1, len(tl) + 1):
        if i == len(tl) or tl[i]["phase"] != tl[start]["phase"]:
            if (len({p["phase"] for p in tl[:i]}) % 2) == 0:
                ax.axvspan(tl[start]["t"] - 1, tl[i - 1]["t"], color="grey", alpha=0.08)
            if ax.get_subplotspec().is_first_row():
                ax.text(tl[start]["t"] - 1, ax.get_ylim()[1], tl[start]["phase"], fontsize=7,
                        va="top")  # fmt: skip
            start = i
