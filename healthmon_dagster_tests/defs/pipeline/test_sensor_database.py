"""The landing sensor skips with a reason, and never raises, when the warehouse cannot be used: a URL
that can never work, a server that does not answer, a SQLite folder that cannot be created."""

from pathlib import Path

import dagster as dg
import pytest

from healthmon_dagster.defs.pipeline.sensors import landing_files_sensor
from healthmon_dagster.defs.resources import (
    HealthmonConfigResource,
    LandingResource,
    WarehouseResource,
)
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import generate_sample, write_to
from healthmon_dagster_tests.fixtures import free_port

SECRET = "s3cretpw"


def tick(instance: dg.DagsterInstance, landing: Path, url: str) -> dg.SensorResult:
    result = landing_files_sensor(
        dg.build_sensor_context(
            instance=instance,
            resources={
                "warehouse": WarehouseResource(database_url=url),
                "landing": LandingResource(local_dir=str(landing)),
                "healthmon_config": HealthmonConfigResource(),
            },
        )
    )
    assert isinstance(result, dg.SensorResult)
    return result


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (f"postgresql+psycopg2://etl:{SECRET}@127.0.0.1:{free_port()}/wh", "Connection refused"),
        (f"postgresql+psycopg2://etl:{SECRET}@db:54x2/wh", "port is not a number"),
        ("sqlite://", "in-memory SQLite database"),
        (f"host=db password={SECRET}", "libpq keyword string"),
    ],
    ids=["unreachable", "bad_port", "in_memory", "libpq"],
)
def test_an_unusable_warehouse_skips_the_tick_with_the_reason(
    tmp_path: Path, instance: dg.DagsterInstance, url: str, says: str
) -> None:
    write_to(LocalLandingSource(tmp_path), generate_sample(10, files=1))

    result = tick(instance, tmp_path, url)

    assert not result.run_requests
    assert result.skip_reason is not None
    reason = result.skip_reason.skip_message or ""
    assert reason.startswith("warehouse ") and "cannot be used" in reason and says in reason
    assert SECRET not in reason and "\n" not in reason


def test_a_sqlite_folder_that_cannot_be_created_skips_the_tick(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")

    result = tick(instance, tmp_path, f"sqlite:///{blocker / 'db' / 'healthmon.db'}")

    assert result.skip_reason is not None
    assert "cannot create the folder" in (result.skip_reason.skip_message or "")


def test_the_tick_after_the_warehouse_is_back_requests_the_file(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    write_to(LocalLandingSource(tmp_path / "landing"), generate_sample(10, files=1))
    blocker = tmp_path / "warehouse"
    blocker.write_text("a file where the warehouse folder should be")
    url = f"sqlite:///{blocker / 'healthmon.db'}"

    assert tick(instance, tmp_path / "landing", url).skip_reason is not None
    blocker.unlink()  # the operator fixes the volume
    requests = tick(instance, tmp_path / "landing", url).run_requests

    assert requests is not None and len(requests) == 1
