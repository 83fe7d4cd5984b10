"""router.expressions: TaskRouter syntax and semantics, bounds, partial evaluation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router import expressions
from router.expressions import (
    MAX_LENGTH,
    Expression,
    ExpressionError,
    KeyUse,
    Term,
    as_number,
    clock_values,
    compile,
    key_uses,
    matches,
    resolve,
)


def test_public_api_is_exactly_all() -> None:
    public = {name for name in vars(expressions) if not name.startswith("_")}
    imported = {"annotations", "functools", "math", "re", "Any", "NamedTuple", "NoReturn"}
    imported |= {"cast", "Callable", "Mapping", "Sequence", "UTC", "datetime"}
    imported |= {"ZoneInfo", "ZoneInfoNotFoundError"}
    assert public - imported == set(expressions.__all__)


# --- operators -------------------------------------------------------------------

ATTRS: dict[str, Any] = {
    "type": "ticket",
    "level": 5,
    "rating": 4.5,
    "vip": True,
    "skills": ["support", "billing", 7],
    "languages": ["en", "es"],
    "name": "Ada Lovelace",
    "count": "12",
    "object": {"array": ["a", "b", "c"], "attr": "bar"},
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("type == 'ticket'", True),
        ("type == 'lead'", False),
        ("type = 'ticket'", True),  # TaskRouter's own examples use a single '='
        ("type != 'lead'", True),
        ("type != 'ticket'", False),
        ("level > 4", True),
        ("level > 5", False),
        ("level >= 5", True),
        ("level < 5", False),
        ("level <= 5", True),
        ("rating >= 4.5", True),
        ("rating < 4.51", True),
        ("level == 5.0", True),
        ("name CONTAINS 'Love'", True),
        ("name CONTAINS 'love'", False),  # case-sensitive
        ("skills HAS 'support'", True),
        ("skills HAS 'sales'", False),
        ("skills HAS 7", True),
        ("'es' IN languages", True),
        ("'fr' IN languages", False),
        ("type IN ['ticket', \"lead\", 1]", True),
        ("level IN [1, 5]", True),
        ("type NOT IN ['lead', 'sale']", True),
        ("type NOT IN ['ticket']", False),
        ("vip == true", True),
        ("vip != false", True),
        ("object.attr == 'bar'", True),
        ("object.array[2] == 'c'", True),
        ("object.array HAS 'b'", True),
        ("type == 'ticket' AND level > 3", True),
        ("type == 'lead' AND level > 3", False),
        ("type == 'lead' OR level > 3", True),
        ("type == 'lead' OR level > 9", False),
        ("(type == 'lead' OR type == 'ticket') AND level >= 5", True),
        ("1 == 1", True),
        ("1==1", True),
        ("0 != 1", True),
        ('"apple" != "orange"', True),
        ("'a' < 'b'", True),
    ],
)
def test_operators(expression: str, expected: bool) -> None:
    assert matches(expression, ATTRS) is expected


def test_taskrouter_documented_examples_parse() -> None:
    for text in [
        "(skills HAS 'support') AND (languages HAS 'english')",
        "customer_value == 'Gold' AND type == 'ticket'",
        "key > 1",
        'object.param != "apple"',
        'language IN ["en", "es"]',
        "(condition_a == true) OR (condition_b == true)",
        '(language == "en" OR language == "fr") AND skill_rating >= 5.1',
        "worker.activity_name in ['Generally Available', 'High Value Tasks']",
        "task.subSection = worker.specializedSubField",
        "workers.available == 0",
        "preferred_agents != null",
        "taskrouter.currentTime > 0800 AND taskrouter.currentTime < 1830",
    ]:
        compile(text)


def test_quotes_and_escapes() -> None:
    data = {"s": 'it\'s "quoted"\n\tand \\ done é'}
    assert matches(r"s == 'it\'s \"quoted\"\n\tand \\ done \u00e9'", data)
    assert matches(r'''s == "it's \"quoted\"\n\tand \\ done é"''', data)
    assert compile(r"x == '\U0001F600'").canonical() == "x == '\U0001f600'"


def test_keywords_are_case_insensitive() -> None:
    data = {"a": 1, "skills": ["x"], "name": "abc"}
    for text in [
        "a == 1 and skills Has 'x'",
        "a == 2 Or name contains 'b'",
        "a In [1] AND a not in [2]",
        "not a == 2",
        "a == 1 AND TRUE",
        "missing == NULL",
    ]:
        assert matches(text, data), text
    assert compile("a == 1 and b == TRUE").canonical() == "a == 1 AND b == true"


def test_keys_are_case_sensitive() -> None:
    assert not matches("Level == 5", ATTRS)


# --- type rules ---------------------------------------------------------------------


def test_missing_key_is_null() -> None:
    assert matches("missing == null", {})
    assert not matches("missing != null", {})
    assert matches("missing != 'x'", {})
    assert not matches("missing == 'x'", {})
    assert not matches("missing > 1", {})
    assert not matches("missing < 1", {})
    assert not matches("missing IN ['x']", {})
    assert not matches("missing NOT IN ['x']", {})
    assert not matches("missing HAS 'x'", {})
    assert not matches("missing CONTAINS 'x'", {})
    assert not matches("object.nope.deeper == 'x'", ATTRS)
    assert matches("object.array[9] == null", ATTRS)  # index out of range
    assert matches("object.attr[0] == null", ATTRS)  # index into a string
    assert matches("type.x == null", ATTRS)  # key into a string


def test_null_is_present_for_arrays_and_objects() -> None:
    assert matches("preferred_agents != null", {"preferred_agents": ["agent01"]})
    assert matches("object != null", ATTRS)
    assert not matches("object == null", ATTRS)
    assert matches("x == null", {"x": None})


def test_scalar_operators_on_arrays_are_false() -> None:
    for op in ["==", "!=", ">", ">=", "<", "<=", "CONTAINS"]:
        assert not matches(f"skills {op} 'support'", ATTRS), op
        assert not matches(f"'support' {op} skills", ATTRS), op
        assert not matches(f"object {op} 'bar'", ATTRS), op
    assert not matches("skills == skills", ATTRS)


def test_array_operators_on_scalars_are_false() -> None:
    assert not matches("type HAS 'ticket'", ATTRS)
    assert not matches("'ticket' IN type", ATTRS)
    assert not matches("'t' IN 'ticket'", ATTRS)
    assert not matches("'x' NOT IN type", ATTRS)
    assert not matches("skills IN languages", ATTRS)  # the left side must be a scalar
    assert not matches("skills HAS languages", ATTRS)  # and so must HAS's right side


def test_numeric_strings_compare_numerically_against_numbers() -> None:
    assert matches('"5" > 3', {})
    assert matches("count > 9", ATTRS)  # "12" > 9
    assert matches("count == 12", ATTRS)
    assert matches("'08' == 8", {})
    assert matches("'-1.5e1' < -10", {})
    assert matches("12 IN list", {"list": ["12"]})
    assert matches("list HAS 12", {"list": ["12"]})
    # Two strings stay strings, and non-numeric strings never equal numbers.
    assert not matches("'10' > '9'", {})
    assert not matches("'abc' > 3", {})
    assert not matches("'abc' != 3", {})
    assert not matches("' 5' == 5", {})


def test_other_type_mismatches_are_false() -> None:
    assert not matches("true == 1", {})
    assert not matches("true != 1", {})
    assert not matches("true > false", {})
    assert not matches("level CONTAINS 5", ATTRS)
    assert matches("true == true", {})


def test_evaluate_never_raises_on_data_shape() -> None:
    weird: list[Any] = [
        float("nan"),
        float("inf"),
        10**5000,
        {1, 2},
        object(),
        b"bytes",
        {"nested": {"deep": [1, [2, [3]]]}},
        [None, {"a": 1}, [1]],
    ]
    texts = [
        "x == 1",
        "x != 1",
        "x > 1",
        "x CONTAINS 'a'",
        "x HAS 1",
        "1 IN x",
        "x IN [1]",
        "x NOT IN [1]",
        "x.nested.deep[1][0] == 2",
        "x == null",
        "x != null",
    ]
    for value in weird:
        for text in texts:
            assert isinstance(matches(text, {"x": value}), bool)
    assert matches("x.nested.deep[1][0] == 2", {"x": weird[6]})
    assert not matches("x == x", {"x": float("nan")})
    assert matches("x != null", {"x": float("nan")})
    assert matches("1 IN x", {"x": [None, {"a": 1}, [1], 1]})


def test_not_and_null_extensions() -> None:
    assert matches("NOT type == 'lead'", ATTRS)
    assert not matches("NOT (type == 'ticket' AND level == 5)", ATTRS)
    assert matches("NOT type == 'lead' AND level == 5", ATTRS)  # NOT binds tighter than AND
    assert matches("NOT NOT level == 5", ATTRS)
    assert matches("NOT level > 'abc'", ATTRS)  # a false mismatch, negated


def test_precedence_and_parentheses() -> None:
    data = {"a": 1, "b": 0, "c": 0}
    assert matches("a == 1 OR b == 1 AND c == 1", data)  # AND binds tighter
    assert not matches("(a == 1 OR b == 1) AND c == 1", data)
    assert matches("b == 1 AND c == 1 OR a == 1", data)
    assert compile("a == 1 OR b == 1 AND c == 1").canonical() == "a == 1 OR b == 1 AND c == 1"
    assert compile("(a == 1 OR b == 1) AND c == 1").canonical() == "(a == 1 OR b == 1) AND c == 1"
    assert compile("((a == 1))").canonical() == "a == 1"


# --- errors and bounds ------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "column", "reason"),
    [
        ("skills HAS", 11, "expected a value after HAS"),
        ("skills HAS   ", 14, "expected a value after HAS"),
        ("(a == 1", 8, "expected ')'"),
        ("a == 1)", 7, "unexpected ')'"),
        ("((a == 1) OR b == 2", 20, "expected ')'"),
        ("name == 'abc", 9, "unterminated string"),
        ('name == "abc', 9, "unterminated string"),
        ("a == 1 & b == 2", 8, "unexpected character '&'"),
        ("a == 1 && b == 2", 8, "unexpected character '&'"),
        ("a-b == 1", 2, "unexpected character '-'"),  # TaskRouter: no hyphens
        ("", 1, "expression is empty"),
        ("   ", 4, "expression is empty"),
        ("skills", 7, "expected a comparison operator"),
        ("a == 1 b == 2", 8, "expected AND, OR or the end"),
        ("a == 1 AND", 11, "expected a key or a value"),
        ("a NOT 1", 7, "expected IN after NOT"),
        ("a. == 1", 3, "expected a key name after '.'"),
        ("5abc == 1", 1, "malformed number"),
        ("1.2.3 == 1", 1, "malformed number"),
        ("x == 'a\\qb'", 8, "unknown escape sequence"),
        ("x IN [1,,2]", 9, "expected a string, number, true, false or null"),
        ("x IN [1 2]", 9, "expected ',' or ']'"),
        ("x IN [[1]]", 7, "expected a string, number, true, false or null"),
        ("x == 1e999", 6, "number out of range"),
        ("a == b == c", 8, "expected AND, OR or the end"),
    ],
)
def test_malformed_expressions_name_the_column(expression: str, column: int, reason: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile(expression)
    assert caught.value.column == column
    assert caught.value.expression == expression
    assert reason in str(caught.value)
    assert f"column {column}" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_errors_survive_pickling() -> None:
    import pickle

    with pytest.raises(ExpressionError) as caught:
        compile("a ==")
    again = pickle.loads(pickle.dumps(caught.value))
    assert (again.expression, again.column, again.reason) == ("a ==", 5, caught.value.reason)
    assert str(again) == str(caught.value)


def test_length_bound() -> None:
    ok = "a == '" + "x" * (MAX_LENGTH - 8) + "'"
    assert len(ok) == MAX_LENGTH - 1
    compile(ok)
    with pytest.raises(ExpressionError) as caught:
        compile("a == 1 OR " * 500)
    assert caught.value.column == MAX_LENGTH + 1
    assert "longer than 4096" in str(caught.value)


def test_depth_bound_without_recursion_error() -> None:
    compile("(" * 32 + "a == 1" + ")" * 32)
    compile("NOT " * 32 + "a == 1")
    with pytest.raises(ExpressionError) as caught:
        compile("(" * 33 + "a == 1" + ")" * 33)
    assert caught.value.column == 33
    assert "deeper than 32" in str(caught.value)
    with pytest.raises(ExpressionError, match="deeper than 32"):
        compile("NOT " * 33 + "a == 1")
    # Far past Python's recursion limit, still a clean ExpressionError.
    with pytest.raises(ExpressionError):
        compile("(" * 2000 + "a == 1" + ")" * 2000)
    with pytest.raises(ExpressionError):
        compile("NOT " * 1000)


def test_node_bound() -> None:
    clause = "a == 1"  # three nodes, plus one per OR
    compile(" OR ".join([clause] * 64))  # 64 * 3 + 63 = 255 nodes
    with pytest.raises(ExpressionError, match="more than 256 nodes"):
        compile(" OR ".join([clause] * 65))
    compile("a IN [" + ", ".join(str(i) for i in range(500)) + "]")  # an array is one node


def test_compile_is_cached_and_rejects_non_strings() -> None:
    assert compile("a == 1") is compile("a == 1")
    with pytest.raises(TypeError):
        compile(5)


# --- partial evaluation and canonical text ---------------------------------------------


def test_bind_turns_a_target_expression_into_a_worker_filter() -> None:
    target = compile("task.language IN worker.languages AND worker.level >= task.tier")
    bound = target.bind("task", {"language": "en", "tier": 2})
    assert bound.canonical() == "'en' IN worker.languages AND worker.level >= 2"
    worker = bound.strip_prefix("worker")
    assert worker.canonical() == "'en' IN languages AND level >= 2"
    assert worker.keys() == frozenset({"languages", "level"})
    assert worker.evaluate({"languages": ["en"], "level": 3})
    assert not worker.evaluate({"languages": ["fr"], "level": 3})


def test_bind_folds_constants() -> None:
    expr = compile("task.vip == true AND worker.skills HAS 'gold' OR task.tier > 3")
    assert expr.bind("task", {"vip": True, "tier": 1}).canonical() == "worker.skills HAS 'gold'"
    assert expr.bind("task", {"vip": False, "tier": 1}).canonical() == "false"
    assert expr.bind("task", {"vip": False, "tier": 9}).canonical() == "true"
    folded = expr.bind("task", {"vip": False, "tier": 9})
    assert folded.is_constant and folded.constant_value is True
    assert not expr.is_constant and expr.constant_value is None
    missing = compile("task.language IN worker.languages").bind("task", {})
    assert missing.canonical() == "false"  # null is never IN anything


def test_bind_of_objects_and_arrays() -> None:
    expr = compile("task.x != worker.y")
    assert expr.bind("task", {"x": {"a": 1}}).canonical() == "worker.y == null"
    assert compile("task.x == worker.y").bind("task", {"x": [1]}).canonical() == "false"
    arr = compile("worker.id IN task.agents").bind("task", {"agents": ["a", None, {"b": 1}, 2]})
    assert arr.canonical() == "worker.id IN ['a', 2]"
    assert compile("task.x == 1").bind("task", {"x": float("nan")}).canonical() == "false"


def test_strip_prefix_keeps_other_keys() -> None:
    expr = compile("worker.a == 1 AND workers.available > 0 AND worker == 2 AND b == 3")
    stripped = expr.strip_prefix("worker")
    assert stripped.canonical() == "a == 1 AND workers.available > 0 AND worker == 2 AND b == 3"
    assert compile("worker[0] == 1").strip_prefix("worker").canonical() == "worker[0] == 1"
    assert compile("task.attrs.x == 1").strip_prefix("task.attrs").canonical() == "x == 1"


def test_canonical_ignores_whitespace_quotes_and_case() -> None:
    variants = [
        "skills HAS 'support' AND level >= 3",
        'skills   has "support"and level>=3',
        "skills Has 'support'\n  AND\tlevel >= 3.0",
        "(skills HAS 'support') AND (level >= 3)",
    ]
    assert len({compile(v).canonical() for v in variants}) == 1
    assert len({compile(v) for v in variants}) == 1  # equal and hashed by canonical text
    assert compile("1 == 1").canonical() == "true"
    assert compile("1 == 2 OR 'a' == 'b'").canonical() == "false"
    assert compile("x != ['a']").canonical() == "x == null"


def test_expression_is_immutable() -> None:
    expr = compile("a == 1")
    with pytest.raises(AttributeError):
        expr._node = None  # type: ignore[assignment]
    assert repr(expr) == "Expression('a == 1')"


def test_resolve() -> None:
    assert resolve(ATTRS, "object.array[1]") == "b"
    assert resolve(ATTRS, "object.nope") is None
    with pytest.raises(ExpressionError):
        resolve(ATTRS, "object..x")
    with pytest.raises(ExpressionError):
        resolve(ATTRS, "and")


def test_channel_capacity_keys_are_plain_data() -> None:
    worker = {"channel": {"chat": {"configured_capacity": 3, "assigned_tasks": 1}}}
    worker["channel"]["chat"]["available_capacity_percentage"] = 66
    expr = compile("worker.channel.chat.available_capacity_percentage > 50").strip_prefix("worker")
    assert expr.evaluate(worker)
    assert matches("channel.chat.assigned_tasks < channel.chat.configured_capacity", worker)


# --- splitting off terms, and where keys are used ----------------------------------------


def is_x(key: str) -> bool:
    return key == "x"


def test_split_takes_out_top_level_terms_on_a_key() -> None:
    rest, terms = compile("skills HAS 'a' AND x < 2 AND (2 <= x AND y == 1)").split(is_x)
    assert rest.canonical() == "skills HAS 'a' AND y == 1"
    assert terms == (Term("x", "<", 2), Term("x", ">=", 2))  # "2 <= x" read as "x >= 2"
    rest, terms = compile("x != 'a'").split(is_x)
    assert rest.canonical() == "true" and terms == (Term("x", "!=", "a"),)
    rest, terms = compile("y == 1").split(is_x)
    assert rest.canonical() == "y == 1" and terms == ()
    rest, terms = compile("x > 1 AND y == 1").bind("y", {}).split(is_x)  # folded away: false
    assert rest.canonical() == "false" and terms == ()


@pytest.mark.parametrize(
    "text", ["x < 1 OR y == 1", "NOT (x < 1)", "x < y", "x IN [1, 2]", "x HAS 1", "y == x"]
)
def test_split_refuses_other_uses_of_the_key(text: str) -> None:
    with pytest.raises(ValueError, match="cannot split"):
        compile(text).split(is_x)


def test_key_uses_give_each_key_its_column_and_comparison() -> None:
    uses = key_uses("a = 1 AND (2 > worker.b OR NOT (c IN task.d)) AND e HAS 'x'")
    assert uses == (
        KeyUse("a", 1, "==", True, None, 1, True),
        KeyUse("worker.b", 16, ">", False, None, 2, False),
        KeyUse("c", 33, "IN", True, "task.d", None, False),
        KeyUse("task.d", 38, "IN", False, "c", None, False),
        KeyUse("e", 51, "HAS", True, None, "x", True),
    )
    assert key_uses("(a < 1 AND (b < [1]))") == (
        KeyUse("a", 2, "<", True, None, 1, True),
        KeyUse("b", 13, "<", True, None, (1,), True),
    )
    assert key_uses("true") == ()
    with pytest.raises(ExpressionError, match="column 6"):
        key_uses("a == ")


def test_as_number_is_the_value_compared_with_a_number() -> None:
    assert [as_number(v) for v in (3, 2.5, "08", "-1.5e3", " 1", "x", True, None, [1])] == [
        3, 2.5, 8, -1500.0, None, None, None, None, None
    ]  # fmt: skip
    assert as_number(float("nan")) is None and as_number(2**4000) is None


# --- time of day ---------------------------------------------------------------------

BUSINESS_HOURS = (
    "(taskrouter.dayOfWeek IN ['Mon', 'Tue', 'Wed', 'Thu', 'Fri']"
    " AND taskrouter.currentTime >= 900 AND taskrouter.currentTime < 1730)"
    " OR (taskrouter.dayOfWeek = 'Sat' AND taskrouter.currentTime > 1100)"
)


def test_clock_values_shape() -> None:
    now = datetime(2024, 1, 1, 8, 5, tzinfo=UTC)  # a Monday
    values = clock_values(now, "UTC")
    assert values == {
        "taskrouter": {
            "currentTime": 805,
            "currentHour": "08",
            "currentMin": "05",
            "dayOfWeek": "Mon",
        }
    }
    assert matches("taskrouter.currentHour > 7 AND taskrouter.currentHour < 9", values)
    assert matches("taskrouter.currentMin == 5", values)


def test_clock_values_business_hours_in_a_time_zone() -> None:
    monday_morning_utc = datetime(2024, 1, 1, 8, 30, tzinfo=UTC)
    assert not matches(BUSINESS_HOURS, clock_values(monday_morning_utc, "UTC"))
    # 08:30 UTC is 09:30 in Paris.
    assert matches(BUSINESS_HOURS, clock_values(monday_morning_utc, "Europe/Paris"))
    # Sunday evening UTC is already Monday in Tokyo, but before 9.
    sunday = datetime(2024, 1, 7, 20, 0, tzinfo=UTC)
    assert clock_values(sunday, "Asia/Tokyo")["taskrouter"]["dayOfWeek"] == "Mon"
    assert not matches(BUSINESS_HOURS, clock_values(sunday, "Asia/Tokyo"))
    saturday_noon = datetime(2024, 1, 6, 12, 0)  # naive: taken as UTC
    assert matches(BUSINESS_HOURS, clock_values(saturday_noon, "UTC"))
    task = {"type": "support", **clock_values(saturday_noon, "UTC")}
    assert matches(f"type == 'support' AND ({BUSINESS_HOURS})", task)


def test_clock_values_rejects_unknown_zones() -> None:
    for zone in ["Mars/Olympus", "", "../etc/passwd"]:
        with pytest.raises(ValueError):
            clock_values(datetime(2024, 1, 1, tzinfo=UTC), zone)


# --- properties ----------------------------------------------------------------------

KEYS = ["task.a", "task.b", "task.arr", "task.obj.z", "task.arr[0]", "x", "y", "arr", "task"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from([0.5, -1.25, 2.0, float("nan")]),
    st.sampled_from(["a", "b", "", "5", "05", "-2", "x y", "it's"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["z", "a"]), inner, max_size=2),
    ),
    max_leaves=6,
)
literals = st.one_of(
    st.sampled_from(["null", "true", "false", "1", "-2", "0.5", "'a'", '"5"', "'05'", "''"]),
    st.lists(st.sampled_from(["'a'", "1", "'5'", "true", "null"]), max_size=3).map(
        lambda items: "[" + ", ".join(items) + "]"
    ),
)
ops = st.sampled_from(["==", "=", "!=", ">", ">=", "<", "<=", "CONTAINS", "HAS", "IN", "NOT IN"])


def predicates_over(keys: list[str]) -> st.SearchStrategy[str]:
    operands = st.one_of(st.sampled_from(keys), literals)
    comparisons = st.builds(lambda a, op, b: f"{a} {op} {b}", operands, ops, operands)
    return st.recursive(
        st.one_of(comparisons, st.sampled_from(["true", "false"])),
        lambda inner: st.one_of(
            st.builds(lambda a, b: f"({a}) AND ({b})", inner, inner),
            st.builds(lambda a, b: f"{a} or {b}", inner, inner),
            inner.map(lambda a: f"NOT ({a})"),
        ),
        max_leaves=6,
    )


predicates = predicates_over(KEYS)
# strip_prefix is exact when every key has the prefix and a key after it.
worker_predicates = predicates_over(["worker.a", "worker.arr", "worker.obj.z", "worker.arr[1]"])
documents = st.dictionaries(st.sampled_from(["a", "b", "arr", "obj", "x", "y"]), values, max_size=5)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(predicates, documents, documents)
def test_bind_is_partial_evaluation(text: str, task: dict[str, Any], rest: dict[str, Any]) -> None:
    expr = compile(text)
    full = {**rest, "task": task}
    assert expr.bind("task", task).evaluate(rest) == expr.evaluate(full)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(worker_predicates, documents)
def test_strip_prefix_matches_nesting(text: str, worker: dict[str, Any]) -> None:
    expr = compile(text)
    assert expr.strip_prefix("worker").evaluate(worker) == expr.evaluate({"worker": worker})


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(predicates, documents, documents)
def test_canonical_round_trip(text: str, task: dict[str, Any], rest: dict[str, Any]) -> None:
    expr = compile(text)
    again = compile(expr.canonical())
    assert again.canonical() == expr.canonical()
    assert again.evaluate({**rest, "task": task}) == expr.evaluate({**rest, "task": task})
    bound = expr.bind("task", task)
    if len(bound.canonical()) <= MAX_LENGTH:
        assert compile(bound.canonical()) == bound
        assert compile(bound.canonical()).evaluate(rest) == bound.evaluate(rest)


@given(st.text(max_size=60))
def test_arbitrary_text_either_compiles_or_raises_expression_error(text: str) -> None:
    try:
        expr = compile(text)
    except ExpressionError as exc:
        assert 1 <= exc.column <= len(text) + 1
    else:
        assert isinstance(expr, Expression)
        assert compile(expr.canonical()) == expr


def splits_cleanly(text: str) -> bool:
    """What key_uses promises split() will take apart once task values are bound."""
    return all(
        u.conjunct
        and u.op in ("==", "!=", "<", "<=", ">", ">=")
        and (u.other is None or u.other.startswith("task"))
        for u in key_uses(text)
        if u.key == "x"
    )


x_terms = st.builds(
    lambda op, value, turned: f"{value} {op} x" if turned else f"x {op} {value}",
    st.sampled_from(["==", "=", "!=", "<", "<=", ">", ">="]),
    st.one_of(literals, st.sampled_from(["task.a", "task.b", "task.arr", "task.obj.z"])),
    st.booleans(),
)
x_conjunctions = st.lists(
    st.one_of(x_terms, predicates_over([k for k in KEYS if k != "x"]), predicates), max_size=4
).map(lambda parts: " AND ".join(f"({p})" for p in parts) or "true")


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(x_conjunctions, documents, documents)
def test_split_is_exact(text: str, task: dict[str, Any], rest: dict[str, Any]) -> None:
    if not splits_cleanly(text):
        return
    expr = compile(text)
    remainder, terms = expr.bind("task", task).split(is_x)
    held = remainder.evaluate(rest) and all(
        matches(f"x {t.op} value", {"x": rest.get("x"), "value": t.value}) for t in terms
    )
    assert held == expr.evaluate({**rest, "task": task})
