"""The landing-folder check: a read-only and a full filesystem, a folder that cannot be
created, pending files."""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from healthmon_dagster.enums import HealthStatus
from healthmon_dagster.health.context import CheckEnvironment
from healthmon_dagster_tests.health.checks.fixtures import run


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A read-only tmpfs mount (tests run as root, where chmod would not stop writes)."""
    target = tmp_path / "ro"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_landing_folder_on_a_read_only_filesystem_is_critical(read_only_dir: Path) -> None:
    env = CheckEnvironment(landing_dir=read_only_dir)
    # A 1 MB tmpfs: free-space thresholds off so only the write probe decides.
    result = run("landing_folder", env, free_space_warning_mb=0, free_space_critical_mb=0)

    assert result.status == HealthStatus.CRITICAL
    assert result.errors == [
        f"landing folder {read_only_dir} is not writable: Read-only file system; new files "
        "cannot land there: fix the permissions or remount it read-write"
    ]


def test_landing_folder_that_cannot_be_created_is_critical(tmp_path: Path) -> None:
    (tmp_path / "plain_file").write_text("x")
    folder = tmp_path / "plain_file" / "landing"

    result = run("landing_folder", CheckEnvironment(landing_dir=folder))

    assert result.status == HealthStatus.CRITICAL
    assert (
        "cannot be created" in result.errors[0] and "is a file, not a directory" in result.errors[0]
    )


def test_landing_folder_writable_and_full(tmp_path: Path) -> None:
    env = CheckEnvironment(landing_dir=tmp_path)
    ok = run("landing_folder", env)
    huge = 1e12  # MB: more than any real free space
    full = run("landing_folder", env, free_space_critical_mb=huge)

    assert ok.status == HealthStatus.HEALTHY, ok.errors
    assert ok.metrics["writable"] == 1 and ok.metrics["free_mb"] > 0
    assert full.status == HealthStatus.CRITICAL
    assert f"free space on the filesystem of {tmp_path} is" in full.errors[0]
    assert "below the critical threshold 1e+12 MB" in full.errors[0]


def test_landing_folder_warns_about_pending_files(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"patients_{i}.csv").write_text("Id\n")
    result = run("landing_folder", CheckEnvironment(landing_dir=tmp_path), max_pending_files=2)

    assert result.status == HealthStatus.WARNING
    assert result.metrics["pending_files"] == 3
    assert "pending landing files is 3, above the warning threshold 2" in result.warnings[0]
