"""Shared fixtures for tests that drive the routing core (a Switch on the real test Redis)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from redis.asyncio import Redis

from router.store import Store
from router.switch import Switch

DECL: dict[str, Any] = {
    "id": "acme",
    "queues": [
        {"id": "support", "target": "skills HAS 'support'"},
        {"id": "sales", "target": "skills HAS 'sales'"},
        {"id": "billing", "target": "skills HAS 'billing'", "order": "lifo"},
    ],
    "workflow": {
        "task_routing": {
            "filters": [
                {
                    "filter_friendly_name": "sales",
                    "expression": "topic == 'sales'",
                    "targets": [{"queue": "sales", "priority": 10}],
                },
                {
                    "filter_friendly_name": "spanish",
                    "expression": "language == 'es'",
                    "targets": [
                        {
                            "queue": "support",
                            "expression": "task.language IN worker.languages",
                            "timeout": 30,
                        },
                        {"queue": "support", "priority": 20},
                    ],
                },
                {
                    "filter_friendly_name": "billing",
                    "expression": "topic == 'billing'",
                    "targets": [{"queue": "billing"}],
                },
            ],
            "default_filter": {"queue": "support"},
        }
    },
    "agents": [],
}


def agent(
    aid: str,
    skills: list[str],
    *,
    chat: int = 2,
    email: int = 3,
    voice: int = 1,
    languages: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": aid,
        "name": aid.title(),
        "attributes": {"skills": skills, "languages": languages or ["en"], **extra},
        "capacity": {"chat": chat, "email": email, "voice": voice},
    }


class Inbox:
    """Collects the frames the core pushes to each agent."""

    def __init__(self) -> None:
        self.frames: dict[str, list[dict[str, Any]]] = defaultdict(list)

    async def __call__(self, ws: str, agent: str, frame: dict[str, Any], **_: Any) -> None:
        self.frames[agent].append(frame)

    def offers(self, agent: str) -> list[dict[str, Any]]:
        return [f for f in self.frames[agent] if f["type"] == "offer"]

    def last_offer(self, agent: str) -> dict[str, Any]:
        offers = self.offers(agent)
        assert offers, f"{agent} has no offer; got {self.frames[agent]}"
        return offers[-1]

    def clear(self) -> None:
        self.frames.clear()


@pytest_asyncio.fixture(loop_scope="session")
async def inbox() -> Inbox:
    return Inbox()


@pytest_asyncio.fixture(loop_scope="session")
async def switch(redis: Redis, redis_server: str, inbox: Inbox) -> AsyncIterator[Switch]:
    from router.store import connect

    store = Store(connect(redis_server))
    await store.load()
    sw = Switch(store, notify=inbox)
    yield sw
    await store.close()


def chat(
    eid: str, email: str = "alice@example.com", text: str = "hello", **kw: Any
) -> dict[str, Any]:
    ev = {
        "id": eid,
        "channel": "chat",
        "kind": "message",
        "identities": {"email": email},
        "thread": kw.pop("thread", eid),
        "text": text,
    }
    ev.update(kw)
    return ev
