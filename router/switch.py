"""The Switch: the routing core's one entry point, used by the server, adapters and benches.

Each method validates its input, runs exactly one transition script (plus, rarely, a pool
definition the first time a (queue, filter) pair is seen) and hands every resulting offer and
push to the ``notify`` callback — whichever node or process calls it. Errors are typed
(:mod:`router.errors`); a failed call has changed nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from router import fastjson, keys, queries, snapshot
from router.declarations import Declarations, default_queue
from router.errors import (
    BadRequest,
    ConfigError,
    Conflict,
    NotFound,
    SwitchboardError,
    from_script,
)
from router.ids import new_id
from router.ingest import Event, entry_ts, parse_event, preview, timeline_entry
from router.metrics import METRICS
from router.pools import Pools
from router.push import offer_frame, pairs, script_list
from router.store import Store, now_ms
from router.triage import PoolSpec, triage
from router.workspace import AgentConfig, WorkspaceConfig, parse_agent, parse_workspace

__all__ = ["IngestResult", "Notify", "Switch"]


class Notify(Protocol):
    """Deliver a server → agent frame to that agent's consoles. ``nodes``, when given, names
    the router nodes that held the agent's consoles when the transition ran (offers carry it),
    so a node holding all of them need not relay the frame through Redis."""

    def __call__(
        self, ws: str, agent: str, frame: dict[str, Any], *, nodes: Sequence[str] | None = None
    ) -> Awaitable[None]: ...


DEDUPE_TTL_S = 7 * 86400


async def _drop(
    ws: str, agent: str, frame: dict[str, Any], *, nodes: Sequence[str] | None = None
) -> None:
    return None


log = logging.getLogger("switchboard.switch")


@dataclass(frozen=True, slots=True)
class IngestResult:
    case: str
    customer: str
    action: str  # created | appended | reopened | abandoned | stale | ignored
    duplicate: bool
    offered: bool = False  # this very call offered the case to an agent


REVOKED = "your role or password changed since you signed in"
REMOVED = "an administrator removed your account"


class Switch:
    """The routing core for any number of workspaces on one Redis."""

    def __init__(self, store: Store, *, notify: Notify | None = None) -> None:
        self.store = store
        self.redis = store.redis
        self.notify: Notify = notify or _drop
        self.declarations = Declarations(store)
        self.pools = Pools(store)

    # -- configuration (router/declarations.py) ----------------------------------------------------

    async def apply_workspace(
        self, decl: Mapping[str, Any], *, read_version: str | None = None
    ) -> WorkspaceConfig:
        """Validate and store a workspace declaration; upsert its queues and agents.

        ``read_version``: the ``declver`` the caller read the declaration at (a read-change-write
        edit); if it changed meanwhile nothing is stored and ``Conflict`` (code
        ``workspace.changed``) is raised, for the caller to read again and retry.
        """
        before = await self._keep_queues_in_use(parse_workspace(decl))
        cfg, res = await self.declarations.apply(decl, read_version=read_version)
        ws = cfg.id
        self.pools.forget(ws)
        await self.config(ws)
        if dq := default_queue(cfg):  # defined before a case needs it (the agents join it below)
            await self.pools.ensure(ws, cfg, [PoolSpec(dq, dq, "true")])
        await self._dispatch(ws, res)  # cases that moved on from a queue it dropped
        declared = {a.id for a in cfg.agents}
        for a in cfg.agents:  # from the declaration as given: it has the passwords
            await self.upsert_agent(ws, a)
        # queue targets may have changed: recompute memberships of the other agents too
        for aid in await self.agent_ids(ws):
            if aid not in declared:
                await self._update_memberships(ws, aid)
        if before is not None and _queue_names(before) != _queue_names(cfg):
            await self.announce_queues(ws)  # open cases show their queue by name
        return cfg

    async def _keep_queues_in_use(self, new: WorkspaceConfig) -> WorkspaceConfig | None:
        """Refuse (Conflict ``queue.in_use``) a declaration that drops a queue cases wait in,
        whoever applies it: the admin API, or a node started with an edited file. Returns the
        workspace as it was (None: new, or stored by an older version that checked less)."""
        try:
            old = await self.config(new.id, fresh=True)
        except NotFound:
            return None
        except ConfigError as e:  # replaced now by one this version reads
            log.warning("workspace %s: the stored declaration is not valid (%s)", new.id, e)
            return None
        kept = {q.id for q in new.queues}
        for q in old.queues:
            if q.id in kept:
                continue
            if why := await queries.queue_in_use(self.redis, old, new.id, q.id):
                raise Conflict(f"queue {q.id} would be removed, but {why}", code="queue.in_use")
        return old

    async def declaration(self, ws: str) -> tuple[dict[str, Any], str]:
        """The stored declaration (agents as first declared, without passwords) and its version,
        for a read-change-write edit: ``apply_workspace(changed, read_version=version)``."""
        return await self.declarations.read(ws)

    async def config(self, ws: str, *, fresh: bool = False) -> WorkspaceConfig:
        """The workspace's config, as cached (the timer loop drops what another node changed,
        within a second); ``fresh``: check with Redis first, so that an admin reading after a
        write made through another node reads that write."""
        if fresh and await self.declarations.drop_if_changed(ws):
            self.pools.forget(ws)
        return await self.declarations.config(ws)

    async def refresh_configs(self) -> None:
        """Drop cached declarations another node changed (called by the timer loop)."""
        async for ws in self.declarations.changed():
            self.pools.forget(ws)

    async def workspaces(self) -> list[str]:
        return await self.declarations.workspaces()

    async def agent_ids(self, ws: str) -> list[str]:
        return await self.pools.agent_ids(ws)

    # -- agents and pools (router/pools.py) --------------------------------------------------------

    async def upsert_agent(
        self, ws: str, agent: AgentConfig | Mapping[str, Any], *, create_only: bool = False
    ) -> None:
        """Create or update an agent; recompute the pools they belong to. ``create_only``:
        refuse (Conflict ``agent.exists``) if one of this id exists."""
        cfg = await self.config(ws)
        a = agent if isinstance(agent, AgentConfig) else parse_agent(agent)
        res = await self.pools.update_agent(ws, cfg, a, create_only=create_only)
        await self._dispatch(ws, res)
        if res.get("revoked"):  # their consoles, on every node, are told and closed
            await self.notify(ws, a.id, {"type": "session.revoked", "message": REVOKED})
        else:  # their consoles show their name, capacity and skills as they are now
            fields = pairs(await self.redis.hgetall(keys.agent(ws, a.id)))
            if fields:
                view = snapshot.agent_view(fields)
                await self.notify(ws, a.id, {"type": "agent.updated", "agent": view})

    async def announce_queues(self, ws: str) -> None:
        """Tell every console of the workspace its queues as they are now (``queues.updated``):
        an admin added, renamed or removed one, and open cases show their queue by name."""
        cfg = await self.config(ws)
        frame = {
            "type": "queues.updated",
            "queues": [{"id": q.id, "name": q.name} for q in cfg.queues],
        }
        for a in await self.agent_ids(ws):
            await self.notify(ws, a, frame)

    async def remove_agent(self, ws: str, aid: str) -> None:
        """Remove an agent (agent_remove.lua): refused with ``agent.busy`` while they hold
        cases; their pending offers go on to the next agents, and their consoles on every node
        are told and closed (``session.revoked``)."""
        res: dict[str, Any] = await self.store.run("agent_remove", ws, aid)
        if not res.get("ok"):
            held = script_list(res.get("cases"))
            if res.get("error") == "agent.busy":
                more = f" and {len(held) - 5} more" if len(held) > 5 else ""
                raise Conflict(
                    f"{aid} holds {len(held)} case(s): move them first "
                    f"({', '.join(held[:5])}{more})",
                    code="agent.busy",
                )
            raise from_script(str(res.get("error", "error")))
        await self._dispatch(ws, res)
        frame = {"type": "session.revoked", "reason": "removed", "message": REMOVED}
        await self.notify(ws, aid, frame)

    async def _update_memberships(self, ws: str, aid: str) -> None:
        a = await self.pools.stored_agent(ws, aid)
        if a is not None:
            await self.upsert_agent(ws, a)

    # -- ingest --------------------------------------------------------------------------------

    async def ingest(
        self, ws: str, event: Mapping[str, Any] | Event, *, source: str = ""
    ) -> IngestResult:
        """Dedupe, identify, thread, triage and queue one event; offer it if an agent is free.

        ``source`` names where a new case came from ("bridge:<id>", "widget", "email",
        "twilio"): its replies go out through that consumer of the outbox only ('' = any that
        takes the channel). Returns only once the event is in Redis. Raises BadRequest/TooLarge
        for a bad event, NotFound for an unknown workspace, StoreUnavailable if Redis failed
        (not acknowledged).
        """
        ev = event if isinstance(event, Event) else parse_event(event)
        cfg = await self.config(ws)
        tri = triage(cfg, ev.channel, ev.attributes, subject=ev.subject)
        if not ev.subject and ev.channel == "chat" and ev.text:
            # a chat has no subject: its first words stand in for one where cases are listed
            # (the supervisor's lists; an agent's offer reads the conversation itself)
            tri.fields["pv"] = preview(ev.text[:480])
        await self.pools.ensure(ws, cfg, tri.pools)
        # A bridge's event ids and threads are its own: another bridge (or the widget, the
        # mail adapter) sending the same id or thread never joins, or dedupes against, its cases
        scope = source if source.startswith("bridge:") else ""
        if scope:  # its visitors too: the widget's visitor v1, or another bridge's, is another
            ev = dataclasses.replace(
                ev,
                identities=_own_visitors(ev.identities, scope),
                claims=_own_visitors(ev.claims, scope),
            )
        res = await self.store.run(
            "event_ingest",
            ws,
            f"{scope}|{ev.id}" if scope else ev.id,
            ev.channel,
            ev.kind,
            # claims travel with a "?" in front: recorded, never looked up or linked
            fastjson.dumps_str([*ev.identities, *("?" + c for c in ev.claims)]),
            ev.name,
            ev.thread_key,
            ev.case,
            fastjson.dumps_str(timeline_entry(ev)),
            new_id("c"),
            new_id("u"),
            tri.plan_json,
            fastjson.dumps_str({**tri.fields, "src": source} if source else tri.fields),
            int(cfg.reopen_window_s * 1000),
            tri.reopen_json,
            "" if ev.seq is None else ev.seq,
            DEDUPE_TTL_S,
            scope,
        )
        if not res.get("ok"):  # a case another source opened (event_ingest.lua)
            raise NotFound("case not found: not one of this bridge's", code="case.unknown")
        await self._dispatch(ws, res)
        # counted here, where every source's events pass (bridges, widget, email, REST, Twilio)
        METRICS.events.labels(res.get("action", "")).inc()
        if res.get("action") == "created":
            METRICS.cases_created.labels(ev.channel).inc()
        for other in script_list(res.get("conflicts")):
            await self._absorb_anonymous(ws, res["customer"], other)
        offered = any(o.get("case") == res["case"] for o in script_list(res.get("offers")))
        return IngestResult(
            res["case"], res["customer"], res["action"], bool(res["duplicate"]), offered
        )

    # -- agent actions -------------------------------------------------------------------------

    async def _act(self, name: str, ws: str, *args: Any) -> dict[str, Any]:
        res: dict[str, Any] = await self.store.run(name, ws, *args)
        if not res.get("ok"):
            raise from_script(str(res.get("error", "error")))
        await self._dispatch(ws, res)
        return res

    async def set_status(self, ws: str, agent: str, status: str, *, by: str = "") -> dict[str, Any]:
        """Set an agent's status. ``by``: who sets it, when not the agent themselves (a
        supervisor): a routable status is then refused (``agent.signed_out``) for an agent
        with no console open (nor a reconnect grace), who would be offered cases nobody
        answers, and the agent's consoles are told (``status``, reason ``supervisor``)."""
        signed_in_only = bool(by) and by != agent
        cfg = await self.config(ws)
        st = cfg.status(status)
        if st is None:
            raise BadRequest(f"unknown status {status!r}", code="status.unknown")
        try:
            res = await self._act(
                "agent_status",
                ws,
                agent,
                st.name,
                "1" if st.routable else "0",
                "1" if signed_in_only else "0",
            )
        except Conflict as e:
            if e.code != "agent.signed_out":
                raise
            raise Conflict(
                f"{agent} is not signed in: {st.name} would offer them cases nobody answers",
                code="agent.signed_out",
            ) from None
        if by:
            # the agent's consoles learn it as they learn a status set by the timers
            frame = {"type": "status", "status": res["status"], "reason": "supervisor"}
            await self.notify(ws, agent, frame)
        return res

    async def accept(self, ws: str, agent: str, offer: str) -> dict[str, Any]:
        return await self._act("offer_accept", ws, agent, offer)

    async def reject(self, ws: str, agent: str, offer: str) -> dict[str, Any]:
        cfg = await self.config(ws)
        after = cfg.status(cfg.reject_status) if cfg.reject_status else None
        return await self._act(
            "offer_reject",
            ws,
            agent,
            offer,
            after.name if after else "",
            ("1" if after.routable else "0") if after else "",
            int(cfg.reoffer_refused_after_s * 1000),
        )

    async def wrapup(self, ws: str, agent: str, case: str) -> dict[str, Any]:
        return await self._act("case_wrapup", ws, agent, case)

    async def complete(
        self,
        ws: str,
        agent: str,
        case: str,
        disposition: str = "",
        note: str = "",
        *,
        agent_name: str = "",
    ) -> dict[str, Any]:
        cfg = await self.config(ws)
        if disposition and disposition not in cfg.dispositions:
            raise BadRequest(f"unknown disposition {disposition!r}", code="disposition.unknown")
        entry = ""
        if note or disposition:
            entry = _note_entry(
                case, "wrapup", agent, agent_name, text=note, disposition=disposition
            )
        return await self._act("case_complete", ws, agent, case, disposition, entry)

    async def transfer(
        self,
        ws: str,
        agent: str,
        case: str,
        *,
        queue: str = "",
        to_agent: str = "",
        note: str = "",
        by_name: str = "",
    ) -> dict[str, Any]:
        """Transfer an assigned case to a queue or a named agent (then back to the queue).

        ``agent`` '' means a supervisor (the caller checked the role) moving a waiting case, or
        taking an assigned or wrapping one back from its agent, whose consoles are told.
        ``by_name``: who did it, as the history shows them (the agent's or supervisor's name).
        """
        cfg = await self.config(ws)
        plan, to_name = await self._transfer_plan(ws, cfg, agent, case, queue, to_agent)
        entry = _note_entry(
            case, "transfer", agent, by_name, text=note, to=to_agent or queue, to_name=to_name
        )
        plan_json = fastjson.dumps_str(plan)
        return await self._act(
            "case_transfer",
            ws,
            agent,
            case,
            plan_json,
            entry,
            to_agent,
            int(cfg.reoffer_refused_after_s * 1000),
        )

    async def _transfer_plan(
        self, ws: str, cfg: WorkspaceConfig, agent: str, case: str, queue: str, to_agent: str
    ) -> tuple[list[dict[str, Any]], str]:
        """The plan a transfer gives the case, and the name of where it goes (the history's)."""
        if bool(queue) == bool(to_agent):
            raise BadRequest("transfer to exactly one of queue or agent", code="transfer.invalid")
        row = await self.redis.hmget(keys.case(ws, case), ["q", "pri", "ch", "st", "agent"])
        if row[0] is None:
            raise NotFound("case not found", code="case.unknown")
        if agent and row[3] == b"wrapping" and row[4] == agent.encode():
            # the conversation has ended (case_transfer.lua says the same; this comes first)
            raise Conflict("the conversation has ended: complete the case", code="case.wrapping")
        pri = int(row[1] or 0)
        if to_agent:
            if to_agent == agent:
                raise BadRequest("a transfer to yourself", code="transfer.invalid")
            ch = (row[2] or b"").decode()
            cap, name, st, routable = await self.redis.hmget(
                keys.agent(ws, to_agent), [f"cap:{ch}", "name", "st", "r"]
            )
            if st is None:
                raise NotFound("agent not found", code="agent.unknown")
            who = (name or to_agent.encode()).decode()  # as the agent knows them
            if int(cap or 0) <= 0:
                raise BadRequest(f"{who} takes no {ch} cases", code="transfer.invalid")
            if routable != b"1":  # signed out, away, at lunch: the step would be skipped
                raise BadRequest(
                    f"{who} is not taking cases ({st.decode()}): choose a queue or a "
                    "colleague who is available",
                    code="transfer.invalid",
                )
            back = row[0].decode()
            await self.pools.ensure(ws, cfg, [PoolSpec(back, back, "true")])
            tmo = int(cfg.transfer_agent_timeout_s * 1000)
            bq = cfg.queue(back)
            lifo = "1" if bq is not None and bq.order == "lifo" else "0"
            return [
                {"queue": back, "pri": pri, "lifo": "0", "due": tmo, "agent": to_agent},
                {"queue": back, "pri": pri, "lifo": lifo, "pool": back},
            ], (name or b"").decode() or to_agent
        q = cfg.queue(queue)
        if q is None:
            raise NotFound(f"queue {queue!r} not found", code="queue.unknown")
        spec = PoolSpec(q.id, q.id, "true")
        await self.pools.ensure(ws, cfg, [spec])
        return [
            {"queue": q.id, "pri": pri, "lifo": "1" if q.order == "lifo" else "0", "pool": q.id}
        ], q.name or q.id

    async def followup(
        self, ws: str, agent: str, case: str, due_ms: int, note: str = "", *, agent_name: str = ""
    ) -> dict[str, Any]:
        """Remind ``agent`` of the case at ``due_ms``; the case's history says so (whoever
        holds it next sees that a follow-up is set, when, by whom and why)."""
        if due_ms < now_ms() - 60_000 or due_ms > now_ms() + 366 * 86400 * 1000:
            raise BadRequest("due: within the next year", code="followup.invalid")
        entry = _note_entry(case, "followup", agent, agent_name, text=note[:2000], due=due_ms)
        return await self._act("case_followup", ws, agent, case, due_ms, note[:2000], entry)

    async def cancel_followup(
        self, ws: str, agent: str, followup: str, *, agent_name: str = ""
    ) -> dict[str, Any]:
        """Cancel a follow-up ``agent`` set (``"<case>|<n>"``, the ack of case.followup) that is
        not yet due; the history says so. NotFound ``followup.unknown`` if there is none."""
        case, _, n = followup.partition("|")
        if not case or not n.isdigit():
            raise NotFound("follow-up not found", code="followup.unknown")
        entry = _note_entry(case, "followup.cancelled", agent, agent_name)
        return await self._act("followup_cancel", ws, agent, case, n, entry)

    async def reopen(
        self, ws: str, agent: str, case: str, *, agent_name: str = ""
    ) -> dict[str, Any]:
        """``agent`` takes a closed case back to follow it up (case_reopen.lua): assigned to
        them at once, a call as a callback. Refused, saying why, when the case is open (and
        whose it is), or they have no room on its channel."""
        entry = _note_entry(case, "reopened", agent, agent_name)
        res: dict[str, Any] = await self.store.run("case_reopen", ws, agent, case, entry)
        if res.get("ok"):
            await self._dispatch(ws, res)
            return res
        code, holder = str(res.get("error", "error")), str(res.get("agent") or "")
        if code == "agent.full":
            ch = res.get("ch") or ""
            if not res.get("cap"):
                raise Conflict(f"you take no {ch} cases", code=code)
            raise Conflict(f"you have no room for another {ch} case: finish one first", code=code)
        if code == "case.offered" and holder == agent:
            raise Conflict("it is offered to you now: accept the offer", code=code)
        if code in ("case.assigned", "case.wrapping") and holder:
            name = await self.redis.hget(keys.agent(ws, holder), "name")
            raise Conflict(
                f"{(name or holder.encode()).decode()} has this case now", code="case.assigned"
            )
        if code in ("case.queued", "case.offered"):
            q = (await self.config(ws)).queue(str(res.get("queue") or ""))
            where = f" in the {q.name} queue" if q else ""
            raise Conflict(f"the case is waiting for an agent{where}", code=code)
        raise from_script(code)

    async def reply(
        self,
        ws: str,
        agent: str,
        case: str,
        text: str,
        *,
        note: bool = False,
        agent_name: str = "",
    ) -> dict[str, Any]:
        """Send ``text`` to the customer on the case's channel (or add an internal note)."""
        if not text.strip():
            raise BadRequest("text: empty", code="reply.invalid")
        entry = {
            "id": new_id("m"),
            "dir": "note" if note else "out",
            "kind": "message",
            "ts": entry_ts(),
            "text": text,
            "agent": agent,
            "from": agent_name or agent,
        }
        return await self._act(
            "case_reply", ws, agent, case, fastjson.dumps_str(entry), "note" if note else "reply"
        )

    async def delivery_failed(
        self,
        ws: str,
        case: str,
        reason: str,
        *,
        to: str = "",
        reply: Mapping[str, Any] | None = None,
        key: str = "",
    ) -> dict[str, Any]:
        """A reply the customer will never get: its adapter gave up on it (the mail server
        refused the address for good, there is no address to send it to). The agents believe
        the customer has their answer, so:

        - the case's history says so: a system entry (``dir`` ``note``, ``kind``
          ``delivery.failed``, ``text`` "Reply not delivered to <to>: <reason>"), which agents
          see and the customer never does (the chat widget shows only ``in``/``out`` entries);
        - the agent holding the case (or being offered it) gets it at once, as a
          ``case.updated`` (``event`` ``delivery.failed``) with the ``entry``;
        - the agent who wrote the reply, the one holding the case, and for a closed case the
          one who last had it, are alerted: an ``error`` frame with ``code`` ``delivery.failed``
          (no ``ref``: it answers no request), which the console shows as an alert even when
          the case is no longer on their screen.

        ``to``: where the reply was going; ``reply``: its timeline entry (who wrote it, its
        text); ``key``: the delivery's own id (its outbox entry): an adapter that calls again
        for it (a retry after a crash) records and tells nothing twice. Returns the entry, or
        ``{}`` when ``key`` was recorded already. Raises NotFound for an unknown case.
        """
        reason = " ".join(str(reason).split())[:500] or "refused"
        rep = reply or {}
        author = rep.get("agent") if isinstance(rep.get("agent"), str) else ""
        said = " ".join(str(rep.get("text") or "").split())
        entry: dict[str, Any] = {
            "id": new_id("n"),
            "case": case,
            "ch": "note",
            "dir": "note",
            "kind": "delivery.failed",
            "ts": entry_ts(),
            "text": f"Reply not delivered{f' to {to}' if to else ''}: {reason}",
            "to": to,
            "reason": reason,
            "reply": str(rep.get("id") or ""),
            "reply_text": said if len(said) <= 160 else said[:159] + "…",
            "agent": author,
            "from": "System",
        }
        res = await self._act(
            "case_delivery_failed",
            ws,
            case,
            fastjson.dumps_str(entry),
            f"delivery.failed:{key}" if key else "",
            DEDUPE_TTL_S,
            author,
        )
        if res.get("duplicate"):
            return {}
        st, agent, oagent = str(res["st"]), str(res["agent"]), str(res["oagent"])
        last_agent, subject = str(res["last_agent"]), str(res["subject"])
        holder = agent if st in ("assigned", "wrapping") else ""
        with_case = holder or (oagent if st == "offered" else "")
        if with_case:
            await self.notify(
                ws,
                with_case,
                {"type": "case.updated", "case": case, "event": "delivery.failed", "entry": entry},
            )
        closed = st not in ("queued", "offered", "assigned", "wrapping")
        about = f" on “{subject}”" if subject else ""
        what = f"not delivered to {to or 'the customer'}: {reason.rstrip('.')}."
        what += " The customer did not get it."
        for a in dict.fromkeys([author, holder, last_agent if closed else ""]):
            if a:
                whose = "Your reply" if a == author else "A reply"
                alert = {
                    "type": "error",
                    "ref": None,
                    "code": "delivery.failed",
                    "case": case,
                    "message": f"{whose}{about} was {what}",
                }
                await self.notify(ws, a, alert)
        return entry

    async def reply_delivered(
        self, ws: str, case: str, customer: str, entry: str, *, via: str
    ) -> bool:
        """A reply its adapter handed on (``via``: ``email`` when the mail server accepted it,
        ``bridge:<id>`` when the bridge answered ``delivered``): its timeline entry gets
        ``delivered`` (when) and ``via``, and the case's agent sees it at once
        (``case.updated``, ``event`` ``reply.delivered``, ``reply``: the entry's id).
        Returns whether it was marked now (False: marked already, or no longer found)."""
        res = await self.store.run("case_delivered", ws, case, customer, entry, via)
        if not res.get("ok") or not res.get("updated"):
            return False
        if res.get("agent"):
            frame = {
                "type": "case.updated",
                "case": case,
                "event": "reply.delivered",
                "reply": entry,
                "delivered": res["ts"],
                "via": via,
            }
            await self.notify(ws, str(res["agent"]), frame)
        return True

    async def _absorb_anonymous(self, ws: str, into: str, other: str) -> None:
        """A chat visitor who gives an email or phone of a known customer: their anonymous
        (visitor-only) customer record joins the known one, conversation and all. A record
        with any other identity is never merged automatically (an admin can)."""
        fields = [f.decode() for f in await self.redis.hkeys(keys.customer(ws, other))]
        idents = [f for f in fields if f.startswith("i:")]
        if idents and all(f.startswith("i:visitor:") for f in idents):
            try:
                await self.merge_customers(ws, into, other)
            except (NotFound, Conflict):
                pass  # merged meanwhile by another node

    async def merge_customers(self, ws: str, into: str, from_: str) -> dict[str, Any]:
        """Merge customer ``from_`` into ``into`` (admin): identities, cases, timeline. An agent
        with a case of either open gets it again (``case.refresh``), now with the merged
        customer and history."""
        res = await self._act("customer_merge", ws, into, from_)
        # the merged customer's latest cases: those moved over and its own
        recent = await self.redis.lrange(keys.customer_cases(ws, into), -200, -1)
        for raw in dict.fromkeys(recent):
            case = raw.decode()
            st, agent = await self.redis.hmget(keys.case(ws, case), ["st", "agent"])
            if st in (b"assigned", b"wrapping") and agent:
                detail = await snapshot.case_detail(self.redis, ws, case)
                if detail:
                    await self.notify(ws, agent.decode(), {"type": "case.refresh", **detail})
        return res

    async def presence(
        self, ws: str, agent: str, action: str, node: str, grace_s: float = 30, count: int = 0
    ) -> str:
        """An agent's console connected or disconnected on ``node`` (or ``reap`` the
        connections a dead node held, or ``restore`` the ``count`` a node reaped while alive
        holds). Returns the agent's status."""
        res = await self.store.run(
            "agent_presence", ws, agent, action, int(grace_s * 1000), secrets.token_hex(8), node,
            count,
        )  # fmt: skip
        if not res.get("ok"):
            raise from_script(str(res.get("error")))
        return str(res.get("status", ""))

    async def chat_presence(
        self, ws: str, action: str, node: str, grace_s: float, case: str = "", visitor: str = ""
    ) -> str:
        """A chat widget of ``visitor`` opened (``arrive``) or closed (``depart``) ``case`` on
        ``node``, or the widgets a dead node held are gone (``reap``). When a case's last
        widget has been gone for ``grace_s``, a timer tells its agent or abandons the chat
        (see :meth:`run_timers`). Returns the agent to tell the visitor is back, else ''."""
        res = await self.store.run(
            "chat_presence", ws, action, node, int(grace_s * 1000), case, visitor
        )
        if not res.get("ok"):
            raise from_script(str(res.get("error")))
        return str(res.get("back") or "")

    async def heartbeat(
        self, node: str, *, dead_after_s: float = 15, grace_s: float = 30,
        visitor_grace_s: float = 30, rejoin: Callable[[], Awaitable[None]] | None = None,
    ) -> list[str]:  # fmt: skip
        """Say this node is alive; reap the agent consoles and chat widgets of nodes that
        stopped saying so (killed without a goodbye). Returns the nodes reaped.

        ``rejoin`` runs when this node was not among the living (its first beat, or another
        node took it for dead, say through a long stall, and reaped what it holds): it says
        again what this node holds."""
        now = now_ms()
        if await self.redis.zadd(keys.NODES, {node: now}) and rejoin is not None:
            await rejoin()
        dead = [
            n.decode()
            for n in await self.redis.zrangebyscore(keys.NODES, 0, now - int(dead_after_s * 1000))
        ]
        for n in dead:
            for ws in await self.workspaces():
                for a in await self.redis.smembers(keys.node_agents(ws, n)):
                    await self.presence(ws, a.decode(), "reap", n, grace_s)
                await self.chat_presence(ws, "reap", n, visitor_grace_s)
            await self.redis.zrem(keys.NODES, n)
        return dead

    async def run_timers(self, ws: str, *, now: int | None = None, limit: int = 500) -> int:
        """Fire the workspace's due timers (offer deadlines, escalations, reminders, grace)."""
        cfg = await self.config(ws)
        away = cfg.status("away")
        res = await self.store.run(
            "timers_run",
            ws,
            limit,
            cfg.max_missed_offers,
            away.name if away else "away",
            int(cfg.reoffer_refused_after_s * 1000),
            now=now,
        )
        await self._dispatch(ws, res)
        for g in script_list(res.get("gone")):
            # a chat nobody answered, its visitor gone: ended as their End chat would, so it
            # counts as abandoned and no agent is handed a chat with nobody there
            end = {
                "id": f"{g['visitor']}:gone:{g['case']}",
                "channel": "chat",
                "kind": "conversation.ended",
                "identities": {"visitor": g["visitor"]},
                "thread": g["visitor"],
                "case": g["case"],
            }
            try:
                await self.ingest(ws, end, source="widget")
            except SwitchboardError as e:
                log.warning("chat %s: its gone visitor's chat not ended: %s", g["case"], e)
        return int(res.get("fired", 0))

    # -- delivery ------------------------------------------------------------------------------

    async def _dispatch(self, ws: str, res: Mapping[str, Any]) -> None:
        for p in script_list(res.get("push")):
            if p["frame"].get("type") == "offer.rescinded":  # timed out, or withdrawn
                timeout = p["frame"].get("reason") == "timeout"
                METRICS.offer_outcomes.labels("timeout" if timeout else "rescinded").inc()
            await self.notify(ws, p["agent"], p["frame"])
        for o in script_list(res.get("offers")):
            nodes = script_list(o["nodes"]) if "nodes" in o else None
            await self.notify(ws, o["agent"], offer_frame(o), nodes=nodes)
        for r in script_list(res.get("rescinded")):
            METRICS.offer_outcomes.labels("rescinded").inc()
            if r.get("agent"):
                await self.notify(
                    ws,
                    r["agent"],
                    {
                        "type": "offer.rescinded",
                        "offer": r["offer"],
                        "case": r["case"],
                        "reason": r.get("reason") or "rescinded",
                    },
                )


def _queue_names(cfg: WorkspaceConfig) -> list[tuple[str, str]]:
    return [(q.id, q.name) for q in cfg.queues]


def _own_visitors(identities: Sequence[str], scope: str) -> tuple[str, ...]:
    """A bridge's visitor ids, as its own: ``visitor:42`` from bridge wa is ``visitor:wa/42``."""
    own = scope.removeprefix("bridge:")
    return tuple(f"visitor:{own}/{i[8:]}" if i.startswith("visitor:") else i for i in identities)


def _note_entry(case: str, kind: str, agent: str, by: str, **more: Any) -> str:
    """What an agent did to a case, as a note in the customer's history (JSON), for whoever has
    the case next: a wrap-up, a transfer, a follow-up set or cancelled, a reopening."""
    note = {"id": new_id("n"), "case": case, "ch": "note", "dir": "note", "kind": kind}
    return fastjson.dumps_str(
        {**note, "ts": entry_ts(), "agent": agent, "from": by or agent, **more}
    )
