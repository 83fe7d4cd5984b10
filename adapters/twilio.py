"""Twilio Programmable Voice adapter: signed webhooks in, call bridging out over the REST API.

Routes (all ``POST``, all checked against ``X-Twilio-Signature``; see docs/adapters-voice.md):

- ``/voice/twilio/incoming`` — an inbound call: ingests ``call.offered`` and answers TwiML
  that holds the caller (with "press 1 to be called back" when they have a number).
- ``/voice/twilio/hold``     — the hold loop's next round (the TwiML redirects here).
- ``/voice/twilio/gather``   — a keypress while on hold: 1 ingests ``callback.requested``,
  confirms and hangs up; anything else goes on holding.
- ``/voice/twilio/dialed``   — the agent's leg of a bridged call ended (``<Dial action>``): a
  call its agent transferred (waiting again, or being connected to someone else) goes back
  on hold; any other ends.
- ``/voice/twilio/status``   — status callbacks: a terminal status ingests ``call.ended`` with
  ``seq`` = SequenceNumber; other statuses change nothing.

Each hold round looks at the call's case: a caller whose case was closed meanwhile (cancelled
when the workflow ran out, completed by an agent the call never reached) hears that nobody can
take the call, and the call ends, instead of holding for good.

The workspace is the webhook URL's ``workspace`` query parameter (Twilio signs the whole URL,
so it can be trusted), or the server's only workspace when it has one. A signature is checked
on ``public_url`` + path + query — never on the Host header, which a proxy may rewrite and an
attacker chooses. A request with a missing or wrong signature gets 403 and changes nothing.

Out: when an agent accepts a voice offer, the core appends a ``call.connect`` entry to the
workspace outbox. This plugin reads it through its own consumer group (``twilio``), updates the
live call with a ``<Dial>`` to the agent's ``contact_uri`` (or, for a callback case, starts a
call to the agent that then dials the customer) and acknowledges the entry only after Twilio
answered 2xx — or a 4xx that retrying can't fix, which is logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from redis.exceptions import RedisError
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from twilio.request_validator import RequestValidator

from adapters.twilio_bridge import GROUP, CallBridge
from adapters.twilio_rest import TwilioRest
from adapters.twilio_voice import (
    callable_number,
    callback_event,
    callback_twiml,
    hangup_twiml,
    hold_twiml,
    offered_event,
    status_event,
    valid_call_sid,
)
from router import keys
from router.config import Settings
from router.context import Ctx
from router.errors import (
    BadRequest,
    ConfigError,
    Forbidden,
    NotFound,
    StoreUnavailable,
    SwitchboardError,
    TooLarge,
)

__all__ = ["GROUP", "TwilioConfig", "TwilioPlugin", "plugin"]

log = logging.getLogger("switchboard.adapters.twilio")

PATH = "/voice/twilio"
_ACCOUNT_SID = re.compile(r"^AC[0-9a-f]{32}$")
Params = ImmutableMultiDict[str, str]


@dataclass(frozen=True, slots=True)
class TwilioConfig:
    auth_token: str
    account_sid: str
    public_url: str  # scheme://host[:port][/prefix] as Twilio reaches us, no trailing slash
    api_base: str = "https://api.twilio.com"
    hold_music_url: str = ""  # played in the hold loop; empty: a pause
    hold_pause_s: int = 20
    max_body: int = 64 * 1024
    workspace_poll_s: float = 5.0

    @classmethod
    def from_settings(cls, s: Settings) -> TwilioConfig:
        missing = [
            f"SWITCHBOARD_{n.upper()}"
            for n in ("twilio_account_sid", "public_url")
            if not getattr(s, n)
        ]
        if missing:
            raise ConfigError(f"twilio adapter: set {' and '.join(missing)}")
        if not _ACCOUNT_SID.match(s.twilio_account_sid):
            raise ConfigError("twilio_account_sid: expected AC followed by 32 hex digits")
        if not s.public_url.startswith(("https://", "http://")):
            raise ConfigError("public_url: expected https://host[:port][/prefix]")
        return cls(
            auth_token=s.twilio_auth_token,
            account_sid=s.twilio_account_sid,
            public_url=s.public_url.rstrip("/"),
            api_base=s.twilio_api_base,
        )


def plugin(settings: Settings) -> TwilioPlugin | None:
    """The plugin, or None when no Twilio auth token is configured. Raises ConfigError when
    the configuration is half done (a token without account SID or public URL)."""
    if not settings.twilio_auth_token:
        return None
    return TwilioPlugin(TwilioConfig.from_settings(settings))


Endpoint = Callable[[Request], Awaitable[Response]]


def _webhook(
    handler: Callable[[TwilioPlugin, Request, Params, str], Awaitable[Response]],
    plugin: TwilioPlugin,
) -> Endpoint:
    """Check the signature, resolve the workspace, translate typed errors to HTTP statuses."""

    async def endpoint(request: Request) -> Response:
        try:
            params = await plugin.verified_params(request)
            ws = await plugin.workspace(request)
            return await handler(plugin, request, params, ws)
        except SwitchboardError as e:
            return PlainTextResponse(f"{e.code}: {e.message}", status_code=e.http_status)
        except (RedisError, OSError) as e:
            log.warning("twilio webhook %s: %s", request.url.path, e)
            return PlainTextResponse("unavailable: try again", status_code=503)

    return endpoint


class TwilioPlugin:
    """One per server process; webhooks may hit any node, each node bridges what it reads."""

    name = "twilio"

    def __init__(self, config: TwilioConfig) -> None:
        self.config = config
        self._validator = RequestValidator(config.auth_token)
        self._ctx: Ctx | None = None
        self._rest: TwilioRest | None = None
        self._bridge: CallBridge | None = None

    def routes(self) -> list[BaseRoute]:
        return [
            Route(f"{PATH}/{name}", _webhook(fn, self), methods=["POST"])
            for name, fn in (
                ("incoming", TwilioPlugin._incoming),
                ("hold", TwilioPlugin._hold),
                ("gather", TwilioPlugin._gather),
                ("dialed", TwilioPlugin._dialed),
                ("status", TwilioPlugin._status),
            )
        ]

    async def start(self, ctx: Ctx) -> None:
        c = self.config
        self._rest = TwilioRest(c.api_base, c.account_sid, c.auth_token)
        self._bridge = CallBridge(
            ctx,
            self._rest,
            workspace_poll_s=c.workspace_poll_s,
            dialed_url=lambda ws, agent: self._url("dialed", ws, agent=agent),
        )
        await self._bridge.start()
        self._ctx = ctx

    async def stop(self) -> None:
        self._ctx = None
        if self._bridge is not None:
            await self._bridge.stop()
        if self._rest is not None:
            await self._rest.aclose()

    # -- the webhook edge ----------------------------------------------------------------------

    @property
    def ctx(self) -> Ctx:
        if self._ctx is None:
            raise StoreUnavailable("starting up")
        return self._ctx

    def signed_url(self, request: Request) -> str:
        """The URL Twilio signed: our public URL + the path and query exactly as requested."""
        raw = request.scope.get("raw_path") or request.url.path.encode()
        qs = request.scope.get("query_string") or b""
        url = self.config.public_url + raw.decode("latin-1")
        return f"{url}?{qs.decode('latin-1')}" if qs else url

    async def verified_params(self, request: Request) -> Params:
        """The form parameters of a request Twilio signed; Forbidden otherwise."""
        body = await _read_body(request, self.config.max_body)
        try:
            params: Params = ImmutableMultiDict(
                parse_qsl(body.decode("utf-8"), keep_blank_values=True)
            )
        except (UnicodeDecodeError, ValueError):
            raise BadRequest(
                "expected an application/x-www-form-urlencoded body", code="twilio.invalid"
            ) from None
        signature = request.headers.get("x-twilio-signature", "")
        if not signature or not self._validator.validate(
            self.signed_url(request), params, signature
        ):
            log.info("twilio webhook %s: bad signature", request.url.path)
            raise Forbidden("X-Twilio-Signature does not match", code="twilio.signature")
        return params

    async def workspace(self, request: Request) -> str:
        """``?workspace=`` from the signed URL, else the server's only workspace."""
        ws = request.query_params.get("workspace", "")
        if ws:
            if not keys.valid_id(ws):
                raise NotFound("workspace not found", code="workspace.unknown")
            await self.ctx.switch.config(ws)  # NotFound if not declared
            return ws
        known = await self.ctx.switch.workspaces()
        if len(known) != 1:
            raise BadRequest(
                f"add ?workspace=<id> to the webhook URL (this server has {len(known)} workspaces)",
                code="twilio.workspace",
            )
        return known[0]

    def _url(self, name: str, ws: str, **query: str) -> str:
        return f"{self.config.public_url}{PATH}/{name}?{urlencode({'workspace': ws, **query})}"

    def _hold_twiml(
        self, params: Params, ws: str, *, greeting: bool = False, transfer: bool = False
    ) -> Response:
        twiml = hold_twiml(
            gather_url=self._url("gather", ws),
            hold_url=self._url("hold", ws),
            callback=callable_number(params.get("From") or ""),
            greeting=greeting,
            music_url=self.config.hold_music_url,
            pause_s=self.config.hold_pause_s,
            transfer=transfer,
        )
        return Response(twiml, media_type="text/xml")

    async def _case_of(self, ws: str, params: Params) -> tuple[str, str]:
        """The status and agent of the case of the call a webhook is about (``("", "")``
        when no case has the call)."""
        sid = params.get("CallSid") or ""
        if not valid_call_sid(sid):
            raise BadRequest(
                "CallSid: expected CA followed by 32 hex digits", code="twilio.invalid"
            )
        r = self.ctx.redis
        case = await r.hget(keys.threads(ws), f"voice:{sid}")
        if not case:
            return "", ""
        st, agent = await r.hmget(keys.case(ws, case.decode()), ["st", "agent"])
        return (st or b"").decode(), (agent or b"").decode()

    async def _ingest(self, ws: str, event: Mapping[str, Any]) -> dict[str, Any]:
        res = await self.ctx.switch.ingest(ws, event, source="twilio")  # counted there
        return {"case": res.case, "action": res.action, "duplicate": res.duplicate}

    async def _incoming(self, request: Request, params: Params, ws: str) -> Response:
        event = offered_event(params, topic=request.query_params.get("topic", ""))
        assert self._bridge is not None
        await self._bridge.ensure_reader(ws)  # before the case exists: no call.connect missed
        await self._ingest(ws, event)
        return self._hold_twiml(params, ws, greeting=True)

    async def _hold(self, request: Request, params: Params, ws: str) -> Response:
        try:
            st, _ = await self._case_of(ws, params)
        except RedisError as e:
            # before hold rounds looked at the case, a Redis failover could not drop a caller
            # on hold; it still cannot: they hold on, and the next round looks again
            log.warning("twilio hold round of %s: case not read: %s", params.get("CallSid"), e)
            return self._hold_twiml(params, ws)
        # waiting, or accepted and being connected (the call update is on its way)
        if st in ("queued", "offered", "assigned"):
            return self._hold_twiml(params, ws)
        # closed while the caller held (cancelled, completed by an agent the call never
        # reached, wrapped up): nobody will come
        return Response(hangup_twiml(), media_type="text/xml")

    async def _gather(self, request: Request, params: Params, ws: str) -> Response:
        event = callback_event(params)
        if event is None:
            return await self._hold(request, params, ws)
        await self._ingest(ws, event)
        return Response(callback_twiml(), media_type="text/xml")

    async def _dialed(self, request: Request, params: Params, ws: str) -> Response:
        """The agent's leg ended. A call its agent transferred (or a supervisor took back)
        waits again — or is already being connected to the one who accepted it: back on
        hold, which the next agent's call update ends. Otherwise the conversation is over."""
        try:
            st, agent = await self._case_of(ws, params)
        except RedisError as e:  # on hold rather than cut off; the next round looks again
            log.warning("twilio dial of %s ended: case not read: %s", params.get("CallSid"), e)
            return self._hold_twiml(params, ws, transfer=True)
        dialed = request.query_params.get("agent", "")
        if st in ("queued", "offered") or (st == "assigned" and agent != dialed):
            return self._hold_twiml(params, ws, transfer=True)
        # the agent never answered their leg: say so rather than cut the caller off
        unanswered = params.get("DialCallStatus") in ("no-answer", "busy", "failed", "canceled")
        return Response(hangup_twiml() if unanswered else hangup_twiml(""), media_type="text/xml")

    async def _status(self, request: Request, params: Params, ws: str) -> Response:
        event = status_event(params)
        if event is None:
            return JSONResponse({"action": "ignored", "duplicate": False})
        return JSONResponse(await self._ingest(ws, event))


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"body over {limit} bytes", code="twilio.too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"body over {limit} bytes", code="twilio.too_large")
    return bytes(body)
