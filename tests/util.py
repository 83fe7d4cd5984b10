"""Test helpers: deadlines instead of sleeps."""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from router import keys

__all__ = ["free_port", "offer_state", "wait_for"]


async def wait_for(
    predicate: Callable[[], object | Awaitable[object]],
    timeout: float = 5.0,  # noqa: ASYNC109 -- a polling deadline, not a cancellation scope
    interval: float = 0.01,
    message: str = "",
) -> object:
    """Poll ``predicate`` (sync or async) until it returns something truthy, and return that.

    Raises ``AssertionError`` with ``message`` when ``timeout`` seconds pass first. Exceptions
    from the predicate propagate: catch inside it what the condition should tolerate.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() >= deadline:
            raise AssertionError(message or f"condition not met within {timeout:g} s")
        await asyncio.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def offer_state(redis: Redis, ws: str, offer: str) -> str:
    """What became of an offer: its case's last offer is in the case hash (``ost``); an earlier
    one's end is in the event log (``offer.<state>``). ``""`` for an offer never made."""
    row = await redis.hmget(keys.case(ws, keys.offer_case(offer)), "offer", "ost")
    if row[0] is not None and row[0].decode() == offer:
        return (row[1] or b"").decode()
    for _, entry in await redis.xrevrange(keys.log(ws), count=100_000):
        if entry.get(b"offer", b"").decode() == offer and entry[b"t"].startswith(b"offer."):
            state: str = entry[b"t"].decode()
            return state.removeprefix("offer.").replace("created", "pending")
    return ""
