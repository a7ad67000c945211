"""Settings from the environment: working defaults for the embedded mode (the health store in a
database file of its own), every variable honoured, where each database URL comes from, and database
URLs printed without their password, whatever their form."""

from pathlib import Path

import pytest

from healthmon_dagster.settings import default_config_path, get_settings, redact_url, url_origin

PROJECT_CONFIG = Path(__file__).resolve().parents[1] / "healthmon.yaml"


def test_defaults_need_no_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    s = get_settings({})

    assert s.home == tmp_path / ".healthmon"
    assert s.database_url == f"sqlite:///{tmp_path / '.healthmon' / 'healthmon.db'}"
    # The monitor must not wait behind a load's write lock, nor live only inside the warehouse.
    assert s.health_database_url == f"sqlite:///{tmp_path / '.healthmon' / 'health.db'}"
    assert "HEALTHMON_HOME" in s.database_url_origin
    assert "HEALTHMON_HEALTH_DATABASE_URL" in s.health_database_url_origin
    assert s.config_path == default_config_path() == PROJECT_CONFIG
    assert (s.s3_bucket, s.s3_prefix, s.aws_endpoint_url, s.aws_region) == (
        None,
        "",
        None,
        "us-east-1",
    )
    assert s.landing_dir == s.home / "landing"


def test_every_variable_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    env = {
        "HEALTHMON_HOME": str(tmp_path / "home"),
        "HEALTHMON_DATABASE_URL": "postgresql+psycopg2://etl@db/warehouse",
        "HEALTHMON_HEALTH_DATABASE_URL": "postgresql+psycopg2://etl@db/health",
        "HEALTHMON_CONFIG": str(tmp_path / "custom.yaml"),
        "HEALTHMON_S3_BUCKET": "landing",
        "HEALTHMON_S3_PREFIX": "incoming/",
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }

    s = get_settings(env)

    assert s.home == tmp_path / "home"
    assert s.database_url == "postgresql+psycopg2://etl@db/warehouse"
    assert s.health_database_url == "postgresql+psycopg2://etl@db/health"
    assert s.database_url_origin == "HEALTHMON_DATABASE_URL"
    assert s.health_database_url_origin == "HEALTHMON_HEALTH_DATABASE_URL"
    assert s.config_path == tmp_path / "custom.yaml"
    assert (s.s3_bucket, s.s3_prefix, s.aws_endpoint_url) == (
        "landing",
        "incoming/",
        "http://minio:9000",
    )
    assert s.aws_region == "eu-west-1"
    assert get_settings({**env, "AWS_REGION": "us-west-2"}).aws_region == "us-west-2"
    assert s.dagster_home == tmp_path / "dagster"


def test_empty_variables_count_as_unset(tmp_path: Path) -> None:
    s = get_settings({"HEALTHMON_HOME": str(tmp_path), "HEALTHMON_S3_BUCKET": "", "AWS_REGION": ""})

    assert s.s3_bucket is None and s.aws_region == "us-east-1"
    assert s.config_path == default_config_path()


def test_dagster_home_defaults_under_the_healthmon_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)

    assert get_settings({"HEALTHMON_HOME": str(tmp_path)}).dagster_home == tmp_path / "dagster"


def test_read_from_the_process_environment_when_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEALTHMON_HOME", str(tmp_path / "a"))
    assert get_settings().home == tmp_path / "a"
    monkeypatch.setenv("HEALTHMON_HOME", str(tmp_path / "b"))
    assert get_settings().home == tmp_path / "b"


def test_a_warehouse_url_of_ones_own_keeps_the_health_store_in_it(tmp_path: Path) -> None:
    # Postgres deployments set one URL: warehouse and health store share that database, as before.
    url = "postgresql+psycopg2://etl@db/warehouse"

    s = get_settings({"HEALTHMON_HOME": str(tmp_path), "HEALTHMON_DATABASE_URL": url})

    assert s.database_url == s.health_database_url == url
    assert s.health_database_url_origin == "HEALTHMON_DATABASE_URL"
    assert url_origin(url, {"HEALTHMON_DATABASE_URL": url}) == "HEALTHMON_DATABASE_URL"
    assert url_origin("sqlite:////elsewhere.db", {}) == "the database URL"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg2://etl:s3cret@db:5432/wh", "postgresql+psycopg2://etl:***@db:5432/wh"),
        ("sqlite:////tmp/healthmon.db", "sqlite:////tmp/healthmon.db"),
        ("postgresql://etl@db/wh?password=s3cret", "postgresql://etl@db/wh?password=***"),
        ("postgresql://etl:s3cret@db:port/wh", "postgresql://<unparsable>"),
        # No "@": the password parses as a port, which must not be echoed either.
        ("postgresql://etl:s3cret/wh", "postgresql://<unparsable>"),
        ("host=db user=etl password=s3cret dbname=wh", "<not a URL>"),
        ("s3cret", "<not a URL>"),
    ],
)
def test_redact_url_hides_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
