"""Alembic environment: runs on the connection handed over by ``healthmon_dagster.store.migrate``."""

from alembic import context

from healthmon_dagster.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table_schema="etl",
    include_schemas=True,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
