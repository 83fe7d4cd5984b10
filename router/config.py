"""Settings, read once from ``SWITCHBOARD_*`` environment variables (and a workspace file).

Nothing else in Switchboard reads ``os.environ``: settings are passed in
(``create_app(settings)``). Secrets come only from the environment or from files; a config file
names the environment variable or file that holds a secret, never the secret itself.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from router.errors import ConfigError

__all__ = ["BridgeKey", "Settings", "load_workspace_file"]

_SECRETS = ("secret", "smarthost_password", "twilio_auth_token", "chat_identity_secret")


@dataclass(frozen=True, slots=True)
class BridgeKey:
    """An API key for ``/ws/bridge``, scoped to one workspace and a set of channels."""

    id: str
    workspace: str
    channels: frozenset[str]
    key: str = field(repr=False)


def _bool(v: str) -> bool:
    return v.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting, with its environment variable ``SWITCHBOARD_<NAME>``."""

    host: str = "127.0.0.1"
    port: int = 8000
    redis_url: str = ""  # empty: start and supervise an embedded redis-server
    data_dir: str = "var"  # embedded Redis data (AOF) and the generated secret
    config: str = ""  # a workspace declaration file (YAML or JSON)
    secret: str = field(default="", repr=False)  # token signing; generated into data_dir if empty
    # browser origins for consoles and the widget; empty: this server's own address
    allowed_origins: tuple[str, ...] = ()
    token_ttl_s: int = 12 * 3600
    grace_s: float = 30.0  # an agent's reconnect grace before offers are rescinded
    # a chat visitor with no widget open this long has left: their agent is told (chat_ws.py)
    visitor_grace_s: float = 30.0
    # supervisor pages on one node asking within this long share one stats snapshot (stats.py)
    stats_share_s: float = 0.5
    node_dead_s: float = 15.0  # a node silent this long is dead: its consoles count as gone
    # each holds the longest text its endpoint takes in any script (a reply's 32,000 characters,
    # a chat message's 8,000: up to 4 bytes each, more escaped): a longer text is then refused
    # with a typed error, not by closing the socket
    agent_max_frame: int = 256 * 1024
    bridge_max_frame: int = 1024 * 1024
    chat_max_frame: int = 64 * 1024
    rate_per_s: float = 50.0  # frames per second per console / chat connection (burst 2x)
    bridge_rate_per_s: float = 5000.0
    ws_impl: str = "websockets-sansio"  # uvicorn --ws; see bench/README.md for the figures
    timer_interval_s: float = 0.05
    drain_delay_s: float = 1.0  # on SIGTERM: /readyz is 503 this long before sockets close
    smtp_port: int = 0  # inbound SMTP adapter; 0 = off
    smtp_host: str = "127.0.0.1"
    smtp_domain: str = "switchboard.local"
    # the authserv-ids of the MTAs in front whose Authentication-Results headers are trusted
    # (comma-separated); empty: a mail's From is taken as it is (adapters/email_auth.py)
    smtp_authserv_ids: str = ""
    # who may deliver over SMTP: addresses or networks, comma-separated ("10.0.0.5,10.1.0.0/16");
    # empty: anyone who can reach smtp_host:smtp_port
    smtp_peers: str = ""
    # inbound addresses: "support@acme.test=acme,billing@acme.test=acme/billing"
    mailboxes: str = ""
    attachment_days: float = 90.0  # how long customers' files are kept (router/attachments.py)
    smarthost: str = ""  # host:port for outbound replies; empty = log only
    smarthost_user: str = ""
    smarthost_password: str = field(default="", repr=False)
    twilio_auth_token: str = field(default="", repr=False)
    twilio_account_sid: str = ""
    twilio_api_base: str = "https://api.twilio.com"
    public_url: str = ""  # how Twilio reaches us; signatures are computed on it
    # the key a site signs its logged-in visitors' chat identities with (router/chat_ws.py)
    chat_identity_secret: str = field(default="", repr=False)
    log_level: str = "info"
    log_json: bool = True
    demo: bool = False
    bridge_keys: tuple[BridgeKey, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"SWITCHBOARD_{f.name.upper()}")
            if raw is None or f.name == "bridge_keys":
                continue
            if f.type in ("int",):
                values[f.name] = int(raw)
            elif f.type in ("float",):
                values[f.name] = float(raw)
            elif f.type in ("bool",):
                values[f.name] = _bool(raw)
            elif f.name == "allowed_origins":
                values[f.name] = tuple(o.strip() for o in raw.split(",") if o.strip())
            else:
                values[f.name] = raw
        values.update(overrides)
        return cls(**values)

    def origins(self) -> tuple[str, ...]:
        """The allowed browser origins: as configured, or else the pages this server serves
        (its own host:port, with both loopback spellings when it listens on loopback)."""
        if self.allowed_origins:
            return self.allowed_origins
        hosts = [self.host]
        if self.host in ("127.0.0.1", "localhost", "0.0.0.0", "::", "::1"):
            hosts = ["127.0.0.1", "localhost"]
        return tuple(f"http://{h}:{self.port}" for h in hosts)

    def with_secret(self) -> Settings:
        """These settings with a signing secret: the configured one, or one generated once
        into ``data_dir/secret`` (mode 600) and reused across restarts."""
        if self.secret:
            return self
        path = Path(self.data_dir) / "secret"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return replace(self, secret=path.read_text().strip())

    def masked(self) -> dict[str, Any]:
        """The effective settings with secrets masked (``switchboard check-config``)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in _SECRETS and v:
                v = "***"
            elif f.name == "bridge_keys":
                v = [
                    {
                        "id": b.id,
                        "workspace": b.workspace,
                        "channels": sorted(b.channels),
                        "key": "***",
                    }
                    for b in v
                ]
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


def _secret(spec: Mapping[str, Any], env: Mapping[str, str], path: str) -> str:
    if "key_env" in spec:
        v = env.get(str(spec["key_env"]), "")
        if not v:
            raise ConfigError(f"{path}.key_env: environment variable {spec['key_env']} is empty")
        return v
    if "key_file" in spec:
        try:
            return Path(str(spec["key_file"])).read_text().strip()
        except OSError as e:
            raise ConfigError(f"{path}.key_file: {e}") from None
    raise ConfigError(f"{path}: give key_env or key_file (secrets are never in the file)")


def load_workspace_file(
    path: str, env: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], tuple[BridgeKey, ...]]:
    """Read a workspace declaration file: returns (declaration, bridge keys)."""
    env = os.environ if env is None else env
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: {e}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a map at the top")
    decl = doc.get("workspace", doc)
    if not isinstance(decl, dict):
        raise ConfigError(f"{path}: workspace: expected a map")
    bridges = []
    for i, b in enumerate(doc.get("bridges", []) or []):
        p = f"bridges[{i}]"
        if not isinstance(b, dict) or "id" not in b:
            raise ConfigError(f"{p}: expected a map with an id")
        bridges.append(
            BridgeKey(
                str(b["id"]),
                str(b.get("workspace", decl.get("id", "default"))),
                frozenset(b.get("channels", ["chat", "email", "voice"])),
                _secret(b, env, p),
            )
        )
    return decl, tuple(bridges)
