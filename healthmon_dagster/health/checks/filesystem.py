"""Landing folder check: the folder exists (or can be created), is writable, has free space, and
files are not piling up unloaded.

Parameters: ``path`` (default ``$HEALTHMON_HOME/landing``), ``free_space_warning_mb`` (1024),
``free_space_critical_mb`` (100), ``max_pending_files`` and ``max_oldest_pending_minutes`` (warn
when exceeded; a pending file is one listed in landing but not yet loaded according to ``etl.files``).
With an S3 landing and no ``path``, only the pending-file figures apply (``s3`` checks the bucket).
"""

import os
import shutil
import time
import uuid
from pathlib import Path

from healthmon_dagster.etl.landing import open_landing_source
from healthmon_dagster.etl.raw import unloaded_files
from healthmon_dagster.health.context import CheckContext
from healthmon_dagster.health.kind import builtin
from healthmon_dagster.health.result import (
    HealthCheck,
    Observation,
    describe_exception,
)
from healthmon_dagster.store.db import get_engine

MB = 1024 * 1024


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def _probe_write(folder: Path) -> str | None:
    """None when a file can be created and removed in ``folder``, else why not."""
    probe = folder / f".healthmon-write-probe-{uuid.uuid4().hex}"
    try:
        with open(probe, "wb") as f:
            f.write(b"ok")
        probe.unlink()
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def _pending(check: HealthCheck, ctx: CheckContext, obs: Observation) -> None:
    """Count landing files not yet recorded in etl.files (by key and fingerprint)."""
    env = ctx.environment
    max_files = check.float_param("max_pending_files", None)
    max_age = check.float_param("max_oldest_pending_minutes", None)
    if max_files is None and max_age is None:
        return
    try:
        source = open_landing_source(
            env.s3_bucket,
            env.s3_prefix,
            env.aws_endpoint_url,
            env.aws_region,
            Path(check.param("path", env.landing_dir or ".")),
            client_factory=env.s3_client,
            max_attempts=1,
        )
        if env.database_url:
            pending = unloaded_files(get_engine(env.database_url), source, env.landing_pattern)
        else:
            pending = source.list_files(env.landing_pattern)
    except Exception as exc:
        obs.warn(f"could not count pending landing files: {describe_exception(exc)}")
        return
    obs.threshold("pending_files", len(pending), max_files, None, "pending landing files", "")
    oldest = (time.time() - min(f.last_modified for f in pending)) / 60 if pending else 0.0
    obs.threshold(
        "oldest_pending_minutes", oldest, max_age, None, "the oldest pending file's age", " min"
    )


@builtin(
    "landing_folder",
    params=(
        "free_space_critical_mb",
        "free_space_warning_mb",
        "max_oldest_pending_minutes",
        "max_pending_files",
        "path",
    ),
)
def landing_folder_check(check: HealthCheck, ctx: CheckContext) -> Observation:
    """The landing folder is usable: it exists, accepts writes and has room for new files."""
    env = ctx.environment
    explicit = check.param("path")
    if explicit is None and env.s3_bucket:
        obs = Observation(details={"landing": f"s3://{env.s3_bucket}/{env.s3_prefix}"})
        _pending(check, ctx, obs)
        return obs
    folder = Path(str(explicit) if explicit is not None else (env.landing_dir or "landing"))
    obs = Observation(details={"path": str(folder)})
    if not folder.exists():
        anchor = _nearest_existing(folder.parent)
        if not anchor.is_dir():
            return obs.error(
                f"landing folder {folder} does not exist and cannot be created: {anchor} is a "
                "file, not a directory; fix the path (HEALTHMON_HOME or custom_parameters.path)"
            )
        reason = _probe_write(anchor)
        if reason is not None:
            return obs.error(
                f"landing folder {folder} does not exist and cannot be created in {anchor}: "
                f"{reason}; create it or fix the permissions/mount"
            )
        obs.warn(f"landing folder {folder} does not exist yet; it is created on the first file")
        folder = anchor
    elif not folder.is_dir():
        return obs.error(f"landing path {folder} is not a directory; fix the path")
    else:
        reason = _probe_write(folder)
        if reason is not None:
            obs.error(
                f"landing folder {folder} is not writable: {reason}; new files cannot land "
                "there: fix the permissions or remount it read-write"
            )
    obs.metric("writable", 0 if obs.errors else 1)
    usage = shutil.disk_usage(folder)
    obs.metric("disk_percent", 100.0 * usage.used / usage.total if usage.total else 0.0)
    obs.threshold(
        "free_mb",
        usage.free / MB,
        check.float_param("free_space_warning_mb", 1024),
        check.float_param("free_space_critical_mb", 100),
        f"free space on the filesystem of {folder}",
        " MB",
        higher_is_worse=False,
    )
    if os.access(folder, os.R_OK):
        _pending(check, ctx, obs)
    return obs
