"""Process plumbing for the bare-limits bench: CPU pinning, CPU time, RSS, fd limits, the
load generator's own garbage collector.

Linux only (reads /proc). Every helper degrades to a no-op or ``None`` where the platform
or the machine (one core) cannot do what is asked, so a measurement still runs, unpinned.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import resource
import signal
from collections.abc import Iterator
from dataclasses import dataclass

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Cores:
    """Which CPU each party runs on; ``None`` everywhere when there are fewer than 2 cores.

    The server under test gets a core of its own; the load generator gets the other. Redis
    shares the load generator's core unless a third core exists (it needs 10-30 % of one).
    """

    available: int
    server: int | None
    client: int | None
    redis: int | None

    @classmethod
    def plan(cls, pin: bool = True) -> Cores:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2 or not pin:
            return cls(len(cpus), None, None, None)
        return cls(len(cpus), cpus[0], cpus[1], cpus[2] if len(cpus) > 2 else cpus[1])


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """No collector pauses in the load generator while it measures: its own pauses would read
    as the server's latency (a full collection of a heap holding a thousand connections took
    57 - 78 ms, and one still came with the server's start-up settings). Reference counting
    frees what the phases drop; the few cycles they make wait for the collection at the end."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()
        gc.collect()


def pin(pid: int, cpu: int | None) -> None:
    """Pin every thread of ``pid`` (0 = this process) to ``cpu``; ``None`` does nothing."""
    if cpu is not None:
        set_affinity(pid, {cpu})


def set_affinity(pid: int, cpus: set[int]) -> None:
    """Set the CPU affinity of every thread of ``pid`` (0 = this process).

    ``os.sched_setaffinity`` on a pid only moves that one thread; threads already running
    (uvloop's, Redis's background threads) keep theirs, so walk /proc/<pid>/task.
    """
    target = os.getpid() if pid == 0 else pid
    for tid in os.listdir(f"/proc/{target}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:  # a thread that ended while we iterated
            continue


def cpu_seconds(pid: int) -> float:
    """User + system CPU time consumed so far by every thread of process ``pid``."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        # The command name (field 2) may contain spaces; fields after its ')' are fixed.
        fields = f.read().rpartition(")")[2].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLOCK_TICKS


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB, from ``VmRSS`` in /proc/<pid>/status."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def raise_nofile_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def die_with_parent() -> None:
    """``preexec_fn`` for children: SIGTERM them if this process dies without cleaning up."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: best effort only
        pass


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0-100) of an ascending list; ``None`` when empty."""
    if not sorted_values:
        return None
    rank = max(1, round(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def busy_seconds(cpu: int | None = None) -> float:
    """CPU seconds the machine (or one ``cpu``) has spent busy or stolen since boot.

    Busy = user, nice, system, irq, softirq and steal time in /proc/stat. Compared with the
    CPU time of the processes we run, it shows how much other tenants of a shared machine
    took during a measurement.
    """
    label = "cpu" if cpu is None else f"cpu{cpu}"
    with open("/proc/stat", encoding="ascii") as f:
        for line in f:
            fields = line.split()
            if fields[0] == label:
                ticks = [int(t) for t in fields[1:9]]
                user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
                return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS
    raise RuntimeError(f"no {label} line in /proc/stat")
