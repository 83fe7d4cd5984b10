"""router.workflow_load and router.workflow: loading TaskRouter workflow JSON, planning a route."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router import workflow
from router.expressions import clock_values
from router.expressions import compile as compile_expression
from router.workflow import (
    DEFAULT_FILTER_NAME,
    LoadCondition,
    Plan,
    Target,
    Workflow,
    WorkflowError,
    order_key,
    parse_order_by,
)
from router.workflow_load import load_workflow

QUEUES = ["sales", "support", "everyone", "vip"]


def routing(*filters: dict[str, Any], default: str | None = "everyone") -> dict[str, Any]:
    body: dict[str, Any] = {"filters": list(filters)}
    if default is not None:
        body["default_filter"] = {"queue": default}
    return {"task_routing": body}


def rule(expression: str, *targets: dict[str, Any], name: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"expression": expression, "targets": list(targets)}
    if name:
        out["filter_friendly_name"] = name
    return out


def load(config: dict[str, Any] | str) -> Workflow:
    return load_workflow(config, QUEUES)


def test_public_api_is_exactly_all() -> None:
    public = {name for name in vars(workflow) if not name.startswith("_")}
    imported = {"annotations", "functools", "json", "math", "re", "Collection", "Mapping"}
    imported |= {"dataclass", "field", "replace", "Any", "NoReturn", "Expression"}
    imported |= {"ExpressionError", "compile", "resolve", "OrderBy", "as_number", "key_uses"}
    assert public - imported == set(workflow.__all__)


# --- a documented TaskRouter workflow, unchanged -------------------------------------

# Twilio's "complex routing with target worker expressions" example, verbatim but for
# the TaskQueue sids: WQaaa (Sales), WQbbb (Support), WQccc (Everyone).
TWILIO_EXAMPLE = """
{
  "task_routing":{
    "filters":[
      {
        "filter_friendly_name":"Bronze and Silver Tickets",
        "expression":"type == 'ticket' AND customer_value IN ['Silver', 'Bronze']",
        "targets":[{"queue":"WQbbb"}]
      },
      {
        "filter_friendly_name":"Gold Tickets",
        "expression":"type == 'ticket' AND customer_value == 'Gold'",
        "targets":[
          {
            "queue":"WQbbb",
            "priority":"10",
            "timeout": 300,
            "expression":"task.required_language IN worker.spoken_languages"
          },
          {"queue":"WQccc"}
        ]
      },
      {
        "filter_friendly_name":"Leads",
        "expression":"type == 'lead'",
        "targets":[{"queue":"WQaaa", "priority": 1}]
      }
    ],
    "default_filter":{"queue":"WQccc"}
  }
}
"""


def test_documented_taskrouter_workflow_loads_unchanged() -> None:
    flow = load_workflow(TWILIO_EXAMPLE, ["WQaaa", "WQbbb", "WQccc"])
    gold = flow.plan({"type": "ticket", "customer_value": "Gold", "required_language": "de"})
    assert gold.filter_name == "Gold Tickets"
    assert [(s.queue, s.priority, s.timeout) for s in gold.steps] == [
        ("WQbbb", 10, 300.0),
        ("WQccc", 10, None),
    ]
    assert gold.steps[0].worker_filter == "'de' IN spoken_languages"
    assert gold.steps[0].worker_expression.evaluate({"spoken_languages": ["en", "de"]})
    assert gold.steps[1].worker_filter == "true"
    silver = flow.plan({"type": "ticket", "customer_value": "Silver"})
    assert [s.queue for s in silver.steps] == ["WQbbb"]
    lead = flow.plan({"type": "lead"})
    assert (lead.filter_name, lead.steps[0].priority) == ("Leads", 1)
    other = flow.plan({"type": "spam"})
    assert other.filter_name == DEFAULT_FILTER_NAME
    assert [s.queue for s in other.steps] == ["WQccc"]


def test_documented_workflow_with_our_queue_ids() -> None:
    names = {"WQaaa": "sales", "WQbbb": "support", "WQccc": "everyone"}
    text = TWILIO_EXAMPLE
    for sid, name in names.items():
        text = text.replace(f'"{sid}"', f'"{name}"')
    flow = load(text)
    plan = flow.plan({"type": "ticket", "customer_value": "Gold"})
    assert [s.queue for s in plan.steps] == ["support", "everyone"]
    assert plan.steps[0].worker_filter == "false"  # no language on the task: nobody matches


def test_documented_time_of_day_workflow() -> None:
    # Twilio's example, including its '=' and multi-line expression.
    config = {
        "task_routing": {
            "filters": [
                {
                    "targets": [{"queue": "support"}],
                    "filter_friendly_name": "MyFilterName",
                    "expression": """(taskrouter.dayOfWeek IN ['Mon', 'Tue', 'THU']
                        AND taskrouter.currentTime > 800
                        AND taskrouter.currentTime < 1730)
                      OR
                        (taskrouter.dayOfWeek IN ['Wed', 'Fri']
                        AND taskrouter.currentTime > 900
                        AND taskrouter.currentTime < 1830)
                      OR
                        (taskrouter.dayOfWeek = 'Sat'
                        AND taskrouter.currentTime > 1100
                        AND taskrouter.currentTime < 1530)""",
                }
            ],
            "default_filter": {"queue": "everyone"},
        }
    }
    flow = load(config)
    open_ = clock_values(datetime(2024, 1, 6, 12, 0, tzinfo=UTC), "UTC")  # Saturday noon
    closed = clock_values(datetime(2024, 1, 6, 16, 0, tzinfo=UTC), "UTC")
    assert flow.plan({}, clock=open_).steps[0].queue == "support"
    assert flow.plan({}, clock=closed).steps[0].queue == "everyone"
    assert flow.plan({}).steps[0].queue == "everyone"  # no clock: taskrouter.* is null


def test_documented_skip_if_workflow() -> None:
    config = {
        "task_routing": {
            "filters": [
                {
                    "filter_friendly_name": "Sales filter",
                    "expression": "type == 'Sales'",
                    "targets": [
                        {
                            "queue": "sales",
                            "expression": "task.subSection == worker.specializedSubField",
                            "order_by": "worker.english_level ASC",
                            "priority": "1",
                            "skip_if": "workers.available == 0",
                        },
                        {"priority": "1", "queue": "everyone"},
                    ],
                }
            ]
        }
    }
    flow = load(config)
    plan = flow.plan({"type": "Sales", "subSection": "cars"})
    first, second = plan.steps
    assert first.worker_filter == "'cars' == specializedSubField"
    assert first.order_by == (("english_level", False),)
    assert first.skip_if == "workers.available == 0"
    assert (second.queue, second.priority, second.skip_if) == ("everyone", 1, None)
    assert plan.fallback is None  # this workflow has no default_filter
    assert flow.plan({"type": "Other"}) == Plan(DEFAULT_FILTER_NAME, ())


# --- filters, targets, inheritance ----------------------------------------------------


def test_first_matching_filter_wins() -> None:
    flow = load(
        routing(
            rule("tier == 'gold'", {"queue": "vip"}, name="gold"),
            rule("type == 'ticket'", {"queue": "support"}, name="tickets"),
        )
    )
    assert flow.plan({"tier": "gold", "type": "ticket"}).filter_name == "gold"
    assert flow.plan({"type": "ticket"}).filter_name == "tickets"
    assert flow.plan({"task": 1}).filter_name == DEFAULT_FILTER_NAME


def test_filter_expressions_accept_the_task_prefix() -> None:
    flow = load(routing(rule("task.type == 'ticket' AND tier == 'gold'", {"queue": "vip"})))
    assert flow.plan({"type": "ticket", "tier": "gold"}).steps[0].queue == "vip"


def test_unnamed_filters_are_named_by_position() -> None:
    flow = load(routing(rule("1==1", {"queue": "vip"})))
    assert flow.filters[0].name == "filters[0]"


def test_default_filter_and_no_default() -> None:
    flow = load(routing(rule("type == 'x'", {"queue": "vip"}), default="support"))
    plan = flow.plan({"type": "y"}, default_priority=3)
    assert plan.filter_name == DEFAULT_FILTER_NAME
    assert [(s.index, s.queue, s.priority, s.timeout) for s in plan.steps] == [
        (0, "support", 3, None)
    ]
    assert plan.fallback is None
    bare = load(routing(rule("type == 'x'", {"queue": "vip"}), default=None))
    assert bare.plan({"type": "y"}).steps == ()
    only_default = load({"task_routing": {"default_filter": {"queue": "everyone"}}})
    assert only_default.filters == ()
    assert only_default.plan({}).steps[0].queue == "everyone"


def test_queue_is_inherited_within_a_filter() -> None:
    flow = load(
        routing(
            rule(
                "1==1",
                {"queue": "vip", "timeout": 10},
                {"timeout": 20, "priority": 5},
                {"queue": "support", "timeout": 5},
                {},
            )
        )
    )
    assert [t.queue for t in flow.filters[0].targets] == ["vip", "vip", "support", "support"]


def test_first_target_needs_a_queue() -> None:
    with pytest.raises(WorkflowError) as caught:
        load(routing(rule("1==1", {"priority": 1})))
    assert caught.value.path == "task_routing.filters[0].targets[0].queue"
    with pytest.raises(WorkflowError) as caught:
        load({"task_routing": {"default_filter": {"priority": 1}}})
    assert caught.value.path == "task_routing.default_filter.queue"


def test_priority_persists_until_overridden() -> None:
    flow = load(
        routing(
            rule(
                "1==1",
                {"queue": "support", "timeout": 10},
                {"priority": 5, "timeout": 10},
                {"timeout": 10},
                {"priority": "20", "timeout": 10},
            ),
            rule("1==1", {"queue": "vip"}),
        )
    )
    plan = flow.plan({}, default_priority=2)
    assert [s.priority for s in plan.steps] == [2, 5, 5, 20, 20]


def test_numbers_given_as_strings() -> None:
    flow = load(routing(rule("1==1", {"queue": "vip", "priority": " 7 ", "timeout": "30"})))
    target = flow.filters[0].targets[0]
    assert (target.priority, target.timeout) == (7, 30.0)
    flow = load(routing(rule("1==1", {"queue": "vip", "priority": 7.0, "timeout": "2.5"})))
    assert (flow.filters[0].targets[0].priority, flow.filters[0].targets[0].timeout) == (7, 2.5)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("priority", "5.5", "must be an integer"),
        ("priority", True, "must be an integer"),
        ("priority", "high", "must be an integer"),
        # a case's priority is 11 bits of its waiting score: beyond them, Lua would write
        # 1e+29 in its hash and every read of the case would fail
        ("priority", -5, "must be 0-2047"),
        ("priority", 2048, "must be 0-2047"),
        ("priority", "100000000000000000000000000000", "must be 0-2047"),
        ("timeout", 0, "positive number of seconds"),
        ("timeout", "-3", "positive number of seconds"),
        ("timeout", "soon", "positive number of seconds"),
        ("timeout", False, "positive number of seconds"),
        ("queue", "", "non-empty string"),
        ("queue", 5, "non-empty string"),
        ("expression", 5, "must be a string"),
        ("order_by", ["worker.level"], "must be a string"),
    ],
)
def test_bad_target_fields(field: str, value: object, reason: str) -> None:
    target: dict[str, Any] = {"queue": "vip", field: value}
    with pytest.raises(WorkflowError) as caught:
        load(routing(rule("1==1", target)))
    assert caught.value.path == f"task_routing.filters[0].targets[0].{field}"
    assert reason in str(caught.value)


def test_unknown_queue() -> None:
    with pytest.raises(WorkflowError) as caught:
        load(routing(rule("1==1", {"queue": "vip"}, {"queue": "WQ0123"})))
    assert caught.value.path == "task_routing.filters[0].targets[1].queue"
    assert "unknown queue 'WQ0123'" in str(caught.value)
    with pytest.raises(WorkflowError, match=r"default_filter\.queue: unknown queue"):
        load(routing(default="nowhere"))


def test_malformed_expressions_name_path_and_column() -> None:
    with pytest.raises(WorkflowError) as caught:
        load(routing(rule("1==1", {"queue": "vip"}), rule("skills HAS", {"queue": "vip"})))
    assert caught.value.path == "task_routing.filters[1].expression"
    assert caught.value.column == 11
    assert str(caught.value).startswith("task_routing.filters[1].expression: ")
    assert "column 11" in str(caught.value)

    bad_target = {"queue": "vip", "expression": "worker.level >= 'x"}
    with pytest.raises(WorkflowError) as caught:
        load(routing(rule("1==1", {"queue": "vip"}, bad_target)))
    assert caught.value.path == "task_routing.filters[0].targets[1].expression"
    assert caught.value.column == 17
    assert "unterminated string" in str(caught.value)

    with pytest.raises(WorkflowError) as caught:
        load(routing(rule("1==1", {"queue": "vip", "skip_if": "workers.available == == 0"})))
    assert caught.value.path == "task_routing.filters[0].targets[0].skip_if"
    assert caught.value.column == 22


def test_structure_errors() -> None:
    cases: list[tuple[Any, str]] = [
        ("[]", ""),
        ({"task_routing": []}, "task_routing"),
        ({"task_routing": {"filters": {}}}, "task_routing.filters"),
        ({"task_routing": {"filters": [5]}}, "task_routing.filters[0]"),
        (routing({"targets": [{"queue": "vip"}]}), "task_routing.filters[0].expression"),
        (routing(rule("   ", {"queue": "vip"})), "task_routing.filters[0].expression"),
        (routing(rule("1==1")), "task_routing.filters[0].targets"),
        (routing({**rule("1==1", {"queue": "vip"}), "name": "x"}), "task_routing.filters[0].name"),
        (
            routing(rule("1==1", {"queue": "vip", "timout": 5})),
            "task_routing.filters[0].targets[0].timout",
        ),
        ({"task_routing": {}, "extra": 1}, "extra"),
        ({"task_routing": {"default_filter": {"queue": "vip"}, "x": 1}}, "task_routing.x"),
        (
            routing({**rule("1==1", {"queue": "vip"}), "filter_friendly_name": 3}),
            "task_routing.filters[0].filter_friendly_name",
        ),
    ]
    for config, path in cases:
        with pytest.raises(WorkflowError) as caught:
            load(config)
        assert caught.value.path == path, config


def test_errors_survive_pickling() -> None:
    import pickle

    error = WorkflowError("task_routing.filters[0].expression", "bad", 3)
    again = pickle.loads(pickle.dumps(error))
    assert (again.path, again.reason, again.column, str(again)) == (
        error.path,
        error.reason,
        error.column,
        str(error),
    )


def test_invalid_json_text() -> None:
    with pytest.raises(WorkflowError) as caught:
        load('{"task_routing": {"filters": [}')
    assert caught.value.path == ""
    assert caught.value.column == 31
    assert "invalid JSON" in str(caught.value)


def test_config_without_the_task_routing_wrapper() -> None:
    # Some TaskRouter examples put "filters" at the top level.
    flow = load({"filters": [rule("1==1", {"queue": "vip"})]})
    assert flow.plan({}).steps[0].queue == "vip"
    with pytest.raises(WorkflowError) as caught:
        load({"filters": [rule("1==", {"queue": "vip"})]})
    assert caught.value.path == "filters[0].expression"


def test_default_filter_has_no_timeout_or_skip() -> None:
    flow = load(
        {"task_routing": {"default_filter": {"queue": "vip", "timeout": 30, "priority": 4}}}
    )
    assert flow.default_target == Target(queue="vip", priority=4)


def test_reservation_timeout() -> None:
    assert load(routing()).reservation_timeout == 120.0
    assert load_workflow(routing(), QUEUES, reservation_timeout=15).reservation_timeout == 15.0
    with pytest.raises(WorkflowError) as caught:
        load_workflow(routing(), QUEUES, reservation_timeout=0)
    assert caught.value.path == "reservation_timeout"


# --- worker filters, known agents, clock -------------------------------------------------


def test_worker_filter_binds_task_and_strips_worker() -> None:
    target = {
        "queue": "vip",
        "expression": (
            "worker.level >= task.tier AND skills HAS task.topic AND worker.id != task.last"
        ),
    }
    flow = load(routing(rule("1==1", target)))
    step = flow.plan({"tier": 2, "topic": "billing", "last": "a1"}).steps[0]
    # Bare keys in a target expression are agent attributes.
    assert step.worker_filter == "level >= 2 AND skills HAS 'billing' AND id != 'a1'"
    assert step.worker_expression.evaluate({"level": 3, "skills": ["billing"], "id": "a2"})
    assert not step.worker_expression.evaluate({"level": 3, "skills": ["billing"], "id": "a1"})
    unset = flow.plan({"tier": 2, "topic": "billing"}).steps[0]
    assert unset.worker_filter == "level >= 2 AND skills HAS 'billing' AND id != null"


def test_time_of_day_in_a_target_expression() -> None:
    target = {
        "queue": "vip",
        "expression": "taskrouter.currentTime < 1700 AND worker.night != true",
    }
    flow = load(routing(rule("1==1", target)))
    day = clock_values(datetime(2024, 1, 2, 10, 0, tzinfo=UTC), "UTC")
    night = clock_values(datetime(2024, 1, 2, 22, 0, tzinfo=UTC), "UTC")
    assert flow.plan({}, clock=day).steps[0].worker_filter == "night != true"
    assert flow.plan({}, clock=night).steps[0].worker_filter == "false"


def test_known_agent() -> None:
    by_sid = {"queue": "vip", "known_worker_sid": "task.last_agent", "timeout": 20}
    by_name = {
        "queue": "vip",
        "known_worker_friendly_name": "preferred.name",
        "expression": "x == 1",
    }
    flow = load(routing(rule("1==1", by_sid, by_name)))
    assert flow.filters[0].targets[0].known_agent == "last_agent"
    assert flow.filters[0].targets[1].known_agent == "preferred.name"
    plan = flow.plan({"last_agent": "agent-7", "preferred": {"name": 42}})
    assert [(s.known_agent_id, s.worker_filter) for s in plan.steps] == [
        ("agent-7", "true"),
        ("42", "x == 1"),
    ]
    # A missing known agent matches nobody: the case waits out the step, as in TaskRouter.
    assert flow.plan({"last_agent": 10**5000}).steps[0].known_agent_id is None
    missing = flow.plan({"last_agent": None})
    assert [(s.known_agent_id, s.worker_filter) for s in missing.steps] == [
        (None, "false"),
        (None, "false"),
    ]


def test_known_agent_errors() -> None:
    both = {"queue": "vip", "known_worker_sid": "task.a", "known_worker_friendly_name": "task.b"}
    with pytest.raises(WorkflowError, match="not both"):
        load(routing(rule("1==1", both)))
    with pytest.raises(WorkflowError) as caught:
        load(routing(rule("1==1", {"queue": "vip", "known_worker_sid": "task.a..b"})))
    assert caught.value.path == "task_routing.filters[0].targets[0].known_worker_sid"
    assert caught.value.column == 8
    with pytest.raises(WorkflowError):
        load(routing(rule("1==1", {"queue": "vip", "known_worker_sid": ""})))


def test_plan_never_raises_on_odd_attributes() -> None:
    flow = load(
        TWILIO_EXAMPLE.replace("WQaaa", "sales")
        .replace("WQbbb", "support")
        .replace("WQccc", "everyone")
    )
    tasks: list[dict[str, Any]] = [
        {},
        {"type": ["ticket"]},
        {"type": "ticket", "customer_value": "Gold", "required_language": {"x": 1}},
        {"type": "ticket", "customer_value": "Gold", "required_language": float("nan")},
        {"type": None, "customer_value": 10**5000},
        {"type": "ticket", "customer_value": "Gold", "required_language": 10**5000},
    ]
    for task in tasks:
        assert isinstance(flow.plan(task), Plan)


# --- timeouts and flowing between filters ---------------------------------------------


def test_deadlines_are_cumulative_on_case_age() -> None:
    flow = load(
        routing(
            rule(
                "1==1",
                {"queue": "vip", "timeout": 10},
                {"queue": "support", "timeout": 10, "skip_if": "1==1"},
                {"queue": "everyone", "timeout": 10},
            )
        )
    )
    plan = flow.plan({})
    assert [plan.deadline(i) for i in range(3)] == [10.0, 20.0, 30.0]
    assert plan.steps[-1].timeout == 10.0  # expiring here cancels the case
    with pytest.raises(IndexError):
        plan.deadline(3)
    open_ended = load(routing(rule("1==1", {"queue": "vip", "skip_if": "1==1"}, {"timeout": 5})))
    assert [open_ended.plan({}).deadline(i) for i in range(2)] == [None, 5.0]


def test_a_timed_out_filter_flows_into_the_next_matching_filter() -> None:
    flow = load(
        routing(
            rule("tier == 'gold'", {"queue": "vip", "timeout": 30}, name="gold"),
            rule("tier == 'silver'", {"queue": "sales"}, name="silver"),
            rule("1 == 1", {"queue": "support", "priority": 3}, name="all"),
            rule("1 == 1", {"queue": "sales"}, name="unreachable"),
        )
    )
    plan = flow.plan({"tier": "gold"})
    assert plan.filter_name == "gold"
    assert [(s.index, s.filter_name, s.queue) for s in plan.steps] == [
        (0, "gold", "vip"),
        (1, "all", "support"),
    ]
    # Timing out of the last step cancels; the default filter is not reachable.
    assert plan.fallback is None


def test_targets_after_a_holding_step_are_unreachable() -> None:
    flow = load(routing(rule("1==1", {"queue": "vip"}, {"queue": "sales", "timeout": 5})))
    assert [s.queue for s in flow.plan({}).steps] == ["vip"]


def test_skip_if_reaches_the_next_filter_and_then_the_default() -> None:
    skip = "workers.available == 0"
    flow = load(
        routing(
            rule("1==1", {"queue": "vip", "skip_if": skip}, name="first"),
            rule("1==1", {"queue": "sales", "priority": 4, "skip_if": skip}, name="second"),
        )
    )
    plan = flow.plan({})
    assert [s.filter_name for s in plan.steps] == ["first", "second"]
    assert plan.fallback is not None
    assert (plan.fallback.index, plan.fallback.queue, plan.fallback.priority) == (2, "everyone", 4)
    assert plan.fallback.filter_name == DEFAULT_FILTER_NAME


# --- order_by ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("worker.level DESC, worker.age ASC", (("level", True), ("age", False))),
        ("worker.level desc,worker.age", (("level", True), ("age", False))),
        (
            "  worker.channel.chat.configured_capacity   Asc ",
            (("channel.chat.configured_capacity", False),),
        ),
        ("worker.scores[0] DESC", (("scores[0]", True),)),
        ("level DESC", (("level", True),)),
        ("", ()),
        ("   ", ()),
    ],
)
def test_parse_order_by(text: str, expected: tuple[tuple[str, bool], ...]) -> None:
    assert parse_order_by(text) == expected


@pytest.mark.parametrize(
    ("text", "column", "reason"),
    [
        ("worker.level UP", 14, "expected ASC or DESC"),
        ("worker.level DESC,", 19, "expected '<attribute> [ASC|DESC]'"),
        ("worker.level DESC,, worker.age", 19, "expected '<attribute> [ASC|DESC]'"),
        ("worker.level DESC extra", 19, "expected '<attribute> [ASC|DESC]'"),
        ("task.level DESC", 1, "use worker.<attribute>"),
        ("worker.a..b ASC", 10, "bad attribute path"),
        ("worker. ASC", 8, "bad attribute path"),
        ("worker[0] ASC", 1, "use worker.<attribute>"),
        ("worker.level, worker.channel.chat.assigned_tasks", 22, "cannot rank by live load"),
        ("channel.voice.available_capacity_percentage DESC", 1, "cannot rank by live load"),
    ],
)
def test_parse_order_by_errors(text: str, column: int, reason: str) -> None:
    with pytest.raises(WorkflowError) as caught:
        parse_order_by(text)
    assert (caught.value.path, caught.value.column) == ("order_by", column)
    assert reason in str(caught.value)


def test_order_by_error_in_a_workflow_names_the_path() -> None:
    with pytest.raises(WorkflowError) as caught:
        load(routing(rule("1==1", {"queue": "vip", "order_by": "worker.x SIDEWAYS"})))
    assert caught.value.path == "task_routing.filters[0].targets[0].order_by"
    assert caught.value.column == 10


def test_order_key_follows_taskrouter_ordering() -> None:
    order = parse_order_by("worker.finance ASC, worker.support ASC")
    alice = {"name": "alice", "finance": 10, "support": 8}
    bob = {"name": "bob", "finance": 10, "support": 5}
    assert sorted([alice, bob], key=lambda w: order_key(order, w))[0] is bob
    # Lacking the attribute sorts last, whatever the direction.
    bob_without = {"name": "bob", "finance": 10}
    for text in ["worker.finance ASC, worker.support ASC", "worker.finance, worker.support DESC"]:
        ranked = sorted([bob_without, alice], key=lambda w: order_key(parse_order_by(text), w))
        assert ranked[0] is alice
    desc = parse_order_by("worker.level DESC")
    levels: list[dict[str, Any]] = [{"level": 1}, {"level": "9"}, {"level": 3}, {"level": True}, {}]
    ranked = sorted(levels, key=lambda w: order_key(desc, w))
    assert [w.get("level") for w in ranked[:2]] == [3, 1]


def test_workflows_are_values() -> None:
    one = load(json.loads(json.dumps(routing(rule("1==1", {"queue": "vip"})))))
    two = load(routing(rule("1==1", {"queue": "vip"})))
    assert one == two
    assert one.plan({}) == two.plan({})
    assert hash(one.plan({}).steps[0]) == hash(two.plan({}).steps[0])


# --- live load: worker.channel.<name>.assigned_tasks / available_capacity_percentage ---------


def first_step(expression: str, task: dict[str, Any] | None = None) -> workflow.Step:
    flow = load(routing(rule("1==1", {"queue": "vip", "expression": expression})))
    return flow.plan(task or {}).steps[0]


def test_live_load_terms_are_split_from_the_worker_filter() -> None:
    step = first_step(
        "task.vip == true AND worker.channel.voice.available_capacity_percentage == 100"
        " AND skills HAS 'es' AND 3 > channel.chat.assigned_tasks",
        {"vip": True},
    )
    assert step.worker_filter == "skills HAS 'es'"
    assert step.worker_expression == compile_expression("skills HAS 'es'")
    assert step.load_conditions == (
        LoadCondition("chat", "assigned_tasks", "<", 3),
        LoadCondition("voice", "available_capacity_percentage", "==", 100),
    )
    not_vip = first_step("task.vip == true AND channel.chat.assigned_tasks < 1", {"vip": False})
    assert (not_vip.worker_filter, not_vip.load_conditions) == ("false", ())
    plain = first_step("worker.channel.chat.configured_capacity > 1")  # static: membership
    assert (plain.worker_filter, plain.load_conditions) == (
        "channel.chat.configured_capacity > 1",
        (),
    )


@pytest.mark.parametrize(
    ("term", "value", "result"),
    [
        ("<", 2, ("<", 2)),
        ("<=", 2, ("<", 3)),
        (">", 2, (">", 2)),
        (">=", 2, (">", 1)),
        ("<", 1.5, ("<", 2)),
        ("<=", 1.5, ("<", 2)),
        (">", 1.5, (">", 1)),
        (">=", 1.5, (">", 1)),
        ("==", 2.0, ("==", 2)),
        ("==", "2", ("==", 2)),  # a numeric string compares as its number
        ("==", 1.5, False),
        ("!=", 1.5, True),
        ("<", 10**20, ("<", 10**9)),  # clamped far above any load
        ("<", None, False),  # a missing task value: false, but for != null
        ("!=", None, True),
        ("==", None, False),
        ("!=", "many", False),
        ("<", True, False),
        ("<", [3], False),
    ],
)
def test_live_load_compared_with_a_task_value(term: str, value: Any, result: Any) -> None:
    step = first_step(f"worker.channel.chat.assigned_tasks {term} task.n", {"n": value})
    if isinstance(result, bool):
        assert (step.worker_filter, step.load_conditions) == (str(result).lower(), ())
    else:
        assert step.worker_filter == "true"
        assert step.load_conditions == (LoadCondition("chat", "assigned_tasks", *result),)


def test_a_known_agent_step_whose_agent_is_missing_has_no_load_conditions() -> None:
    target = {"queue": "vip", "known_worker_sid": "task.owner"}
    target["expression"] = "worker.channel.chat.assigned_tasks < 2"
    step = load(routing(rule("1==1", target))).plan({}).steps[0]
    assert (step.worker_filter, step.load_conditions) == ("false", ())


@pytest.mark.parametrize(
    ("expression", "column", "reason"),
    [
        ("worker.channel.chat.assigned_tasks < 1 OR level > 2", 1, "not under OR or NOT"),
        ("level > 2 AND NOT (channel.chat.assigned_tasks < 1)", 20, "not under OR or NOT"),
        ("worker.channel.chat.assigned_tasks < worker.level", 1, "not with worker.level"),
        (
            "worker.channel.chat.assigned_tasks < worker.channel.voice.assigned_tasks",
            1,
            "not with worker.channel.voice.assigned_tasks",
        ),
        ("worker.channel.chat.assigned_tasks IN [0, 1]", 1, "with == != < <= > or >="),
        ("'x' CONTAINS worker.channel.chat.available_capacity_percentage", 14, "with =="),
        ("worker.channel.chat.assigned_tasks < '2'", 1, "with a number"),
        ("worker.channel.chat.assigned_tasks != null", 1, "with a number"),
        ("worker.channel.chat.assigned_tasks.x < 1", 1, "it has no fields"),
    ],
)
def test_live_load_used_any_other_way_is_rejected_with_its_column(
    expression: str, column: int, reason: str
) -> None:
    with pytest.raises(WorkflowError) as caught:
        load(routing(rule("1==1", {"queue": "vip"}, {"expression": expression})))
    assert caught.value.path == "task_routing.filters[0].targets[1].expression"
    assert caught.value.column == column
    assert reason in str(caught.value)


LOAD_KEYS = ["assigned_tasks", "available_capacity_percentage"]
ORDER = ["==", "!=", "<", "<=", ">", ">="]
task_values = st.one_of(
    st.integers(-150, 150),
    st.floats(-150, 150),
    st.sampled_from([None, True, False, "", "x", "50", "33.4", "-1e1", [1], 10**30, 1e300]),
)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(LOAD_KEYS), st.sampled_from(ORDER), task_values, st.booleans(),
    st.integers(0, 4), st.integers(0, 6),
)  # fmt: skip
def test_load_conditions_mean_what_the_expression_says(
    key: str, op: str, value: Any, turned: bool, capacity: int, load_now: int
) -> None:
    """Matching by the step's conditions (LoadCondition.holds, which the Lua mirrors: see
    tests/test_live_load.py) agrees with evaluating the expression on the live values."""
    text = f"task.v {op} channel.chat.{key}" if turned else f"channel.chat.{key} {op} task.v"
    step = first_step(text, {"v": value})
    meets = step.worker_filter != "false" and all(
        c.holds(capacity, load_now) for c in step.load_conditions
    )
    percent = 100 * (capacity - load_now) // capacity if capacity else 0
    live = {"assigned_tasks": load_now, "available_capacity_percentage": percent}
    data = {"channel": {"chat": live}, "task": {"v": value}}
    assert meets == compile_expression(text).evaluate(data)
