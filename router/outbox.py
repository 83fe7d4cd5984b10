"""The outbox: replies and call connects leave through a Redis stream, delivered at least once.

``case_reply.lua`` and ``offer_accept.lua`` append to the workspace's outbox stream in the same
atomic call as the transition, so a reply can't be lost between Redis and an adapter. Each
consumer — a bridge (by its id) or an adapter such as email — reads the stream through its own
consumer group, so every consumer sees every entry once; entries it has not acknowledged are
re-read from its pending list after a reconnect or restart. An entry names the case's source
(``src``: the bridge, the chat widget or the adapter it came in through), and only that consumer
delivers it: a reply to a web chat never reaches a chat bridge, and one bridge's conversations
never reach another. Entries without one (cases opened through the REST API, or before
sources were recorded) go to every consumer that takes their channel.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError, ResponseError

from router import keys
from router.errors import StoreUnavailable
from router.store import Store, open_client, stop_task

__all__ = ["Delivery", "OutboxReader"]

log = logging.getLogger("switchboard.outbox")

#: deliver(entry id, entry) -> True if done (acknowledge now), False if acknowledged later.
Delivery = Callable[[str, dict[str, Any]], Awaitable[bool]]


def _pairs(flat: list[bytes] | None) -> dict[bytes, bytes]:
    return dict(zip(flat[0::2], flat[1::2], strict=True)) if flat else {}


def _decode(fields: dict[bytes, bytes]) -> dict[str, Any]:
    out: dict[str, Any] = {k.decode(): v.decode() for k, v in fields.items()}
    if "entry" in out:
        out["entry"] = json.loads(out["entry"])
    return out


class OutboxReader:
    def __init__(
        self,
        url: str,
        ws: str,
        group: str,
        consumer: str,
        channels: frozenset[str],
        deliver: Delivery,
        *,
        source: str = "",
        start_at_end: bool = True,
        retry_s: float = 1.0,
        max_retry_s: float = 30.0,
        store: Store | None = None,
    ) -> None:
        self.redis = open_client(url)
        # acknowledgements through the store's own connection when given (a bridge's, one per
        # delivery: on the routing path), else through this reader's client
        self.store = store
        # this reader's blocking reads on a connection of the store's kind, when given (a
        # cluster client has none: its reads go through the client)
        self._lane = store.own_connection() if store is not None else None
        # a delivery that keeps failing (the smarthost down) is retried after retry_s, then
        # twice as long each time up to max_retry_s, and its traceback logged once a streak:
        # it was every second, with a traceback each time, for as long as the outage lasted.
        # Redis failing is retried every retry_s (a caller may be waiting for a call.connect)
        self.retry_s, self.max_retry_s = retry_s, max_retry_s
        self.failures = 0  # in a row; 0 once a pass reads or delivers without failing
        self.ws, self.group, self.consumer = ws, group, consumer
        self.channels = channels
        self.source = source  # this consumer's name as Switch.ingest records it on a case
        self.deliver = deliver
        self.start_at_end = start_at_end
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-{self.group}")

    async def stop(self) -> None:
        """Stop reading; returns once the reader task has ended (entries it handed out and
        nobody acknowledged stay pending for the group's next reader)."""
        if self._task:
            # cancelled until it has really ended: a leaked reader would keep taking this
            # group's entries
            await stop_task(self._task)
        if self._lane is not None:
            await self._lane.close()
        await self.redis.aclose()

    async def ack(self, entry_id: str) -> None:
        if self.store is not None:
            await self.store.commands(("XACK", keys.outbox(self.ws), self.group, entry_id))
        else:
            await self.redis.xack(keys.outbox(self.ws), self.group, entry_id)

    async def pending(self, entry_id: str) -> dict[str, Any] | None:
        """The entry, if it was handed to this group and not yet acknowledged; else None."""
        stream = keys.outbox(self.ws)
        if not await self.redis.xpending_range(stream, self.group, entry_id, entry_id, 1):
            return None
        got = await self.redis.xrange(stream, entry_id, entry_id)
        return _decode(got[0][1]) if got else None

    async def _ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(
                keys.outbox(self.ws),
                self.group,
                id="$" if self.start_at_end else "0",
                mkstream=True,
            )
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def _run(self) -> None:
        stream = keys.outbox(self.ws)
        while True:
            try:
                await self._ensure_group()
                cursor = "0"  # our pending entries first, then new ones
                while True:
                    entries = await self._read(stream, cursor)
                    if not entries:
                        self._recovered()
                    if cursor != ">" and not entries:
                        cursor = ">"  # every pending entry handed out again; now new ones
                        continue
                    for eid_raw, fields in entries:
                        eid = eid_raw.decode()
                        entry = _decode(fields)
                        if entry.get("ch") not in self.channels or entry.get("src", "") not in (
                            "",
                            self.source,
                        ):
                            await self.ack(eid)
                        elif await self.deliver(eid, entry):
                            await self.ack(eid)
                        self._recovered()
                    if cursor != ">":
                        # the pending list is read in pages: continue after this one
                        cursor = entries[-1][0].decode()
            except asyncio.CancelledError:
                raise
            except (RedisError, StoreUnavailable) as e:
                # Redis: back as soon as it is (a call may be waiting)
                log.warning("outbox %s: %s; retrying", self.group, e)
                await asyncio.sleep(self.retry_s)
            except Exception as e:
                delay = self._failed()
                if self.failures == 1:
                    log.exception("outbox %s delivery failed; retrying", self.group)
                else:
                    log.warning(
                        "outbox %s delivery failed again (%d in a row): %s; retrying in %.3g s",
                        self.group, self.failures, e, delay,
                    )  # fmt: skip
                await asyncio.sleep(delay)

    async def _read(self, stream: str, cursor: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Up to 100 entries after ``cursor`` ("0": this consumer's pending ones; ">": new
        ones, waiting up to 2 s for one), as (id, fields)."""
        if self._lane is None:
            got = await self.redis.xreadgroup(
                self.group, self.consumer, {stream: cursor}, count=100, block=2000
            )
            return [(eid, fields or {}) for eid, fields in got[0][1]] if got else []
        raw = await self._lane.call(
            "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", 100, "BLOCK", 2000,
            "STREAMS", stream, cursor, blocks_s=2.0,
        )  # fmt: skip
        if not raw:
            return []
        # {stream: [[id, [field, value, ...]], ...]} (RESP3), or [[stream, [...]]] (RESP2); a
        # pending entry trimmed away since comes back with no fields
        got = next(iter(raw.values())) if isinstance(raw, dict) else raw[0][1]
        return [(eid, _pairs(f)) for eid, f in got]

    def _failed(self) -> float:
        """Count a failure; the wait before the next try."""
        self.failures += 1
        return float(min(self.max_retry_s, self.retry_s * 2 ** (self.failures - 1)))

    def _recovered(self) -> None:
        if self.failures:
            log.info("outbox %s delivering again after %d failures", self.group, self.failures)
            self.failures = 0
