"""Tests of healthmon_dagster.health."""
