"""Files customers send (email attachments), kept so the agent can open them.

The email adapter hands each attachment's bytes to :meth:`Attachments.keep` before the mail is
ingested; the timeline entry lists the attachment with the id it got. Once the case is known,
:meth:`Attachments.link` records it on each file: who may read a file is decided by its case
(``GET /api/attachments/{id}``: a supervisor, or the agent holding a case of that customer),
never by the entry that names it. A file lives in Redis next to its workspace's cases
(``sb:{ws}:f:<id>``: a hash of name, type, size, case and the bytes) and expires after
``SWITCHBOARD_ATTACHMENT_DAYS`` (90); a mail is at most 10 MB, so is a file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import redis.asyncio as aioredis

from router import keys
from router.ids import new_id

__all__ = ["Attachments", "StoredFile"]


@dataclass(frozen=True, slots=True)
class StoredFile:
    name: str
    type: str
    case: str
    data: bytes


class Attachments:
    """The files of every workspace on one Redis."""

    def __init__(self, redis: aioredis.Redis, days: float = 90) -> None:
        self.redis = redis
        self.ttl_s = max(int(days * 86_400), 1)

    async def keep(self, ws: str, name: str, ctype: str, data: bytes) -> str:
        """Store one file, not yet linked to a case; returns its id."""
        fid = new_id("f")
        key = keys.attachment(ws, fid)
        pipe = self.redis.pipeline(transaction=False)  # one slot; cluster clients too
        pipe.hset(key, mapping={"name": name, "type": ctype, "size": len(data), "data": data})
        pipe.expire(key, self.ttl_s)
        await pipe.execute()
        return fid

    async def link(self, ws: str, ids: Iterable[str], case: str) -> None:
        """The files arrived on ``case`` (its agents may read them)."""
        pipe = self.redis.pipeline(transaction=False)
        for fid in ids:  # kept a moment ago, with days to live
            pipe.hset(keys.attachment(ws, fid), "case", case)
        await pipe.execute()

    async def drop(self, ws: str, ids: Iterable[str]) -> None:
        """Forget files kept for a mail that turned out to be a duplicate."""
        names = [keys.attachment(ws, fid) for fid in ids]
        if names:
            await self.redis.delete(*names)

    async def read(self, ws: str, fid: str) -> StoredFile | None:
        if not keys.valid_id(fid):
            return None
        name, ctype, case, data = await self.redis.hmget(
            keys.attachment(ws, fid), ["name", "type", "case", "data"]
        )
        if data is None:
            return None
        return StoredFile(
            (name or b"attachment").decode(errors="replace"),
            (ctype or b"application/octet-stream").decode(errors="replace"),
            (case or b"").decode(),
            bytes(data),
        )
