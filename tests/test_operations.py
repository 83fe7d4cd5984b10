"""Operators' surface: /livez, /readyz, /metrics after real traffic, and check-config."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from router import keys
from router.embedded import EmbeddedRedis
from tests.server import BRIDGE_KEY, ServerProcess, write_config
from tests.switchboard_fixtures import DECL, agent
from tests.util import wait_for
from tests.ws_client import connect_bridge, connect_chat


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("ops")
    ws = {**DECL, "agents": [agent("ann", ["support"])]}
    proc = ServerProcess(root / "node", write_config(root / "ws.json", ws))
    yield proc
    proc.stop()


async def test_health_and_metrics_follow_real_traffic(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/livez")).text == "ok"
        assert (await http.get("/readyz")).status_code == 200
        bridge = await connect_bridge(server.ws_url, BRIDGE_KEY)
        try:
            ack = await bridge.ok(
                "event", id="ops-1", channel="chat", identities={"email": "ops@x.test"}, text="hi"
            )
            assert ack["action"] == "created"
        finally:
            await bridge.close()
        # a chat from the web widget counts too (cases are counted wherever they come from)
        widget = await connect_chat(server.ws_url, workspace="acme")
        try:
            await widget.expect("welcome")
            assert (await widget.ok("message", text="hello from the site"))["case"]
        finally:
            await widget.close()

        def lag_samples(text: str) -> float:
            lag = [
                ln
                for ln in text.splitlines()
                if ln.startswith("switchboard_event_loop_lag_seconds_count")
            ]
            return float(lag[0].rpartition(" ")[2]) if lag else 0.0

        async def scraped() -> str | None:
            text = (await http.get("/metrics")).text
            # both cases counted, and the loop's lag sampled at least once (its watcher wakes on its
            # own schedule: a slow start can scrape before its first sample)
            counted = 'switchboard_cases_created_total{channel="chat"} 2.0' in text
            return text if counted and lag_samples(text) > 0 else None

        text = str(await wait_for(scraped))
        for name in (
            "switchboard_connections",
            "switchboard_frames_total",
            "switchboard_offer_decision_seconds_bucket",
            'switchboard_events_total{action="created"} 2.0',
            'switchboard_queue_depth{queue="support",workspace="acme"} 2.0',  # nobody took them
            # frames out are counted too, by endpoint and type: the bridge's ack, the widget's
            # welcome
            'switchboard_frames_total{direction="out",endpoint="bridge",type="ack"} 1.0',
            'switchboard_frames_total{direction="out",endpoint="chat",type="welcome"} 1.0',
            'switchboard_frames_total{direction="in",endpoint="bridge",type="event"} 1.0',
            # the node's own pauses: its event loop's lag, watched all along, and its GC's
            "switchboard_gc_pause_seconds_count",
        ):
            assert name in text, name
        assert lag_samples(text) > 0


def _check_config(path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router.cli", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "TEST_BRIDGE_KEY": "k1",
            "TEST_CHAT_BRIDGE_KEY": "k2",
            "TEST_OTHER_CHAT_BRIDGE_KEY": "k4",
            "SWITCHBOARD_SECRET": "s3cret",
            "SWITCHBOARD_CHAT_IDENTITY_SECRET": "site-s3cret",
            **env,
        },
    )


def test_check_config_masks_secrets_and_names_bad_columns(tmp_path: Path) -> None:
    good = write_config(
        tmp_path / "good.json",
        {**DECL, "agents": [{**agent("ann", ["support"]), "password": "hunter2"}]},
    )
    out = _check_config(good)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["settings"]["secret"] == "***"
    assert doc["settings"]["chat_identity_secret"] == "***"
    assert "s3cret" not in out.stdout
    assert doc["workspace"]["agents"][0]["password"] == "***"
    assert all(b["key"] == "***" for b in doc["bridges"])
    for secret in ("hunter2", "s3cret", "k1", "k2", "k4"):
        assert secret not in out.stdout

    wf = json.loads(json.dumps(DECL["workflow"]))
    wf["task_routing"]["filters"][0]["expression"] = "topic == 'sales' AND"
    bad = write_config(tmp_path / "bad.json", {**DECL, "workflow": wf})
    out = _check_config(bad)
    assert out.returncode == 2
    err = json.loads(out.stderr)["error"]
    assert "filters[0].expression" in err and "column" in err


# -- make run: the demo --------------------------------------------------------------------------


async def test_the_demo_serves_its_workspace_and_simulated_customers_reach_the_agents(
    tmp_path: Path,
) -> None:
    """What ``make run`` starts (``switchboard demo``): the console page, the demo agents'
    passwords, the simulated customers' cases (nobody is signed in: they wait), and an admin
    who can edit the workspace."""
    demo = ServerProcess(
        tmp_path / "demo", command=("demo", "--smtp-port", "0", "--every-s", "0.2")
    )
    try:
        async with httpx.AsyncClient(base_url=demo.url) as http:
            assert "Switchboard" in (await http.get("/")).text
            r = await http.post(
                "/api/login", json={"workspace": "demo", "agent": "sue", "password": "demo"}
            )
            auth = {"Authorization": f"Bearer {r.json()['token']}"}

            async def queued() -> int:
                r = await http.get("/api/cases", params={"status": "queued"}, headers=auth)
                r.raise_for_status()
                return len(r.json()["cases"])

            await wait_for(
                lambda: _at_least(queued(), 3), timeout=30, message="fewer than 3 customers"
            )
            # the demo's admin can change the workspace through the REST API
            r = await http.post(
                "/api/login", json={"workspace": "demo", "agent": "ada", "password": "demo"}
            )
            admin = {"Authorization": f"Bearer {r.json()['token']}"}
            r = await http.put("/api/queues/night", json={"name": "Night shift"}, headers=admin)
            assert r.status_code == 201, r.text
            r = await http.get("/api/queues", headers=auth)
            assert "night" in [q["id"] for q in r.json()["queues"]]
    finally:
        demo.stop()
    assert "Application shutdown complete" in demo.log()


async def _at_least(n: Awaitable[int], k: int) -> bool:
    return await n >= k


async def test_a_restart_with_an_edited_file_never_drops_a_queue_cases_wait_in(
    tmp_path: Path,
) -> None:
    """The file loses a queue while a case waits in it: the node starts, but does not apply the
    file (the case would wait where no list shows it), and the log says why; once the case is
    moved on, the next start applies it."""
    sue = {**agent("sue", []), "role": "supervisor", "password": "pw"}
    v1 = {**DECL, "agents": [agent("ann", ["support"]), sue]}
    filters = DECL["workflow"]["task_routing"]["filters"]
    v2 = copy.deepcopy(v1)
    v2["queues"] = [q for q in v2["queues"] if q["id"] != "billing"]
    v2["workflow"]["task_routing"]["filters"] = [
        f for f in filters if f["targets"][0]["queue"] != "billing"
    ]

    def start(ws: dict[str, object]) -> ServerProcess:
        return ServerProcess(tmp_path / "node", write_config(tmp_path / "ws.json", ws))

    async def queues(node: ServerProcess) -> list[str]:
        token = node.login("sue")["token"]
        async with httpx.AsyncClient(base_url=node.url) as http:
            r = await http.get("/api/queues", headers={"Authorization": f"Bearer {token}"})
        return [q["id"] for q in r.json()["queues"]]

    node = start(v1)
    bridge = await connect_bridge(node.ws_url, BRIDGE_KEY)
    try:
        ack = await bridge.ok(
            "event", id="ops-q", channel="chat", identities={"email": "q@x.test"}, text="bill?",
            attributes={"topic": "billing"},
        )  # fmt: skip
    finally:
        await bridge.close()
    node.stop()

    node = start(v2)
    try:
        assert "billing" in await queues(node)
        assert "NOT applied" in node.log() and "cases are queued in this queue" in node.log()
        token = node.login("sue")["token"]
        async with httpx.AsyncClient(base_url=node.url) as http:
            hdr = {"Authorization": f"Bearer {token}"}
            r = await http.get("/api/cases", params={"status": "queued"}, headers=hdr)
            assert [c["id"] for c in r.json()["cases"]] == [ack["case"]]
            r = await http.patch(
                f"/api/cases/{ack['case']}", json={"queue": "support"}, headers=hdr
            )
            assert r.status_code == 200, r.text
    finally:
        node.stop()
    node = start(v2)
    try:
        assert "billing" not in await queues(node)
        assert "(changed since it was last applied)" in node.log()
    finally:
        node.stop()


async def test_nodes_on_one_redis_share_a_secret_nobody_configured(tmp_path: Path) -> None:
    """Two nodes on one Redis, each with its own data dir and no SWITCHBOARD_SECRET (two hosts
    behind a load balancer): a token one signs is good on the other."""
    redis = EmbeddedRedis(tmp_path / "redis", appendonly=False)
    url = await redis.start()
    ann = {**agent("ann", ["support"]), "password": "pw"}
    ws = write_config(tmp_path / "ws.json", {**DECL, "agents": [ann]})
    nodes: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            env = {"SWITCHBOARD_SECRET": ""}
            nodes.append(ServerProcess(tmp_path / name, ws, redis_url=url, env=env))
        assert (tmp_path / "a" / "secret").read_text() != (tmp_path / "b" / "secret").read_text()
        token = nodes[0].login("ann")["token"]
        async with httpx.AsyncClient(base_url=nodes[1].url) as http:
            r = await http.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        # the shared one lost (a Redis started empty): the nodes say so, once, as an error
        client = aioredis.Redis.from_url(url)
        await client.delete(keys.SECRET)
        await client.aclose()
        said = "token secret: the one the nodes share in Redis (sb:secret) is gone"
        await wait_for(lambda: all(said in n.log() for n in nodes), 10, interval=0.1)
        assert all(n.log().count(said) == 1 for n in nodes)
    finally:
        for n in nodes:
            n.stop()
        await redis.stop()


def test_an_adapter_asked_for_by_name_but_not_configured_stops_the_start(tmp_path: Path) -> None:
    """`serve --adapters email` without its port and mailboxes used to start with no mail
    intake (one easily missed warning): it refuses to start, saying what is missing."""
    ws = write_config(tmp_path / "ws.json", {**DECL, "agents": [agent("ann", ["support"])]})
    out = subprocess.run(
        [sys.executable, "-m", "router.cli", "serve", "--config", str(ws), "--port", "0",
         "--data-dir", str(tmp_path / "d"), "--adapters", "email"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "SWITCHBOARD_SMTP_PORT": "2599"},
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "SWITCHBOARD_MAILBOXES" in out.stderr and "Traceback" not in out.stderr
