"""Triage's plan cache: a reused plan is always the plan the workflow would compute afresh."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.errors import ConfigError
from router.triage import _plan, pool_id, triage
from router.workspace import parse_workspace

WORKFLOW = {
    "task_routing": {
        "filters": [
            {
                "expression": "vip == true OR tier IN ['gold', 'platinum']",
                "targets": [{"queue": "sales", "priority": 20, "timeout": 30}],
            },
            {
                "expression": "task.topic == 'billing' AND amount > 100",
                "targets": [
                    {
                        "queue": "billing",
                        "expression": "task.language IN worker.languages"
                        " AND worker.channel.chat.assigned_tasks <= task.amount",
                    },
                ],
            },
            {
                "expression": "topic == 'billing'",
                "targets": [
                    {"known_worker_sid": "task.owner", "queue": "billing", "timeout": 10},
                    {"queue": "billing"},
                ],
            },
        ],
        "default_filter": {"queue": "support"},
    }
}


def config(workflow: dict[str, Any] = WORKFLOW) -> Any:
    return parse_workspace({
        "id": "t",
        "queues": [{"id": q, "target": "true"} for q in ("sales", "billing", "support")],
        "workflow": workflow,
    })  # fmt: skip


def test_plan_depends_only_on_the_attributes_the_workflow_reads() -> None:
    assert config().workflow.task_keys == ("amount", "language", "owner", "tier", "topic", "vip")


def test_live_load_conditions_are_part_of_the_pool_id() -> None:
    cfg = config()
    plain = triage(cfg, "chat", {"topic": "billing", "amount": 150, "language": "en"}).pools
    other = triage(cfg, "chat", {"topic": "billing", "amount": 101, "language": "en"}).pools
    (one,), (two,) = plain, other
    assert (one.filter, one.load) == ("'en' IN languages", "chat.at<151")
    assert two.load == "chat.at<102"
    assert one.id.endswith("#chat.at<151") and one.id.partition("#")[0] == two.id.partition("#")[0]
    assert pool_id("support", "true") == "support"
    assert pool_id("support", "true", (), "chat.at<1").startswith("support^")
    assert pool_id("q", "x == 1") == pool_id("q", "x == 1", (), "voice.acp==100").split("#")[0]


def test_a_time_of_day_rule_turns_the_cache_off() -> None:
    wf = {"task_routing": {"filters": [{"expression": "taskrouter.dayOfWeek IN ['Sat', 'Sun']",
                                        "targets": [{"queue": "sales"}]}],
                           "default_filter": {"queue": "support"}}}  # fmt: skip
    cfg = config(wf)
    assert cfg.workflow.task_keys is None
    triage(cfg, "chat", {"topic": "x"})
    assert cfg.plan_cache == {}


DOMAIN: dict[str, list[Any]] = {  # per attribute: values on both sides of each rule, and lookalikes
    "vip": [True, 1, 1.0, False, 0, "true", None],
    "tier": ["gold", "platinum", "silver", ["gold"], None],
    "topic": ["billing", "sales", None],
    "amount": [50, 100, 150, 150.5, "150", True, None],
    "language": ["en", "es", None],
    "owner": ["ann", "bob", 7, None],
    "ref": [0, 1, 2],
    "channel": ["chat", "voice", None],  # an attribute named like the case's channel
    "@channel": ["chat", "email", "voice"],  # the case's channel itself
}
change = st.sampled_from(sorted(DOMAIN)).flatmap(
    lambda k: st.tuples(st.just(k), st.sampled_from(DOMAIN[k]))
)


@settings(max_examples=300, deadline=None)
@given(st.lists(change, max_size=16))
def test_cached_plans_equal_fresh_ones(changes: list[tuple[str, Any]]) -> None:
    """Tasks that differ from the one before in one value each: a key that left out a value
    the workflow reads, or confused 1 with True, would reuse a wrong plan."""
    cfg = config()
    attrs: dict[str, Any] = {"topic": "billing"}
    channel = "chat"
    for key, value in [("ref", 0), *changes]:
        if key == "@channel":
            channel = value
        else:
            attrs[key] = value
        got = triage(cfg, channel, attrs)
        fresh = _plan(cfg, channel, {"channel": channel, **attrs}, None)
        assert (got.filter_name, got.plan, got.pools, got.plan_json, got.reopen_json) == fresh


def test_the_demo_routes_mail_to_billing_by_its_mailbox() -> None:
    """Mail to billing@demo.test carries the mailbox's queue hint; the demo's workflow takes it
    to Billing (then Support), like a chat whose topic is billing."""
    from router.demo import DEMO_WORKSPACE

    cfg = parse_workspace(DEMO_WORKSPACE)
    hinted = triage(cfg, "email", {"queue_hint": "billing", "language": "en"})
    plain = triage(cfg, "email", {"queue_hint": None, "language": "en"})
    assert [p.queue for p in hinted.pools][:1] == ["billing"]
    assert [p.queue for p in plain.pools] == ["support"]


def test_a_workspace_workflow_must_say_where_unmatched_cases_go() -> None:
    """A case no filter matches would be cancelled (TaskRouter's rule): a workspace's workflow
    without a default filter is refused, naming it. Without any workflow, the first queue is
    the default."""
    no_default = {"task_routing": {"filters": WORKFLOW["task_routing"]["filters"]}}
    with pytest.raises(ConfigError, match=r"task_routing\.default_filter: required"):
        config(no_default)
    cfg = parse_workspace({"id": "t", "queues": [{"id": "front"}, {"id": "back"}]})
    assert [p.queue for p in triage(cfg, "chat", {}).pools] == ["front"]
