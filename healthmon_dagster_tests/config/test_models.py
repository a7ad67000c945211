"""Loading healthmon.yaml: defaults, the bundled file, and path- and line-precise errors."""

import textwrap
from pathlib import Path
from typing import get_args

import pytest
import yaml

from healthmon_dagster.config import ConfigError, HealthConfiguration, config_hash, load_config
from healthmon_dagster.config.loader import load_config_text, located_error, located_errors
from healthmon_dagster.config.models import (
    FLAGGABLE_RULES,
    STAGING_RULES,
    QualityCheckSpec,
    ReconciliationCheck,
    SchemaCheck,
    UniqueCheck,
)
from healthmon_dagster.enums import AlertSeverity, ChannelType, ConditionOperator, HealthComponent

# Every quality check kind, in the order of the QualityCheckSpec union.
KINDS: tuple[str, ...] = tuple(
    get_args(spec.model_fields["kind"].annotation)[0]
    for spec in get_args(get_args(QualityCheckSpec)[0])
)

PROJECT_CONFIG = Path(__file__).resolve().parents[2] / "healthmon.yaml"

SYNTHEA_HEADER = (
    "Id,BIRTHDATE,DEATHDATE,SSN,DRIVERS,PASSPORT,PREFIX,FIRST,LAST,SUFFIX,MAIDEN,MARITAL,RACE,"
    "ETHNICITY,GENDER,BIRTHPLACE,ADDRESS,CITY,STATE,COUNTY,ZIP,LAT,LON,HEALTHCARE_EXPENSES,"
    "HEALTHCARE_COVERAGE"
)


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(textwrap.dedent(text), "test.yaml")
    return info.value.errors


RULE = """\
channels:
  slack:
    type: slack
    configuration:
      token_env: SLACK_BOT_TOKEN
alert_rules:
  - rule_id: high_rejection_rate
    component: staging_transformer
    channels: [log, slack]
    condition:
      metric_name: rejection_rate
      operator: greater_than
      threshold: 0.05
"""


def test_project_config_is_valid_and_covers_the_pipeline() -> None:
    config = load_config(PROJECT_CONFIG)

    assert set(config.freshness) == {"raw/patients", "stg/patients", "core/dim_patient"}
    raw_schema = config.quality.assets["raw/patients"].checks[0]
    assert isinstance(raw_schema, SchemaCheck)
    assert raw_schema.blocking
    assert raw_schema.required_columns == SYNTHEA_HEADER.split(",")
    stg = {c.kind for c in config.quality.assets["stg/patients"].checks}
    assert {"rejection_rate", "staging_flags", "reconciliation"} == stg
    # Checks of values on stg/patients could not fail (staging removed the rows): the rejections
    # are checked by reason instead, identity with zero tolerance.
    rejected = config.quality.assets["stg/patients_rejected"].checks
    assert {c.kind for c in rejected} == {"rejection_reasons"}
    ids = next(c for c in rejected if c.check_name == "patient_ids_are_joinable")
    assert (ids.warn, ids.fail) == (None, 0)
    assert all((c.warn, c.fail) == (0, None) for c in rejected if c is not ids)
    core = config.quality.assets["core/dim_patient"].checks
    assert [c.kind for c in core] == ["scd2_integrity", "reconciliation", "identity_stability"]
    assert core[2].check_name == "patient_identity_is_stable" and not core[2].blocking
    assert core[0].blocking
    assert isinstance(core[1], ReconciliationCheck) and core[1].between == "stg_vs_core"

    rule = next(r for r in config.alert_rules if r.name == "High Rejection Rate Alert")
    assert rule.component is HealthComponent.STAGING_TRANSFORMER
    assert rule.condition.operator is ConditionOperator.GREATER_THAN
    assert rule.condition.threshold == 0.05
    assert rule.condition.duration_minutes == 10
    assert rule.severity is AlertSeverity.WARNING

    assert config.channels["log"].enabled
    for name in ("slack", "email", "webhook", "pagerduty"):
        assert not config.channels[name].enabled, name
    assert config.channels["slack"].configuration["token_env"] == "SLACK_BOT_TOKEN"
    kinds = {c.kind for c in config.health_checks}
    assert {"database", "s3", "landing_folder", "system_resources", "smtp", "slack"} <= kinds


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    empty = tmp_path / "healthmon.yaml"
    empty.write_text("# nothing configured yet\n")

    config = load_config(empty)

    assert config == HealthConfiguration()
    assert config == load_config(None)
    assert config.landing.file_pattern == "patients*.csv"
    assert config.landing.accepted_delimiters == [","]
    assert (config.quality.rejection_rate.warn, config.quality.rejection_rate.fail) == (0.01, 0.05)
    assert config.channels["log"].type is ChannelType.LOG
    assert config.retention.metrics_days > 0
    assert config.feature_enabled("self_healing")  # on by default: bounded, transient only


def test_config_hash_is_stable_and_sensitive() -> None:
    base = load_config_text(RULE)
    reordered = load_config_text(RULE.replace("[log, slack]", "[log, slack]\n    enabled: true"))
    changed = load_config_text(RULE.replace("0.05", "0.06"))

    assert config_hash(base) == config_hash(load_config_text(RULE))
    assert config_hash(base) == config_hash(reordered)  # explicit default = same meaning
    assert config_hash(base) != config_hash(changed)
    assert len(config_hash(base)) == 64


def test_effective_config_round_trips() -> None:
    config = load_config(PROJECT_CONFIG)
    dumped = yaml.safe_dump(config.model_dump(mode="json"))

    assert load_config_text(dumped) == config


def test_bad_enum_names_path_line_and_allowed_values() -> None:
    errors = errors_of(RULE.replace("operator: greater_than", "operator: gt"))

    assert errors == [
        "alert_rules[0].condition.operator (line 12): 'gt' is not one of 'greater_than', "
        "'less_than', 'equals', 'not_equals', 'greater_than_or_equals', 'less_than_or_equals', "
        "'contains', 'not_contains'"
    ]


def test_unknown_key_suggests_the_close_one() -> None:
    errors = errors_of(RULE + "      duraton_minutes: 10\n")

    assert errors == [
        "alert_rules[0].condition.duraton_minutes (line 14): unknown key; "
        "did you mean 'duration_minutes'?"
    ]


def test_unknown_top_level_key_lists_sections_when_nothing_is_close() -> None:
    errors = errors_of("zzz: 1\n")

    assert len(errors) == 1
    assert errors[0].startswith("zzz (line 1): unknown key; allowed: version, ")


def test_wrong_type_names_the_value() -> None:
    errors = errors_of("retention:\n  metrics_days: ninety\n")

    assert errors == [
        "retention.metrics_days (line 2): 'ninety': input should be a valid integer, "
        "unable to parse string as an integer"
    ]


def test_dangling_channel_reference_points_at_the_list_item() -> None:
    errors = errors_of(RULE.replace("[log, slack]", "[log,\n      slakc]"))

    assert errors == [
        "alert_rules[0].channels[1] (line 10): unknown channel 'slakc'; did you mean 'slack'?"
    ]


def test_dangling_escalation_policy_is_an_error() -> None:
    errors = errors_of(RULE + "    escalation_policy: oncall\n")

    assert errors == [
        "alert_rules[0].escalation_policy (line 14): unknown escalation policy 'oncall'; "
        "defined: none"
    ]


def test_dependency_cycle_is_reported() -> None:
    errors = errors_of(
        """\
        health_checks:
          - check_id: database
            component: database
            kind: database
            dependencies: [network]
          - check_id: network
            component: network
            kind: network
            dependencies: [database]
        """
    )

    assert errors == [
        "health_checks[1].dependencies[0] (line 9): dependency cycle: "
        "network -> database -> network"
    ]


def test_duplicate_id_names_the_first_definition() -> None:
    second = RULE.split("alert_rules:\n")[1]
    errors = errors_of(RULE + second)

    assert errors == [
        "alert_rules[1].rule_id (line 14): duplicate rule_id 'high_rejection_rate' "
        "(first defined at alert_rules[0])"
    ]


def test_duplicate_yaml_key_is_not_silently_dropped() -> None:
    errors = errors_of("retention:\n  metrics_days: 30\n  metrics_days: 60\n")

    assert errors == ["retention.metrics_days (line 3): duplicate key (first at line 2)"]


def test_quality_check_errors_use_asset_key_and_drop_the_union_tag() -> None:
    errors = errors_of(
        """\
        quality:
          assets:
            stg/patients:
              checks:
                - kind: unique
                  columns: [id]
                  warn: 0.5
                  fail: 0.1
                - kind: uniq
        """
    )

    assert errors == [
        "quality.assets['stg/patients'].checks[0].warn (line 7): warn (0.5) must be <= fail (0.1)",
        "quality.assets['stg/patients'].checks[1] (line 9): kind 'uniq' is not one of "
        + ", ".join(repr(kind) for kind in KINDS),
    ]
    assert KINDS[:3] == ("not_null", "unique", "accepted_values")  # in the order of the union


def test_compound_unique_and_default_check_names() -> None:
    config = load_config_text(
        "quality:\n  assets:\n    stg/patients:\n      checks:\n"
        "        - {kind: unique, columns: [first, last]}\n"
    )
    spec = config.quality.assets["stg/patients"].checks[0]

    assert isinstance(spec, UniqueCheck)
    assert spec.check_name == "first_last_is_unique"


def test_contains_operator_needs_a_string_threshold() -> None:
    errors = errors_of(RULE.replace("operator: greater_than", "operator: contains"))

    assert errors == [
        "alert_rules[0].condition.threshold (line 13): 'contains' needs a string threshold, "
        "got 0.05"
    ]


def test_literal_secret_in_channel_is_rejected() -> None:
    errors = errors_of(RULE.replace("token_env: SLACK_BOT_TOKEN", "token: xoxb-123"))

    assert errors == [
        "channels.slack.configuration.token (line 5): secrets are never literal; "
        "use 'token_env: ENV_VAR_NAME' instead"
    ]


def test_freshness_fail_window_must_exceed_warn_window() -> None:
    errors = errors_of(
        "freshness:\n  raw/patients:\n    warn_window_minutes: 60\n    fail_window_minutes: 30\n"
    )

    assert errors == [
        "freshness['raw/patients'].fail_window_minutes (line 4): "
        "fail_window_minutes (30) must be > warn_window_minutes (60)"
    ]


def test_every_error_is_reported_in_file_order() -> None:
    errors = errors_of("retention:\n  metrics_days: x\nlanding:\n  file_patern: a\n")

    assert [e.split(" ")[0] for e in errors] == ["retention.metrics_days", "landing.file_patern"]


def test_yaml_syntax_error_gives_file_line_and_column() -> None:
    errors = errors_of("alert_rules:\n  - rule_id: a\n    name: [unclosed\n")

    assert len(errors) == 1
    assert errors[0].startswith("test.yaml:4:1: YAML syntax error: ")


def test_explicitly_named_missing_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"

    with pytest.raises(ConfigError) as info:
        load_config(missing)

    assert info.value.errors == [f"{missing}: file not found"]


def test_section_left_empty_means_its_default() -> None:
    assert load_config_text("alert_rules:\nchannels:\nretention:\n") == HealthConfiguration()


@pytest.mark.parametrize(
    ("check", "where", "says"),
    [
        (
            "kind: freshness\n          column: x\n          fail_after_minutes: 5\n          warn: 1",
            "checks[0].warn (line 8)",
            "use warn_after_minutes",
        ),
        ("kind: volume_anomaly\n          warn: 2", "checks[0].warn (line 6)", "sensitivity"),
        (
            "kind: row_count\n          min: 5\n          fail: 3",
            "checks[0].fail (line 7)",
            "must be 0",
        ),
    ],
)
def test_warn_and_fail_are_rejected_where_they_would_do_nothing(
    check: str, where: str, says: str
) -> None:
    text = f"quality:\n  assets:\n    a/b:\n      checks:\n        - {check}\n"
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    (error,) = caught.value.errors
    assert where in error and says in error


def test_problems_found_after_loading_get_the_path_and_line_of_the_file() -> None:
    text = "quality:\n  assets:\n    stg/patients:\n      checks:\n        - kind: not_null\n"
    text += "          columns: [idd]\n"
    config = load_config_text(text, "site.yaml")
    loc = ("quality", "assets", "stg/patients", "checks", 0, "columns", 0)

    error = located_error(config, [(loc, "column 'idd' does not exist"), (("quality",), "first")])

    assert error.source == "site.yaml"
    assert error.errors == [
        "quality (line 1): first",
        "quality.assets['stg/patients'].checks[0].columns[0] (line 6): column 'idd' does not exist",
    ]
    # The source is no part of the configuration's content: equal to the same content unsourced.
    assert config == HealthConfiguration.model_validate(config.model_dump())
    assert located_errors(HealthConfiguration(), [(loc, "x")]) == [
        "quality.assets['stg/patients'].checks[0].columns[0]: x"
    ]


def test_staging_rules_default_to_rejecting_identity_and_typing_and_flagging_formats() -> None:
    staging = HealthConfiguration().staging
    assert staging.flagged() == [
        "zip_invalid",
        "ssn_invalid",
        "passport_invalid",
        "drivers_invalid",
    ]
    assert staging.action("id_missing") == staging.action("gender_invalid") == "reject"
    assert staging.default_country is None
    assert load_config(PROJECT_CONFIG).staging.flagged() == staging.flagged()
    assert set(STAGING_RULES) == {
        *(r for r in STAGING_RULES if r not in FLAGGABLE_RULES),
        *FLAGGABLE_RULES,
    }


def test_staging_rules_name_unknown_rules_and_keep_typing_rules_rejecting() -> None:
    errors = errors_of(
        """\
        staging:
          default_country: Germany
          rules:
            zip_invalidd: flag
            birthdate_invalid: flag
            gender_invalid: flag
        """
    )
    assert errors[0].startswith("staging.default_country (line 2): 'Germany' is not a 2-letter")
    assert errors[1] == (
        "staging.rules.zip_invalidd (line 4): unknown staging rule 'zip_invalidd'; "
        "did you mean 'zip_invalid'?"
    )
    assert errors[2].startswith(
        "staging.rules.birthdate_invalid (line 5): a row that breaks birthdate_invalid cannot be "
        "kept"
    )
    assert len(errors) == 3  # gender_invalid may flag


def test_rejection_reason_and_flag_checks_name_unknown_codes() -> None:
    errors = errors_of(
        """\
        quality:
          assets:
            stg/patients_rejected:
              checks:
                - kind: rejection_reasons
                  reasons: [id_mising]
                - kind: staging_flags
                  flags: [lat_invalid]
        """
    )
    assert "unknown staging rule 'id_mising'; did you mean 'id_missing'?" in errors[0]
    assert "unknown flaggable staging rule 'lat_invalid'" in errors[1]


def test_landing_retry_defaults_span_about_an_hour() -> None:
    retry = HealthConfiguration().landing.retry
    assert (retry.max_attempts, retry.give_up_after_minutes) == (10, 60)
    assert (retry.initial_delay_seconds, retry.max_delay_seconds) == (60, 600)
    assert (retry.step_retries, retry.step_retry_delay_seconds) == (3, 2.0)
    # The waits between the 10 attempts: 1, 2, 4, 8, then 10 minutes each: 65 minutes, about the
    # hour after which give_up_after stops them anyway.
    waits = [min(retry.initial_delay_seconds * 2**n, retry.max_delay_seconds) for n in range(9)]
    assert sum(waits) == 65 * 60


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("max_attempts: 0", "greater than or equal to 1"),
        ("max_attempts: 1000", "less than or equal to 100"),
        ("step_retries: 11", "less than or equal to 10"),
        ("step_retry_delay_seconds: .nan", "nan is not a finite number"),
        ("give_up_after_minutes: 100000", "less than or equal to 10080"),
        ("initial_delay_seconds: 120\n    max_delay_seconds: 60", "must be >= initial_delay"),
    ],
)
def test_landing_retry_is_bounded(setting: str, message: str) -> None:
    (error,) = errors_of(f"landing:\n  retry:\n    {setting}\n")
    assert error.startswith("landing.retry.")
    assert message in error


def test_landing_accepts_extra_columns_and_a_record_size_cap() -> None:
    config = load_config_text(
        "landing:\n  accepted_extra_columns: [LOYALTY_TIER, '2024']\n  max_record_bytes: 65536\n"
    )

    assert config.landing.accepted_extra_columns == ["LOYALTY_TIER", "2024"]
    assert config.landing.max_record_bytes == 65536
    assert HealthConfiguration().landing.max_record_bytes == 1 << 20


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "accepted_extra_columns: [Tier, TIER]",
            "'TIER' is listed twice (names match ignoring case)",
        ),
        ("accepted_extra_columns: [' Tier']", "a column name is not empty and has no surrounding"),
        ("accepted_extra_columns: ['']", "a column name is not empty and has no surrounding"),
        ("max_record_bytes: 100", "greater than or equal to 1024"),
        ("max_record_bytes: 1000000000", "less than or equal to 268435456"),
    ],
)
def test_bad_landing_settings_are_errors_with_their_path(text: str, says: str) -> None:
    (error,) = errors_of(f"landing:\n  {text}\n")

    assert error.startswith("landing.") and says in error, error
