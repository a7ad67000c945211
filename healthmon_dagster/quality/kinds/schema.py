"""schema: the table's columns against the declared contract (required columns, unexpected
columns, type families). For ``raw/patients`` the landing file's own columns, as audited in
``etl.files``, count: the raw table always holds the contract's columns."""

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from healthmon_dagster.config.models import SchemaCheck
from healthmon_dagster.etl import catalog
from healthmon_dagster.quality.context import CheckError, EvalContext
from healthmon_dagster.quality.grading import count_result
from healthmon_dagster.quality.plan import Plan, planner
from healthmon_dagster.quality.result import CheckResult
from healthmon_dagster.store.tables import files

# Type families for the schema contract: a declared type matches any database type of its family.
TYPE_FAMILIES: dict[str, tuple[str, ...]] = {
    "text": ("CHAR", "TEXT", "STRING", "CLOB", "VARCHAR"),
    "integer": ("INT", "SERIAL"),
    "numeric": ("NUMERIC", "DECIMAL"),
    "float": ("FLOAT", "DOUBLE", "REAL"),
    "date": ("DATE",),
    "timestamp": ("TIMESTAMP", "DATETIME"),
    "boolean": ("BOOL",),
    "uuid": ("UUID",),
    "json": ("JSON",),
}
TYPE_ALIASES = {
    "string": "text",
    "varchar": "text",
    "int": "integer",
    "bigint": "integer",
    "decimal": "numeric",
    "double": "float",
    "real": "float",
    "datetime": "timestamp",
    "bool": "boolean",
    "jsonb": "json",
}


def type_family(db_type: str) -> str | None:
    """The family of a database type name (``VARCHAR(40)`` -> ``text``); None when unknown."""
    t = db_type.upper()
    if t.startswith("TIMESTAMP") or t.startswith("DATETIME"):
        return "timestamp"
    for family, markers in TYPE_FAMILIES.items():
        if any(m in t for m in markers):
            return family
    return None


@planner(SchemaCheck)
def plan_schema(ctx: EvalContext, spec: SchemaCheck) -> Plan:
    def finish(_v: Mapping[str, Any], _total: int) -> CheckResult:
        t = ctx.table
        try:
            reflected = sa.inspect(ctx.engine).get_columns(t.name, schema=t.schema)
        except sa_exc.NoSuchTableError:
            raise CheckError(f"table {ctx.qualified} does not exist in the warehouse") from None
        if not reflected:
            raise CheckError(f"table {ctx.qualified} does not exist in the warehouse")
        present = {c["name"].lower(): c for c in reflected}
        missing = [c for c in spec.required_columns if c.lower() not in present]
        data_columns = {n for n in present if not n.startswith("_")}
        declared = {c.lower() for c in [*spec.required_columns, *spec.types]}
        unexpected = sorted(data_columns - declared)
        file_unexpected: list[str] = []
        if ctx.asset == catalog.RAW_PATIENTS.key and ctx.batch is not None:
            # The raw table keeps the contract's columns; what the file itself brought is audited.
            with ctx.engine.connect() as conn:
                audited = conn.execute(
                    sa.select(files.c.unexpected_columns, files.c.missing_columns).where(
                        ctx.batch.where(files.c.file_id)
                    )
                ).all()  # every file of the batch: a header is judged when it lands
            if audited:
                joined = [",".join(r[i] or "" for r in audited) for i in (0, 1)]
                file_unexpected = list(dict.fromkeys(c for c in joined[0].split(",") if c))
                file_missing = list(dict.fromkeys(c for c in joined[1].split(",") if c))
                missing += [c for c in spec.required_columns if c in file_missing]
                # The raw table holds the contract's columns (optional ones too): only what the
                # file itself brought beyond them is unexpected.
                unexpected = [c for c in file_unexpected if c.lower() not in declared]
        drift = []
        sqlite = ctx.engine.dialect.name == "sqlite"
        for name, expected in spec.types.items():
            column = present.get(name.lower())
            if column is None:
                if name not in missing:
                    missing.append(name)
                continue
            want = TYPE_ALIASES.get(expected.lower(), expected.lower())
            got = type_family(str(column["type"]))
            if want != got and not (sqlite and want == "uuid" and got == "text"):
                drift.append(name)
        problems = len(missing) + len(drift) + (0 if spec.allow_unexpected else len(unexpected))
        parts = [
            f"{len(missing)} required column(s) missing"
            + (f" ({', '.join(missing)})" if missing else "")
        ]
        parts.append(
            f"{len(unexpected)} unexpected column(s)"
            + (f" ({', '.join(unexpected)})" if unexpected else "")
            + (" allowed" if spec.allow_unexpected else "")
        )
        parts.append(f"{len(drift)} type drift(s)" + (f" ({', '.join(drift)})" if drift else ""))
        return count_result(
            ctx,
            spec,
            problems,
            "schema problem(s): " + "; ".join(parts),
            {
                "missing_columns": len(missing),
                "unexpected_columns": len(unexpected),
                "type_drifts": len(drift),
                "columns_present": len(present),
            },
        )

    return Plan({}, finish)
