"""The one place that reads the environment.

Nothing here runs at import time: call :func:`get_settings` when a value is needed, so tests can set
variables with ``monkeypatch.setenv`` and no module has to be reloaded.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url


@dataclass(frozen=True)
class Settings:
    """Resolved settings. Every field has a working default for the embedded mode."""

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
    database_url = e.get("HEALTHMON_DATABASE_URL") or f"sqlite:///{home / 'healthmon.db'}"
    return Settings(
        home=home,
        database_url=database_url,
        health_database_url=e.get("HEALTHMON_HEALTH_DATABASE_URL") or database_url,
        config_path=Path(e["HEALTHMON_CONFIG"])
        if e.get("HEALTHMON_CONFIG")
        else default_config_path(),
        s3_bucket=e.get("HEALTHMON_S3_BUCKET") or None,
        s3_prefix=e.get("HEALTHMON_S3_PREFIX", ""),
        aws_endpoint_url=e.get("AWS_ENDPOINT_URL") or None,
        aws_region=e.get("AWS_REGION") or e.get("AWS_DEFAULT_REGION") or "us-east-1",
        dagster_ui_url=(e.get("HEALTHMON_DAGSTER_UI_URL") or "").rstrip("/") or None,
    )


def redact_url(url: str) -> str:
    """A database URL safe to print: the password replaced by ``***``."""

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown as its scheme only
        return url.split(":", 1)[0] + "://<unparsable>"
