"""A real Switchboard server and a real Redis for the end-to-end bench, started and stopped here.

:func:`bench_server` starts a ``redis-server`` the way the router's embedded default does
(:class:`router.embedded.EmbeddedRedis`: unix socket, AOF ``everysec``) and one
``python -m router.cli serve`` process on a free loopback port, declaring the bench workspace
(:func:`workspace`) from a config file. With 2+ cores the server is pinned to the first core and
Redis to the second, which the load generator shares (the caller pins itself; see
:data:`Cores`); Redis's AOF rewrite child may run on either (:meth:`Cores.fork_args`).
:func:`attach` instead describes a server someone else started with ``python -m
bench.server_proc`` (same workspace, same secret and bridge key).

Agents of the bench workspace, all declared in the file (consoles need a declared agent):

* ``r<i>`` — routing agents: two of the skills support / billing / sales, level 1-5,
  capacity chat 3 / email 5 / voice 1;
* ``b<i>`` — backlog agents: skill ``backlog`` only, voice capacity 1 (the "agent freed →
  next offer" phase keeps a standing queue of calls in front of them);
* ``i<i>`` — idle agents: no skills; their consoles only connect (memory per idle console).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.bare_os import die_with_parent, pin, raise_nofile_limit
from router.auth import Principal, Tokens
from router.embedded import EmbeddedRedis

__all__ = [
    "BRIDGE_KEY",
    "SECRET",
    "WORKSPACE",
    "Cores",
    "Server",
    "attach",
    "bench_server",
    "workspace",
]

WORKSPACE = "bench"
SECRET = "bench-secret"  # fixed, so the bench can mint console tokens without signing in
BRIDGE_KEY = "bench-bridge-key"
SKILLS = ("support", "billing", "sales")
SUPERVISORS = 8  # declared in every bench workspace (s0 …): bench e2e --supervisors uses them
READY_TIMEOUT = 120.0  # a workspace of 10k+ agents takes a while to apply


@dataclass(frozen=True)
class Cores:
    """Server on one core; Redis and the load generator on another (``None``: one core)."""

    server: int | None
    client: int | None

    @classmethod
    def plan(cls) -> Cores:
        cpus = sorted(os.sched_getaffinity(0))
        return cls(cpus[0], cpus[1]) if len(cpus) >= 2 else cls(None, None)

    def describe(self) -> str:
        if self.server is None:
            return "not pinned"
        return (
            f"server on core {self.server}; Redis and load generator on core {self.client}; "
            "Redis's AOF rewrite child on either"
        )

    def fork_args(self) -> list[str]:
        """Redis options that leave its AOF rewrite child free to run on either core.

        A forked child inherits Redis's pinning, which would put every rewrite on the one core
        Redis and the load generator already fill, while the server's core has a fifth to
        spare: on an unpinned machine the scheduler would place it wherever there is room, and
        the bench pins only to make runs repeatable. Measured: bench/README.md "Session 11".
        """
        if self.server is None or self.client is None:
            return []
        return ["--aof_rewrite_cpulist", f"{self.server},{self.client}"]


def workspace(agents: int, backlog_agents: int, idle_agents: int) -> dict[str, Any]:
    """The bench workspace declaration (see the module docstring)."""
    declared = [
        {
            "id": f"r{i}",
            "attributes": {
                "skills": [SKILLS[i % 3], SKILLS[(i + 1) % 3]],
                "level": 1 + i % 5,
                "languages": ["en"],
            },
            "capacity": {"chat": 3, "email": 5, "voice": 1},
        }
        for i in range(agents)
    ]
    declared += [
        {"id": f"b{i}", "attributes": {"skills": ["backlog"]}, "capacity": {"voice": 1}}
        for i in range(backlog_agents)
    ]
    declared += [
        {"id": f"i{i}", "attributes": {"skills": []}, "capacity": {"chat": 1}}
        for i in range(idle_agents)
    ]
    declared += [  # for bench e2e --supervisors: they watch, and take no cases
        {"id": f"s{i}", "role": "supervisor", "attributes": {"skills": []}, "capacity": {}}
        for i in range(SUPERVISORS)
    ]
    return {
        "id": WORKSPACE,
        "queues": [
            {"id": "support", "target": "skills HAS 'support'"},
            {"id": "billing", "target": "skills HAS 'billing'"},
            {"id": "sales", "target": "skills HAS 'sales' AND level >= 2"},
            {"id": "backlog", "target": "skills HAS 'backlog'"},
        ],
        "workflow": {
            "task_routing": {
                "filters": [
                    {
                        "filter_friendly_name": "backlog",
                        "expression": "topic == 'backlog'",
                        "targets": [{"queue": "backlog"}],
                    },
                    {
                        "filter_friendly_name": "sales",
                        "expression": "topic == 'sales'",
                        "targets": [{"queue": "sales", "priority": 10}],
                    },
                    {
                        "filter_friendly_name": "billing",
                        "expression": "topic == 'billing'",
                        "targets": [{"queue": "billing"}],
                    },
                ],
                "default_filter": {"queue": "support"},
            }
        },
        # Offers are accepted within milliseconds; long deadlines keep a slow run from turning
        # into timeouts and re-offers (which the bench would have to tell from duplicates).
        "channels": {ch: {"offer_timeout_s": 300} for ch in ("chat", "email", "voice")},
        "agents": declared,
    }


def write_config(path: Path, agents: int, backlog_agents: int, idle_agents: int) -> Path:
    doc = {
        "workspace": workspace(agents, backlog_agents, idle_agents),
        "bridges": [
            {
                "id": "bench",
                "workspace": WORKSPACE,
                "channels": ["chat", "email", "voice"],
                "key_env": "BENCH_BRIDGE_KEY",
            }
        ],
    }
    path.write_text(json.dumps(doc))
    return path


@dataclass
class Server:
    """A server to load: where it listens, and its pids when they are on this machine."""

    host: str
    port: int
    pid: int | None
    redis_pid: int | None
    secret: str = SECRET
    bridge_key: str = BRIDGE_KEY
    cores: Cores = Cores(None, None)
    log_path: Path | None = None
    redis_url: str | None = None  # when known (we started it, or were told)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def agent_path(self, agent: str, tokens: Tokens | None = None) -> str:
        """``/ws/agent?token=…`` for ``agent``: tokens are minted here, no sign-in needed."""
        token = (tokens or Tokens(self.secret)).issue(Principal("ws", WORKSPACE, agent, "agent"))
        return f"/ws/agent?token={token}"

    def log_tail(self, chars: int = 3000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _server_env(extra: dict[str, str] | None) -> dict[str, str]:
    return {
        **os.environ,
        "BENCH_BRIDGE_KEY": BRIDGE_KEY,
        "SWITCHBOARD_SECRET": SECRET,
        "SWITCHBOARD_LOG_LEVEL": "warning",
        "SWITCHBOARD_LOG_JSON": "0",
        # Console and bridge frame limits protect production servers from floods; the bench
        # is the flood, on purpose.
        "SWITCHBOARD_RATE_PER_S": "1000000",
        "SWITCHBOARD_BRIDGE_RATE_PER_S": "1000000",
        # A closed console's grace timer would fire mid-run (10k at once after the idle
        # consoles close); none of the bench's agents comes back, so keep them off the clock.
        "SWITCHBOARD_GRACE_S": "3600",
        **(extra or {}),
    }


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _spawn(args: list[str], env: dict[str, str], log_path: Path, cpu: int | None) -> Any:
    """Start the server (quick: not worth a thread); its output goes to ``log_path``."""

    def preexec() -> None:
        die_with_parent()
        raise_nofile_limit()
        if cpu is not None:  # before uvloop starts threads, so they inherit it
            os.sched_setaffinity(0, {cpu})

    with open(log_path, "wb") as log:
        return subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=preexec,
        )  # fmt: skip


async def _wait_ready(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    async with httpx.AsyncClient(timeout=2.0) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {_tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"server not ready in {READY_TIMEOUT:.0f} s: {_tail(log_path)}")


def _stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.asynccontextmanager
async def bench_server(
    *,
    agents: int,
    backlog_agents: int,
    idle_agents: int,
    redis_url: str | None = None,
    data_dir: Path | None = None,
    port: int | None = None,
    env: dict[str, str] | None = None,
    cores: Cores | None = None,
) -> AsyncIterator[Server]:
    """Start Redis (unless ``redis_url``) and one server; stop both on exit, also on error.

    ``cores`` says where to pin them (default :meth:`Cores.plan`, from this process's
    affinity: plan before pinning the load generator). Raises ``RuntimeError`` with the tail
    of the server's log if it does not become ready.
    """
    cores = Cores.plan() if cores is None else cores
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sb-bench-")))
        data_dir.mkdir(parents=True, exist_ok=True)
        config = write_config(data_dir / "bench.json", agents, backlog_agents, idle_agents)
        embedded = None
        if redis_url is None:
            embedded = EmbeddedRedis(data_dir / "redis", extra_args=cores.fork_args())
            redis_url = await embedded.start()
            if embedded.pid is not None:
                pin(embedded.pid, cores.client)
        port = port or _free_port()
        args = [sys.executable, "-m", "router.cli", "serve", "--port", str(port)]
        args += ["--data-dir", str(data_dir), "--config", str(config), "--redis-url", redis_url]
        log_path = data_dir / "server.log"
        try:
            proc = _spawn(args, _server_env(env), log_path, cores.server)
            try:
                await _wait_ready(f"http://127.0.0.1:{port}", proc, log_path)
                yield Server(
                    "127.0.0.1", port, proc.pid, embedded.pid if embedded else None,
                    cores=cores, log_path=log_path, redis_url=redis_url,
                )  # fmt: skip
            finally:
                await asyncio.to_thread(_stop, proc)
        finally:
            if embedded is not None:
                await embedded.stop()


def _listening_pid(port: int) -> int | None:
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            pid: int | None = conn.pid
            return pid
    return None


def attach(url: str, *, secret: str = SECRET, bridge_key: str = BRIDGE_KEY) -> Server:
    """A server already running at ``url`` (started with ``python -m bench.server_proc``).

    Its pid (for RSS and CPU) is looked up by its listening port when it runs on this machine.
    """
    parsed = httpx.URL(url)
    host, port = parsed.host or "127.0.0.1", parsed.port or 80
    pid = _listening_pid(port) if host in ("127.0.0.1", "localhost", "::1") else None
    redis_pid = None
    if pid is not None:
        children = psutil.Process(pid).children()
        redis_pid = next((c.pid for c in children if "redis" in c.name()), None)
    return Server(host, port, pid, redis_pid, secret=secret, bridge_key=bridge_key)


async def _serve_forever(args: argparse.Namespace) -> None:
    async with bench_server(
        agents=args.agents, backlog_agents=args.backlog_agents, idle_agents=args.idle_agents,
        redis_url=args.redis_url, port=args.port,
        cores=Cores(None, None) if args.no_pin else None,
    ) as server:  # fmt: skip
        print(f"switchboard bench server at {server.url} (pid {server.pid}); "
              f"{server.cores.describe()}", file=sys.stderr)  # fmt: skip
        print(f"  attach: python -m bench e2e --url {server.url}", file=sys.stderr)
        print(f"  locust: locust -f bench/locustfile.py --headless -H {server.url} ...",
              file=sys.stderr)  # fmt: skip
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.server_proc``: serve the bench workspace until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m bench.server_proc", description=__doc__)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--agents", type=int, default=1000, help="routing agents r0…")
    parser.add_argument("--backlog-agents", type=int, default=50, help="backlog agents b0…")
    parser.add_argument("--idle-agents", type=int, default=10000, help="idle agents i0…")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the server to a core")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
