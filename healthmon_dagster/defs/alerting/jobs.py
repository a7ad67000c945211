"""The dispatch job: one op drains the notification outbox (``notify/dispatch.py``) and fails
when a delivery failed for good, so a channel that stopped accepting shows as a failed run."""

from typing import Any

import dagster as dg

from healthmon_dagster.alerting.lineage import Lineage
from healthmon_dagster.defs.resources import HealthmonConfigResource, WarehouseResource
from healthmon_dagster.notify.dispatch import Dispatcher

DRAIN_SECONDS = 50.0  # one run sends what is due within this; the sensor starts the next


@dg.op(description="Sends what the alert engine queued in the outbox, per channel.")
def dispatch_notifications(
    context: dg.OpExecutionContext,
    warehouse: WarehouseResource,
    healthmon_config: HealthmonConfigResource,
) -> dg.Output[Any]:
    config = healthmon_config.load()
    try:  # the code location's asset graph: what a root cause's notification says it mutes
        lineage = Lineage.of_repository(context.repository_def)
    except Exception:  # noqa: BLE001 - no repository (a job run on its own): the bundled one
        lineage = Lineage.bundled()
    with Dispatcher(warehouse.health_engine(), config, lineage=lineage) as dispatcher:
        report = dispatcher.drain(DRAIN_SECONDS)
    summary = report.summary()
    context.log.info(summary)
    metadata: dict[str, Any] = {"sent": report.sent, "failed": report.failed}
    for name, channel in sorted(report.channels.items()):
        metadata[f"{name}__sent"] = channel.sent
        metadata[f"{name}__failed"] = channel.failed
        metadata[f"{name}__retrying"] = channel.retrying
    if not report.ok:
        raise dg.Failure(
            description=f"{report.failed} notification(s) could not be delivered:\n{summary}",
            metadata=metadata,
            allow_retries=False,  # the outbox retries by itself; a failed row is final
        )
    return dg.Output(None, metadata=metadata)


@dg.job(
    description="Drains the notification outbox (started by alert_dispatch_sensor).",
    tags={"healthmon/kind": "alert_dispatch"},
)
def alert_dispatch_job() -> None:
    dispatch_notifications()


JOBS = [alert_dispatch_job]
