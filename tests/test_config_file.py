"""The workspace file as operators write it: ``switchboard check-config`` (the real command, in
a subprocess) names every mistake with its path in one line and exit status 2, never a
traceback, and prints every section of a good file. No Redis: nothing here starts a server."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from router import fastjson
from router.demo import DEMO_WORKSPACE
from router.workspace import KEYS, parse_workspace

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"

#: a realistic file: every section, some defaults left to fill in
GOOD = """\
workspace:
  id: acme
  timezone: Europe/Berlin
  queues:
    - {id: support, name: Support, target: "skills HAS 'support'", sl_target_s: 60}
    - {id: billing, name: Billing, target: "skills HAS 'billing'", order: lifo}
  workflow:
    task_routing:
      filters:
        - filter_friendly_name: Billing
          expression: "topic == 'billing'"
          targets: [{queue: billing, timeout: 120}, {queue: support}]
      default_filter: {queue: support}
  agents:
    - id: ann
      name: Ann Agent
      password: "0123"
      attributes: {skills: [support], languages: [en, de], team: blue, level: 3}
      capacity: {chat: 3, email: 5, voice: 1}
    - id: sue
      name: Sue Supervisor
      role: supervisor
      password: "hunter2"
      capacity: {}
  statuses: [lunch, {name: backoffice, routable: true}]
  channels:
    chat: {offer_timeout_s: 20}
    email: {priority: 1}
  routing:
    max_missed_offers: 2
    reject_status: lunch
    reoffer_refused_after_s: 0
  dispositions: [resolved, follow-up, spam]
  canned:
    hello: "Hi, thanks for getting in touch."
bridges:
  - {id: crm, channels: [chat, email], key_env: TEST_CRM_KEY}
  - {id: pbx, channels: [voice], key_env: TEST_PBX_KEY}
"""

ENV = {"TEST_CRM_KEY": "crm-s3cret", "TEST_PBX_KEY": "pbx-s3cret", "SWITCHBOARD_SECRET": "s3cret"}


def _run(path: Path, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "router.cli",
            *(command or ("check-config",)),
            "--config",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **ENV, **env},
    )


def _write(tmp_path: Path, text: str, name: str = "ws.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(out: subprocess.CompletedProcess[str]) -> str:
    """The one-line error of a refused configuration (exit 2, nothing on stdout)."""
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.endswith("\n"), out.stderr
    message: str = json.loads(out.stderr)["error"]
    return message


def _good() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(GOOD)
    return doc


def _edit(change: Callable[[dict[str, Any]], object]) -> str:
    doc = _good()
    change(doc["workspace"])
    return yaml.safe_dump(doc, sort_keys=False)


def test_a_realistic_file_passes_and_every_section_is_shown(tmp_path: Path) -> None:
    out = _run(_write(tmp_path, GOOD))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    ws = doc["workspace"]
    assert set(ws) == {
        "id", "timezone", "queues", "agents", "statuses", "channels", "routing",
        "dispositions", "canned", "workflow",
    }  # fmt: skip
    assert ws["timezone"] == "Europe/Berlin"
    # the values given, and the defaults filled in
    assert ws["channels"]["chat"] == {"offer_timeout_s": 20, "priority": 5}
    assert ws["channels"]["email"] == {"offer_timeout_s": 120, "priority": 1}
    assert ws["channels"]["voice"] == {"offer_timeout_s": 15, "priority": 10}
    assert ws["routing"] == {
        "reopen_window_s": 72 * 3600,
        "reopen_agent_timeout_s": 120,
        "transfer_agent_timeout_s": 60,
        "max_missed_offers": 2,
        "reoffer_refused_after_s": 0,
        "reject_status": "lunch",
    }
    assert ws["dispositions"] == ["resolved", "follow-up", "spam"]
    assert ws["canned"] == {"hello": "Hi, thanks for getting in touch."}
    assert [(s["name"], s["routable"]) for s in ws["statuses"]] == [
        ("available", True), ("away", False), ("offline", False),
        ("lunch", False), ("backoffice", True),
    ]  # fmt: skip
    ann, sue = ws["agents"]
    assert ann["attributes"] == {
        "skills": ["support"], "languages": ["en", "de"], "team": "blue", "level": 3
    }  # fmt: skip
    assert (ann["password"], sue["password"], sue["capacity"]) == ("***", "***", {})
    assert [q["order"] for q in ws["queues"]] == ["fifo", "lifo"]
    assert [(b["id"], b["key"]) for b in doc["bridges"]] == [("crm", "***"), ("pbx", "***")]
    assert doc["settings"]["secret"] == "***"
    for secret in ("0123", "hunter2", "crm-s3cret", "pbx-s3cret", "s3cret"):
        assert secret not in out.stdout


def test_the_demo_workspace_passes(tmp_path: Path) -> None:
    path = tmp_path / "demo.json"
    path.write_text(json.dumps({"workspace": DEMO_WORKSPACE}))
    out = _run(path)
    assert out.returncode == 0, out.stderr
    ws = json.loads(out.stdout)["workspace"]
    assert ws["dispositions"] == DEMO_WORKSPACE["dispositions"]
    assert ws["canned"] == DEMO_WORKSPACE["canned"]
    assert [a["id"] for a in ws["agents"]] == ["ann", "bob", "cat", "sue", "ada"]


def test_a_file_without_workspace_key_holds_its_bridges_beside_the_declaration(
    tmp_path: Path,
) -> None:
    doc = _good()
    flat = {**doc["workspace"], "bridges": doc["bridges"]}
    out = _run(_write(tmp_path, yaml.safe_dump(flat)))
    assert out.returncode == 0, out.stderr
    assert [b["id"] for b in json.loads(out.stdout)["bridges"]] == ["crm", "pbx"]
    flat["agnets"] = flat.pop("agents")
    message = _error(_run(_write(tmp_path, yaml.safe_dump(flat))))
    assert message.startswith("agnets: unknown key, did you mean agents?"), message


def test_the_example_in_the_docs_passes(tmp_path: Path) -> None:
    example = re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert example is not None
    out = _run(_write(tmp_path, example.group(1)), CRM_BRIDGE_KEY="k")
    assert out.returncode == 0, out.stderr
    ws = json.loads(out.stdout)["workspace"]
    assert ws["timezone"] == "Europe/Berlin" and ws["canned"] and ws["routing"]["reject_status"]


def test_the_docs_name_every_key() -> None:
    text = DOC.read_text()
    for part, names in KEYS.items():
        for name in names:
            assert f"`{name}`" in text, (part, name)


# (what is wrong, the change, what the message must say: the path first)
BAD: list[tuple[str, Callable[[dict[str, Any]], object], tuple[str, ...]]] = [
    (
        "a word for a number",
        lambda w: w["routing"].update(max_missed_offers="three"),
        ("routing.max_missed_offers: expected a whole number", "'three'"),
    ),
    (
        "a number for a channel's settings",
        lambda w: w.update(channels={"chat": 5}),
        ("channels.chat: expected a map", "offer_timeout_s"),
    ),
    (
        "agents as a map",
        lambda w: w.update(agents={"ann": {}}),
        ("agents: expected a list of agents", "not a map"),
    ),
    (
        "a typo'd top-level key",
        lambda w: w.update(agnets=w.pop("agents")),
        ("agnets: unknown key, did you mean agents?", "allowed: agents, bridges, canned"),
    ),
    (
        "a typo'd password key",
        lambda w: w["agents"][0].update(pasword=w["agents"][0].pop("password")),
        ("agents[0].pasword: unknown key, did you mean password?", "allowed: attributes"),
    ),
    (
        "a typo'd capacity key",
        lambda w: w["agents"][1].update(capcity={"chat": 1}),
        ("agents[1].capcity: unknown key, did you mean capacity?",),
    ),
    (
        "a duplicate agent id",
        lambda w: w["agents"].append({"id": "ann"}),
        ("agents[2]: duplicate agent id 'ann' (also agents[0])",),
    ),
    (
        "a duplicate queue id",
        lambda w: w["queues"].append({"id": "billing"}),
        ("queues[2]: duplicate queue id 'billing' (also queues[1])",),
    ),
    (
        "a negative offer timeout",
        lambda w: w["channels"]["chat"].update(offer_timeout_s=-5),
        ("channels.chat.offer_timeout_s: expected more than 0 seconds, not -5",),
    ),
    (
        "a zero transfer timeout",
        lambda w: w["routing"].update(transfer_agent_timeout_s=0),
        ("routing.transfer_agent_timeout_s: expected more than 0 seconds",),
    ),
    (
        "a priority past what a waiting case's score holds",
        lambda w: w["channels"]["email"].update(priority=5000),
        ("channels.email.priority: expected 0-2047",),
    ),
    (
        "a disposition that is a string",
        lambda w: w.update(dispositions="resolved"),
        ("dispositions: expected a list", "'resolved'"),
    ),
    (
        "canned replies as a list",
        lambda w: w.update(canned=["hi"]),
        ("canned: expected a map of name to reply text", "not a list"),
    ),
    (
        "a time zone zoneinfo does not know",
        lambda w: w.update(timezone="Mars/Phobos"),
        ("timezone: unknown time zone 'Mars/Phobos'", "Europe/Berlin"),
    ),
    (
        "a typo'd queue key",
        lambda w: w["queues"][0].update(tagret="1 == 1"),
        ("queues[0].tagret: unknown key, did you mean target?",),
    ),
    (
        "text for a number",
        lambda w: w["queues"][0].update(sl_target_s="60"),
        ("queues[0].sl_target_s: expected a number, not the text '60'",),
    ),
    (
        "a typo'd status key",
        lambda w: w["statuses"].append({"name": "training", "routeable": True}),
        ("statuses[2].routeable: unknown key, did you mean routable?",),
    ),
    (
        "routable as text",
        lambda w: w["statuses"][1].update(routable="no"),
        ("statuses[1].routable: expected true or false",),
    ),
    (
        "a duplicate status",
        lambda w: w["statuses"].append("lunch"),
        ("statuses[2]: duplicate status 'lunch' (also statuses[0])",),
    ),
    (
        "a typo'd channel key",
        lambda w: w["channels"]["chat"].update(offer_timeout=10),
        ("channels.chat.offer_timeout: unknown key, did you mean offer_timeout_s?",),
    ),
    (
        "a typo'd routing key",
        lambda w: w["routing"].update(max_missed_offer=1),
        ("routing.max_missed_offer: unknown key, did you mean max_missed_offers?",),
    ),
    (
        "a status that is not configured",
        lambda w: w["routing"].update(reject_status="break"),
        ("routing.reject_status: not a configured status",),
    ),
    (
        "capacity as a number",
        lambda w: w["agents"][0].update(capacity=3),
        ("agents[0].capacity: expected a map of channel to count",),
    ),
    (
        "bridges inside the declaration, where they are ignored",
        lambda w: w.update(bridges=[{"id": "x", "key_env": "TEST_CRM_KEY"}]),
        ("workspace.bridges: bridges go at the top of the file",),
    ),
    (
        "the workflow's own check",
        lambda w: w["workflow"]["task_routing"].update(filter=[]),
        ("workflow: task_routing.filter: unknown key",),
    ),
]


@pytest.mark.parametrize(
    ("change", "expected"), [(c, e) for _, c, e in BAD], ids=[name for name, _, _ in BAD]
)
def test_a_mistake_is_named_by_its_path(
    tmp_path: Path, change: Callable[[dict[str, Any]], object], expected: tuple[str, ...]
) -> None:
    message = _error(_run(_write(tmp_path, _edit(change))))
    assert message.startswith(expected[0]), message
    for part in expected[1:]:
        assert part in message, message


# what YAML reads differently from what was meant, and what surrounds the declaration
RAW: list[tuple[str, str, str, tuple[str, ...]]] = [
    (
        "an unquoted date",
        "team: blue, level: 3}",
        "team: blue, level: 3, hired: 2021-03-01}",
        ("agents[0].attributes.hired: expected text, a number", "quote dates"),
    ),
    (
        "a key YAML reads as true",
        '    hello: "Hi, thanks for getting in touch."',
        '    hello: "Hi, thanks for getting in touch."\n    yes: "Yes, we can."',
        ("canned: the key True is not text", "quote keys such as yes"),
    ),
    (
        "a key given twice",
        "  dispositions: [resolved, follow-up, spam]",
        "  dispositions: [resolved, follow-up, spam]\n  dispositions: [spam]",
        ("<file> line 34, column 3: dispositions is given twice",),
    ),
    (
        "a typo beside workspace:",
        "bridges:",
        "bridge:",
        ("bridge: unknown key, did you mean bridges? (allowed: bridges, workspace)",),
    ),
    (
        "a typo'd bridge key",
        "key_env: TEST_PBX_KEY}",
        "key_evn: TEST_PBX_KEY}",
        ("bridges[1].key_evn: unknown key, did you mean key_env?",),
    ),
    (
        "a bridge's channels as text",
        "channels: [voice]",
        "channels: voice",
        ("bridges[1].channels: expected a list", "'voice'"),
    ),
    (
        "a duplicate bridge id",
        "{id: pbx,",
        "{id: crm,",
        ("bridges[1]: duplicate bridge id 'crm' (also bridges[0])",),
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), [r[1:] for r in RAW], ids=[r[0] for r in RAW])
def test_what_yaml_reads_otherwise_is_named(
    tmp_path: Path, old: str, new: str, expected: tuple[str, ...]
) -> None:
    assert GOOD.count(old) == 1, old
    path = _write(tmp_path, GOOD.replace(old, new))
    message = _error(_run(path))
    assert message.startswith(expected[0].replace("<file>", str(path))), message
    for part in expected[1:]:
        assert part in message, message


def test_yaml_it_cannot_read_is_named_by_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "id: acme\nqueues:\n\t- {id: support}\n")  # a tab indents
    message = _error(_run(path))
    assert message == f"{path} line 3, column 1: found character '\\t' that cannot start any token"
    path = _write(tmp_path, "id: acme\nqueues: [{id: support}\n")
    assert _error(_run(path)).startswith(f"{path} line 3, column 1: expected ',' or ']'")


def test_secrets_in_the_file_are_refused_and_never_echoed(tmp_path: Path) -> None:
    message = _error(
        _run(_write(tmp_path, GOOD.replace("key_env: TEST_CRM_KEY", "key: crm-literal-key")))
    )
    assert message.startswith("bridges[0].key: secrets are never in the file"), message
    assert "crm-literal-key" not in message
    # a password YAML reads as a number would silently be another one ("0123" is 83)
    message = _error(_run(_write(tmp_path, GOOD.replace('password: "0123"', "password: 987654"))))
    assert message.startswith("agents[0].password: a string of 1-1024 characters"), message
    assert "987654" not in message


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SWITCHBOARD_PORT": "abc"}, "SWITCHBOARD_PORT: expected a whole number, not 'abc'"),
        ({"SWITCHBOARD_GRACE_S": "soon"}, "SWITCHBOARD_GRACE_S: expected a number, not 'soon'"),
        ({"SWITCHBOARD_LOG_LEVEL": "verbose"}, "SWITCHBOARD_LOG_LEVEL: expected debug, info"),
        ({"SWITCHBOARD_PORT": "70000"}, "port (--port, SWITCHBOARD_PORT): 0-65535, not 70000"),
    ],
)
def test_a_bad_setting_is_named_by_its_variable(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    path = _write(tmp_path, GOOD)
    for command in ("check-config", "serve"):
        message = _error(_run(path, command, **env))
        assert message.startswith(expected), (command, message)


def test_serve_refuses_a_bad_file_before_it_starts(tmp_path: Path) -> None:
    """No server is started (nor Redis): the file is checked first, as check-config does."""
    path = _write(tmp_path, _edit(lambda w: w["agents"][0].update(pasword="x")))
    out = _run(path, "serve", SWITCHBOARD_DATA_DIR=str(tmp_path / "data"))
    assert _error(out).startswith("agents[0].pasword: unknown key")
    assert not (tmp_path / "data").exists()


def test_what_is_stored_parses_again() -> None:
    """What Declarations.apply stores (passwords taken out, as JSON) and what an admin edit
    re-applies (no agents) parse again: every node reads the declaration back from Redis."""
    doc = _good()
    for decl in (doc["workspace"], {**doc["workspace"], "bridges": doc["bridges"]}, DEMO_WORKSPACE):
        parse_workspace(decl)
        stored = {
            **decl,
            "agents": [{k: v for k, v in a.items() if k != "password"} for a in decl["agents"]],
        }
        again = json.loads(fastjson.dumps_str(stored))
        assert [a.id for a in parse_workspace(again).agents] == [a["id"] for a in decl["agents"]]
        edited = copy.deepcopy(again)
        edited["agents"] = []
        edited["queues"].append({"id": "vip", "name": "VIP", "sl_target_s": 20})
        assert parse_workspace(edited).queue("vip") is not None
