"""Incidents: records in the health store (one open incident per root cause), their lifecycle and
timeline, correlation of related incidents, reports and MTTR/MTBF. No Dagster import: failure hooks,
the run-failure sensor and self-healing (in ``defs/``) adapt Dagster's events into these calls."""
