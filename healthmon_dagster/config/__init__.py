"""Configuration: pydantic models of ``healthmon.yaml`` and the loader that validates it."""

from healthmon_dagster.config.loader import ConfigError, config_hash, load_config, load_config_text
from healthmon_dagster.config.models import HealthConfiguration

__all__ = ["ConfigError", "HealthConfiguration", "config_hash", "load_config", "load_config_text"]
