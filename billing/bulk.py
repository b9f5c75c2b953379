"""Writing many rows in one statement: ``COPY`` on PostgreSQL, a bulk ``INSERT`` elsewhere;
and finding rows by a long list of keys with one parameter.

For the hot paths (usage records, ledger postings) where building a model instance per row
and letting the ORM prepare every field or value costs more than the database does. Callers pass
plain values already in their database form: ``Decimal`` amounts, aware datetimes, ids.
"""

import json
from collections.abc import Iterable, Sequence

from django.db import connection


def insert_rows(model, columns: Sequence[str], rows: Iterable[tuple]) -> None:
    """Insert ``rows`` (tuples in the order of ``columns``, attribute names of ``model``)."""
    rows = list(rows)
    if not rows:
        return
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(model._meta.db_table)
        names = ", ".join(connection.ops.quote_name(column) for column in columns)
        # psycopg's COPY adapts each value by its Python type, as a parameter would be.
        # Its errors become Django's (IntegrityError, ...) as a query's would.
        with (
            connection.wrap_database_errors,
            connection.cursor() as cursor,
            cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        return
    # The embedded default (SQLite): through the ORM, which adapts dates and decimals.
    model.objects.bulk_create([model(**dict(zip(columns, row, strict=True))) for row in rows])


def reserve_ids(model, count: int) -> list[int]:
    """``count`` new primary keys for ``model``, taken from its sequence in one query, so
    rows written with ``insert_rows`` can be referred to before they are written."""
    if count == 0:
        return []
    if connection.vendor != "postgresql":
        raise NotImplementedError("ids are reserved only on PostgreSQL")
    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [table, count],
        )
        return [row[0] for row in cursor.fetchall()]


def update_column(model, column: str, values: dict, sql_type: str = "numeric") -> None:
    """Set ``column`` of each row ``pk`` to ``values[pk]``, all in one statement
    (``sql_type``: the column's PostgreSQL type, for the array of new values)."""
    if not values:
        return
    # Only the names come from code (the model's table and column); every value is a parameter.
    table = connection.ops.quote_name(model._meta.db_table)
    name = connection.ops.quote_name(column)
    ids = sorted(values)
    if connection.vendor == "postgresql":
        # Two arrays, so the statement has two parameters however many rows it sets.
        sql = (
            f"UPDATE {table} AS t SET {name} = v.value "  # noqa: S608
            f"FROM unnest(%s::bigint[], %s::{sql_type}[]) AS v(id, value) WHERE t.id = v.id"
        )
        params = [ids, [values[pk] for pk in ids]]
    else:
        # SQLite (the embedded default): a CASE over the ids, values as the field stores them.
        field = model._meta.get_field(column)
        cases = " ".join(["WHEN %s THEN %s"] * len(ids))
        sql = (
            f"UPDATE {table} SET {name} = CASE id {cases} END "  # noqa: S608
            f"WHERE id IN ({', '.join(['%s'] * len(ids))})"
        )
        params = [
            item
            for pk in ids
            for item in (pk, field.get_db_prep_value(values[pk], connection, prepared=False))
        ] + ids
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def where_in(column: str, values, sql_type: str) -> tuple[str, list]:
    """``column IN (values)`` as a WHERE fragment with ONE parameter, for ``QuerySet.extra``.

    Django prepares each value of an ``__in`` lookup on its own: for the thousand event ids
    of a usage batch that costs more than the query. ``sql_type`` is the column's
    PostgreSQL type (``bigint``, ``varchar``); ``column`` comes from code, never input.
    """
    name = connection.ops.quote_name(column)
    values = list(values)
    if connection.vendor == "postgresql":
        return f"{name} = ANY(%s::{sql_type}[])", [values]
    # SQLite (the embedded default): the list as one JSON array.
    return f"{name} IN (SELECT value FROM json_each(%s))", [json.dumps(values)]  # noqa: S608
