"""What the rules see: one :class:`Signal` per alert identity per evaluation, active or not.

- Metric rules: ``aggregation(metric)`` of the rule's component over its window, from
  ``etl.metrics``, one SQL pass per distinct window size for all rules (not one per rule).
- Event rules: the latest result of each check in ``etl.check_results`` newer than the cursor
  (only keys with a new result produce a signal, so a check that has not run again keeps its
  alert), and signals the Dagster adapter passes in (run failures, freshness states). On Postgres
  a ``result_id`` is taken at insert and transactions commit in any order, so a row can become
  visible after a higher id was judged: the recent rows just below the cursor are read again
  (``LATE_COMMIT_SECONDS``), and judging a row twice changes nothing (see
  :func:`latest_check_rows`).

A signal that is absent changes nothing; an inactive one resolves its alert. Titles, descriptions
and details carry check names, asset keys, counts, rates and row numbers (what the checks
themselves record, which never holds a field value).

Evidence of an outage (:class:`Evidence`): a check that could not run because the warehouse did
not answer (its row says ``details["dependency"]``), or a run whose failed steps all blame one
dependency (the Dagster adapter passes those in), is the dependency's own alert: it raises, or
refreshes, the ``dependency_unreachable`` alert of that dependency's connectivity check, with the
same labels (so one alert, whoever sees the outage first), and that alert mutes the rest.
Evidence older than the connectivity check's latest result says nothing: the check has spoken
since. Without a connectivity check for the dependency, evidence raises nothing (no root alert
could ever be resolved).
"""

import functools
import operator as op
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from healthmon_dagster.alerting.labels import fingerprint
from healthmon_dagster.config.models import (
    AlertRule,
    EventCondition,
    FreshnessCheck,
    HealthConfiguration,
)
from healthmon_dagster.enums import (
    Aggregation,
    AlertSeverity,
    CheckSeverity,
    ConditionOperator,
    EventKind,
    HealthCheckType,
    HealthComponent,
    HealthStatus,
    QualityStatus,
    RecordSource,
)
from healthmon_dagster.etl.catalog import component_for
from healthmon_dagster.etl.failures import LANDING, WAREHOUSE
from healthmon_dagster.store.metrics import as_utc, utcnow
from healthmon_dagster.store.tables import alerts, check_results, metrics

# Components whose connectivity the pipeline's data depends on.
DEPENDENCY_COMPONENTS = frozenset(
    {
        HealthComponent.DATABASE,
        HealthComponent.S3_DISCOVERY,
        HealthComponent.FILESYSTEM,
        HealthComponent.NETWORK,
    }
)

# A failure's dependency (etl.failures: what a classified step failure found unavailable) -> the
# component whose connectivity check watches it: the ``dependency`` label of its alerts.
FAILURE_DEPENDENCY_COMPONENT: dict[str, str] = {
    WAREHOUSE: str(HealthComponent.DATABASE),
    LANDING: str(HealthComponent.S3_DISCOVERY),
}
# Which database a database connectivity check reaches (its custom_parameters.target): the
# warehouse, unless it checks only the health store.
_WAREHOUSE_TARGETS = {None, WAREHOUSE, "both"}


@dataclass(frozen=True)
class Signal:
    """One alert identity's condition at one evaluation."""

    rule: AlertRule
    labels: Mapping[str, str]
    active: bool
    title: str
    description: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    value: float | None = None

    @functools.cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.labels)

    @property
    def asset(self) -> str | None:
        return self.labels.get("asset") or None


def alert_labels(rule: AlertRule, **labels: str | None) -> dict[str, str]:
    """The rule's identity labels (rule_id, severity, its own labels) plus ``labels``."""
    out = {**rule.labels, "rule_id": rule.rule_id, "severity": str(rule.severity)}
    out.update({k: v for k, v in labels.items() if v})
    return out


# --- built-in rules --------------------------------------------------------------------------


def _builtin(
    rule_id: str, name: str, severity: AlertSeverity, event: EventCondition, channels: list[str]
) -> AlertRule:
    return AlertRule(
        rule_id=rule_id,
        name=name,
        event=event,
        severity=severity,
        channels=channels,
        description="built in (alerting.builtin_rules)",
    )


def builtin_rules(config: HealthConfiguration) -> list[AlertRule]:
    """The event rules every deployment gets unless ``alerting.builtin_rules`` is false."""
    ch = list(config.alerting.builtin_channels)
    err, warn = [CheckSeverity.ERROR], [CheckSeverity.WARN]
    return [
        _builtin(
            "asset_check_error",
            "Asset check failed",
            AlertSeverity.ERROR,
            EventCondition(kind=EventKind.CHECK_FAILED, severities=err),
            ch,
        ),
        _builtin(
            "asset_check_warning",
            "Asset check warned",
            AlertSeverity.WARNING,
            EventCondition(kind=EventKind.CHECK_FAILED, severities=warn, execution_errors=False),
            ch,
        ),
        _builtin(
            "contract_break",
            "Landing file rejected (contract break)",
            AlertSeverity.ERROR,
            EventCondition(kind=EventKind.CONTRACT_BREAK),
            ch,
        ),
        _builtin(
            "asset_not_fresh",
            "Asset is not fresh",
            AlertSeverity.WARNING,
            EventCondition(kind=EventKind.FRESHNESS),
            ch,
        ),
        _builtin(
            "run_failed",
            "Dagster run failed",
            AlertSeverity.ERROR,
            EventCondition(kind=EventKind.RUN_FAILURE),
            ch,
        ),
        _builtin(
            "health_check_critical",
            "Health check critical",
            AlertSeverity.CRITICAL,
            EventCondition(
                kind=EventKind.HEALTH_CHECK, statuses=[HealthStatus.CRITICAL], severities=err
            ),
            ch,
        ),
        _builtin(
            "health_check_warning",
            "Health check warning",
            AlertSeverity.WARNING,
            # A warning, or a non-critical check's critical (it warns in its component's status).
            EventCondition(
                kind=EventKind.HEALTH_CHECK,
                statuses=[HealthStatus.WARNING, HealthStatus.CRITICAL],
                severities=warn,
            ),
            ch,
        ),
        _builtin(
            "dependency_unreachable",
            "Dependency unreachable",
            AlertSeverity.CRITICAL,
            EventCondition(kind=EventKind.DEPENDENCY_UNREACHABLE),
            ch,
        ),
    ]


def effective_rules(config: HealthConfiguration) -> list[AlertRule]:
    """Enabled rules of ``healthmon.yaml``, plus the built-in ones it does not override."""
    own = [r for r in config.alert_rules if r.enabled]
    if not config.alerting.builtin_rules:
        return own
    taken = {r.rule_id for r in config.alert_rules}
    return own + [r for r in builtin_rules(config) if r.rule_id not in taken]


# --- metric rules ----------------------------------------------------------------------------

_COMPARE: dict[ConditionOperator, Callable[[Any, Any], bool]] = {
    ConditionOperator.GREATER_THAN: op.gt,
    ConditionOperator.LESS_THAN: op.lt,
    ConditionOperator.GREATER_THAN_OR_EQUALS: op.ge,
    ConditionOperator.LESS_THAN_OR_EQUALS: op.le,
    ConditionOperator.EQUALS: op.eq,
    ConditionOperator.NOT_EQUALS: op.ne,
}
_SYMBOL = {
    ConditionOperator.GREATER_THAN: ">",
    ConditionOperator.LESS_THAN: "<",
    ConditionOperator.GREATER_THAN_OR_EQUALS: ">=",
    ConditionOperator.LESS_THAN_OR_EQUALS: "<=",
    ConditionOperator.EQUALS: "==",
    ConditionOperator.NOT_EQUALS: "!=",
    ConditionOperator.CONTAINS: "contains",
    ConditionOperator.NOT_CONTAINS: "does not contain",
}


def metric_signals(
    conn: Connection,
    rules: Sequence[AlertRule],
    now: datetime,
    open_rules: Collection[str] | None = None,
) -> list[Signal]:
    """One signal per metric rule. Numeric rules: one grouped query over the samples of the
    longest window (through ``ix_metrics_ts``) computes, for every (component, metric) the rules
    name and every window size at once (aggregates filtered by time), the sample count and the
    aggregations the rules of that window use. A rule whose metric has no sample in its window is
    inactive (count is 0).

    With ``open_rules`` (the rule ids that have an open alert), an inactive rule not among them
    gets no signal: it would change nothing, and most of many rules are such rules."""
    numeric: list[AlertRule] = []
    textual: list[AlertRule] = []
    for rule in rules:
        assert rule.condition is not None
        (numeric if rule.condition.operator in _COMPARE else textual).append(rule)
    out: list[Signal] = []
    if numeric:
        windows = _WindowAggregates.query(conn, numeric, now)
        for rule in numeric:
            value, samples = windows.value_of(rule)
            cond = rule.condition
            assert cond is not None
            active = value is not None and _COMPARE[cond.operator](value, cond.threshold)
            if active or open_rules is None or rule.rule_id in open_rules:
                out.append(_metric_signal(rule, value, samples, active))
    for rule in textual:
        out.append(_text_signal(conn, rule, now))
    return out


_AGGREGATE_SQL: dict[str, Callable[[Any], Any]] = {
    Aggregation.AVG.value: sa.func.avg,
    Aggregation.MAX.value: sa.func.max,
    Aggregation.MIN.value: sa.func.min,
    Aggregation.SUM.value: sa.func.sum,
}


@dataclass(frozen=True)
class _WindowAggregates:
    """The rows of one grouped query: per (component, metric) the sample count of every window
    size and the aggregations the rules of that window use (``columns`` says where each is)."""

    rows: Mapping[tuple[str, str], Sequence[Any]]
    columns: Mapping[tuple[int, str], int]  # (window, aggregation or "count") -> row position

    @classmethod
    def query(
        cls, conn: Connection, rules: Sequence[AlertRule], now: datetime
    ) -> "_WindowAggregates":
        m = metrics.c
        wanted: dict[int, set[str]] = {}
        for r in rules:
            assert r.condition is not None
            wanted.setdefault(r.condition.window_minutes, set()).add(r.condition.aggregation.value)
        names = sorted({r.condition.metric_name for r in rules if r.condition is not None})
        selected: list[Any] = []
        columns: dict[tuple[int, str], int] = {}
        for w in sorted(wanted):
            value = sa.case((m.ts > now - timedelta(minutes=w), m.value))
            columns[(w, Aggregation.COUNT.value)] = 2 + len(selected)
            selected.append(sa.func.count(value))
            for kind in sorted(wanted[w] - {Aggregation.COUNT.value}):
                columns[(w, kind)] = 2 + len(selected)
                selected.append(_AGGREGATE_SQL[kind](value))
        query = (
            sa.select(m.component, m.metric_name, *selected)
            .where(
                m.ts > now - timedelta(minutes=max(wanted)),
                m.ts <= now,
                m.metric_name.in_(names),
            )
            .group_by(m.component, m.metric_name)
        )
        return cls({(row[0], row[1]): row for row in conn.execute(query).all()}, columns)

    def value_of(self, rule: AlertRule) -> tuple[float | None, int]:
        """(the rule's aggregation over its window, the samples in it); (None, 0) without any."""
        cond = rule.condition
        assert cond is not None and rule.component is not None
        row = self.rows.get((rule.component.value, cond.metric_name))
        if row is None:
            return None, 0
        samples = int(row[self.columns[(cond.window_minutes, Aggregation.COUNT.value)]])
        if not samples:
            return None, 0
        raw = row[self.columns[(cond.window_minutes, cond.aggregation.value)]]
        return (None if raw is None else float(raw)), samples


def _name(rule: AlertRule) -> str:
    assert rule.condition is not None
    return rule.condition.metric_name


def _metric_signal(rule: AlertRule, value: float | None, samples: int, active: bool) -> Signal:
    cond = rule.condition
    assert cond is not None
    # Described when it fires (most of many rules do not: their text would go unread).
    described = active and not isinstance(cond.threshold, str)
    return Signal(
        rule=rule,
        labels=alert_labels(rule, component=str(rule.component), metric=cond.metric_name),
        active=active,
        title=rule.name,
        description=(
            f"{cond.aggregation}({cond.metric_name}) of {rule.component} over the last "
            f"{cond.window_minutes} min is {value:.6g} ({samples} samples); the rule fires when "
            f"it is {_SYMBOL[cond.operator]} {cond.threshold:g}"
        )
        if described and value is not None
        else "",
        details={
            "samples": samples,
            "threshold": cond.threshold,
            "window_minutes": cond.window_minutes,
        },
        value=value,
    )


def _text_signal(conn: Connection, rule: AlertRule, now: datetime) -> Signal:
    """``contains``/``not_contains``: whether a sample of the window has tags containing the text."""
    cond = rule.condition
    assert cond is not None
    m = metrics.c
    base = sa.select(sa.func.count()).where(
        m.component == str(rule.component),
        m.metric_name == cond.metric_name,
        m.ts > now - timedelta(minutes=cond.window_minutes),
        m.ts <= now,
    )
    total = int(conn.execute(base).scalar_one())
    hits = int(
        conn.execute(
            base.where(sa.cast(m.tags, sa.Text).contains(str(cond.threshold)))
        ).scalar_one()
    )
    active = total > 0 and (hits > 0 if cond.operator == ConditionOperator.CONTAINS else hits == 0)
    return Signal(
        rule=rule,
        labels=alert_labels(rule, component=str(rule.component), metric=cond.metric_name),
        active=active,
        title=rule.name,
        description=(
            f"{hits} of {total} samples of {cond.metric_name} ({rule.component}, last "
            f"{cond.window_minutes} min) have tags containing the rule's text"
        ),
        details={"samples": total, "matching_samples": hits},
        value=float(hits),
    )


# --- event rules over etl.check_results ------------------------------------------------------


@dataclass(frozen=True)
class CheckRow:
    result_id: int
    ts: datetime
    source: str
    check_name: str
    target: str
    status: str
    severity: str | None
    message: str
    details: Mapping[str, Any]
    observed_value: float | None
    failing_rows: int | None


# Rows just below the cursor that are read again: those recorded (``ts``) this recently and at
# most this many ids back. A transaction that committed later than this after its rows' ``ts`` is
# still missed; check results are written in short transactions.
LATE_COMMIT_SECONDS = 600
LATE_COMMIT_ROWS = 10_000


def latest_check_rows(
    conn: Connection, after_result_id: int | None, now: datetime | None = None
) -> list[CheckRow]:
    """The newest row of each (source, check, target) among the rows after the cursor and the
    recent ones just below it (``LATE_COMMIT_SECONDS``, ``LATE_COMMIT_ROWS``), which a late
    commit may have added since the last evaluation.

    Judging a row again is harmless: an active row finds its alert open (nothing changes), an
    inactive one finds it resolved or resolves what is still open for that check. The one row
    that must not be judged again is one whose alert was resolved since (by hand: ``healthmon
    alerts resolve``): a re-read row still named in the details of an alert resolved within the
    window is left out."""
    c = check_results.c
    newer: list[Any] = []
    if after_result_id is not None:
        now = now or utcnow()
        cutoff = now - timedelta(seconds=LATE_COMMIT_SECONDS)
        reread_from = after_result_id - LATE_COMMIT_ROWS
        newer = [
            c.result_id > reread_from,
            sa.or_(c.result_id > after_result_id, c.ts > cutoff),
        ]
    latest = (
        sa.select(sa.func.max(c.result_id).label("rid"))
        .where(*newer)
        .group_by(c.source, c.check_name, c.target)
        .subquery()
    )
    query = sa.select(
        c.result_id,
        c.ts,
        c.source,
        c.check_name,
        c.target,
        c.status,
        c.severity,
        c.message,
        c.details,
        c.observed_value,
        c.failing_rows,
    ).join(latest, latest.c.rid == c.result_id)
    judged: set[int] = set()
    if after_result_id is not None:
        judged = _resolved_results(conn, now or utcnow())
    return [
        CheckRow(
            result_id=int(r.result_id),
            ts=r.ts,
            source=r.source,
            check_name=r.check_name,
            target=r.target,
            status=r.status,
            severity=r.severity,
            message=r.message or "",
            details=r.details or {},
            observed_value=r.observed_value,
            failing_rows=r.failing_rows,
        )
        for r in conn.execute(query.order_by(c.result_id))
        if after_result_id is None or r.result_id > after_result_id or r.result_id not in judged
    ]


def _resolved_results(conn: Connection, now: datetime) -> set[int]:
    """The check results named by the alerts resolved within the re-read window."""
    a = alerts.c
    cutoff = now - timedelta(seconds=LATE_COMMIT_SECONDS)
    out: set[int] = set()
    for (details,) in conn.execute(
        sa.select(a.details).where(a.resolved_at > cutoff, a.resolved_at.is_not(None))
    ):
        rid = (details or {}).get("result_id")
        if isinstance(rid, int):
            out.add(rid)
    return out


def _is_contract_break(row: CheckRow) -> bool:
    return bool(row.details.get("files_rejected"))


class EventContext:
    """What event rules need to know about the configuration: which checks are freshness checks,
    which health checks test connectivity."""

    def __init__(self, config: HealthConfiguration) -> None:
        self.freshness_checks = {
            (key, spec.name)
            for key, asset in config.quality.assets.items()
            for spec in asset.checks
            if isinstance(spec, FreshnessCheck)
        }
        # Connectivity checks of what the pipeline's data depends on: their own rule
        # (dependency_unreachable), whose alert mutes the asset alerts downstream.
        self.dependency_checks = {
            c.check_id
            for c in config.health_checks
            if c.check_type == HealthCheckType.CONNECTIVITY and c.component in DEPENDENCY_COMPONENTS
        }
        # The connectivity check whose alert a failure's dependency stands for (the first
        # enabled one of its component; for the database, one that reaches the warehouse).
        self.evidence_checks: dict[str, str] = {}
        for c in config.health_checks:
            if c.check_id not in self.dependency_checks or not c.enabled:
                continue
            if c.component == HealthComponent.DATABASE and (
                c.custom_parameters.get("target") not in _WAREHOUSE_TARGETS
            ):
                continue
            self.evidence_checks.setdefault(str(c.component), c.check_id)


def _selected(event: EventCondition, row: CheckRow) -> bool:
    return (not event.assets or row.target in event.assets) and (
        not event.checks or row.check_name in event.checks
    )


def event_signals(
    rules: Sequence[AlertRule], rows: Iterable[CheckRow], ctx: EventContext
) -> list[Signal]:
    """One signal per (event rule, check row it watches): active when the row is bad for it;
    plus the dependency alerts that checks which could not reach a dependency are evidence of."""
    rows = list(rows)
    out: list[Signal] = []
    for rule in rules:
        event = rule.event
        assert event is not None
        for row in rows:
            signal = _event_signal(rule, event, row, ctx)
            if signal is None:
                continue
            if rule.component is None or signal.labels.get("component") == str(rule.component):
                out.append(signal)
    return out + evidence_signals(rules, _check_evidence(rows, ctx), ctx)


@dataclass(frozen=True)
class Evidence:
    """Something that could not reach a dependency: ``component`` is the dependency's
    (``database``, ``s3_discovery``), ``seen_by`` names what saw it (a check on an asset, a run of
    a job), ``reason`` says what happened (check names, error classes: never a value)."""

    component: str
    seen_by: str
    reason: str


def _check_evidence(rows: Sequence[CheckRow], ctx: EventContext) -> list[Evidence]:
    """The evidence among check rows: the newest check that could not run because a dependency
    did not answer, per dependency, when it is newer than the dependency's connectivity check's
    latest result in ``rows`` (a newer result of that check is the check's own word)."""
    newest: dict[str, CheckRow] = {}
    spoken: dict[str, int] = {}  # check_id -> its latest result_id among the rows
    for row in rows:
        if row.source == str(RecordSource.HEALTH_CHECK):
            spoken[row.check_name] = max(spoken.get(row.check_name, 0), row.result_id)
            continue
        down = FAILURE_DEPENDENCY_COMPONENT.get(str(row.details.get("dependency")))
        if row.status != str(QualityStatus.ERROR) or down is None:
            continue
        if down not in newest or row.result_id > newest[down].result_id:
            newest[down] = row
    out = []
    for component, row in sorted(newest.items()):
        check_id = ctx.evidence_checks.get(component)
        if check_id is None or spoken.get(check_id, 0) > row.result_id:
            continue
        out.append(
            Evidence(
                component,
                f"check {row.check_name} on {row.target}",
                f"check {row.check_name} on {row.target} could not run: {component} unreachable",
            )
        )
    return out


def latest_health_results(engine: Engine, check_ids: Collection[str]) -> dict[str, float]:
    """When each of ``check_ids`` (health checks) last recorded a result that measured something,
    as POSIX times; a check without one is left out."""
    if not check_ids:
        return {}
    c = check_results.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(c.check_name, sa.func.max(c.ts))
            .where(
                c.source == str(RecordSource.HEALTH_CHECK),
                c.check_name.in_(sorted(check_ids)),
                c.details["skipped"].as_string().is_(None),
            )
            .group_by(c.check_name)
        ).all()
    return {str(name): as_utc(ts).timestamp() for name, ts in rows if ts is not None}


def evidence_signals(
    rules: Sequence[AlertRule], evidence: Iterable[Evidence], ctx: EventContext
) -> list[Signal]:
    """Active dependency-unreachable signals for ``evidence``, labelled as the dependency's
    connectivity check labels them (one alert identity, whichever raises it first); nothing for a
    dependency without a connectivity check."""
    out: list[Signal] = []
    for found in evidence:
        check_id = ctx.evidence_checks.get(found.component)
        if check_id is None:
            continue
        for rule in rules:
            event = rule.event
            if event is None or event.kind != EventKind.DEPENDENCY_UNREACHABLE:
                continue
            if (event.assets and found.component not in event.assets) or (
                event.checks and check_id not in event.checks
            ):
                continue
            if rule.component is not None and str(rule.component) != found.component:
                continue
            out.append(
                Signal(
                    rule=rule,
                    labels=alert_labels(
                        rule,
                        component=found.component,
                        check=check_id,
                        source=str(RecordSource.HEALTH_CHECK),
                        dependency=found.component,
                    ),
                    active=True,
                    title=f"{rule.name}: {found.component} unreachable (seen by {found.seen_by})",
                    description=f"{found.reason}; {check_id} has not run since",
                    details={"seen_by": found.seen_by},
                )
            )
    return out


def _event_signal(
    rule: AlertRule, event: EventCondition, row: CheckRow, ctx: EventContext
) -> Signal | None:
    kind = event.kind
    if kind in (EventKind.RUN_FAILURE, EventKind.INCIDENT):
        return None  # from the Dagster instance / the incident store (passed in, not check rows)
    if kind == EventKind.HEALTH_CHECK or kind == EventKind.DEPENDENCY_UNREACHABLE:
        if row.source != str(RecordSource.HEALTH_CHECK) or not _selected(event, row):
            return None
        if (kind == EventKind.DEPENDENCY_UNREACHABLE) != (row.check_name in ctx.dependency_checks):
            return None  # a dependency check has its own rule; other checks are health checks
        if row.details.get("skipped"):
            return None  # not monitored (e.g. S3 in local mode): no signal either way
        statuses = (
            {str(HealthStatus.CRITICAL)}
            if kind == EventKind.DEPENDENCY_UNREACHABLE
            else {str(s) for s in event.statuses}
        )
        labels = alert_labels(
            rule,
            component=row.target,
            check=row.check_name,
            source=row.source,
            **({"dependency": row.target} if kind == EventKind.DEPENDENCY_UNREACHABLE else {}),
        )
        severities = {str(s) for s in event.severities}
        active = row.status in statuses and (
            kind == EventKind.DEPENDENCY_UNREACHABLE or row.severity in severities
        )
        return Signal(
            rule=rule,
            labels=labels,
            active=active,
            title=f"{rule.name}: {row.check_name} on {row.target} is {row.status}",
            description=row.message,
            details={"check_status": row.status, "result_id": row.result_id},
            value=row.observed_value,
        )
    if row.source != str(RecordSource.ASSET_CHECK) or not _selected(event, row):
        return None
    is_freshness = (row.target, row.check_name) in ctx.freshness_checks
    is_break = _is_contract_break(row)
    if kind == EventKind.FRESHNESS and not is_freshness:
        return None
    if kind == EventKind.CHECK_FAILED and (is_freshness or is_break):
        return None  # their own rules say more
    if kind == EventKind.CONTRACT_BREAK:
        # Any later result of the contract check clears the break: the next file loaded.
        active = is_break
    else:
        severities = {str(s) for s in event.severities}
        bad_verdict = row.status in (str(QualityStatus.WARN), str(QualityStatus.FAILED))
        active = (bad_verdict and row.severity in severities) or (
            kind == EventKind.CHECK_FAILED
            and event.execution_errors
            and row.status == str(QualityStatus.ERROR)
        )
    status_word = {
        str(QualityStatus.WARN): "warned",
        str(QualityStatus.FAILED): "failed",
        str(QualityStatus.ERROR): "could not run",
    }.get(row.status, "passed")
    details: dict[str, Any] = {
        "check_status": row.status,
        "result_id": row.result_id,
        **({"failing_rows": row.failing_rows} if row.failing_rows is not None else {}),
        **{
            k: v
            for k, v in row.details.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        },
    }
    return Signal(
        rule=rule,
        labels=alert_labels(
            rule, component=component_for(row.target), asset=row.target, check=row.check_name
        ),
        active=active,
        title=f"{row.check_name} on {row.target} {status_word}",
        description=row.message,
        details=details,
        value=row.observed_value,
    )


def run_failure_signal(
    rule: AlertRule,
    job: str,
    run_id: str,
    failed: bool,
    reason: str,
    component: str | None = None,
    dependency: str | None = None,
) -> Signal:
    """A job's latest run, from the Dagster instance: active while it failed. ``dependency``: the
    component every failed step of the run found unavailable (``database``): a label, as on that
    dependency's own alert, so that alert mutes this one (the run failed because of it)."""
    return Signal(
        rule=rule,
        labels=alert_labels(rule, job=job, component=component, dependency=dependency),
        active=failed,
        title=f"{rule.name}: {job}" + (f" ({dependency} unreachable)" if dependency else ""),
        description=reason,
        details={"run_id": run_id},
    )


EXECUTION_FAILED = "failed"
"""The ``execution`` label of an alert on a check whose step failed before recording a result."""


def execution_failed_signal(
    rule: AlertRule, asset: str, check: str, run_id: str, failed: bool
) -> Signal | None:
    """A check from Dagster's own record of its latest execution: active when its step failed
    before the check recorded any result (Dagster's EXECUTION_FAILED), inactive once it ran again
    (a check only planned, whose step never ran, is not passed here: it says nothing);
    None for a rule that does not take execution errors or does not watch this check. An alert
    of its own (label ``execution=failed``): a check that recorded a result, ``error`` included,
    is judged by that result (:func:`event_signals`), and the two are never the same episode."""
    event = rule.event
    if event is None or event.kind != EventKind.CHECK_FAILED or not event.execution_errors:
        return None
    if (event.assets and asset not in event.assets) or (event.checks and check not in event.checks):
        return None
    component = component_for(asset)
    if rule.component is not None and component != str(rule.component):
        return None
    return Signal(
        rule=rule,
        labels=alert_labels(
            rule, component=component, asset=asset, check=check, execution=EXECUTION_FAILED
        ),
        active=failed,
        title=f"{check} on {asset} could not run" if failed else f"{check} on {asset} ran",
        description=(
            f"the step of {check} failed in run {run_id[:8]} before the check recorded a result"
            if failed
            else f"{check} ran in run {run_id[:8]}"
        ),
        details={"run_id": run_id},
    )


# The check label of alerts on the freshness daemon's verdict (an asset's Dagster FreshnessPolicy),
# apart from the alerts of the last-load freshness checks of the health store.
FRESHNESS_POLICY_CHECK = "freshness_policy"
_FRESHNESS_SEVERITY = {"WARN": CheckSeverity.WARN, "FAIL": CheckSeverity.ERROR}


def freshness_state_signal(rule: AlertRule, asset: str, state: str) -> Signal | None:
    """The freshness daemon's state of ``asset`` (PASS, WARN or FAIL) for a freshness rule:
    active while WARN or FAIL is one of the rule's severities (WARN and ERROR), inactive on PASS;
    None for an asset the rule does not watch or a state that says nothing (UNKNOWN)."""
    event = rule.event
    if event is None or state not in (*_FRESHNESS_SEVERITY, "PASS"):
        return None
    if (event.assets and asset not in event.assets) or (
        event.checks and FRESHNESS_POLICY_CHECK not in event.checks
    ):
        return None
    component = component_for(asset)
    if rule.component is not None and component != str(rule.component):
        return None
    severity = _FRESHNESS_SEVERITY.get(state)
    word = {"WARN": "is past its warn window", "FAIL": "is past its fail window"}
    return Signal(
        rule=rule,
        labels=alert_labels(rule, component=component, asset=asset, check=FRESHNESS_POLICY_CHECK),
        active=severity is not None and severity in event.severities,
        title=f"{asset} {word.get(state, 'is fresh')} (FreshnessPolicy)",
        description=(
            f"Dagster's freshness daemon judges {asset} {state} against its FreshnessPolicy "
            "(freshness: in healthmon.yaml)"
        ),
        details={"freshness_state": state},
    )


def rules_of(rules: Sequence[AlertRule], kind: EventKind) -> list[AlertRule]:
    return [r for r in rules if r.event is not None and r.event.kind == kind]
