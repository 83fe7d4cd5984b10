"""What every endpoint shares in one process: settings, the Switch, the hub, tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from router.auth import Tokens
from router.config import BridgeKey, Settings
from router.hub import Hub
from router.stats import Stats
from router.switch import Switch

__all__ = ["Ctx"]


@dataclass
class Ctx:
    settings: Settings
    redis_url: str
    redis: aioredis.Redis
    switch: Switch
    hub: Hub
    tokens: Tokens
    stats: Stats
    node: str
    bridge_keys: tuple[BridgeKey, ...] = ()
    draining: bool = False
    # the token secret is the one the nodes on this Redis share (sb:secret; none configured)
    secret_shared: bool = False
    ready: bool = False
    plugins: list[Any] = field(default_factory=list)
