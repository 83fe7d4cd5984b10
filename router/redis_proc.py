"""How the embedded Redis (:mod:`router.embedded`) deals with the operating system.

The ``redis-server`` binary's version, the ``flock`` that gives one data dir to one Redis, signals
and exit deadlines for its process, a free TCP port, a temp dir short enough for a unix socket
path, and the Linux parent-death signal that makes Redis die with Switchboard; also
:class:`EmbeddedRedisError`, which all of these raise. Nothing here supervises anything: that is
:class:`router.embedded.EmbeddedRedis`, which re-exports the public names.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["EmbeddedRedisError", "redis_version"]

_SOCKET_NAME = "redis.sock"
_LOCK_NAME = "redis.lock"
# sun_path holds 108 bytes on Linux (104 on BSD/macOS) including the NUL; Redis truncates a longer
# path silently and would listen somewhere else.
_SUN_PATH_MAX = 107 if sys.platform.startswith("linux") else 103

_VERSION_RE = re.compile(rb"\bv=(\d+)\.(\d+)\.(\d+)")
_PR_SET_PDEATHSIG = 1


class EmbeddedRedisError(Exception):
    """The embedded ``redis-server`` cannot be found, started or stopped."""


def redis_version(binary: str) -> tuple[int, int, int]:
    """Return ``binary``'s version from ``redis-server --version``, e.g. ``(7, 0, 15)``.

    Raises :class:`EmbeddedRedisError` when it cannot be run or prints no version.
    """
    try:
        done = subprocess.run(
            [binary, "--version"],
            capture_output=True,
            timeout=10,
            check=True,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise EmbeddedRedisError(f"cannot run `{binary} --version`: {exc}") from exc
    match = _VERSION_RE.search(done.stdout)
    if match is None:
        raise EmbeddedRedisError(f"`{binary} --version` printed no version: {done.stdout[:200]!r}")
    return int(match[1]), int(match[2]), int(match[3])


def _lock(data_dir: Path) -> int:
    """Lock ``data_dir`` for one Redis; raise :class:`EmbeddedRedisError` naming the holder."""
    fd = os.open(data_dir / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise EmbeddedRedisError(
            f"{data_dir} is in use by another redis-server (pid {holder}); stop it "
            "(it may be left over from a killed process) or use another data dir"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


async def _wait_exit(proc: asyncio.subprocess.Process, within: float) -> bool:
    try:
        async with asyncio.timeout(max(0.0, within)):
            await proc.wait()
    except TimeoutError:
        return False
    return True


def _signal(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _short_temp_dir() -> Path:
    for base in (None, "/tmp"):
        path = Path(tempfile.mkdtemp(prefix="sb-redis-", dir=base))
        if len(os.fsencode(path / _SOCKET_NAME)) <= _SUN_PATH_MAX:
            return path
        path.rmdir()
    raise EmbeddedRedisError("no temp dir is short enough for a unix socket path")


def _dotted(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))


def _pdeathsig_setter() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_pdeathsig() -> None:
        # Runs in the child between fork and exec: no allocation-heavy work, no locks.
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)

    return set_pdeathsig


_die_with_parent = _pdeathsig_setter()
