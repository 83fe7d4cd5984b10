"""Every Redis key name Switchboard uses, built in one place.

All of a workspace's routing keys start with ``sb:{<workspace>}:`` so they share one Redis Cluster
hash slot: every Lua transition script may touch any of them atomically. Scripts receive that
prefix as ``KEYS[1]`` and build sub-keys with the mirror functions in ``lua/_lib.lua`` — keep the
two in step (``tests/test_keys.py`` checks they agree).
"""

from __future__ import annotations

import re

__all__ = [
    "NODES",
    "WORKSPACES",
    "agent",
    "agent_cases",
    "agent_conns",
    "agent_offers",
    "agent_pools",
    "agents",
    "attachment",
    "case",
    "customer",
    "customer_cases",
    "customer_timeline",
    "dedupe",
    "identities",
    "log",
    "node_agents",
    "node_widgets",
    "offer_case",
    "outbox",
    "pool",
    "pool_agents",
    "pool_available",
    "pool_waiting",
    "pools",
    "prefix",
    "push_agent",
    "push_case",
    "queue",
    "queue_waiting",
    "queues",
    "settings",
    "spent_token",
    "threads",
    "timers",
    "valid_id",
]

#: Global (not per-workspace) set of workspace ids, read by every node's timer loop.
WORKSPACES = b"sb:workspaces"
#: Global zset of router nodes -> last heartbeat (ms); a node silent too long is reaped.
NODES = b"sb:nodes"
#: Global string: the token signing secret the nodes sharing this Redis share, when none is
#: configured (SWITCHBOARD_SECRET): set by the first node to start (router/app.py).
SECRET = b"sb:secret"

_ID = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")


def valid_id(value: str) -> bool:
    """True if ``value`` can be used as a workspace, agent, queue, case or offer id.

    Ids never contain ``:``, ``{``, ``}`` or ``|`` so they cannot break key or member layout.
    """
    return bool(_ID.match(value))


def prefix(ws: str) -> str:
    """The workspace's key prefix; passed to every script as KEYS[1]."""
    return f"sb:{{{ws}}}:"


def settings(ws: str) -> str:
    return f"sb:{{{ws}}}:cfg"


def agents(ws: str) -> str:
    return f"sb:{{{ws}}}:agents"


def agent(ws: str, aid: str) -> str:
    return f"sb:{{{ws}}}:a:{aid}"


def agent_pools(ws: str, aid: str) -> str:
    """Hash pool id -> the agent's order value in that pool (the pools the agent serves)."""
    return f"sb:{{{ws}}}:a:{aid}:pools"


def agent_conns(ws: str, aid: str) -> str:
    """Hash node id -> open console connections of the agent on that node."""
    return f"sb:{{{ws}}}:a:{aid}:conns"


def node_agents(ws: str, node: str) -> str:
    """Set of the agents with a console connected on a node."""
    return f"sb:{{{ws}}}:node:{node}:agents"


def node_widgets(ws: str, node: str) -> str:
    """Hash of the chat widgets open on a node: "<case>|<visitor>" -> connections."""
    return f"sb:{{{ws}}}:node:{node}:widgets"


def agent_cases(ws: str, aid: str) -> str:
    return f"sb:{{{ws}}}:a:{aid}:cases"


def agent_offers(ws: str, aid: str) -> str:
    return f"sb:{{{ws}}}:a:{aid}:offers"


def agent_followups(ws: str, aid: str) -> str:
    """Follow-ups the agent set that are not yet due: "<case>|<n>" scored by due time (ms)."""
    return f"sb:{{{ws}}}:a:{aid}:fu"


def agent_reminders(ws: str, aid: str) -> str:
    """Follow-up reminders that fell due and the agent has not dismissed: id -> frame JSON."""
    return f"sb:{{{ws}}}:a:{aid}:rem"


def queues(ws: str) -> str:
    return f"sb:{{{ws}}}:queues"


def queue(ws: str, qid: str) -> str:
    return f"sb:{{{ws}}}:q:{qid}"


def queue_waiting(ws: str, qid: str) -> str:
    return f"sb:{{{ws}}}:q:{qid}:wait"


def pools(ws: str) -> str:
    return f"sb:{{{ws}}}:pools"


def pool(ws: str, pid: str) -> str:
    return f"sb:{{{ws}}}:p:{pid}"


def pool_agents(ws: str, pid: str) -> str:
    return f"sb:{{{ws}}}:p:{pid}:agents"


def pool_available(ws: str, pid: str, channel: str) -> str:
    return f"sb:{{{ws}}}:p:{pid}:av:{channel}"


def pool_waiting(ws: str, pid: str, channel: str) -> str:
    return f"sb:{{{ws}}}:p:{pid}:w:{channel}"


def case(ws: str, cid: str) -> str:
    return f"sb:{{{ws}}}:c:{cid}"


def offer_case(oid: str) -> str:
    """The case an offer id names: an offer lives in its case's hash (fields ``offer``,
    ``oagent``, ``ost``, ``odl``), and its id is ``<case>.<n>``, the case's n-th offer
    (Lua's offer_case). ``""`` for an id of another shape."""
    case, dot, n = oid.rpartition(".")
    return case if dot and case and n.isdigit() else ""


def attachment(ws: str, fid: str) -> str:
    """Hash: a file a customer sent (name, type, size, case, data); router/attachments.py."""
    return f"sb:{{{ws}}}:f:{fid}"


def customer(ws: str, cust: str) -> str:
    return f"sb:{{{ws}}}:cu:{cust}"


def customer_cases(ws: str, cust: str) -> str:
    return f"sb:{{{ws}}}:cu:{cust}:cases"


def customer_timeline(ws: str, cust: str) -> str:
    return f"sb:{{{ws}}}:cu:{cust}:tl"


def identities(ws: str) -> str:
    return f"sb:{{{ws}}}:ids"


def threads(ws: str) -> str:
    return f"sb:{{{ws}}}:th"


def dedupe(ws: str, event_id: str) -> str:
    return f"sb:{{{ws}}}:dd:{event_id}"


def timers(ws: str) -> str:
    return f"sb:{{{ws}}}:timers"


def log(ws: str) -> str:
    return f"sb:{{{ws}}}:log"


def outbox(ws: str) -> str:
    return f"sb:{{{ws}}}:out"


def push_agent(ws: str, aid: str) -> str:
    """Pub/sub channel of one agent's consoles, on whichever node holds them."""
    return f"sb:{{{ws}}}:push:a:{aid}"


def push_case(ws: str, cid: str) -> str:
    """Pub/sub channel of a case's customer-facing chat widget connections."""
    return f"sb:{{{ws}}}:push:c:{cid}"


def spent_token(ws: str, digest: str) -> str:
    """Marks a one-connect WebSocket token as used (expires with the token)."""
    return f"sb:{{{ws}}}:spent:{digest}"


def login_failures(ws: str, aid: str) -> str:
    """Recent failed sign-ins for one agent: a hash (n, until ms), gone 15 min after the last."""
    return f"sb:{{{ws}}}:lf:{aid}"


def login_failures_from(ip: str) -> str:
    """Recent failed sign-ins from one client address, across workspaces (as above)."""
    return f"sb:lf-ip:{ip}"
