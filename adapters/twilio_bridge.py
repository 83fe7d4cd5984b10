"""Twilio call bridging: ``call.connect`` entries from the outbox become REST calls to Twilio.

When an agent accepts a voice offer, ``offer_accept.lua`` appends a ``call.connect`` entry
(case, customer, thread = CallSid, agent) to the workspace outbox in the same atomic call.
:class:`CallBridge` reads every workspace outbox through its own consumer group (``twilio``)
and, for each entry whose thread is a Twilio CallSid:

- a live call: updates it with ``<Dial>`` to the agent's ``contact_uri`` attribute, whose
  ``action`` (``/voice/twilio/dialed``) puts the caller back on hold when the agent hangs up
  after transferring the call, and ends the call otherwise;
- a callback case (the caller pressed 1 and hung up): starts a call to the agent, from the
  number the customer called, that announces the callback and dials the customer.

An entry is acknowledged (XACK) only after Twilio answered 2xx, or a 4xx that retrying can't
fix (logged: the call has ended, the agent has no usable contact). Bridging runs in a task per
entry, so a slow or failing Twilio holds up no other call; 5xx and network errors are retried
with backoff (:mod:`adapters.twilio_rest`) for as long as it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError, ResponseError

from adapters.twilio_rest import TwilioRejected, TwilioRest
from adapters.twilio_voice import (
    callable_number,
    dial_twiml,
    outbound_callback_twiml,
    parse_contact,
    valid_call_sid,
)
from router import keys
from router.context import Ctx
from router.outbox import OutboxReader

__all__ = ["GROUP", "CallBridge"]

log = logging.getLogger("switchboard.adapters.twilio")

GROUP = "twilio"  # the bridge's consumer group on every workspace outbox


class CallBridge:
    """Bridges accepted calls of every workspace; one per server process. New entries go to
    one node each; a node that starts re-reads the entries still unacknowledged, which may
    include one another node is retrying at that moment (bridged twice: the agent's leg rings
    again). Losing no accepted call is worth that rare repeat."""

    def __init__(
        self,
        ctx: Ctx,
        rest: TwilioRest,
        *,
        workspace_poll_s: float = 5.0,
        dialed_url: Callable[[str, str], str] | None = None,
    ) -> None:
        self.ctx, self._rest = ctx, rest
        self._poll_s = workspace_poll_s
        # (workspace, agent) -> the <Dial action> URL: what next when the agent's leg ends
        self._dialed_url = dialed_url
        self._readers: dict[str, OutboxReader] = {}
        self._readers_lock = asyncio.Lock()
        self._inflight: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read the outbox of every declared workspace, and of workspaces declared later."""
        for ws in await self.ctx.switch.workspaces():
            await self.ensure_reader(ws)
        self._watch = asyncio.create_task(self._watch_workspaces(), name="twilio-workspaces")

    async def stop(self) -> None:
        """Cancel bridging in progress (unacknowledged entries are read again on restart)."""
        tasks = [t for t in (self._watch, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for reader in self._readers.values():
            await reader.stop()
        self._readers.clear()

    async def ensure_reader(self, ws: str) -> None:
        if ws in self._readers:
            return
        async with self._readers_lock:
            if ws in self._readers:
                return
            ctx = self.ctx
            # Create the group here, before any of this workspace's calls can be accepted:
            # a group created later (at "$") would skip the entries appended before it.
            with contextlib.suppress(ResponseError):
                await ctx.redis.xgroup_create(keys.outbox(ws), GROUP, id="$", mkstream=True)

            async def deliver(eid: str, entry: dict[str, Any]) -> bool:
                return self._deliver(ws, eid, entry)

            # One consumer name for every node, not one per node: entries a node left
            # unacknowledged (stopped, or killed mid-retry) are read again by whichever node
            # starts next, instead of waiting forever in a dead consumer's pending list.
            reader = OutboxReader(
                ctx.redis_url, ws, GROUP, GROUP, frozenset({"voice"}), deliver, source="twilio"
            )
            reader.start()
            self._readers[ws] = reader

    async def _watch_workspaces(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                for ws in await self.ctx.switch.workspaces():
                    await self.ensure_reader(ws)
            except (RedisError, OSError) as e:
                log.warning("twilio: listing workspaces: %s", e)

    def _deliver(self, ws: str, eid: str, entry: dict[str, Any]) -> bool:
        """Start bridging in the background (a slow Twilio must not hold up other calls);
        the entry is acknowledged by that task. True (acknowledge now) for entries that are
        not ours: replies on voice cases, calls that did not come through Twilio."""
        call = _call_sid(entry.get("thread", ""))
        if entry.get("kind") != "call.connect" or not valid_call_sid(call):
            return True
        entry = {**entry, "thread": call}
        if (ws, eid) in self._inflight:
            return False
        self._inflight.add((ws, eid))
        task = asyncio.create_task(self._connect(ws, eid, entry), name=f"twilio-connect-{eid}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return False

    async def _connect(self, ws: str, eid: str, entry: dict[str, Any]) -> None:
        call, agent = entry["thread"], entry.get("agent", "")
        try:
            try:
                await _retrying(lambda: self._bridge(ws, entry), f"call {call}")
                log.info("call %s connected to agent %s", call, agent)
            except (TwilioRejected, ValueError) as e:
                # retrying can't fix it; Twilio's status callback will end the case
                log.error(
                    "call %s (case %s) not connected to agent %s: %s",
                    call,
                    entry.get("case"),
                    agent,
                    e,
                )
                # the agent accepted and sees the call in progress: they must know nobody is
                # coming through, while the caller still holds (an agent without a phone set,
                # a call Twilio no longer has)
                # (our own reason for a phone we can't dial; Twilio's text, which names its
                # account's paths, stays in the log)
                why = f" ({e})" if isinstance(e, ValueError) else ""
                if agent:
                    with contextlib.suppress(RedisError, OSError):  # the entry is acked below
                        await self.ctx.switch.notify(
                            ws,
                            agent,
                            {
                                "type": "error",
                                "code": "call.not_connected",
                                "case": entry.get("case", ""),
                                "message": f"The call could not be put through to you{why}. "
                                "If the caller is still holding, transfer the case to a "
                                "colleague; an admin can check your phone (contact_uri).",
                            },
                        )
            await _retrying(lambda: self._readers[ws].ack(eid), f"call {call}: ack")
        finally:
            self._inflight.discard((ws, eid))

    async def _bridge(self, ws: str, entry: dict[str, Any]) -> None:
        r = self.ctx.redis
        agent_attrs = await r.hget(keys.agent(ws, entry.get("agent", "")), "attrs")
        contact = parse_contact(_json_map(agent_attrs).get("contact_uri"))
        callback, case_attrs = await r.hmget(
            keys.case(ws, entry.get("case", "")), ["callback", "attrs"]
        )
        if callback != b"1":
            agent = entry.get("agent", "")
            action = self._dialed_url(ws, agent) if self._dialed_url else ""
            await self._rest.update_call(entry["thread"], dial_twiml(contact, action))
            return
        # A callback case: the caller hung up after pressing 1; call the agent, then them.
        attrs = _json_map(case_attrs)
        customer = str(attrs.get("callback_number") or attrs.get("caller") or "")
        ours = str(attrs.get("to") or "")
        if not callable_number(customer) or not ours:
            raise ValueError("callback case without the caller's number or the number called")
        await self._rest.create_call(contact.to, ours, outbound_callback_twiml(customer, ours))


async def _retrying(fn: Callable[[], Awaitable[None]], what: str) -> None:
    """Run ``fn`` until it gets through Redis: it reads or acknowledges, and either is safe to
    repeat (the REST call comes after the reads and retries on its own)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            await fn()
            return
        except (RedisError, OSError) as e:
            delay = min(10.0, 0.25 * 2**attempt) * random.uniform(0.5, 1.0)
            log.warning("%s: %s; retrying in %.1f s", what, e, delay)
            await asyncio.sleep(delay)


def _call_sid(thread: str) -> str:
    # The core stores a case's thread as "<channel>:<thread>"; accept the bare id as well.
    return thread.removeprefix("voice:")


def _json_map(raw: bytes | None) -> dict[str, Any]:
    try:
        v = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return v if isinstance(v, dict) else {}
