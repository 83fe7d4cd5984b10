"""Case lifecycle events for a bridge that asked for them (``events.subscribe``): a CRM hears
when cases are created, taken, handed on, completed, reopened or closed unanswered.

They are read from the workspace's event log stream (``sb:{<ws>}:log``, which every transition
writes in the same atomic step) and sent as ``case.event`` frames, each with the log entry's id:
a bridge that comes back subscribes ``after`` the last id it handled and misses nothing the log
still holds (about a million entries). Only what a CRM needs is sent: ids, channel, queue,
agent, disposition, reason — never a message's text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from router import keys
from router.store import open_client, stop_task

__all__ = ["EVENTS", "EventTail", "case_event"]

log = logging.getLogger("switchboard.case_events")

#: log entry type -> the event a bridge hears
EVENTS = {
    "case.created": "created",
    "offer.accepted": "assigned",
    "case.transferred": "transferred",
    "case.wrapping": "wrapping",
    "case.completed": "completed",
    "case.reopened": "reopened",
    "case.abandoned": "abandoned",
    "case.cancelled": "cancelled",
}
#: log entry field -> the frame's field (what is sent; nothing else is)
FIELDS = {
    "customer": "customer",
    "ch": "channel",
    "agent": "agent",
    "queue": "queue",
    "to": "to",
    "disposition": "disposition",
    "reason": "reason",
}


def case_event(entry_id: str, fields: dict[str, str]) -> dict[str, Any] | None:
    """The ``case.event`` frame of one log entry, or None for an entry that is no case event."""
    event = EVENTS.get(fields.get("t", ""))
    if event is None or not fields.get("case"):
        return None
    frame: dict[str, Any] = {
        "type": "case.event",
        "id": entry_id,
        "event": event,
        "case": fields["case"],
        "ts": float(fields.get("ts", "0")) / 1000,
    }
    for name, out in FIELDS.items():
        if fields.get(name):
            frame[out] = fields[name]
    return frame


class EventTail:
    """Reads the workspace's log from a cursor and hands each case event to ``send``, in order,
    until stopped; a Redis failure is retried from the last entry sent."""

    def __init__(
        self, url: str, ws: str, after: str, send: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> None:
        self.url, self.ws, self.cursor, self.send = url, ws, after, send
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"case-events-{self.ws}")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_task(self._task)

    async def _run(self) -> None:
        redis = open_client(self.url)
        stream = keys.log(self.ws)
        try:
            while True:
                try:
                    got = await redis.xread({stream: self.cursor}, count=500, block=5000)
                except RedisError as e:
                    log.warning("case events for %s: %s; retrying", self.ws, e)
                    await asyncio.sleep(1.0)
                    continue
                for _, entries in got or []:
                    for raw_id, raw in entries:
                        eid = raw_id.decode()
                        fields = {k.decode(): v.decode() for k, v in raw.items()}
                        frame = case_event(eid, fields)
                        if frame is not None:
                            await self.send(frame)
                        self.cursor = eid
        finally:
            await redis.aclose()
