"""The alert fast path as Dagster hooks: at the end of every step of the ETL, quality and health
jobs, the check results the run recorded are judged (``alerting/fastpath.py``) and the
notifications of what fired or resolved are sent (``notify/dispatch.py``) in the run's own
process, so a failed check reaches Slack within seconds rather than after the next
alert_evaluation_sensor tick (30 s) and alert_dispatch_sensor tick (15 s) plus a run launch.

It never fails or holds up the step for long: it gives up sending after ``FAST_PATH_SECONDS``
(each request waits at most ``FAST_PATH_REQUEST_TIMEOUT``), and any error is logged as a warning.
A request that times out here costs no attempt: its rows are left to the dispatch job (not before
``FAST_PATH_SECONDS`` from now), which waits longer and, the receiver having perhaps taken the
message, sends it "in doubt" (Slack looks for it first). The sensors stay the backstop: what the
fast path did not finish, they do, and what it did they find done (alerts and outbox rows are
unique by index; a sent row is never claimed again).
"""

import time

import dagster as dg

from healthmon_dagster.alerting.fastpath import evaluate_run, to_send
from healthmon_dagster.alerting.lineage import Lineage
from healthmon_dagster.config.models import HealthConfiguration
from healthmon_dagster.defs.resources import CONFIG_RESOURCE, HealthmonConfigResource
from healthmon_dagster.incidents.announce import with_incident_rules
from healthmon_dagster.notify.dispatch import Dispatcher, DispatchReport
from healthmon_dagster.store.errors import error_text

FAST_PATH_SECONDS = 3.0  # the most the hook spends sending after a step
FAST_PATH_REQUEST_TIMEOUT = 2.0  # seconds one request may take here (the dispatch job waits longer)
RESOURCES = {"warehouse", CONFIG_RESOURCE}


def _fast_config(config: HealthConfiguration) -> HealthConfiguration:
    dispatch = config.alerting.dispatch
    timeout = min(dispatch.request_timeout_seconds, FAST_PATH_REQUEST_TIMEOUT)
    alerting = config.alerting.model_copy(
        update={"dispatch": dispatch.model_copy(update={"request_timeout_seconds": timeout})}
    )
    return config.model_copy(update={"alerting": alerting})


def run_lineage(context: dg.HookContext) -> Lineage:
    """The asset graph of the run's code location (what lineage inhibition and a root cause's
    notification use), as the sensors and the dispatch job have it; the bundled pipeline's when
    the run has no repository. A hook's context has no public accessor for it: it is read from
    the step's execution context."""
    try:
        repository = context._step_execution_context.repository_def  # noqa: SLF001
    except Exception:  # noqa: BLE001 - no repository (a job executed on its own)
        return Lineage.bundled()
    return Lineage.of_repository(repository)


def alert_fast_path(context: dg.HookContext) -> None:
    """Evaluate this run's new check results and send what fired; log, never raise."""
    started = time.monotonic()
    try:
        config_resource: HealthmonConfigResource = getattr(context.resources, CONFIG_RESOURCE)
        # The incident rules too, as the evaluation sensor has them: one rule set for both paths.
        config = with_incident_rules(config_resource.load())
        engine = context.resources.warehouse.health_engine()
        lineage = run_lineage(context)
        report = evaluate_run(engine, config, context.run_id, lineage)
        alert_ids = to_send(report) if report is not None else []
        sent = DispatchReport()
        if alert_ids:
            with Dispatcher(
                engine,
                _fast_config(config),
                alert_ids=alert_ids,
                defer_timeouts=FAST_PATH_SECONDS,
                lineage=lineage,
            ) as dispatcher:
                sent = dispatcher.drain(FAST_PATH_SECONDS)
    except Exception as exc:  # noqa: BLE001 - an alert problem must never fail the step
        context.log.warning(
            f"alert fast path after {context.step_key} gave up ({error_text(exc)}); "
            "alert_evaluation_sensor and alert_dispatch_sensor will handle these results"
        )
        return
    if report is None or not (alert_ids or report.notifications):
        return
    context.log.info(
        f"alert fast path after {context.step_key} ({time.monotonic() - started:.2f} s): "
        f"{report.summary()}; sent: {sent.summary().replace(chr(10), '; ')}"
    )


@dg.success_hook(required_resource_keys=RESOURCES)
def alert_fast_path_on_success(context: dg.HookContext) -> None:
    """Judges the check results the step recorded and sends what fired (the alert fast path)."""
    alert_fast_path(context)


@dg.failure_hook(required_resource_keys=RESOURCES)
def alert_fast_path_on_failure(context: dg.HookContext) -> None:
    """Judges the check results the failed step recorded and sends what fired."""
    alert_fast_path(context)


ALERT_HOOKS = {alert_fast_path_on_success, alert_fast_path_on_failure}
