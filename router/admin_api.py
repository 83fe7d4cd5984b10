"""Administration REST API (agents, queues, workflow, customers, cases). See docs/api.md."""

from __future__ import annotations

from starlette.routing import BaseRoute

__all__ = ["admin_routes"]


def admin_routes() -> list[BaseRoute]:
    return []
