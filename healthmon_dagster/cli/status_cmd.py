"""``healthmon status``: the system status (overall, per component, per asset), the open incidents
with MTTR/MTBF of incidents per component, self-healing (re-runs in the window, open circuit
breakers), and the landing files that are stuck, as a table or JSON."""

import json
import sys
from datetime import timedelta
from typing import Any

import click
import dagster as dg
from sqlalchemy import exc as sa_exc

from healthmon_dagster.cli.store_access import read_store
from healthmon_dagster.config import ConfigError
from healthmon_dagster.enums import HealthStatus
from healthmon_dagster.etl.attempts import StuckFile, stuck_files
from healthmon_dagster.formatting import InvalidWindow, human_duration, parse_duration
from healthmon_dagster.health.status import ComponentStatus, SystemStatus, get_system_status
from healthmon_dagster.incidents.records import Incident, list_incidents
from healthmon_dagster.incidents.report import ComponentReliability, reliability_by_component
from healthmon_dagster.incidents.selfheal import SelfHealSummary
from healthmon_dagster.incidents.selfheal import summary as self_heal_summary
from healthmon_dagster.settings import get_settings, redact_url
from healthmon_dagster.store.db import DatabaseUnavailable, describe_unavailable, open_for_reading
from healthmon_dagster.store.metrics import utcnow

EXIT_CODES = {
    HealthStatus.HEALTHY: 0,
    HealthStatus.UNKNOWN: 1,
    HealthStatus.WARNING: 1,
    HealthStatus.CRITICAL: 2,
}


def _ms(value: float | None) -> str:
    return "-" if value is None else human_duration(value / 1000.0)


def _row(c: ComponentStatus) -> list[str]:
    up = c.uptime
    return [
        c.component,
        c.status.value.upper() if c.monitored else "NOT MONITORED",
        f"{human_duration(c.last_check_age_seconds)} ago"
        if c.last_check_age_seconds is not None
        else "-",
        f"{c.response_time_ms:.0f}ms" if c.response_time_ms is not None else "-",
        f"{up.uptime_percentage:.2f}%" if up and up.uptime_percentage is not None else "-",
        str(up.failures) if up else "-",
        _ms(up.mean_time_between_failures_ms) if up else "-",
        _ms(up.mean_time_to_recovery_ms) if up else "-",
    ]


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _asset_health() -> tuple[list[Any] | None, str | None]:
    """The per-asset rollup from the Dagster instance at DAGSTER_HOME (unset: the demo's,
    ``$HEALTHMON_HOME/dagster``), or why there is none."""
    home = get_settings().dagster_home
    if not home.is_dir():
        return None, (
            f"no Dagster instance: {home} does not exist; run `healthmon demo`, or set "
            "DAGSTER_HOME to your instance's folder"
        )
    # Imported here: the health domain's Dagster adapters import every health-check
    # implementation (~1 s), which only this part of `healthmon status` needs.
    from healthmon_dagster.defs.health.instance_facts import get_asset_health

    try:
        instance = dg.DagsterInstance.from_config(str(home.resolve()))
    except Exception as exc:  # not a usable instance folder (a broken dagster.yaml)
        return None, f"no Dagster instance at {home}: {str(exc).splitlines()[0]}"
    try:
        # Imported here: importing the code location builds it from healthmon.yaml, only needed
        # for the per-asset rollup (and a broken file must not stop the command from starting).
        from healthmon_dagster.definitions import defs

        return get_asset_health(instance, defs), None
    except (ConfigError, DatabaseUnavailable) as exc:  # the code location does not load
        return None, f"the code location does not load: {str(exc).splitlines()[0]}"
    finally:
        instance.dispose()


def _stuck_files() -> tuple[list[StuckFile] | None, str | None]:
    """The stuck landing files, from the warehouse (``etl.file_attempts`` lives beside
    ``etl.files``), or why they could not be read: the rest of the status still shows."""
    url = get_settings().database_url
    try:
        engine = open_for_reading(url)
    except DatabaseUnavailable as exc:
        return None, str(exc)
    try:
        return stuck_files(engine), None
    except sa_exc.DBAPIError as exc:
        return None, str(describe_unavailable(redact_url(url), exc, ""))
    finally:
        engine.dispose()


MTBF_LEGEND = (
    "MTBF: mean operating time between failures, (window - downtime) / failures, for the health "
    "checks and the incidents alike; MTTR: mean time to recovery."
)
IncidentFacts = tuple[list[Incident], list[ComponentReliability]]


def _incidents(window: timedelta) -> tuple[IncidentFacts | None, str | None]:
    """The open incidents and MTTR/MTBF of incidents per component over ``window``, from the
    health store, or why they could not be read: the rest of the status still shows."""
    url = get_settings().health_database_url
    try:
        engine = open_for_reading(url)
    except DatabaseUnavailable as exc:
        return None, str(exc)
    try:
        end = utcnow()
        return (list_incidents(engine), reliability_by_component(engine, end - window, end)), None
    except sa_exc.DBAPIError as exc:
        return None, str(describe_unavailable(redact_url(url), exc, ""))
    finally:
        engine.dispose()


def _self_healing(window: timedelta) -> tuple[SelfHealSummary | None, str | None]:
    """Self-healing re-runs in ``window`` and open circuit breakers, or why they are unknown."""
    url = get_settings().health_database_url
    try:
        engine = open_for_reading(url)
    except DatabaseUnavailable as exc:
        return None, str(exc)
    try:
        return self_heal_summary(engine, window, utcnow()), None
    except sa_exc.DBAPIError as exc:
        return None, str(describe_unavailable(redact_url(url), exc, ""))
    finally:
        engine.dispose()


def _print_self_healing(found: SelfHealSummary | None, note: str | None) -> None:
    if found is None:
        click.echo(f"Self-healing: unknown: {note}")
        return
    click.echo(
        f"Self-healing: {found.reruns_in_window} re-run(s) in the window "
        f"({found.failed_in_window} failed), {found.in_flight} in flight; "
        + (
            f"{len(found.open_breakers)} circuit breaker(s) OPEN (no re-run until the asset "
            "materializes again): "
            + ", ".join(f"{a} since {t:%Y-%m-%d %H:%M} UTC" for a, t in found.open_breakers)
            if found.open_breakers
            else "no circuit breaker open"
        )
    )


def _print_incidents(facts: IncidentFacts | None, note: str | None) -> None:
    if facts is None:
        click.echo(f"Incidents: unknown: {note}")
        return
    open_ones, by_component = facts
    click.echo(f"Incidents: {len(open_ones)} open" + (":" if open_ones else ""))
    if open_ones:
        rows = [
            [
                str(i.incident_id),
                str(i.status),
                str(i.severity),
                i.component,
                f"{i.start_time:%Y-%m-%d %H:%M} UTC",
                i.title,
            ]
            for i in open_ones
        ]
        click.echo(_table(["ID", "STATUS", "SEVERITY", "COMPONENT", "STARTED", "TITLE"], rows))
    if by_component:
        click.echo("")
        rows = [
            [
                r.component,
                str(r.incidents),
                str(r.open),
                human_duration(r.mttr_seconds),
                human_duration(r.mtbf_seconds),
            ]
            for r in by_component
        ]
        click.echo(_table(["COMPONENT", "INCIDENTS", "OPEN", "MTTR", "MTBF"], rows))
        click.echo(MTBF_LEGEND)


def _print_stuck(stuck: list[StuckFile] | None, note: str | None) -> None:
    if stuck is None:
        click.echo(f"Landing: stuck files unknown: {note}")
        return
    if not stuck:
        click.echo("Landing: no file stuck")
        return
    click.echo(
        f"Landing: {len(stuck)} file(s) STUCK, not tried again until they land with other "
        "content (fix the cause, then land the file again):"
    )
    rows = [
        [
            s.file_key,
            s.error_class or "unclassified",
            str(s.attempts),
            f"{s.stuck_since:%Y-%m-%d %H:%M} UTC" if s.stuck_since else "-",
        ]
        for s in stuck
    ]
    click.echo(_table(["FILE", "LAST ERROR CLASS", "ATTEMPTS", "STUCK SINCE"], rows))


def _stuck_json(stuck: list[StuckFile] | None) -> list[dict[str, Any]] | None:
    if stuck is None:
        return None
    return [
        {
            "file_key": s.file_key,
            "fingerprint": s.fingerprint,
            "attempts": s.attempts,
            "error_class": s.error_class,
            "first_requested_at": s.first_requested_at.isoformat(),
            "stuck_since": s.stuck_since.isoformat() if s.stuck_since else None,
        }
        for s in stuck
    ]


def _print_text(status: SystemStatus, assets: list[Any] | None, note: str | None) -> None:
    up = status.uptime
    window = human_duration((status.window_end - status.window_start).total_seconds())
    click.echo(f"Overall: {status.overall_health.value.upper()}  ({status.description})")
    uptime = f"{up.uptime_percentage:.2f}%" if up.uptime_percentage is not None else "-"
    click.echo(
        f"Window {window}: uptime {uptime}, {up.failures} failure(s), "
        f"MTBF {_ms(up.mean_time_between_failures_ms)}, MTTR {_ms(up.mean_time_to_recovery_ms)}, "
        f"average response {_ms(status.average_response_time)}"
    )
    click.echo(f"Evaluated at {status.last_updated:%Y-%m-%d %H:%M:%S} UTC\n")
    header = ["COMPONENT", "STATUS", "LAST CHECK", "RESPONSE", "UPTIME", "FAILS", "MTBF", "MTTR"]
    click.echo(_table(header, [_row(c) for c in status.components]))
    problems = [
        c
        for c in status.components
        if (c.monitored and c.status != HealthStatus.HEALTHY) or any(k.skipped for k in c.checks)
    ]
    for c in problems:
        click.echo(f"  {c.component}: {c.description}")
    click.echo("")
    if assets is None:
        click.echo(f"Assets: {note}")
        return
    rows = [[a.asset_key, a.status.value.upper(), a.reason] for a in assets]
    click.echo(_table(["ASSET", "HEALTH", "REASON"], rows) if rows else "Assets: none defined")


@click.command("status")
@click.option(
    "--window",
    default="24h",
    show_default=True,
    help="How far back uptime, MTBF (mean operating time between failures: (window - downtime) / "
    "failures), MTTR (mean time to recovery) and averages look (e.g. 1h, 24h, 7d).",
)
@click.option(
    "--stale-after",
    default="15m",
    show_default=True,
    help="A check whose latest result is older than this counts as UNKNOWN.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option(
    "--assets/--no-assets",
    default=True,
    show_default=True,
    help="Include the per-asset rollup from the Dagster instance at DAGSTER_HOME "
    "(default: $HEALTHMON_HOME/dagster, the demo's).",
)
@click.option(
    "--exit-code",
    is_flag=True,
    help="Exit 0 when healthy, 1 on warning/unknown, a stuck landing file or an open circuit "
    "breaker, 2 on critical.",
)
def status(window: str, stale_after: str, as_json: bool, assets: bool, exit_code: bool) -> None:
    """Show the system status: overall, per component (from the health store), per asset, the open
    incidents with MTTR/MTBF of incidents per component over the window, and the landing files that
    are stuck (from the warehouse)."""
    try:
        window_td = parse_duration(window, "--window")
        stale_td = parse_duration(stale_after, "--stale-after")
    except InvalidWindow as exc:
        raise click.BadParameter(str(exc)) from exc
    url = get_settings().health_database_url
    system = read_store(
        url, lambda engine: get_system_status(engine, window=window_td, stale_after=stale_td)
    )
    asset_rows, note = _asset_health() if assets else (None, "not requested (--no-assets)")
    stuck, stuck_note = _stuck_files()
    incident_facts, incidents_note = _incidents(window_td)
    healing, healing_note = _self_healing(window_td)
    if as_json:
        data = system.to_dict()
        data["assets"] = [a.to_dict() for a in asset_rows] if asset_rows is not None else None
        data["assets_note"] = note
        data["stuck_files"] = _stuck_json(stuck)
        data["stuck_files_note"] = stuck_note
        data["incidents"] = (
            {
                "open": [i.to_dict() for i in incident_facts[0]],
                "by_component": [r.to_dict() for r in incident_facts[1]],
            }
            if incident_facts is not None
            else None
        )
        data["incidents_note"] = incidents_note
        data["self_healing"] = healing.to_dict() if healing is not None else None
        data["self_healing_note"] = healing_note
        click.echo(json.dumps(data, indent=2))
    else:
        _print_text(system, asset_rows, note)
        click.echo("")
        _print_incidents(incident_facts, incidents_note)
        click.echo("")
        _print_self_healing(healing, healing_note)
        click.echo("")
        _print_stuck(stuck, stuck_note)
    if exit_code:
        # A stuck file, or an open circuit breaker, waits for a person: at least a warning.
        waits = bool(stuck) or bool(healing and healing.open_breakers)
        sys.exit(max(EXIT_CODES[system.overall_health], 1 if waits else 0))
