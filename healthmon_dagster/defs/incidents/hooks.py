"""The failure hook that opens incidents: every asset and asset check of the code location carries
one (``definitions.py`` applies :func:`with_incident_hooks`), so it fires for a failed step of
``patients_etl_job``, of a ``dagster asset materialize`` and of any check step, whichever job runs it.

Hooks are attached to the ``AssetsDefinition`` itself (Dagster gathers a step's hooks from its assets
definition, its node and its job: ``JobDefinition.get_all_hooks_for_handle``), one hook per assets
definition that knows its asset keys. The hook fires once a step has failed for good (not on a
step retry), classifies the exception (the error class the ETL step attached to its ``Failure``,
else :func:`healthmon_dagster.etl.failures.classify`) and opens or joins the incident of its root
key. It never raises: a hook that cannot reach the health store logs why, and the run-failure
sensor reports the run's failure once the store is back.

The incident fast path: when the hook OPENS an incident (not when the failure joins an open one),
it announces it at once (:func:`healthmon_dagster.incidents.announce.announce`: that incident's
signals judged by the alert engine) and sends that alert's notifications from the run, as the
alert fast path does (``defs/alerting/hooks.py``: at most ``FAST_PATH_SECONDS``, each request
``FAST_PATH_REQUEST_TIMEOUT``), instead of waiting for the alert_evaluation_sensor's tick (30 s),
the alert_dispatch_sensor's (15 s) and a run launch. Grouping still applies: a group that waits
(``warning`` incidents: ``group_wait_seconds``) is left to the dispatch job. Any error is a
warning in the run's log; the sensors remain the backstop and find done what was done (the alert
and its outbox rows are unique by index).
"""

import time
from collections.abc import Iterator, Sequence

import dagster as dg
from sqlalchemy.engine import Engine

from healthmon_dagster.defs.alerting.hooks import FAST_PATH_SECONDS, _fast_config
from healthmon_dagster.defs.resources import CONFIG_RESOURCE, HealthmonConfigResource
from healthmon_dagster.enums import IncidentSource
from healthmon_dagster.etl.failures import Classification, classify, from_step_metadata
from healthmon_dagster.incidents.announce import announce
from healthmon_dagster.incidents.detect import step_failure
from healthmon_dagster.incidents.records import Actor, open_or_absorb
from healthmon_dagster.incidents.rootkey import root_key_for
from healthmon_dagster.notify.dispatch import Dispatcher
from healthmon_dagster.settings import get_settings
from healthmon_dagster.store.errors import error_text
from healthmon_dagster.store.metrics import utcnow

HOOK_PREFIX = "incident_hook__"
CHECK_FAILED = Classification("check_failed", False, "blocking_check_failed")
"""A blocking check that failed with ERROR severity: the data is wrong, running again will not help."""


def _exceptions(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__


def classified(exc: BaseException | None) -> tuple[Classification, str]:
    """What the failure is and a value-free line about it. The ETL steps attach their
    classification to the ``Failure`` they raise (the driver's exception is not chained to it,
    as its text may quote a value), so that comes first; any other exception is classified here."""
    if exc is None:
        return Classification("unknown", False, "no_exception"), ""
    for e in _exceptions(exc):
        if not isinstance(e, dg.Failure):
            continue
        found = from_step_metadata({k: v.value for k, v in e.metadata.items()}, "step_metadata")
        if found is not None:
            # Our own descriptions: built from error classes, keys and error_text, never values.
            lines = (e.description or "").strip().splitlines()
            return found, lines[0][:500] if lines else ""
    if any(t.__name__ == "DagsterAssetCheckFailedError" for t in type(exc).__mro__):
        # Dagster's error for a blocking check that failed (not exported by dagster).
        return CHECK_FAILED, error_text(exc)
    return classify(exc), error_text(exc)


def report_step_failure(
    context: dg.HookContext, asset_keys: Sequence[str], is_check: bool
) -> int | None:
    """Open or join the incident of the failed step; its id, or None when it could not be
    recorded (logged, never raised: a hook that raises would hide the step's own failure)."""
    try:
        found, text = classified(context.op_exception)
        failure = step_failure(
            job_name=context.job_name,
            run_id=context.run_id,
            step_key=context.step_key,
            asset_keys=asset_keys,
            found=found,
            occurred_at=utcnow(),
            error=text,
            is_check=is_check,
            s3_bucket=get_settings().s3_bucket,
        )
        engine = context.resources.warehouse.health_engine()
        opened = open_or_absorb(
            engine,
            root_key_for(engine, failure),
            failure,
            Actor(f"hook:{context.job_name}", IncidentSource.HOOK),
        )
    except Exception as exc:  # noqa: BLE001 (a hook must never raise)
        context.log.error(
            f"the failure of {context.step_key} could not be recorded as an incident: "
            f"{error_text(exc)}; the run-failure sensor reports it when the health store answers"
        )
        return None
    verb = "opened" if opened.created else "joined"
    context.log.warning(
        f"incident {opened.incident_id} {verb}: {failure.title} (rule {found.rule})"
    )
    if opened.created:
        notify_opened(context, engine, opened.incident_id)
    return opened.incident_id


def notify_opened(context: dg.HookContext, engine: Engine, incident_id: int) -> None:
    """Announce the incident just opened and send its notifications from the run (the incident
    fast path); log, never raise."""
    started = time.monotonic()
    try:
        config_resource: HealthmonConfigResource = getattr(context.resources, CONFIG_RESOURCE)
        config = config_resource.load()
        report = announce(engine, config, incident_id, actor=f"run {context.run_id[:8]}")
        alert_ids = sorted({*report.fired, *report.unsuppressed})
        summary = "nothing to send"
        if alert_ids:
            with Dispatcher(engine, _fast_config(config), alert_ids=alert_ids) as dispatcher:
                summary = dispatcher.drain(FAST_PATH_SECONDS).summary().replace(chr(10), "; ")
    except Exception as exc:  # noqa: BLE001 (a hook must never raise)
        context.log.warning(
            f"incident {incident_id} fast path gave up ({error_text(exc)}); "
            "alert_evaluation_sensor and alert_dispatch_sensor will announce it"
        )
        return
    context.log.info(
        f"incident {incident_id} fast path ({time.monotonic() - started:.2f} s): "
        f"{report.summary()}; sent: {summary}"
    )


def incident_hook(node_name: str, asset_keys: Sequence[str], is_check: bool) -> dg.HookDefinition:
    """The failure hook of one assets (or checks) definition, which knows its asset keys."""
    keys = tuple(sorted(asset_keys))

    @dg.failure_hook(
        name=f"{HOOK_PREFIX}{node_name}", required_resource_keys={"warehouse", CONFIG_RESOURCE}
    )
    def _open_incident(context: dg.HookContext) -> None:
        report_step_failure(context, keys, is_check)

    return _open_incident


def _hooked(assets_def: dg.AssetsDefinition) -> dg.AssetsDefinition:
    if not assets_def.is_executable:
        return assets_def
    is_check = isinstance(assets_def, dg.AssetChecksDefinition)
    if is_check:
        keys = [k.asset_key.to_user_string() for k in assets_def.check_keys]
    else:
        keys = [k.to_user_string() for k in assets_def.keys]
    return assets_def.with_hooks({incident_hook(assets_def.node_def.name, keys, is_check)})


def with_incident_hooks(defs: dg.Definitions) -> dg.Definitions:
    """``defs`` with the incident hook on every executable asset and asset check."""
    return dg.Definitions(
        assets=[_hooked(a) if isinstance(a, dg.AssetsDefinition) else a for a in defs.assets or []],
        asset_checks=[_hooked(c) for c in defs.asset_checks or []],
        schedules=defs.schedules,
        sensors=defs.sensors,
        jobs=defs.jobs,
        resources=defs.resources,
        executor=defs.executor,
        loggers=defs.loggers,
        metadata=defs.metadata,
        component_tree=defs.component_tree,
    )
