"""plain_rows: a result's rows as named tuples, read as the Row objects they replace."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from orbit.db.rows import plain_rows


def test_rows_read_as_the_result_rows_by_name_and_position() -> None:
    engine = create_engine("sqlite://")
    query = text("SELECT 1 AS id, 'vm-1' AS name UNION ALL SELECT 2, NULL ORDER BY id")
    with engine.connect() as conn:
        expected = conn.execute(query).all()
        rows = plain_rows(conn.execute(query))
        again = plain_rows(conn.execute(query))
    assert [(r.id, r.name) for r in rows] == [(1, "vm-1"), (2, None)]
    assert [tuple(r) for r in rows] == [tuple(r) for r in expected]
    assert type(rows[0]) is type(again[0])  # one class per column list, not per query


def test_an_empty_result_is_an_empty_list() -> None:
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        assert plain_rows(conn.execute(text("SELECT 1 AS id WHERE 0"))) == []
