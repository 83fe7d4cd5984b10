"""The administration REST API end to end: a real ``switchboard serve``, real HTTP, real Redis.

One server (one module-scoped fixture) on a Redis of its own serving two workspaces: ``acme``
from the config file, ``globex`` applied by a second "node" (a Switch in this process) — so
cross-workspace isolation is checked on a real second tenant. The Switch also plays the agent's
console for accept / wrap-up / complete, which the REST API deliberately does not offer.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.routing import Route

from router import keys
from router.auth import Principal, Tokens
from router.embedded import EmbeddedRedis
from router.errors import ConfigError, Conflict
from router.openapi import OPERATIONS, document
from router.store import Store, connect
from router.switch import Switch
from tests.server import ServerProcess, write_config
from tests.switchboard_fixtures import DECL, agent
from tests.ws_client import connect_agent

PW = "pw"


def _acme() -> dict[str, Any]:
    decl = copy.deepcopy(DECL)
    decl["agents"] = [
        {**agent("al", ["support"]), "password": PW},
        {**agent("bo", ["sales"]), "password": PW},
        {**agent("sue", []), "role": "supervisor", "password": PW},
        {**agent("ada", []), "role": "admin", "password": PW},
    ]
    return decl


GLOBEX = {
    "id": "globex",
    "queues": [{"id": "general"}],
    "agents": [{**agent("gail", ["support"]), "role": "admin", "password": PW}],
}


@dataclass
class Env:
    server: ServerProcess
    switch: Switch
    tokens: dict[str, str]  # agent -> session token (acme; "gail" is globex's admin)

    def client(self, who: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.AsyncClient(base_url=self.server.url, headers=headers, timeout=10)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    base = tmp_path_factory.mktemp("api")
    redis = EmbeddedRedis(base / "redis", appendonly=False)
    url = await redis.start()
    store = Store(connect(url))
    server: ServerProcess | None = None
    try:
        await store.load()
        switch = Switch(store)
        await switch.apply_workspace(GLOBEX)
        server = ServerProcess(
            base / "node", write_config(base / "acme.json", _acme()), redis_url=url
        )
        tokens = {a: server.login(a, PW)["token"] for a in ("al", "bo", "sue", "ada")}
        tokens["gail"] = server.login("gail", PW, workspace="globex")["token"]
        yield Env(server, switch, tokens)
    finally:
        if server is not None:
            server.stop()
        await store.close()
        await redis.stop()


async def _case(env: Env, key: str, email: str, **attrs: Any) -> dict[str, Any]:
    async with env.client("sue") as c:
        r = await c.post(
            "/api/cases",
            json={
                "id": key,
                "channel": "chat",
                "text": "hi",
                "identities": {"email": email},
                "attributes": attrs,
            },
        )
    assert r.status_code in (200, 201), r.text
    body: dict[str, Any] = r.json()
    return body


# -- the document --------------------------------------------------------------------------------


async def test_openapi_document_lists_every_route(env: Env) -> None:
    from router.api import api_routes

    async with env.client() as c:
        r = await c.get("/api/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc == document()
    assert doc["openapi"].startswith("3.1")
    routes = [rt for rt in api_routes() if isinstance(rt, Route)]
    assert len(routes) == len(api_routes())
    registered = {(m, f"/api{rt.path}") for rt in routes for m in (rt.methods or set()) - {"HEAD"}}
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert registered == documented
    for p, ops in doc["paths"].items():
        for m, op in ops.items():
            assert op["responses"], (m, p)
            if op["security"]:
                assert {"401", "403"} <= set(op["responses"]), (m, p)


def test_openapi_document_is_valid_openapi_31() -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(document())


# -- authentication and roles ---------------------------------------------------------------


def _concrete(path: str) -> str:
    return path.replace("{id}", "x1")


async def test_every_route_needs_a_valid_token(env: Env) -> None:
    forged = Tokens("not-the-secret").issue(Principal("session", "acme", "ada", "admin"))
    async with env.client() as c:
        for op in OPERATIONS:
            if op.role == "public":
                continue
            url = "/api" + _concrete(op.path)
            r = await c.request(op.method, url, json={})
            assert r.status_code == 401, (op.method, url, r.text)
            assert r.json()["code"] == "auth.invalid"
            r = await c.request(
                op.method, url, json={}, headers={"Authorization": f"Bearer {forged}"}
            )
            assert r.status_code == 401, (op.method, url)


async def test_roles_are_enforced_on_every_route(env: Env) -> None:
    async with env.client("al") as agent_c, env.client("sue") as sup:
        for op in OPERATIONS:
            url = "/api" + _concrete(op.path)
            if op.role in ("supervisor", "admin"):
                r = await agent_c.request(op.method, url, json={})
                assert r.status_code == 403, (op.method, url, r.text)
                assert r.json() == {"code": "forbidden", "message": f"{op.role}s only"}
            if op.role == "admin":
                r = await sup.request(op.method, url, json={})
                assert r.status_code == 403, (op.method, url, r.text)


async def test_other_workspaces_token_is_refused_and_sees_nothing(env: Env) -> None:
    case = await _case(env, "iso-1", "iso@example.com")
    async with env.client("gail") as g:
        r = await g.get("/api/agents", params={"workspace": "acme"})
        assert r.status_code == 403 and r.json()["message"] == "not your workspace"
        for r in (
            await g.get("/api/me", params={"workspace": "acme"}),
            await g.post("/api/ws-token", params={"workspace": "acme"}),
        ):
            assert r.status_code == 403, r.text
        assert (await g.get(f"/api/cases/{case['case']}")).status_code == 404
        assert (await g.get(f"/api/customers/{case['customer']}")).status_code == 404
        assert (
            await g.patch(f"/api/cases/{case['case']}", json={"queue": "general"})
        ).status_code == 404
        r = await g.get("/api/customers", params={"identity": "email:iso@example.com"})
        assert r.json() == {"customers": []}
        r = await g.get("/api/cases", params={"status": "queued"})
        assert r.json()["cases"] == []
        assert [a["id"] for a in (await g.get("/api/agents")).json()["agents"]] == ["gail"]
        assert (await g.get("/api/agents/al")).status_code == 404
    # a validly signed token for an agent the workspace does not have
    ghost = Tokens("test-secret").issue(Principal("session", "initech", "ada", "admin"))
    async with httpx.AsyncClient(
        base_url=env.server.url, headers={"Authorization": f"Bearer {ghost}"}
    ) as c:
        assert (await c.get("/api/agents")).status_code == 401
        assert (await c.get("/api/agents", params={"workspace": "acme"})).status_code == 403


# -- agents -------------------------------------------------------------------------------------


async def test_a_route_or_method_that_does_not_exist_answers_json(env: Env) -> None:
    """The router's own refusals are API errors like any other: JSON, typed."""
    async with env.client("ada") as adm:
        r = await adm.patch("/api/agents/al", json={})  # agents are PUT whole, not patched
        assert r.status_code == 405
        assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "PUT", "DELETE"}
        assert r.json() == {"code": "method.not_allowed", "message": "Method Not Allowed"}
        r = await adm.get("/api/nothing-here")
        assert r.status_code == 404 and r.json()["code"] == "route.unknown"


async def test_agents_list_read_and_self(env: Env) -> None:
    async with env.client("sue") as sup, env.client("al") as al:
        r = await sup.get("/api/agents")
        assert r.status_code == 200
        ids = [a["id"] for a in r.json()["agents"]]
        assert ids == sorted(ids) and {"ada", "al", "bo", "sue"} <= set(ids)
        assert "pw" not in r.text and "scrypt" not in r.text
        me = (await al.get("/api/agents/al")).json()
        assert me["attributes"]["skills"] == ["support"]
        assert me["capacity"] == {"chat": 2, "email": 3, "voice": 1}
        assert (await al.get("/api/agents/bo")).status_code == 403
        assert (await sup.get("/api/agents/nobody")).status_code == 404


async def test_admin_creates_updates_and_demotes_an_agent(env: Env) -> None:
    async with env.client("ada") as adm:
        r = await adm.put(
            "/api/agents/cy",
            json={
                "name": "Cy",
                "role": "admin",
                "password": "s3cret",
                "attributes": {"skills": ["billing"]},
            },
        )
        assert r.status_code == 201, r.text
        assert r.json()["role"] == "admin" and r.json()["name"] == "Cy"
        cy = env.server.login("cy", "s3cret")["token"]
        hdr = {"Authorization": f"Bearer {cy}"}
        assert (await adm.get("/api/workflow", headers=hdr)).status_code == 200
        # fields left out keep their value; the password is untouched
        r = await adm.put("/api/agents/cy", json={"role": "agent"})
        assert r.status_code == 200
        assert r.json()["name"] == "Cy" and r.json()["attributes"] == {"skills": ["billing"]}
        # the demotion ends the sessions signed in before it; a new one is an agent's
        r = await adm.get("/api/workflow", headers=hdr)
        assert r.status_code == 401 and r.json()["code"] == "auth.revoked"
        again = env.server.login("cy", "s3cret")
        assert again["role"] == "agent"
        hdr = {"Authorization": f"Bearer {again['token']}"}
        assert (await adm.get("/api/workflow", headers=hdr)).status_code == 403
        r = await adm.put("/api/agents/cy", json={"capacity": {"fax": 1}})
        assert r.status_code == 400 and "agent.capacity.fax" in r.json()["message"]
        r = await adm.put("/api/agents/cy", json={"attributes": {"skills": "billing"}})
        assert r.status_code == 400 and "agent.attributes.skills" in r.json()["message"]
        assert (await adm.get("/api/agents/cy")).json()["attributes"] == {"skills": ["billing"]}
        r = await adm.put("/api/agents/cy", json={"shoe_size": 44})
        assert r.status_code == 400 and "shoe_size" in r.json()["message"]
        r = await adm.put("/api/agents/cy", json={"id": "other"})
        assert r.status_code == 400
        r = await adm.put("/api/agents/bad:id", json={})
        assert r.status_code == 400 and r.json()["code"] == "config.invalid"


async def test_adding_never_replaces_and_ids_differing_in_case_are_refused(env: Env) -> None:
    """The admin page's Add sends If-None-Match: *: an agent or queue someone else added
    meanwhile is not overwritten (409, nothing changed); a new id that differs from an existing
    one only in case is refused either way."""
    async with env.client("ada") as adm:
        create = {"If-None-Match": "*"}
        body = {"name": "Eve", "password": "pw-eve", "attributes": {"skills": ["support"]}}
        assert (await adm.put("/api/agents/eve", json=body, headers=create)).status_code == 201
        mine = {"name": "Eve Mine", "password": "other", "attributes": {}}
        r = await adm.put("/api/agents/eve", json=mine, headers=create)
        assert r.status_code == 409 and r.json()["code"] == "agent.exists", r.text
        kept = (await adm.get("/api/agents/eve")).json()
        assert kept["name"] == "Eve" and kept["attributes"] == {"skills": ["support"]}
        env.server.login("eve", "pw-eve")  # the password too
        r = await adm.put("/api/agents/EVE", json=body)
        assert r.status_code == 409 and "there is already an agent eve" in r.json()["message"]

        q = {"name": "Late", "target": "skills HAS 'support'"}
        assert (await adm.put("/api/queues/late", json=q, headers=create)).status_code == 201
        r = await adm.put("/api/queues/late", json={"name": "Mine"}, headers=create)
        assert r.status_code == 409 and r.json()["code"] == "queue.exists"
        r = await adm.put("/api/queues/Late", json=q)
        assert r.status_code == 409 and r.json()["code"] == "queue.exists"
        names = {x["id"]: x["name"] for x in (await adm.get("/api/queues")).json()["queues"]}
        assert names["late"] == "Late" and "Late" not in names


async def test_a_changed_role_or_password_ends_open_sessions(env: Env) -> None:
    """A supervisor demoted while their console is open loses it at once (not at its next
    sign-in): the server tells it and closes it, and its tokens stop working. A new password
    does the same; the same password given again (a config file re-applied) does not."""
    async with env.client("ada") as adm:
        r = await adm.put(
            "/api/agents/vi", json={"name": "Vi", "role": "supervisor", "password": "one"}
        )
        assert r.status_code == 201, r.text
        vi = env.server.login("vi", "one")
        console = await connect_agent(env.server.ws_url, vi["ws_token"])
        await console.expect("hello")
        assert "stats" in await console.ok("stats.fetch")

        r = await adm.put("/api/agents/vi", json={"password": "one"})  # unchanged
        assert r.status_code == 200
        assert "stats" in await console.ok("stats.fetch")  # still signed in
        spare = env.server.login("vi", "one")["ws_token"]  # a connect token, not yet used

        r = await adm.put("/api/agents/vi", json={"role": "agent"})
        assert r.status_code == 200
        told = await console.expect("session.revoked")
        assert "role or password changed" in told["message"]
        assert await console.closed() == 1008
        async with httpx.AsyncClient(base_url=env.server.url, timeout=10) as c:
            hdr = {"Authorization": f"Bearer {vi['token']}"}
            for r in (
                await c.get("/api/me", headers=hdr),
                await c.post("/api/ws-token", headers=hdr),
            ):
                assert r.status_code == 401 and r.json()["code"] == "auth.revoked"
        # a connect token issued before the change is refused too
        stale = await connect_agent(env.server.ws_url, spare)
        assert (await stale.expect("error"))["code"] == "auth.revoked"

        fresh = env.server.login("vi", "one")
        assert fresh["role"] == "agent"
        console = await connect_agent(env.server.ws_url, fresh["ws_token"])
        await console.expect("hello")
        await console.fails("stats.fetch", "forbidden")
        r = await adm.put("/api/agents/vi", json={"password": "two"})
        assert r.status_code == 200
        await console.expect("session.revoked")
        assert await console.closed() == 1008
        later = env.server.login("vi", "two")
        console = await connect_agent(env.server.ws_url, later["ws_token"])
        await console.expect("hello")
        await console.close()


async def test_agent_edits_survive_a_queue_change(env: Env) -> None:
    async with env.client("ada") as adm:
        r = await adm.put(
            "/api/agents/kim", json={"password": "k1", "capacity": {"chat": 2, "email": 2}}
        )
        assert r.json()["capacity"] == {"chat": 2, "email": 2, "voice": 0}
        r = await adm.put("/api/agents/kim", json={"capacity": {"chat": 1}})
        assert r.json()["capacity"] == {"chat": 1, "email": 0, "voice": 0}
        # al is declared in the config file; the API's edit must outlive a re-apply
        r = await adm.put("/api/agents/al", json={"attributes": {"skills": ["support", "x"]}})
        assert r.status_code == 200
        assert (
            await adm.put("/api/queues/xq", json={"target": "skills HAS 'x'"})
        ).status_code == 201
        kim = (await adm.get("/api/agents/kim")).json()
        assert kim["capacity"] == {"chat": 1, "email": 0, "voice": 0}
        al = (await adm.get("/api/agents/al")).json()
        assert al["attributes"]["skills"] == ["support", "x"] and al["role"] == "agent"
        env.server.login("kim", "k1")
        env.server.login("al", PW)
        assert (await adm.delete("/api/queues/xq")).status_code == 204


async def test_agent_status(env: Env) -> None:
    async with env.client("bo") as bo, env.client("sue") as sup:
        r = await bo.put("/api/agents/bo/status", json={"status": "away"})
        assert r.json() == {"agent": "bo", "status": "away"}
        assert (await bo.put("/api/agents/al/status", json={"status": "away"})).status_code == 403
        r = await sup.put("/api/agents/bo/status", json={"status": "offline"})
        assert r.status_code == 200
        assert (await sup.get("/api/agents/bo")).json()["status"] == "offline"
        r = await sup.put("/api/agents/bo/status", json={"status": "asleep"})
        assert r.status_code == 400 and r.json()["code"] == "status.unknown"
        r = await sup.put("/api/agents/nobody/status", json={"status": "away"})
        assert r.status_code == 404


# -- queues and workflow ------------------------------------------------------------------------


async def test_open_consoles_learn_a_renamed_queue(env: Env) -> None:
    """An admin renames a queue: every open console is told the queues as they are now
    (queues.updated), so the cases on screen show the new name; an edit that leaves the names
    as they were tells nobody."""
    console = await connect_agent(env.server.ws_url, env.server.login("bo", PW)["ws_token"])
    try:
        await console.expect("hello")
        async with env.client("ada") as adm:
            r = await adm.put("/api/queues/billing", json={"sl_target_s": 45})
            assert r.status_code == 200, r.text
            r = await adm.put("/api/queues/billing", json={"name": "Billing & refunds"})
            assert r.status_code == 200, r.text
        told = await console.expect("queues.updated")
        assert {"id": "billing", "name": "Billing & refunds"} in told["queues"]
        assert [f["type"] for f in console.unsolicited()].count("queues.updated") == 1
    finally:
        await console.close()
        async with env.client("ada") as adm:
            await adm.put("/api/queues/billing", json={"name": "Billing"})


async def test_queues_create_update_delete(env: Env) -> None:
    async with env.client("al") as al, env.client("ada") as adm:
        r = await al.get("/api/queues")
        assert [q["id"] for q in r.json()["queues"]][:3] == ["support", "sales", "billing"]
        r = await adm.put("/api/queues/vip", json={"target": "tier == 'gold'", "name": "VIP"})
        assert r.status_code == 201, r.text
        assert r.json() == {
            "id": "vip",
            "name": "VIP",
            "target": "tier == 'gold'",
            "order": "fifo",
            "sl_target_s": 60.0,
            "waiting": 0,
        }
        for bad in ("inf", "nan", -5, 0, True):  # refused, and nothing is stored
            r = await adm.put("/api/queues/vip", json={"sl_target_s": bad})
            assert r.status_code == 400 and "sl_target_s" in r.json()["message"], (bad, r.text)
        assert (await adm.get("/api/queues")).status_code == 200
        r = await adm.put("/api/queues/vip", json={"sl_target_s": 20})
        assert r.status_code == 200 and r.json()["name"] == "VIP"
        assert r.json()["sl_target_s"] == 20
        r = await adm.put("/api/queues/vip", json={"target": "tier == "})
        assert r.status_code == 400
        err = r.json()
        assert err["path"] == "target" and err["column"] == 9 and "column 9" in err["message"]
        r = await adm.put("/api/queues/vip", json={"order": "random"})
        assert r.status_code == 400 and r.json()["message"] == "queue.order: fifo or lifo"
        # a name that reads as something else on a colleague's screen (right-to-left override)
        r = await adm.put("/api/queues/vip", json={"name": "VIP \u202egnp.exe"})
        assert r.status_code == 400 and "queue.name" in r.json()["message"]
        r = await adm.put("/api/agents/vip-agent", json={"name": "Al\u202e", "password": "x"})
        assert r.status_code == 400 and "agent.name" in r.json()["message"]
        assert (await adm.get("/api/agents/vip-agent")).status_code == 404
        for blank in ("", "   ", "\u200b"):  # a row with no name on the supervisor page
            r = await adm.put("/api/queues/vip", json={"name": blank})
            assert r.status_code == 400 and "queue.name" in r.json()["message"], repr(blank)
        r = await adm.put("/api/queues/vip", json={"name": "VIP ✨ Ünïcode"})
        assert r.status_code == 200 and r.json()["name"] == "VIP ✨ Ünïcode"
        # the workflow routes to sales: refused; vip is unused: deleted
        r = await adm.delete("/api/queues/sales")
        assert r.status_code == 409 and r.json()["code"] == "queue.in_use"
        assert (await adm.delete("/api/queues/vip")).status_code == 204
        assert (await adm.delete("/api/queues/vip")).status_code == 404
        r = await al.get("/api/queues")
        assert "vip" not in [q["id"] for q in r.json()["queues"]]


async def test_an_edit_is_not_lost_to_another_nodes_edit(env: Env) -> None:
    # read-change-write of the declaration on two nodes: the second write is refused, not kept
    sw = env.switch
    decl, version = await sw.declaration("globex")
    theirs = {**copy.deepcopy(decl), "agents": []}
    theirs["queues"].append({"id": "night"})
    await sw.apply_workspace(theirs, read_version=version)
    mine = {**copy.deepcopy(decl), "agents": []}
    mine["queues"].append({"id": "weekend"})
    with pytest.raises(Conflict) as refused:
        await sw.apply_workspace(mine, read_version=version)
    assert refused.value.code == "workspace.changed"
    stored, now = await sw.declaration("globex")
    assert [q["id"] for q in stored["queues"]] == ["general", "night"] and now != version
    assert await sw.redis.sismember(keys.queues("globex"), "night")
    assert not await sw.redis.sismember(keys.queues("globex"), "weekend")


async def test_concurrent_queue_edits_all_land(env: Env) -> None:
    # each PUT reads, changes and writes the declaration: none may be lost or half-applied
    names = [f"burst{i}" for i in range(8)]
    async with env.client("ada") as adm:
        puts = await asyncio.gather(*(adm.put(f"/api/queues/{n}", json={}) for n in names))
        assert [r.status_code for r in puts] == [201] * len(names), [r.text for r in puts]
        listed = {q["id"] for q in (await adm.get("/api/queues")).json()["queues"]}
        assert set(names) <= listed
        gone = await asyncio.gather(*(adm.delete(f"/api/queues/{n}") for n in names))
        assert [r.status_code for r in gone] == [204] * len(names), [r.text for r in gone]
        listed = {q["id"] for q in (await adm.get("/api/queues")).json()["queues"]}
        assert not set(names) & listed


async def test_queue_with_waiting_cases_is_not_deleted(env: Env) -> None:
    async with env.client("ada") as adm:
        await adm.put("/api/queues/spare", json={})
        wf = (await adm.get("/api/workflow")).json()
        routed = copy.deepcopy(wf)
        routed["task_routing"]["filters"].insert(
            0,
            {
                "filter_friendly_name": "spare",
                "expression": "topic == 'spare'",
                "targets": [{"queue": "spare"}],
            },
        )
        assert (await adm.put("/api/workflow", json=routed)).status_code == 200
        case = await _case(env, "spare-1", "spare@example.com", topic="spare")
        assert (await adm.put("/api/workflow", json=wf)).status_code == 200
        r = await adm.delete("/api/queues/spare")
        assert r.status_code == 409 and "queued" in r.json()["message"]
        async with env.client("sue") as sup:
            r = await sup.patch(f"/api/cases/{case['case']}", json={"queue": "support"})
            assert r.status_code == 200
        assert (await adm.delete("/api/queues/spare")).status_code == 204


async def test_workflow_read_replace_and_errors(env: Env) -> None:
    async with env.client("sue") as sup, env.client("ada") as adm:
        wf = (await sup.get("/api/workflow")).json()
        assert wf == DECL["workflow"]
        bad = copy.deepcopy(wf)
        bad["task_routing"]["filters"][1]["expression"] = "language == 'es' AND"
        r = await adm.put("/api/workflow", json=bad)
        assert r.status_code == 400
        err = r.json()
        assert err["code"] == "config.invalid"
        assert err["path"] == "workflow.task_routing.filters[1].expression"
        assert err["column"] == 21 and "column 21" in err["message"]  # end of input
        assert "task_routing.filters[1].expression" in err["message"]
        bad = copy.deepcopy(wf)
        bad["task_routing"]["default_filter"] = {"queue": "nowhere"}
        r = await adm.put("/api/workflow", json=bad)
        assert r.status_code == 400 and "default_filter" in r.json()["message"]
        # without a default filter a case no filter matches would be cancelled: refused
        bad = copy.deepcopy(wf)
        del bad["task_routing"]["default_filter"]
        r = await adm.put("/api/workflow", json=bad)
        assert r.status_code == 400, r.text
        assert r.json()["path"] == "workflow.task_routing.default_filter"
        assert "cases no filter matches" in r.json()["message"]
        r = await adm.put("/api/workflow", json={})
        assert r.status_code == 400 and r.json()["path"] == "workflow.task_routing"
        assert "NoneType" not in r.json()["message"]
        assert (await sup.get("/api/workflow")).json() == wf  # nothing changed
        # a new first filter routes 'urgent' cases to billing
        new = copy.deepcopy(wf)
        new["task_routing"]["filters"].insert(
            0,
            {
                "filter_friendly_name": "urgent",
                "expression": "urgent == true",
                "targets": [{"queue": "billing", "priority": 50}],
            },
        )
        r = await adm.put("/api/workflow", json=new)
        assert r.status_code == 200 and r.json() == new
        assert (await sup.get("/api/workflow")).json() == new
        case = await _case(env, "wf-1", "wf@example.com", urgent=True)
        got = (await sup.get(f"/api/cases/{case['case']}")).json()["case"]
        assert (got["queue"], got["priority"], got["filter"]) == ("billing", 50, "urgent")
        assert (await adm.put("/api/workflow", json=wf)).status_code == 200


# -- cases --------------------------------------------------------------------------------------


async def test_create_case_is_idempotent_on_its_id(env: Env) -> None:
    first = await _case(env, "idem-1", "idem@example.com", topic="sales")
    assert first["action"] == "created" and first["duplicate"] is False
    again = await _case(env, "idem-1", "idem@example.com", topic="sales")
    assert again["case"] == first["case"] and again["duplicate"] is True
    async with env.client("sue") as sup:
        r = await sup.post(
            "/api/cases",
            json={
                "channel": "email",
                "identities": {"email": "Idem@Example.com"},
                "subject": "no key",
            },
        )
        assert r.status_code == 201
        assert r.json()["id"] and r.json()["case"] != first["case"]
        assert r.json()["customer"] == first["customer"]
        r = await sup.post("/api/cases", json={"identities": {"email": "x@example.com"}})
        assert r.status_code == 400 and "channel" in r.json()["message"]
        r = await sup.post(
            "/api/cases",
            json={"channel": "chat", "thread": "t", "identities": {"email": "x@example.com"}},
        )
        assert r.status_code == 400 and "thread" in r.json()["message"]
        r = await sup.post("/api/cases", json={"channel": "chat", "identities": {"phone": "12"}})
        assert r.status_code == 400 and "phone" in r.json()["message"]
        r = await sup.post("/api/cases", content=b"{not json")
        assert r.status_code == 400 and r.json()["code"] == "body.invalid"
        r = await sup.post("/api/cases", content=b"[" + b"1," * 200_000 + b"1]")
        assert r.status_code == 413
        got = (await sup.get(f"/api/cases/{first['case']}")).json()
        assert got["case"]["status"] == "queued" and got["case"]["queue"] == "sales"
        assert got["customer"]["identities"] == ["email:idem@example.com"]
        assert [e["text"] for e in got["timeline"]][:1] == ["hi"]


async def _all_pages(c: httpx.AsyncClient, **params: Any) -> list[str]:
    ids: list[str] = []
    cursor = None
    for _ in range(100):
        q = {**params, **({"cursor": cursor} if cursor else {})}
        r = await c.get("/api/cases", params=q)
        assert r.status_code == 200, r.text
        ids += [x["id"] for x in r.json()["cases"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return ids
    raise AssertionError("pagination did not end")


async def test_case_lifecycle_listed_by_status(env: Env) -> None:
    # a queue, a workflow filter and an agent of their own, so earlier cases stay out of it
    async with env.client("ada") as adm:
        assert (
            await adm.put("/api/queues/life", json={"target": "skills HAS 'life'"})
        ).status_code == 201
        wf = (await adm.get("/api/workflow")).json()
        routed = copy.deepcopy(wf)
        routed["task_routing"]["filters"].insert(
            0,
            {
                "filter_friendly_name": "life",
                "expression": "topic == 'life'",
                "targets": [{"queue": "life"}],
            },
        )
        assert (await adm.put("/api/workflow", json=routed)).status_code == 200
        r = await adm.put(
            "/api/agents/lu",
            json={"password": PW, "capacity": {"chat": 1}, "attributes": {"skills": ["life"]}},
        )
        assert r.status_code == 201
    env.tokens["lu"] = env.server.login("lu", PW)["token"]
    made = [
        (await _case(env, f"life-{i}", f"life{i}@example.com", topic="life"))["case"]
        for i in range(5)
    ]
    async with env.client("sue") as sup, env.client("lu") as al:
        queued = await _all_pages(sup, status="queued", queue="life", limit=2)
        assert queued == made  # oldest first, each once
        assert (await sup.get("/api/queues")).json()["queues"][-1]["waiting"] == 5
        # the agent becomes available and is offered the oldest case
        assert (
            await al.put("/api/agents/lu/status", json={"status": "available"})
        ).status_code == 200
        me = (await al.get("/api/agents/lu")).json()
        assert len(me["offers"]) == 1
        offered = (await sup.get("/api/cases", params={"status": "offered"})).json()["cases"]
        assert [(c["id"], c["offered_to"]) for c in offered] == [(made[0], "lu")]
        await env.switch.accept("acme", "lu", me["offers"][0])
        await al.put("/api/agents/lu/status", json={"status": "away"})
        r = await sup.get("/api/cases", params={"status": "assigned"})
        assert [(c["id"], c["agent"]) for c in r.json()["cases"]] == [(made[0], "lu")]
        # the holder may read the case and its customer; nothing else
        held = await al.get(f"/api/cases/{made[0]}")
        assert held.status_code == 200 and held.json()["case"]["agent"] == "lu"
        cust = held.json()["case"]["customer"]
        assert (await al.get(f"/api/customers/{cust}")).status_code == 200
        assert (await al.get(f"/api/customers/{cust}/timeline")).status_code == 200
        assert (await al.get(f"/api/cases/{made[1]}")).status_code == 404
        other = (await sup.get(f"/api/cases/{made[1]}")).json()["case"]["customer"]
        assert (await al.get(f"/api/customers/{other}")).status_code == 404
        assert (await al.get(f"/api/customers/{other}/timeline")).status_code == 404
        await env.switch.wrapup("acme", "lu", made[0])
        r = await sup.get("/api/cases", params={"status": "wrapping"})
        assert [c["id"] for c in r.json()["cases"]] == [made[0]]
        await env.switch.complete("acme", "lu", made[0], "resolved")
        assert (await al.get(f"/api/cases/{made[0]}")).status_code == 404
        # a closed case is not moved
        r = await sup.patch(f"/api/cases/{made[0]}", json={"queue": "support"})
        assert r.status_code == 409 and r.json()["code"] == "case.completed"
        done = (await sup.get("/api/cases", params={"status": "completed"})).json()
        assert done["cases"][0]["id"] == made[0]
        assert done["cases"][0]["disposition"] == "resolved"
        assert done["cases"][0]["closed"] >= done["cases"][0]["created"]
        r = await sup.get("/api/cases", params={"status": "completed", "queue": "sales"})
        assert made[0] not in [c["id"] for c in r.json()["cases"]]
        async with env.client("ada") as adm:
            assert (await adm.put("/api/workflow", json=wf)).status_code == 200
        for bad in (
            {"status": "lost"},
            {},
            {"status": "queued", "limit": "0"},
            {"status": "queued", "cursor": "zzz"},
            {"status": "completed", "cursor": "1~x"},
        ):
            r = await sup.get("/api/cases", params=bad)
            assert r.status_code == 400, (bad, r.text)


async def test_closed_cases_page_through_the_log(env: Env) -> None:
    async with env.client("sue") as sup:
        before = await _all_pages(sup, status="cancelled")
        made = []
        for i in range(3):
            case = (await _case(env, f"gone-{i}", f"gone{i}@example.com"))["case"]
            # the caller hangs up before anyone answers: the case is abandoned
            await env.switch.ingest(
                "acme",
                {
                    "id": f"gone-{i}-end",
                    "channel": "chat",
                    "kind": "conversation.ended",
                    "thread": "",
                    "case": case,
                    "identities": {"email": f"gone{i}@example.com"},
                },
            )
            made.append(case)
        ids = await _all_pages(sup, status="abandoned", limit=2)
        assert ids[:3] == made[::-1]  # newest first
        assert await _all_pages(sup, status="cancelled") == before


async def test_supervisor_moves_a_waiting_case(env: Env) -> None:
    case = (await _case(env, "move-1", "move@example.com", topic="sales"))["case"]
    async with env.client("sue") as sup:
        r = await sup.patch(f"/api/cases/{case}", json={"queue": "billing", "note": "VIP"})
        assert r.status_code == 200, r.text
        assert r.json()["queue"] == "billing" and r.json()["status"] == "queued"
        queued = await _all_pages(sup, status="queued", queue="billing")
        assert case in queued and case not in await _all_pages(sup, status="queued", queue="sales")
        tl = (await sup.get(f"/api/cases/{case}")).json()["timeline"]
        assert tl[-1]["kind"] == "transfer" and tl[-1]["text"] == "VIP"
        # to the queue it waits in: refused, and nothing is added to its history
        r = await sup.patch(f"/api/cases/{case}", json={"queue": "billing"})
        assert r.status_code == 409 and r.json()["code"] == "case.same_queue", r.text
        assert r.json()["message"] == "the case is waiting in that queue already"
        assert (await sup.get(f"/api/cases/{case}")).json()["timeline"] == tl
        r = await sup.patch(f"/api/cases/{case}", json={"queue": "nowhere"})
        assert r.status_code == 404 and r.json()["code"] == "queue.unknown"
        assert (await sup.patch("/api/cases/c404", json={"queue": "sales"})).status_code == 404
        r = await sup.patch(f"/api/cases/{case}", json={"priority": 3, "queue": "sales"})
        assert r.status_code == 400


# -- customers ----------------------------------------------------------------------------------


async def test_customer_lookup_timeline_and_merge(env: Env) -> None:
    a = await _case(env, "merge-a", "mia@example.com")
    b = await _case(env, "merge-b", "mia.work@example.com")
    async with env.client("sue") as sup, env.client("ada") as adm:
        r = await sup.get("/api/customers", params={"identity": "email:MIA@example.com"})
        [found] = r.json()["customers"]
        assert found["id"] == a["customer"] and found["identities"] == ["email:mia@example.com"]
        assert [c["id"] for c in found["cases"]] == [a["case"]]
        r = await sup.get("/api/customers", params={"identity": "fax:123"})
        assert r.status_code == 400 and r.json()["message"].startswith("identity:")
        r = await sup.post(
            "/api/customers/merge", json={"into": a["customer"], "from": b["customer"]}
        )
        assert r.status_code == 403
        r = await adm.post(
            "/api/customers/merge", json={"into": a["customer"], "from": b["customer"]}
        )
        assert r.status_code == 200, r.text
        assert r.json()["moved_cases"] == 1
        assert r.json()["identities"] == ["email:mia.work@example.com"]
        cust = (await sup.get(f"/api/customers/{a['customer']}")).json()
        assert sorted(cust["identities"]) == ["email:mia.work@example.com", "email:mia@example.com"]
        assert {c["id"] for c in cust["cases"]} == {a["case"], b["case"]}
        assert (await sup.get(f"/api/customers/{b['customer']}")).json() == {
            "id": b["customer"],
            "merged_into": a["customer"],
        }
        r = await sup.get(f"/api/customers/{a['customer']}/timeline", params={"limit": 1})
        page = r.json()
        assert page["total"] == 2 and len(page["timeline"]) == 1 and page["start"] == 1
        r = await sup.get(
            f"/api/customers/{a['customer']}/timeline", params={"before": page["start"], "limit": 1}
        )
        assert r.json()["start"] == 0 and len(r.json()["timeline"]) == 1
        r = await adm.post(
            "/api/customers/merge", json={"into": a["customer"], "from": b["customer"]}
        )
        assert r.status_code == 404
        r = await adm.post(
            "/api/customers/merge", json={"into": a["customer"], "from": a["customer"]}
        )
        assert r.status_code == 400
        assert (await sup.get("/api/customers/u404")).status_code == 404
        assert (await sup.get("/api/customers/u404/timeline")).status_code == 404


async def test_admin_removes_an_agent(env: Env) -> None:
    """An admin removes an agent who holds no case: their console is told and signed out, their
    tokens stop working, their pending offer goes to a colleague. One holding a case is refused
    (naming it), and an admin cannot remove themselves."""
    async with env.client("ada") as adm, env.client("sue") as sup:
        r = await adm.put("/api/queues/rmq", json={"target": "skills HAS 'rmq'"})
        assert r.status_code == 201, r.text
        for aid in ("rem", "rue"):
            r = await adm.put(
                f"/api/agents/{aid}",
                json={"password": "pw-" + aid, "attributes": {"skills": ["rmq"]},
                      "capacity": {"chat": 1}},
            )  # fmt: skip
            assert r.status_code == 201, r.text
        rem = env.server.login("rem", "pw-rem")
        console = await connect_agent(env.server.ws_url, rem["ws_token"])
        await console.expect("hello")
        await console.ok("status", status="available")

        async def to_rmq(key: str) -> str:
            case = str((await _case(env, key, f"{key}@example.com"))["case"])
            r = await sup.patch(f"/api/cases/{case}", json={"queue": "rmq"})
            assert r.status_code == 200, r.text
            return case

        held = await to_rmq("rm-1")
        await console.ok("offer.accept", offer=(await console.offer_for(held))["offer"])
        r = await adm.delete("/api/agents/rem")
        assert r.status_code == 409 and r.json()["code"] == "agent.busy"
        assert held in r.json()["message"]
        r = await sup.patch(f"/api/cases/{held}", json={"queue": "support"})  # taken back
        assert r.status_code == 200, r.text
        pending = await to_rmq("rm-2")
        await console.offer_for(pending)

        rue = env.server.login("rue", "pw-rue")
        colleague = await connect_agent(env.server.ws_url, rue["ws_token"])
        await colleague.expect("hello")
        await colleague.ok("status", status="available")
        assert (await adm.delete("/api/agents/rem")).status_code == 204
        told = await console.expect("session.revoked")
        assert told["reason"] == "removed" and "removed your account" in told["message"]
        assert await console.closed() == 1008
        await colleague.offer_for(pending)

        hdr = {"Authorization": f"Bearer {rem['token']}"}
        r = await adm.get("/api/me", headers=hdr)
        assert r.status_code == 401 and r.json()["code"] == "agent.unknown"
        r = await adm.post(
            "/api/login", json={"workspace": "acme", "agent": "rem", "password": "pw-rem"}
        )
        assert r.status_code == 401 and r.json()["code"] == "auth.invalid"
        assert (await adm.get("/api/agents/rem")).status_code == 404
        assert "rem" not in [a["id"] for a in (await adm.get("/api/agents")).json()["agents"]]
        r = await adm.delete("/api/agents/rem")
        assert r.status_code == 404 and r.json()["code"] == "agent.unknown"
        # a new agent of the same id is someone else: the removed one's token stays dead
        r = await adm.put("/api/agents/rem", json={"role": "supervisor", "password": "new"})
        assert r.status_code == 201, r.text
        r = await adm.get("/api/me", headers=hdr)
        assert r.status_code == 401 and r.json()["code"] == "auth.revoked"
        assert (await adm.get("/api/agents", headers=hdr)).status_code == 401
        assert (await adm.delete("/api/agents/rem")).status_code == 204
        r = await adm.delete("/api/agents/ada")
        assert r.status_code == 409 and r.json()["code"] == "agent.self"
        r = await adm.put("/api/agents/ada", json={"role": "supervisor"})  # nor demote themselves
        assert r.status_code == 409 and r.json()["code"] == "agent.self"
        assert (await adm.get("/api/me")).json()["role"] == "admin"
        await colleague.close()


# -- property run against the document ------------------------------------------------------


async def test_schemathesis_positive_run(env: Env) -> None:
    """Schema-valid requests of every operation, as globex's admin: no 5xx, and every answer
    (status, content type, body) is one the document declares."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis import checks

    schema = schemathesis.openapi.from_dict(document())
    headers = {"Authorization": f"Bearer {env.tokens['gail']}"}
    wanted = [
        checks.not_a_server_error,
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_schema_conformance,
    ]

    def run(op: Any) -> None:
        @settings(
            max_examples=15,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        # the optional ?workspace= is pinned: a random one is just a 403 (tested above)
        @given(op.as_strategy(query={"workspace": "globex"}))
        def check(case: Any) -> None:
            if case.path == "/api/agents/{id}" and case.method == "PUT":
                case.path_parameters = {"id": "fuzzed"}  # keep gail an admin
            response = case.call(base_url=env.server.url, headers=headers, timeout=10)
            case.validate_response(response, checks=wanted)

        check()

    for result in schema.get_all_operations():
        op = result.ok()
        if op.path == "/api/login":
            continue  # scrypt per example; login is covered above
        await asyncio.to_thread(run, op)


async def test_skills_and_languages_are_plain_short_words(env: Env) -> None:
    """A skill is a tag on every admin's and supervisor's page: one that reverses the text after
    it, is blank or runs to 100,000 characters is refused, naming which, and nothing changes."""
    async with env.client("ada") as adm:
        before = (await adm.get("/api/agents/al")).json()["attributes"]
        for bad, why in (
            (["supp\u202eort"], "skills[0]: no control characters (U+202E)"),
            (["ok", "   "], "skills[1]: at least one visible character"),
            (["x" * 100_000], "skills[0]: at most 64 characters"),
        ):
            r = await adm.put("/api/agents/al", json={"attributes": {"skills": bad}})
            assert r.status_code == 400 and why in r.json()["message"], r.text
        r = await adm.put("/api/agents/al", json={"attributes": {"languages": ["e\u0007n"]}})
        assert r.status_code == 400 and "languages[0]" in r.json()["message"]
        assert (await adm.get("/api/agents/al")).json()["attributes"] == before
        r = await adm.put("/api/agents/al", json={"attributes": {"skills": ["עברית", "billing"]}})
        assert r.status_code == 200, r.text  # any script, in its own order


async def test_a_stored_declaration_this_version_refuses_is_replaced_not_fatal(env: Env) -> None:
    """A declaration stored by an older version that checked less (here a typo'd key) no longer
    parses: applying a good one (a node starting with its fixed file) replaces it, where the
    check for queues cases wait in would have failed on reading it."""
    r = env.switch.redis
    raw = await r.hget(keys.settings("globex"), "decl")
    assert raw is not None
    await r.hset(keys.settings("globex"), "decl", json.dumps({**json.loads(raw), "agnets": []}))
    await r.hincrby(keys.settings("globex"), "declver", 1)
    with pytest.raises(ConfigError):
        await env.switch.config("globex", fresh=True)
    await env.switch.apply_workspace(GLOBEX)
    assert (await env.switch.config("globex", fresh=True)).id == "globex"


async def test_a_case_opened_through_the_api_can_name_the_bridge_that_carries_it(
    env: Env,
) -> None:
    """A CRM opening a WhatsApp conversation names the bridge: the case is that bridge's (its
    replies go out through it alone, and it may name the case). An unknown bridge, or one that
    does not take the channel, is refused and opens nothing."""
    async with env.client("sue") as sup:
        body = {"channel": "chat", "identities": {"phone": "+14155550190"}, "text": "hi"}
        r = await sup.post("/api/cases", json={**body, "id": "via-1", "bridge": "chat-only"})
        assert r.status_code == 201, r.text
        case = r.json()["case"]
        assert await env.switch.redis.hget(keys.case("acme", case), "src") == b"bridge:chat-only"
        for bad, why in (("nope", "no bridge 'nope'"), (5, "bridge: a string")):
            r = await sup.post("/api/cases", json={**body, "id": "via-2", "bridge": bad})
            assert r.status_code == 400 and why in r.json()["message"], r.text
        r = await sup.post(
            "/api/cases", json={**body, "channel": "email", "id": "via-2", "bridge": "chat-only"}
        )
        assert r.status_code == 400 and "does not take this channel" in r.json()["message"]
        r = await sup.post("/api/cases", json={**body, "id": "via-2"})
        assert r.json()["duplicate"] is False  # nothing was stored for the refused ones
