"""Adapter plugins: how channel adapters that live in the server process are plugged in.

The router never imports ``adapters/``; the server's command line picks adapters by name from
this table (the module is imported only then). A plugin may add HTTP routes (webhooks) and
runs alongside the server: ``start(ctx)`` gets the routing core (``ctx.switch.ingest`` and the
outbox), ``stop()`` undoes it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

from starlette.routing import BaseRoute

from router.config import Settings
from router.errors import ConfigError

if TYPE_CHECKING:
    from router.context import Ctx

__all__ = ["ADAPTERS", "Plugin", "load_plugins"]


#: name -> "module:factory"; factory(settings) returns a Plugin, or None when not configured.
ADAPTERS = {
    "email": "adapters.email_plugin:plugin",
    "twilio": "adapters.twilio:plugin",
}


#: what each adapter needs before it runs (its plugin() answers None without it)
NEEDS = {
    "email": "set SWITCHBOARD_SMTP_PORT and SWITCHBOARD_MAILBOXES",
    "twilio": "set SWITCHBOARD_TWILIO_AUTH_TOKEN, _ACCOUNT_SID and SWITCHBOARD_PUBLIC_URL",
}


class Plugin(Protocol):
    name: str

    def routes(self) -> list[BaseRoute]: ...

    async def start(self, ctx: Ctx) -> None: ...

    async def stop(self) -> None: ...


def load_plugins(names: list[str], settings: Settings) -> list[Plugin]:
    out: list[Plugin] = []
    for name in names:
        target = ADAPTERS.get(name)
        if target is None:
            raise ValueError(f"unknown adapter {name!r}; known: {', '.join(sorted(ADAPTERS))}")
        module, _, attr = target.partition(":")
        factory: Any = getattr(importlib.import_module(module), attr)
        plugin = factory(settings)
        if plugin is None:  # asked for by name: running without it would lose its channel
            raise ConfigError(
                f"adapter {name!r} is not configured: {NEEDS.get(name, 'see docs')} "
                "(docs/adapters-*.md)"
            )
        out.append(plugin)
    return out
