"""SQL functions compiled per dialect: the same query gives the same answer on SQLite and Postgres."""

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.store.dialect import byte_order, is_iso_date, is_uuid


def _values(values: list[str]) -> sa.Subquery:
    rows = sa.union_all(*(sa.select(sa.literal(v, sa.String).label("v")) for v in values))
    return rows.subquery()


def test_byte_order_groups_exact_text_and_uses_the_c_collation_on_postgres(engine: Engine) -> None:
    t = _values(["a", "A", "a", "é", "e"])
    query = sa.select(sa.func.count()).select_from(
        sa.select(byte_order(t.c.v).label("k")).group_by(byte_order(t.c.v)).subquery()
    )
    with engine.connect() as conn:
        groups = conn.execute(query).scalar_one()

    assert groups == 4
    sql = str(query.compile(engine))
    assert ('COLLATE "C"' in sql) == (engine.dialect.name == "postgresql")


def test_date_and_uuid_predicates_agree_on_both_databases(engine: Engine) -> None:
    t = _values(
        [
            "2021-02-28",
            "2021-02-30",
            "2021-13-01",
            "21-01-01",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ],
    )
    query = sa.select(t.c.v, is_iso_date(t.c.v), is_uuid(t.c.v)).order_by(t.c.v)
    with engine.connect() as conn:
        got = {v: (bool(d), bool(u)) for v, d, u in conn.execute(query)}

    assert got == {
        "2021-02-28": (True, False),
        "2021-02-30": (False, False),
        "2021-13-01": (False, False),
        "21-01-01": (False, False),
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11": (False, True),
    }
