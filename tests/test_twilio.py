"""The Twilio voice adapter end to end: a real ``switchboard serve --adapters twilio`` on the
suite's real Redis, signed webhooks over real HTTP, agents on real WebSockets, and a local
recording HTTP server standing in for api.twilio.com."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import secrets
import threading
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from redis.asyncio import Redis
from twilio.request_validator import RequestValidator

from adapters import twilio_voice as tv
from adapters.twilio import TwilioConfig, plugin
from router import keys
from router.config import Settings
from router.errors import BadRequest, ConfigError
from tests.server import ServerProcess, write_config
from tests.switchboard_fixtures import DECL, agent
from tests.util import wait_for
from tests.ws_client import WsClient, connect_agent

TOKEN = "test-twilio-auth-token-0123456789"
ACCOUNT = "AC" + "0123456789abcdef" * 2
PUBLIC = "https://switchboard.example.test"  # what Twilio calls; signatures are computed on it
NUMBER = "+15005550006"  # our Twilio number: the call's To
CALLER = "+14155550123"
WS = "acme"


# -- a recording stand-in for api.twilio.com -----------------------------------------------------


@dataclass
class Recorded:
    path: str
    authorization: str
    form: dict[str, str]
    status: int


class TwilioApi:
    """Records every request; answers ``fail_with`` while it is set, else 200 (201 on create)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.fail_with: int | None = None
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with api.lock:
                    status = api.fail_with or (201 if self.path.endswith("/Calls.json") else 200)
                    api.requests.append(
                        Recorded(
                            self.path,
                            self.headers.get("authorization", ""),
                            dict(parse_qsl(body.decode())),
                            status,
                        )
                    )
                out = (
                    {"sid": "CA" + "f" * 32} if status < 300 else {"code": 20500, "message": "boom"}
                )
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def calls(self, path_end: str = "") -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.path.endswith(path_end)]

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def twilio_api() -> Iterator[TwilioApi]:
    api = TwilioApi()
    yield api
    api.close()


def phone_agents() -> list[dict[str, Any]]:
    """Ann takes calls in the browser (a Twilio client), Bob on a SIP phone."""
    return [
        {**agent("ann", ["support", "sales"], contact_uri="client:ann"), "password": "pw"},
        {**agent("bob", ["sales"], contact_uri="sip:bob@pbx.example.test"), "password": "pw"},
    ]


def start_server(
    tmp_path: Path,
    redis_server: str,
    api: TwilioApi,
    name: str = "srv",
    agents: list[dict[str, Any]] | None = None,
) -> ServerProcess:
    decl = copy.deepcopy(DECL)
    decl["agents"] = agents if agents is not None else phone_agents()
    return ServerProcess(
        tmp_path / name,
        write_config(tmp_path / "ws.json", decl),
        redis_url=redis_server,
        adapters="twilio",
        env={
            "SWITCHBOARD_TWILIO_AUTH_TOKEN": TOKEN,
            "SWITCHBOARD_TWILIO_ACCOUNT_SID": ACCOUNT,
            "SWITCHBOARD_TWILIO_API_BASE": api.url,
            "SWITCHBOARD_PUBLIC_URL": PUBLIC,
        },
    )


@pytest.fixture
def server(
    tmp_path: Path, redis: Redis, redis_server: str, twilio_api: TwilioApi
) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path, redis_server, twilio_api)
    yield srv
    srv.stop()
    print(srv.log()[-6000:])  # shown when the test failed


# -- helpers -------------------------------------------------------------------------------------


def new_sid() -> str:
    return "CA" + secrets.token_hex(16)


def call(sid: str, caller: str = CALLER, **extra: str) -> dict[str, str]:
    """The parameters Twilio posts about a call (a realistic subset)."""
    return {
        "AccountSid": ACCOUNT,
        "CallSid": sid,
        "From": caller,
        "To": NUMBER,
        "Direction": "inbound",
        "CallStatus": "ringing",
        "FromCity": "SAN FRANCISCO",
        "FromState": "CA",
        "FromCountry": "US",
        "ApiVersion": "2010-04-01",
        **extra,
    }


async def webhook(
    srv: ServerProcess,
    name: str,
    params: dict[str, str],
    *,
    query: str = f"workspace={WS}",
    token: str = TOKEN,
    signed_url: str | None = None,
    signature: str | None = None,
) -> httpx.Response:
    """POST a webhook the way Twilio does: form body, signature over public URL + params."""
    path = f"/voice/twilio/{name}" + (f"?{query}" if query else "")
    if signature is None:
        signature = RequestValidator(token).compute_signature(signed_url or PUBLIC + path, params)
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(
            srv.url + path, data=params, headers={"X-Twilio-Signature": signature}
        )


def twiml(r: httpx.Response) -> ET.Element:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/xml"), r.headers
    root = ET.fromstring(r.text)
    assert root.tag == "Response"
    return root


async def case_of(redis: Redis, sid: str) -> dict[str, str]:
    cid = await redis.hget(keys.threads(WS), f"voice:{sid}")
    if cid is None:
        return {}
    row = await redis.hgetall(keys.case(WS, cid.decode()))
    return {k.decode(): v.decode() for k, v in row.items()}


async def timeline(redis: Redis, customer: str) -> list[dict[str, Any]]:
    return [json.loads(e) for e in await redis.lrange(keys.customer_timeline(WS, customer), 0, -1)]


async def pending(redis: Redis) -> int:
    info = await redis.xpending(keys.outbox(WS), "twilio")
    return int(info["pending"])


async def available(srv: ServerProcess, who: str = "ann") -> WsClient:
    login = await asyncio.to_thread(srv.login, who)
    ws = await connect_agent(srv.ws_url, login["ws_token"], origin=srv.url)
    await ws.expect("hello")
    await ws.ok("status", status="available")
    return ws


@pytest.fixture
async def ann(server: ServerProcess) -> AsyncIterator[WsClient]:
    ws = await available(server)
    yield ws
    await ws.close()


def basic_auth(value: str) -> str:
    assert value.startswith("Basic "), value
    return base64.b64decode(value[6:]).decode()


# -- inbound calls -------------------------------------------------------------------------------


async def test_inbound_call_holds_the_caller_and_offers_the_case(
    server: ServerProcess, redis: Redis, ann: WsClient
) -> None:
    sid = new_sid()
    root = twiml(await webhook(server, "incoming", call(sid)))
    gather, redirect = list(root)
    assert gather.tag == "Gather" and gather.get("numDigits") == "1"
    assert gather.get("action") == f"{PUBLIC}/voice/twilio/gather?workspace={WS}"
    assert [v.tag for v in gather] == ["Say", "Say", "Pause"]
    assert "press 1" in (gather[1].text or "").lower()
    assert (
        redirect.tag == "Redirect" and redirect.text == f"{PUBLIC}/voice/twilio/hold?workspace={WS}"
    )

    offer = await ann.expect("offer")
    assert offer["case"]["channel"] == "voice"
    assert offer["case"]["attributes"]["to"] == NUMBER
    assert offer["case"]["attributes"]["caller_city"] == "SAN FRANCISCO"
    assert f"phone:{CALLER}" in offer["customer"]["identities"]
    assert (await case_of(redis, sid))["id"] == offer["case"]["id"]

    # the hold loop's next round is the same hold, without the greeting
    again = twiml(await webhook(server, "hold", call(sid)))
    assert [v.tag for v in again[0]] == ["Say", "Pause"]


async def test_topic_and_digits_become_task_attributes(server: ServerProcess, redis: Redis) -> None:
    sid = new_sid()
    twiml(
        await webhook(
            server, "incoming", call(sid, Digits="2"), query=f"workspace={WS}&topic=sales"
        )
    )
    case = await case_of(redis, sid)
    assert json.loads(case["attrs"])["topic"] == "sales"
    assert json.loads(case["attrs"])["digits"] == "2"
    assert case["q"] == "sales" and case["st"] == "queued"


async def test_single_workspace_needs_no_query_and_unknown_workspace_is_404(
    server: ServerProcess, redis: Redis
) -> None:
    sid = new_sid()
    root = twiml(await webhook(server, "incoming", call(sid), query=""))
    assert root[0].get("action") == f"{PUBLIC}/voice/twilio/gather?workspace={WS}"
    assert (await case_of(redis, sid))["st"] == "queued"
    r = await webhook(server, "incoming", call(new_sid()), query="workspace=globex")
    assert r.status_code == 404


async def test_anonymous_caller_holds_without_a_callback_offer(
    server: ServerProcess, redis: Redis
) -> None:
    sid = new_sid()
    root = twiml(await webhook(server, "incoming", call(sid, caller="+266696687")))
    assert [v.tag for v in root] == ["Say", "Pause", "Redirect"]  # no Gather: no number
    case = await case_of(redis, sid)
    ids = await redis.hgetall(keys.customer(WS, case["cust"]))
    assert b"i:external:twilio-call:" + sid.encode() in ids
    # pressing 1 anyway just goes on holding
    root = twiml(await webhook(server, "gather", call(sid, caller="+266696687", Digits="1")))
    assert root[-1].tag == "Redirect"
    assert "callback" not in await case_of(redis, sid)


async def test_forged_signatures_get_403_and_change_nothing(
    server: ServerProcess, redis: Redis, ann: WsClient
) -> None:
    forged = new_sid()
    params = call(forged)
    path = f"/voice/twilio/incoming?workspace={WS}"
    attempts = [
        await webhook(server, "incoming", params, token="not-the-token"),
        await webhook(server, "incoming", params, signature=""),
        await webhook(server, "incoming", params, signature="bm90IGEgc2lnbmF0dXJl"),
        # signed on the address the request actually went to: the Host header is not trusted
        await webhook(server, "incoming", params, signed_url=server.url + path),
        # signed for another URL (another workspace) and replayed here
        await webhook(
            server,
            "incoming",
            params,
            signature=RequestValidator(TOKEN).compute_signature(
                f"{PUBLIC}/voice/twilio/incoming?workspace=globex", params
            ),
        ),
        await webhook(
            server, "status", {**params, "CallStatus": "completed"}, token="not-the-token"
        ),
    ]
    # signed, then tampered with: another caller
    sig = RequestValidator(TOKEN).compute_signature(PUBLIC + path, params)
    attempts.append(
        await webhook(server, "incoming", {**params, "From": "+14155550999"}, signature=sig)
    )
    assert [r.status_code for r in attempts] == [403] * len(attempts)
    assert await case_of(redis, forged) == {}
    assert await redis.hlen(keys.identities(WS)) == 0

    # the first offer ann gets is the genuine call's: nothing forged got in ahead of it
    genuine = new_sid()
    twiml(await webhook(server, "incoming", call(genuine)))
    offer = await ann.expect("offer")
    assert offer["case"]["id"] == (await case_of(redis, genuine))["id"]


# -- bridging on accept --------------------------------------------------------------------------


async def test_accept_bridges_the_live_call_to_the_agent(
    server: ServerProcess, redis: Redis, ann: WsClient, twilio_api: TwilioApi
) -> None:
    sid = new_sid()
    twiml(await webhook(server, "incoming", call(sid)))
    offer = await ann.expect("offer")
    await ann.ok("offer.accept", offer=offer["offer"])

    got = await wait_for(
        lambda: twilio_api.calls(f"/Calls/{sid}.json"),
        timeout=10,
        message="no call update reached the Twilio API",
    )
    assert isinstance(got, list) and len(got) == 1
    req = got[0]
    assert req.path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{sid}.json"
    assert basic_auth(req.authorization) == f"{ACCOUNT}:{TOKEN}"
    dial = ET.fromstring(req.form["Twiml"])
    assert [(e.tag, e.text) for e in dial.iter() if e.tag in ("Dial", "Client")] == [
        ("Dial", None),
        ("Client", "ann"),
    ]
    await wait_for(lambda: _zero(pending(redis)), message="call.connect not acknowledged")
    assert (await case_of(redis, sid))["st"] == "assigned"


async def _zero(n: Awaitable[int]) -> bool:
    return await n == 0


async def test_bridge_retries_5xx_and_acks_only_after_2xx(
    server: ServerProcess, redis: Redis, ann: WsClient, twilio_api: TwilioApi
) -> None:
    twilio_api.fail_with = 503
    sid = new_sid()
    twiml(await webhook(server, "incoming", call(sid)))
    offer = await ann.expect("offer")
    await ann.ok("offer.accept", offer=offer["offer"])
    await wait_for(
        lambda: len(twilio_api.calls(f"/Calls/{sid}.json")) >= 3,
        timeout=10,
        message="the bridge did not retry",
    )
    assert await pending(redis) == 1  # Twilio has not said yes: not acknowledged
    twilio_api.fail_with = None
    await wait_for(lambda: twilio_api.calls(f"/Calls/{sid}.json")[-1].status == 200, timeout=15)
    await wait_for(lambda: _zero(pending(redis)), message="not acknowledged after the 200")
    statuses = [r.status for r in twilio_api.calls(f"/Calls/{sid}.json")]
    assert statuses[-1] == 200 and set(statuses[:-1]) == {503}


async def test_a_restarted_node_bridges_what_the_stopped_one_left_pending(
    tmp_path: Path, redis: Redis, redis_server: str, twilio_api: TwilioApi
) -> None:
    first = start_server(tmp_path, redis_server, twilio_api, "first")
    try:
        twilio_api.fail_with = 500
        sid = new_sid()
        twiml(await webhook(first, "incoming", call(sid)))
        ann = await available(first)
        offer = await ann.expect("offer")
        await ann.ok("offer.accept", offer=offer["offer"])
        await wait_for(lambda: twilio_api.calls(f"/Calls/{sid}.json"), timeout=10)
        await ann.close()
    finally:
        first.stop()
    assert await pending(redis) == 1
    twilio_api.fail_with = None
    second = start_server(tmp_path, redis_server, twilio_api, "second")
    try:
        await wait_for(
            lambda: twilio_api.calls(f"/Calls/{sid}.json")[-1].status == 200,
            timeout=10,
            message="the next node did not bridge the pending call",
        )
        await wait_for(lambda: _zero(pending(redis)))
    finally:
        second.stop()


async def test_bridge_gives_up_on_a_4xx_and_acks(
    server: ServerProcess, redis: Redis, ann: WsClient, twilio_api: TwilioApi
) -> None:
    twilio_api.fail_with = 400  # e.g. Twilio 21220: the call is no longer in progress
    sid = new_sid()
    twiml(await webhook(server, "incoming", call(sid)))
    offer = await ann.expect("offer")
    await ann.ok("offer.accept", offer=offer["offer"])
    await wait_for(lambda: twilio_api.calls(f"/Calls/{sid}.json"), timeout=10)
    await wait_for(lambda: _zero(pending(redis)), message="a permanent failure stays pending")
    assert len(twilio_api.calls(f"/Calls/{sid}.json")) == 1
    # ann, who sees the call in progress, is told nobody is coming through
    told = await ann.expect("error", code="call.not_connected")
    assert told["case"] == offer["case"]["id"] and "could not be put through" in told["message"]


# -- status callbacks ----------------------------------------------------------------------------


def status(sid: str, call_status: str, seq: int, **extra: str) -> dict[str, str]:
    return call(sid, CallStatus=call_status, SequenceNumber=str(seq), **extra)


async def test_status_callbacks_out_of_order_end_the_case_once(
    server: ServerProcess, redis: Redis
) -> None:
    sid = new_sid()
    twiml(await webhook(server, "incoming", call(sid)))
    assert (await case_of(redis, sid))["st"] == "queued"

    r = await webhook(server, "status", status(sid, "completed", 2, CallDuration="31"))
    assert r.status_code == 200 and r.json()["action"] == "abandoned", r.text
    r = await webhook(server, "status", status(sid, "in-progress", 1))  # late and stale
    assert r.status_code == 200 and r.json()["action"] == "ignored", r.text

    case = await case_of(redis, sid)
    assert case["st"] == "abandoned" and case["seq"] == "2"
    kinds = [e["kind"] for e in await timeline(redis, case["cust"])]
    assert kinds == ["call.offered", "call.ended"]


async def test_duplicate_status_callback_is_ignored(server: ServerProcess, redis: Redis) -> None:
    sid = new_sid()
    twiml(await webhook(server, "incoming", call(sid)))
    first = await webhook(server, "status", status(sid, "completed", 3))
    again = await webhook(server, "status", status(sid, "completed", 3))
    assert first.json()["duplicate"] is False and again.json()["duplicate"] is True
    stale = await webhook(server, "status", status(sid, "no-answer", 2))  # older: not applied
    assert stale.json()["action"] == "stale"
    case = await case_of(redis, sid)
    assert case["seq"] == "3" and case["st"] == "abandoned"
    assert [e["kind"] for e in await timeline(redis, case["cust"])] == [
        "call.offered",
        "call.ended",
    ]


async def test_call_ending_on_an_assigned_case_tells_the_agent(
    server: ServerProcess, redis: Redis, ann: WsClient
) -> None:
    sid = new_sid()
    twiml(await webhook(server, "incoming", call(sid)))
    offer = await ann.expect("offer")
    await ann.ok("offer.accept", offer=offer["offer"])
    r = await webhook(server, "status", status(sid, "completed", 4, CallDuration="95"))
    assert r.json()["action"] == "appended"
    upd = await ann.expect("case.updated", case=offer["case"]["id"])
    assert upd["event"] == "call.ended" and "95 s" in upd["entry"]["text"]
    case = await case_of(redis, sid)
    assert case["st"] == "assigned" and "ended" in case


# -- callback instead of hold --------------------------------------------------------------------


async def test_keypress_1_turns_the_call_into_a_callback_case(
    server: ServerProcess, redis: Redis, twilio_api: TwilioApi
) -> None:
    sid = new_sid()
    twiml(await webhook(server, "incoming", call(sid)))
    other = twiml(await webhook(server, "gather", call(sid, Digits="5")))
    assert other[-1].tag == "Redirect"  # any other key: keep holding

    root = twiml(await webhook(server, "gather", call(sid, Digits="1")))
    assert [v.tag for v in root] == ["Say", "Hangup"]
    case = await case_of(redis, sid)
    assert case["callback"] == "1" and case["st"] == "queued"  # keeps its place in line

    ann = await available(server)
    try:
        offer = await ann.expect("offer")
        assert offer["case"]["id"] == case["id"] and offer["case"]["callback"] == "1"
        await ann.ok("offer.accept", offer=offer["offer"])
        got = await wait_for(
            lambda: twilio_api.calls("/Calls.json"),
            timeout=10,
            message="no outbound callback call was placed",
        )
        assert isinstance(got, list)
        req = got[0]
        assert req.path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json"
        assert req.form["To"] == "client:ann" and req.form["From"] == NUMBER
        number = ET.fromstring(req.form["Twiml"]).find("Dial/Number")
        assert number is not None and number.text == CALLER
        assert not twilio_api.calls(f"/Calls/{sid}.json")  # the old call is not touched
        await wait_for(lambda: _zero(pending(redis)))
    finally:
        await ann.close()


async def test_callback_case_survives_the_hangup(server: ServerProcess, redis: Redis) -> None:
    sid = new_sid()
    twiml(await webhook(server, "incoming", call(sid)))
    twiml(await webhook(server, "gather", call(sid, Digits="1")))
    await webhook(server, "status", status(sid, "completed", 2))
    assert (await case_of(redis, sid))["st"] == "queued"


# -- pure parts ----------------------------------------------------------------------------------


def test_plugin_is_off_without_a_token_and_refuses_half_a_configuration() -> None:
    assert plugin(Settings()) is None
    with pytest.raises(ConfigError, match="SWITCHBOARD_PUBLIC_URL"):
        plugin(Settings(twilio_auth_token=TOKEN, twilio_account_sid=ACCOUNT))
    with pytest.raises(ConfigError, match="twilio_account_sid"):
        plugin(Settings(twilio_auth_token=TOKEN, twilio_account_sid="nope", public_url=PUBLIC))
    cfg = TwilioConfig.from_settings(
        Settings(twilio_auth_token=TOKEN, twilio_account_sid=ACCOUNT, public_url=PUBLIC + "/")
    )
    assert cfg.public_url == PUBLIC


def test_status_mapping() -> None:
    sid = new_sid()
    assert tv.status_event(status(sid, "ringing", 0)) is None
    assert tv.status_event(status(sid, "in-progress", 1)) is None
    for st in tv.TERMINAL_STATUSES:
        ev = tv.status_event(status(sid, st, 7))
        assert ev is not None and ev["kind"] == "call.ended" and ev["seq"] == 7
        assert ev["id"] == f"twilio:{sid}:status:7"
    ev = tv.status_event({k: v for k, v in status(sid, "busy", 0).items() if k != "SequenceNumber"})
    assert ev is not None and ev["seq"] is None and ev["id"] == f"twilio:{sid}:status:busy"
    with pytest.raises(BadRequest):
        tv.status_event(status("CA123", "completed", 1))
    with pytest.raises(BadRequest):
        tv.status_event(status(sid, "completed", -1))


def test_identities_and_contacts() -> None:
    sid = new_sid()
    assert tv.caller_identities(CALLER, sid) == {"phone": CALLER}
    assert tv.caller_identities("client:alice", sid) == {"external": "twilio:client:alice"}
    for hidden in ("anonymous", "+266696687", "", "+1 415 555"):
        assert tv.caller_identities(hidden, sid) == {"external": f"twilio-call:{sid}"}
    assert tv.parse_contact("client:ann").to == "client:ann"
    assert tv.parse_contact("sip:bob@pbx.example.test") == tv.Contact(
        "sip", "sip:bob@pbx.example.test"
    )
    assert tv.parse_contact(" +14155550100 ") == tv.Contact("number", "+14155550100")
    for bad in (None, "", "ann", "client:", "tel:123", "client:a b"):
        with pytest.raises(ValueError):
            tv.parse_contact(bad)
    dial = ET.fromstring(tv.dial_twiml(tv.parse_contact("sip:bob@pbx.example.test")))
    assert dial.find("Dial/Sip") is not None
