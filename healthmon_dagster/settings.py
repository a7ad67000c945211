"""The one place that reads the environment.

Nothing here runs at import time: call :func:`get_settings` when a value is needed, so tests can set
variables with ``monkeypatch.setenv`` and no module has to be reloaded.

Databases: the warehouse is ``$HEALTHMON_DATABASE_URL``, by default the SQLite file
``$HEALTHMON_HOME/healthmon.db``. The health store is ``$HEALTHMON_HEALTH_DATABASE_URL``; unset, it
is the warehouse's database when ``HEALTHMON_DATABASE_URL`` is set (one Postgres database, as
before), and in the embedded default a SQLite file of its own, ``$HEALTHMON_HOME/health.db``: a
load that holds the warehouse's write lock for minutes must not stop the monitor from recording
(SQLite locks a whole database file), and a monitor that lives only inside what it monitors cannot
report it down.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

DATABASE_URL_VARIABLE = "HEALTHMON_DATABASE_URL"
HEALTH_DATABASE_URL_VARIABLE = "HEALTHMON_HEALTH_DATABASE_URL"
WAREHOUSE_FILE = "healthmon.db"
"""The embedded warehouse under ``$HEALTHMON_HOME`` (schemas as ``healthmon.<schema>.db`` beside it)."""
HEALTH_STORE_FILE = "health.db"
"""The embedded health store under ``$HEALTHMON_HOME`` (``health.<schema>.db`` beside it)."""


@dataclass(frozen=True)
class Settings:
    """Resolved settings. Every field has a working default for the embedded mode.

    ``database_url_origin`` and ``health_database_url_origin`` say where each URL came from (the
    variable, or the default), for messages that tell the user what to change.
    """

    home: Path
    database_url: str
    health_database_url: str
    config_path: Path | None
    s3_bucket: str | None
    s3_prefix: str
    aws_endpoint_url: str | None
    aws_region: str
    # Base URL of the Dagster UI (``http://dagster.example.org:3000``) for links in notifications;
    # None: notifications carry no links.
    dagster_ui_url: str | None = None
    database_url_origin: str = DATABASE_URL_VARIABLE
    health_database_url_origin: str = HEALTH_DATABASE_URL_VARIABLE

    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or self.home / "dagster")


def _project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def default_config_path() -> Path | None:
    """``healthmon.yaml`` at the project root; None (built-in defaults) when installed elsewhere."""
    root_file = _project_root() / "healthmon.yaml"
    return root_file if root_file.exists() else None


def get_settings(env: dict[str, str] | None = None) -> Settings:
    """Read settings from ``env`` (default: the process environment)."""
    e = os.environ if env is None else env
    home = Path(e.get("HEALTHMON_HOME") or ".healthmon").expanduser().resolve()
    default_origin = "the default under HEALTHMON_HOME"
    warehouse = e.get(DATABASE_URL_VARIABLE)
    database_url, database_origin = (
        (warehouse, DATABASE_URL_VARIABLE)
        if warehouse
        else (f"sqlite:///{home / WAREHOUSE_FILE}", f"{default_origin} ({DATABASE_URL_VARIABLE})")
    )
    health = e.get(HEALTH_DATABASE_URL_VARIABLE)
    if health:
        health_url, health_origin = health, HEALTH_DATABASE_URL_VARIABLE
    elif warehouse:
        health_url, health_origin = warehouse, DATABASE_URL_VARIABLE
    else:
        health_url = f"sqlite:///{home / HEALTH_STORE_FILE}"
        health_origin = f"{default_origin} ({HEALTH_DATABASE_URL_VARIABLE})"
    return Settings(
        home=home,
        database_url=database_url,
        health_database_url=health_url,
        config_path=Path(e["HEALTHMON_CONFIG"])
        if e.get("HEALTHMON_CONFIG")
        else default_config_path(),
        s3_bucket=e.get("HEALTHMON_S3_BUCKET") or None,
        s3_prefix=e.get("HEALTHMON_S3_PREFIX", ""),
        aws_endpoint_url=e.get("AWS_ENDPOINT_URL") or None,
        aws_region=e.get("AWS_REGION") or e.get("AWS_DEFAULT_REGION") or "us-east-1",
        dagster_ui_url=(e.get("HEALTHMON_DAGSTER_UI_URL") or "").rstrip("/") or None,
        database_url_origin=database_origin,
        health_database_url_origin=health_origin,
    )


def url_origin(url: str, env: dict[str, str] | None = None) -> str:
    """Where ``url`` was configured: the variable (or default) that holds it, for a message that
    says what to change; a URL handed over in code (a resource's field) is "the database URL"."""
    s = get_settings(env)
    if url == s.database_url:
        return s.database_url_origin
    if url == s.health_database_url:
        return s.health_database_url_origin
    return "the database URL"


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pwd|sslpassword)=)[^&#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """A database URL safe to print: the password (also a ``password=`` query value) replaced by
    ``***``.

    What does not parse is never echoed beyond its scheme: a libpq ``host=... password=...`` string
    shows as ``<not a URL>``, and ``postgresql://user:secret/db`` (no ``@``: the password reads as
    a port) as ``postgresql://<unparsable>``.
    """
    try:
        parsed = make_url(url)
    except Exception:
        scheme, sep, _ = url.partition("://")
        return f"{scheme}://<unparsable>" if sep and _SCHEME.match(scheme) else "<not a URL>"
    return _QUERY_PASSWORD.sub(r"\1***", parsed.render_as_string(hide_password=True))
