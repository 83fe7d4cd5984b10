"""The ``switchboard`` command: ``serve``, ``demo``, ``check-config``.

Every option also has a ``SWITCHBOARD_*`` environment variable (see docs/operations.md);
options given here win.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn

from router.config import Settings, load_workspace_file
from router.errors import ConfigError
from router.logs import setup_logging
from router.plugins import Plugin, load_plugins
from router.transport import ws_protocol
from router.workspace import parse_workspace

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
) -> None:
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


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
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
    return Settings.from_env(**overrides, **extra)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        plugins = load_plugins([a for a in args.adapters.split(",") if a], settings)
    except (ConfigError, ValueError) as e:
        print(json.dumps({"error": str(e)}), file=sys.stderr)
        return 2
    _serve(settings, plugins)
    return 0


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
        print(json.dumps({"error": str(e)}), file=sys.stderr)
        return 2
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
    _serve(settings, plugins, simulate=not args.quiet, every_s=max(0.1, args.every_s))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    out: dict[str, Any] = {"settings": settings.masked()}
    try:
        if settings.config:
            decl, bridges = load_workspace_file(settings.config)
            cfg = parse_workspace(decl)
            out["workspace"] = {
                "id": cfg.id,
                "queues": [dataclasses.asdict(q) for q in cfg.queues],
                "agents": [
                    {
                        "id": a.id,
                        "role": a.role,
                        "capacity": dict(a.capacity),
                        "password": "***" if a.password else None,
                    }
                    for a in cfg.agents
                ],
                "statuses": [dataclasses.asdict(s) for s in cfg.statuses],
                "workflow": cfg.workflow_json,
            }
            out["bridges"] = [
                {"id": b.id, "workspace": b.workspace, "channels": sorted(b.channels), "key": "***"}
                for b in bridges
            ]
    except ConfigError as e:
        print(json.dumps({"error": str(e)}), file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2, default=str))
    return 0


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
        code: int = args.fn(args)
        return code
    return 130


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
