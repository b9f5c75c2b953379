"""Writing many rows in one statement: ``COPY`` on PostgreSQL, a bulk ``INSERT`` elsewhere.

For the hot paths (usage records, ledger postings) where building a model instance per row
and letting the ORM prepare every field costs more than the database does. Callers pass
plain values already in their database form: ``Decimal`` amounts, aware datetimes, ids.
"""

from collections.abc import Iterable, Sequence
from decimal import Decimal

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


def update_column(model, column: str, values: dict[int, Decimal]) -> None:
    """Set ``column`` of each row ``pk`` to ``values[pk]``, all in one statement."""
    if not values:
        return
    # Only the names come from code (the model's table and column); every value is a parameter.
    table = connection.ops.quote_name(model._meta.db_table)
    name = connection.ops.quote_name(column)
    if connection.vendor == "postgresql":
        rows = ", ".join(["(%s, %s::numeric)"] * len(values))
        sql = (
            f"UPDATE {table} AS t SET {name} = v.value "  # noqa: S608
            f"FROM (VALUES {rows}) AS v(id, value) WHERE t.id = v.id"
        )
        params = [item for pair in sorted(values.items()) for item in pair]
    else:
        # SQLite (the embedded default): a CASE over the ids.
        cases = " ".join(["WHEN %s THEN %s"] * len(values))
        sql = (
            f"UPDATE {table} SET {name} = CASE id {cases} END "  # noqa: S608
            f"WHERE id IN ({', '.join(['%s'] * len(values))})"
        )
        params = [item for pair in sorted(values.items()) for item in pair] + sorted(values)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
