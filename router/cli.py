"""The ``switchboard`` command: ``serve``, ``demo``, ``check-config``.

Every option also has a ``SWITCHBOARD_*`` environment variable (see docs/operations.md);
options given here win. A configuration error (a setting, the workspace file) ends a command
with one JSON line on stderr, ``{"error": "<path>: <what is wrong>"}``, and exit status 2;
``serve`` checks its workspace file as ``check-config`` does before it starts
(docs/configuration.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from router.config import BridgeKey, Settings, load_workspace_file
from router.errors import ConfigError
from router.logs import setup_logging
from router.plugins import Plugin, load_plugins
from router.transport import ws_protocol
from router.workspace import WorkspaceConfig, check_file, parse_workspace

__all__ = ["main"]


class _Server(uvicorn.Server):
    """uvicorn's server with a graceful drain on SIGTERM/SIGINT before it shuts down."""

    def __init__(self, config: uvicorn.Config, app: Any) -> None:
        super().__init__(config)
        self.app = app  # config.loaded_app is wrapped in middleware: keep our own reference

    def handle_exit(self, sig: int, frame: Any) -> None:
        ctx = getattr(self.app.state, "ctx", None)
        if ctx is not None and not ctx.draining and not self.should_exit:
            from router.app import drain

            loop = asyncio.get_event_loop()
            task = loop.create_task(drain(ctx))
            task.add_done_callback(lambda _t: uvicorn.Server.handle_exit(self, sig, frame))
            return
        super().handle_exit(sig, frame)


def _serve(
    settings: Settings, plugins: Sequence[Plugin], *, simulate: bool = False, every_s: float = 20.0
) -> int:
    """Run the server until it is stopped; the exit status: 0, or 3 if it never started (its
    start-up failed: uvicorn's own ``uvicorn.run`` exits 3 then, ``Server.run`` returns)."""
    from router.app import create_app

    setup_logging(settings.log_level, settings.log_json)
    app = create_app(settings, plugins=plugins)
    if simulate:
        from router.demo import simulate as run_simulation

        lifespan = app.router.lifespan_context  # the app's own, wrapped (not looked up again)

        @contextlib.asynccontextmanager
        async def with_simulation(inner: Any) -> Any:
            async with lifespan(inner) as state:
                task = asyncio.create_task(run_simulation(app.state.ctx.switch, every_s=every_s))
                try:
                    yield state
                finally:
                    task.cancel()

        app.router.lifespan_context = with_simulation
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        ws=ws_protocol(settings.ws_impl),  # router/transport.py
        ws_per_message_deflate=False,
        ws_max_size=max(settings.bridge_max_frame, settings.agent_max_frame),
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    server = _Server(config, app)
    server.run()
    return 0 if server.started else 3


def _fail(message: str) -> int:
    print(json.dumps({"error": message}), file=sys.stderr)
    return 2


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    """The settings from the environment and the options; ConfigError naming the variable or
    option that is wrong, for what the server would otherwise fail on with a traceback."""
    overrides = {
        k: v
        for k, v in {
            "host": args.host,
            "port": args.port,
            "config": getattr(args, "config", None),
            "redis_url": args.redis_url,
            "data_dir": args.data_dir,
        }.items()
        if v is not None
    }
    try:
        settings = Settings.from_env(**overrides, **extra)
    except ValueError as e:  # a number that is not one (router/config.py: int(), float())
        raise ConfigError(_bad_variable(e)) from None
    if not isinstance(logging.getLevelNamesMapping().get(settings.log_level.upper()), int):
        raise ConfigError(
            f"SWITCHBOARD_LOG_LEVEL: expected debug, info, warning, error or critical, "
            f"not {settings.log_level!r}"
        )
    if not 0 <= settings.port <= 65535:
        raise ConfigError(f"port (--port, SWITCHBOARD_PORT): 0-65535, not {settings.port}")
    return settings


def _bad_variable(error: ValueError) -> str:
    """Which SWITCHBOARD_* variable Settings.from_env failed on: each is tried alone."""
    types = {f"SWITCHBOARD_{f.name.upper()}": str(f.type) for f in dataclasses.fields(Settings)}
    for name, raw in sorted(os.environ.items()):
        if name in types:
            try:
                Settings.from_env({name: raw})
            except ValueError:
                kind = "a whole number" if types[name] == "int" else "a number"
                return f"{name}: expected {kind}, not {raw[:40]!r}"
    return str(error)


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one map is an error: YAML keeps
    the last one silently (a second ``agents:`` would replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # <<: *defaults
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                m = key_node.start_mark
                raise ConfigError(
                    f"{m.name} line {m.line + 1}, column {m.column + 1}: {key} is given twice"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _workspace_file(path: str) -> tuple[WorkspaceConfig, tuple[BridgeKey, ...]]:
    """The workspace file, checked as a whole: what surrounds the declaration (keys given
    twice, bridges), then as the server reads it (router/config.py), then the declaration.
    Raises ConfigError naming the path of what is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.load(f, Loader=_Loader)  # a SafeLoader
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except yaml.MarkedYAMLError as e:  # where, in one line (YAML's own message takes four)
        mark = e.problem_mark
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{at}: {e.problem or e.context}") from None
    except (OSError, yaml.YAMLError):
        doc = None  # load_workspace_file says what is wrong
    if isinstance(doc, Mapping):
        check_file(doc)
    decl, bridges = load_workspace_file(path)
    return parse_workspace(decl), bridges


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        plugins = load_plugins([a for a in args.adapters.split(",") if a], settings)
    except (ConfigError, ValueError) as e:
        return _fail(str(e))
    if settings.config:
        _workspace_file(settings.config)  # its errors named here, not in a start-up traceback
    return _serve(settings, plugins)


def cmd_demo(args: argparse.Namespace) -> int:
    import tempfile

    from router.demo import DEMO_WORKSPACE

    with tempfile.TemporaryDirectory(prefix="switchboard-demo-") as tmp:  # gone when it stops
        path = Path(tmp) / "demo.json"
        path.write_text(json.dumps({"workspace": DEMO_WORKSPACE}))
        return _demo(args, path)


def _demo(args: argparse.Namespace, path: Path) -> int:
    from router.demo import DEMO_BRIDGE

    settings = _settings(
        args,
        config=str(path),
        demo=True,
        log_json=False,
        bridge_keys=(DEMO_BRIDGE,),
        smtp_port=args.smtp_port if args.smtp_port is not None else 2525,
        mailboxes="support@demo.test=demo,billing@demo.test=demo/billing",
        smtp_domain="demo.test",  # the replies' Message-IDs name the mailboxes' domain
        # the demo's stand-in for the MTA in front (docs/adapters-email.md "Who sent it")
        smtp_authserv_ids=os.environ.get("SWITCHBOARD_SMTP_AUTHSERV_IDS", "mx.demo.test"),
    )
    if args.data_dir is None and not args.redis_url:
        settings = dataclasses.replace(settings, data_dir="var/demo")
    # the adapters the settings ask for, as `serve --adapters email,twilio` would load them:
    # inbound mail unless --smtp-port 0, and Twilio's webhooks once its auth token is set
    adapters = [
        name
        for name, wanted in (("email", settings.smtp_port), ("twilio", settings.twilio_auth_token))
        if wanted
    ]
    try:
        plugins = load_plugins(adapters, settings)
    except (ConfigError, ValueError) as e:
        return _fail(str(e))
    print(
        f"Switchboard demo: console http://{settings.host}:{settings.port}/ "
        "(agents ann, bob, cat; supervisor sue at /supervisor; admin ada at /admin; "
        "password: demo)",
        file=sys.stderr,
    )
    if any(p.name == "twilio" for p in plugins):
        base = f"{settings.public_url.rstrip('/')}/voice/twilio"
        print(
            f"Twilio: the number's webhooks are {base}/incoming (a call comes in) and "
            f"{base}/status (call status changes); see docs/adapters-voice.md",
            file=sys.stderr,
        )
    return _serve(settings, plugins, simulate=not args.quiet, every_s=max(0.1, args.every_s))


def cmd_check_config(args: argparse.Namespace) -> int:
    """Print the effective configuration, every section of the workspace as parsed (with the
    defaults filled in), secrets masked; exit 2 naming the first error."""
    settings = _settings(args)
    out: dict[str, Any] = {"settings": settings.masked()}
    if settings.config:
        cfg, bridges = _workspace_file(settings.config)
        out["workspace"] = _effective(cfg)
        out["bridges"] = [
            {"id": b.id, "workspace": b.workspace, "channels": sorted(b.channels), "key": "***"}
            for b in bridges
        ]
    print(json.dumps(out, indent=2, default=str))
    return 0


def _effective(cfg: WorkspaceConfig) -> dict[str, Any]:
    return {
        "id": cfg.id,
        "timezone": cfg.timezone,
        "queues": [dataclasses.asdict(q) for q in cfg.queues],
        "agents": [
            {
                "id": a.id,
                "name": a.name,
                "role": a.role,
                "attributes": dict(a.attributes),
                "capacity": dict(a.capacity),
                "password": "***" if a.password else None,
            }
            for a in cfg.agents
        ],
        "statuses": [dataclasses.asdict(s) for s in cfg.statuses],
        "channels": {ch: dataclasses.asdict(c) for ch, c in cfg.channels.items()},
        "routing": {
            "reopen_window_s": cfg.reopen_window_s,
            "reopen_agent_timeout_s": cfg.reopen_agent_timeout_s,
            "transfer_agent_timeout_s": cfg.transfer_agent_timeout_s,
            "max_missed_offers": cfg.max_missed_offers,
            "reoffer_refused_after_s": cfg.reoffer_refused_after_s,
            "reject_status": cfg.reject_status,
        },
        "dispositions": list(cfg.dispositions),
        "canned": dict(cfg.canned),
        "workflow": cfg.workflow_json,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="switchboard", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--host")
        sp.add_argument("--port", type=int)
        sp.add_argument("--redis-url", dest="redis_url", help="default: embedded redis-server")
        sp.add_argument("--data-dir", dest="data_dir")

    s = sub.add_parser("serve", help="run a router node")
    common(s)
    s.add_argument("--config", help="workspace declaration file (YAML or JSON)")
    s.add_argument("--adapters", default="", help="comma list: email,twilio")
    s.set_defaults(fn=cmd_serve)
    d = sub.add_parser("demo", help="seed a demo workspace and serve it")
    common(d)
    d.add_argument("--quiet", action="store_true", help="no simulated customers")
    d.add_argument(
        "--every-s", dest="every_s", type=float, default=20.0,
        help="a simulated customer every this many seconds (default 20)",
    )  # fmt: skip
    d.add_argument("--smtp-port", dest="smtp_port", type=int, help="inbound SMTP (0 = off)")
    d.set_defaults(fn=cmd_demo)
    c = sub.add_parser("check-config", help="validate and print the effective configuration")
    common(c)
    c.add_argument("--config")
    c.set_defaults(fn=cmd_check_config)
    args = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            code: int = args.fn(args)
        except ConfigError as e:
            return _fail(str(e))
        return code
    return 130


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
