"""The frame loop's rate limit (router/session.py), driven in-process on a stand-in socket and
clock: a long-lived connection's occasional bursts never add up to a close; a flood does."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from router.hub import Conn
from router.session import MAX_VIOLATIONS, serve_frames


class Socket:
    """Gives the frames it was handed, then a disconnect; keeps what is sent and the close."""

    def __init__(self, frames: list[str], clock: list[float], gap_every: int, gap_s: float):
        self.frames, self.clock = frames, clock
        self.gap_every, self.gap_s = gap_every, gap_s
        self.read = 0
        self.sent: list[str] = []
        self.closed_with: int | None = None

    async def receive(self) -> dict[str, Any]:
        if not self.frames or self.closed_with is not None:
            return {"type": "websocket.disconnect"}
        self.read += 1
        if self.gap_every and self.read % self.gap_every == 0:
            self.clock[0] += self.gap_s  # a quiet spell, then the next burst
        return {"type": "websocket.receive", "text": self.frames.pop(0)}

    async def send_text(self, data: str) -> None:
        self.sent.append(data)

    async def close(self, code: int, reason: str = "") -> None:
        self.closed_with = code


async def _run(monkeypatch: pytest.MonkeyPatch, frames: int, gap_every: int, gap_s: float) -> Any:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])  # the loop's clock (and the bucket's)
    sock = Socket([json.dumps({"type": "ping"})] * frames, clock, gap_every, gap_s)

    async def handle(f: dict[str, Any]) -> dict[str, Any] | None:
        return None

    await serve_frames(sock, Conn(sock, "switchboard.v1.json"), handle,  # type: ignore[arg-type]
                       endpoint="test", max_frame=1024, rate=1.0)  # fmt: skip
    return sock


async def test_bursts_an_hour_apart_never_close_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # bursts of 100 frames at once (2 allowed, 98 dropped each), an hour apart
    sock = await _run(monkeypatch, 100 * 10, gap_every=100, gap_s=3600)
    assert sock.closed_with is None
    assert sum('"rate_limited"' in s for s in sock.sent) > MAX_VIOLATIONS


async def test_a_flood_closes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    sock = await _run(monkeypatch, 1000, gap_every=0, gap_s=0)
    assert sock.closed_with == 1008
