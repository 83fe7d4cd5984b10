"""One real redis-server for the whole suite, and a clean client per test. No fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import BlockingConnectionPool, Redis

from router.embedded import EmbeddedRedis


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def redis_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """URL (unix socket) of one redis-server shared by the session; no persistence, for speed."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis-server"), appendonly=False)
    url = await server.start()
    try:
        yield url
    finally:
        await server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def redis(redis_server: str) -> AsyncIterator[Redis]:
    """A bytes client on an empty Redis: FLUSHALL and SCRIPT FLUSH run before each test.

    Its pool is a ``BlockingConnectionPool``, like the router's: callers wait for a connection
    instead of failing with ``MaxConnectionsError``.
    """
    pool = BlockingConnectionPool.from_url(redis_server, max_connections=16, timeout=5)
    client = Redis.from_pool(pool)
    try:
        await client.flushall()
        await client.script_flush()
        yield client
    finally:
        await client.aclose()


# Fixtures for tests that drive the routing core, shared by every test module.
from tests.switchboard_fixtures import inbox, switch  # noqa: E402, F401
