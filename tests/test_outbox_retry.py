"""An outbox delivery that keeps failing (a smarthost down) is retried with a growing wait and
its traceback is logged once per streak, not every second for as long as the outage lasts; the
entry is delivered once the adapter recovers, and entries behind it follow in order. A real
Redis stream (the suite's), a real OutboxReader; only the adapter's delivery is a function here.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from redis.asyncio import Redis

from router import keys
from router.outbox import OutboxReader
from tests.util import wait_for
from tests.ws_client import uid


@pytest.mark.parametrize(
    "error",
    [RuntimeError("rejected"), ConnectionRefusedError(111, "smarthost down")],
    ids=["adapter-error", "connection-refused"],
)
async def test_a_failing_delivery_backs_off_logs_once_and_is_delivered_after(
    redis: Redis, redis_server: str, caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    ws = uid("ws")
    delivered: list[str] = []
    tries: dict[str, int] = {}

    async def deliver(eid: str, entry: dict[str, Any]) -> bool:
        text = str(entry["text"])
        tries[text] = tries.get(text, 0) + 1
        if text == "first" and tries[text] <= 4:
            raise error
        delivered.append(text)
        return True

    reader = OutboxReader(
        redis_server, ws, "mail", "node-1", frozenset({"email"}), deliver,
        start_at_end=False, retry_s=0.01, max_retry_s=0.04,
    )  # fmt: skip
    for text in ("first", "second"):
        await redis.xadd(keys.outbox(ws), {"ch": "email", "text": text})
    with caplog.at_level(logging.INFO, logger="switchboard.outbox"):
        reader.start()
        try:
            await wait_for(lambda: delivered == ["first", "second"], message=f"{delivered}")
        finally:
            await reader.stop()

    assert tries == {"first": 5, "second": 1}  # in order: nothing overtook the stuck entry
    records = [r for r in caplog.records if r.name == "switchboard.outbox"]
    tracebacks = [r for r in records if r.exc_info]
    assert len(tracebacks) == 1  # the first failure of the streak, not each one
    waits = [r.getMessage() for r in records if "failed again" in r.getMessage()]
    assert [w.split("(")[1].split(" ")[0] for w in waits] == ["2", "3", "4"]
    assert [w.rsplit("retrying in ", 1)[1] for w in waits] == ["0.02 s", "0.04 s", "0.04 s"]
    assert reader.failures == 0  # and the streak ended with the delivery
    assert any("delivering again after 4 failures" in r.getMessage() for r in records)
