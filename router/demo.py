"""The demo workspace (``switchboard demo``) and simulated customers who chat, mail and call.

Agents (password ``demo``): ann (support, English/Spanish), bob (sales + billing), cat
(support + billing, voice), sue, a supervisor, and ada, an admin (the REST API's queue, workflow
and agent edits). Bridge key for ``/ws/bridge``: ``demo-key``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from typing import Any

from router.config import BridgeKey
from router.errors import SwitchboardError
from router.switch import Switch

__all__ = ["DEMO_BRIDGE", "DEMO_WORKSPACE", "simulate"]

log = logging.getLogger("switchboard.demo")

DEMO_BRIDGE = BridgeKey("demo-bridge", "demo", frozenset({"chat", "email", "voice"}), "demo-key")

DEMO_WORKSPACE: dict[str, Any] = {
    "id": "demo",
    "queues": [
        {"id": "support", "name": "Support", "target": "skills HAS 'support'", "sl_target_s": 60},
        {"id": "sales", "name": "Sales", "target": "skills HAS 'sales'", "sl_target_s": 30},
        {"id": "billing", "name": "Billing", "target": "skills HAS 'billing'", "sl_target_s": 120},
    ],
    "workflow": {
        "task_routing": {
            "filters": [
                {
                    "filter_friendly_name": "Sales",
                    "expression": "topic == 'sales'",
                    "targets": [{"queue": "sales", "priority": 10}],
                },
                {
                    "filter_friendly_name": "Billing",
                    # a chat's topic, or mail to billing@ (its mailbox's queue hint)
                    "expression": "topic == 'billing' OR queue_hint == 'billing'",
                    "targets": [{"queue": "billing", "timeout": 120}, {"queue": "support"}],
                },
                {
                    "filter_friendly_name": "Spanish",
                    "expression": "language == 'es'",
                    "targets": [
                        {
                            "queue": "support",
                            "expression": "task.language IN worker.languages",
                            "timeout": 60,
                        },
                        {"queue": "support"},
                    ],
                },
            ],
            "default_filter": {"queue": "support"},
        }
    },
    "agents": [
        {
            "id": "ann",
            "name": "Ann Agent",
            "password": "demo",
            "attributes": {"skills": ["support"], "languages": ["en", "es"]},
            "capacity": {"chat": 3, "email": 5, "voice": 1},
        },
        {
            "id": "bob",
            "name": "Bob Builder",
            "password": "demo",
            "attributes": {"skills": ["sales", "billing"], "languages": ["en"]},
            "capacity": {"chat": 2, "email": 5, "voice": 1},
        },
        {
            "id": "cat",
            "name": "Cat Caller",
            "password": "demo",
            "attributes": {"skills": ["support", "billing"], "languages": ["en"]},
            "capacity": {"chat": 1, "email": 3, "voice": 1},
        },
        {
            "id": "sue",
            "name": "Sue Supervisor",
            "password": "demo",
            "role": "supervisor",
            "attributes": {"skills": []},
            "capacity": {},
        },
        {
            "id": "ada",
            "name": "Ada Admin",
            "password": "demo",
            "role": "admin",
            "attributes": {"skills": []},
            "capacity": {},
        },
    ],
    "statuses": [{"name": "lunch"}, {"name": "training"}],
    "dispositions": ["resolved", "follow-up", "escalated", "no-answer", "spam"],
    "canned": {
        "hello": "Hi, thanks for reaching out — I'm looking into this now.",
        "wait": "Thanks for waiting, one moment please.",
        "bye": "Glad I could help. Have a great day!",
    },
}

_PEOPLE = [
    ("Alice Moreno", "alice@example.com", "+15550100001", "es"),
    ("Dmitri Volkov", "dmitri@example.com", "+15550100002", "en"),
    ("Priya Nair", "priya@example.com", "+15550100003", "en"),
    ("Tom Becker", "tom@example.com", "+15550100004", "en"),
]
_TOPICS = [
    ("support", "My order arrived damaged"),
    ("billing", "I was charged twice"),
    ("sales", "Do you offer a team plan?"),
    ("support", "I can't log in"),
]


async def simulate(switch: Switch, ws: str = "demo", every_s: float = 20.0) -> None:
    """Every ``every_s`` seconds a demo customer writes, mails or calls (forever)."""
    counter = itertools.count(1)
    rng = random.Random()
    # threads are named per run: a restart on the same data must not write into the cases of
    # the previous run's threads (another customer's, as the numbering starts again)
    run = f"{rng.getrandbits(32):08x}"
    while True:
        await asyncio.sleep(every_s)
        n = next(counter)
        name, email, phone, lang = rng.choice(_PEOPLE)
        topic, text = rng.choice(_TOPICS)
        channel = rng.choice(["chat", "email", "voice"])
        event: dict[str, Any] = {
            "id": f"demo-{n}-{rng.getrandbits(32):x}",
            "channel": channel,
            "name": name,
            "text": text,
            "attributes": {"topic": topic, "language": lang},
        }
        if channel == "chat":
            event.update(identities={"email": email}, thread=f"demo-chat-{run}-{n}")
        elif channel == "email":
            event.update(identities={"email": email}, subject=text)
        else:
            event.update(
                kind="call.offered",
                identities={"phone": phone},
                thread=f"demo-call-{run}-{n}",
                text="Incoming call",
            )
        with contextlib.suppress(SwitchboardError):
            res = await switch.ingest(ws, event)
            log.info("demo customer %s (%s) -> case %s", name, channel, res.case)
