"""The check-result cursor and results that become visible late: on Postgres a ``result_id`` is
taken at insert and transactions commit in any order, so a result can appear below a cursor that
already passed it. It is judged all the same, and re-reading the rows near the cursor judges
nothing twice."""

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.alerting import actions
from healthmon_dagster.alerting.engine import evaluate
from healthmon_dagster.alerting.signals import LATE_COMMIT_SECONDS
from healthmon_dagster.config.loader import load_config_text
from healthmon_dagster.enums import RecordSource
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.metrics import utcnow
from healthmon_dagster.store.tables import alert_events, alerts, check_results, notifications

CONFIG = load_config_text("{}")


def failed(check: str, target: str, **values: Any) -> dict[str, Any]:
    return {
        "ts": utcnow(),
        "source": str(RecordSource.ASSET_CHECK),
        "check_name": check,
        "target": target,
        "status": "failed",
        "severity": "ERROR",
        "message": f"{check} failed",
        "details": {},
        **values,
    }


def insert(engine: Engine, **row: Any) -> int:
    with engine.begin() as conn:
        key = conn.execute(check_results.insert().values(**row)).inserted_primary_key
    assert key is not None
    return int(key[0])


def alert_of(engine: Engine, check: str) -> list[Any]:
    with engine.connect() as conn:
        return [
            a
            for a in conn.execute(sa.select(alerts).order_by(alerts.c.alert_id))
            if a.labels.get("check") == check
        ]


def counts(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
            for t in (alerts, alert_events, notifications)
        )


def test_a_result_that_appears_below_the_cursor_is_judged_once(engine: Engine) -> None:
    # What a late commit looks like to the next evaluation: a row below the cursor, new to it.
    insert(engine, result_id=5, **failed("row_count_is_in_range", "stg/patients"))
    report = evaluate(engine, CONFIG)
    assert report.cursor == 5 and len(alert_of(engine, "row_count_is_in_range")) == 1

    insert(engine, result_id=3, **failed("gender_is_valid", "stg/patients"))  # committed late
    report = evaluate(engine, CONFIG, cursor=5)
    (late,) = alert_of(engine, "gender_is_valid")
    assert late.state == "firing" and late.details["result_id"] == 3
    assert report.fired == [late.alert_id]
    assert report.cursor == 5  # a cursor never moves back for a re-read row

    # Read again on every evaluation within the window: nothing happens twice.
    before = counts(engine)
    evaluate(engine, CONFIG, cursor=5)
    evaluate(engine, CONFIG, cursor=5)
    assert counts(engine) == before

    # Resolved by hand: the re-read row does not open it again.
    actions.resolve(engine, late.alert_id, "cli:ana", "fixed the source file")
    evaluate(engine, CONFIG, cursor=5)
    assert [a.state for a in alert_of(engine, "gender_is_valid")] == ["resolved"]

    # Outside the window a row below the cursor is not read again.
    old = utcnow() - timedelta(seconds=LATE_COMMIT_SECONDS + 60)
    insert(engine, result_id=4, **failed("ssn_is_valid", "stg/patients", ts=old))
    evaluate(engine, CONFIG, cursor=5)
    assert alert_of(engine, "ssn_is_valid") == []


def test_two_transactions_committing_out_of_order_on_postgres(postgres_url: str) -> None:
    """Real Postgres: the first transaction takes its id, the second takes a higher one and
    commits, the sensor evaluates (its cursor passes the first id), then the first commits."""
    engine = get_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE etl.check_results, etl.alerts RESTART IDENTITY CASCADE"))
    slow = engine.connect()
    slow_tx = slow.begin()
    slow_id = slow.execute(
        check_results.insert().values(**failed("gender_is_valid", "stg/patients"))
    ).inserted_primary_key
    assert slow_id is not None
    fast_id = insert(engine, **failed("row_count_is_in_range", "stg/patients"))
    assert fast_id > slow_id[0]

    report = evaluate(engine, CONFIG)
    assert report.cursor == fast_id
    assert alert_of(engine, "gender_is_valid") == []  # not visible yet

    slow_tx.commit()
    slow.close()
    report = evaluate(engine, CONFIG, cursor=report.cursor)
    (late,) = alert_of(engine, "gender_is_valid")
    assert late.state == "firing" and report.fired == [late.alert_id]
