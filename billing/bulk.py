"""Writing many rows in one statement: ``COPY`` on PostgreSQL, a bulk ``INSERT`` elsewhere;
and finding rows by a long list of keys with one parameter (sent as one array literal).
Reading many: model instances built without ``Model.__init__`` (``LoadedWithoutInit``),
timestamps parsed by Python's C code (``use_fast_timestamp_loader``) and querysets compiled
once (``ReusableQuery``).

For the hot paths (usage records, ledger postings) where building a model instance per row
and letting the ORM prepare every field or value costs more than the database does. Callers pass
plain values already in their database form: ``Decimal`` amounts, aware datetimes, ids.
"""

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.postgresql.psycopg_any import BaseTzLoader
from django.db.models import Lookup
from django.db.models.base import ModelState
from django.db.models.query import ModelIterable, ValuesListIterable
from django.db.transaction import TransactionManagementError


class _TimestamptzLoader(BaseTzLoader):
    """Django's loader of ``timestamptz`` values, with Python's C parser for the usual case.

    Django registers a loader of its own on every connection, written in Python (a regular
    expression and a dozen lines a value): a usage batch reads a few thousand timestamps
    (lots, counters, subscriptions, companies), at ~3 µs each. ``datetime.fromisoformat``
    reads PostgreSQL's ISO output (``2026-12-04 18:26:58.123456+00``) in a tenth of that.
    Whatever it cannot read (``infinity``, years before 1 or after 9999) goes to Django's
    loader, which answers as before. The session's time zone is ``timezone`` (Django sets
    it when connecting), so the value is given in it, as Django's loader gives it.
    """

    def load(self, data):
        try:
            value = datetime.fromisoformat(str(data, "ascii"))
        except ValueError:
            return super().load(data)
        return value.astimezone(self.timezone)


def use_fast_timestamp_loader(sender, connection, **kwargs) -> None:
    """``connection_created`` receiver: read ``timestamptz`` with ``_TimestamptzLoader``."""
    if connection.vendor != "postgresql" or connection.timezone is None:
        return

    class TimestamptzLoader(_TimestamptzLoader):
        timezone = connection.timezone  # Django keeps its own loader while this matches

    connection.connection.adapters.register_loader("timestamptz", TimestamptzLoader)


class LoadedWithoutInit:
    """Model instances read from the database are built without ``Model.__init__``.

    A mixin for models read by the hundred on the hot paths (a usage batch reads ~1,400
    instances: companies, accounts, lots, subscriptions). ``Model.__init__`` sends two
    signals and sets each field through its descriptor: ~6 µs an instance, four times the
    cost of this, and more than the database's work for the row. Here the values, already
    converted by the query (``from_db_value``), go straight into the instance's
    ``__dict__``, where ``__init__`` would have put them (a ``MoneyField`` keeps its amount
    there too and makes the ``Money`` when read). A field not selected (``only``, ``defer``)
    is simply absent, which is what Django takes for deferred. Nothing in this project or
    its libraries listens to ``pre_init``/``post_init``; a model with such a receiver
    must not use this.
    """

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = _bare_instance(cls, dict(zip(field_names, values, strict=True)))
        instance._state.adding = False
        instance._state.db = db
        return instance


def _bare_instance(model, values: dict):
    """An instance of ``model`` whose ``__dict__`` is ``values`` and a new ``ModelState``."""
    instance = model.__new__(model)
    instance.__dict__ = values
    instance._state = ModelState()
    return instance


def unsaved_instance(model, values: dict, related: dict | None = None):
    """A new instance of ``model`` (not saved), built as ``LoadedWithoutInit`` builds loaded
    ones: for the hot paths that make one per company of a batch (a ledger transaction).

    ``values`` gives every concrete field by attribute name (``company_id``, an amount's
    ``Decimal`` and its ``*_currency``), already in the field's Python form: a field left
    out is an error here, where ``Model.__init__`` would have taken its default.
    ``related`` gives objects already at hand for foreign keys (``{"company": company}``),
    so reading them costs no query, as when passed to ``Model.__init__``.
    """
    names = _attnames(model)
    if values.keys() != names:
        missing, extra = sorted(names - values.keys()), sorted(values.keys() - names)
        raise TypeError(f"{model.__name__}: missing {missing}, unknown {extra}")
    instance = _bare_instance(model, dict(values))
    for name, value in (related or {}).items():
        instance._state.fields_cache[name] = value
    return instance


def array_literal(values: Sequence) -> str | list:
    """``values`` (ints, ``Decimal``s, strings, ``None``) as ONE PostgreSQL array literal,
    e.g. ``{1,2,3}`` or ``{"a","b\\"c"}``, to be cast in the SQL (``%s::bigint[]``).

    psycopg adapts a list element by element in Python (~1 µs each); the thousand event
    ids and the hundreds of company ids, lots and balances of a usage batch are turned into
    text here at the speed of ``str.join``. Strings are quoted, with ``\\`` and ``"``
    escaped as the array syntax asks. A list with any other type is returned as it is,
    for psycopg to adapt.
    """
    parts = []
    for value in values:
        kind = type(value)
        if kind is int or kind is Decimal:
            parts.append(str(value))
        elif kind is str:
            parts.append('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"')
        elif value is None:
            parts.append("NULL")
        else:
            return list(values)
    return "{" + ",".join(parts) + "}"


@cache
def _attnames(model) -> frozenset[str]:
    return frozenset(field.attname for field in model._meta.concrete_fields)


def timestamps_as_text() -> bool:
    """Whether ``insert_rows`` takes its aware datetimes fastest as ISO text (on PostgreSQL).

    ``COPY`` reads ``2026-12-05T10:00:00.123456+09:00`` as the same instant (the text
    carries its offset), and ``datetime.isoformat`` costs a fifth of the ~0.9 µs psycopg's
    dumper takes per value: a usage record has two. Elsewhere the ORM writes them."""
    return connection.vendor == "postgresql"


def insert_rows(
    model, columns: Sequence[str], rows: Iterable[tuple], *, times_as_text: bool = False
) -> None:
    """Insert ``rows`` (tuples in the order of ``columns``, attribute names of ``model``).

    ``times_as_text``: the rows give their times as ISO text (see ``timestamps_as_text``)
    and every value is of its column's type or None. On PostgreSQL ``COPY`` then takes one
    writer per column, found from the model's fields (``_copy_types``), instead of looking
    one up for every value (a usage record: 1.5 µs instead of 2.2).
    """
    rows = list(rows)
    if not rows:
        return
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(model._meta.db_table)
        names = ", ".join(connection.ops.quote_name(column) for column in columns)
        types = _copy_types(model, tuple(columns)) if times_as_text else None
        # psycopg's COPY adapts each value by its Python type, as a parameter would be.
        # Its errors become Django's (IntegrityError, ...) as a query's would.
        with (
            connection.wrap_database_errors,
            connection.cursor() as cursor,
            cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy,
        ):
            if types is not None:
                copy.set_types(types)
            for row in rows:
                copy.write_row(row)
        return
    # The embedded default (SQLite): through the ORM, which adapts dates and decimals.
    model.objects.bulk_create([model(**dict(zip(columns, row, strict=True))) for row in rows])


# How COPY writes a column's values, by the start of its PostgreSQL type (times as ISO text).
_COPY_TYPE_OF = {
    "bigint": "int8",
    "integer": "int8",
    "smallint": "int8",
    "numeric": "numeric",
    "varchar": "text",
    "text": "text",
    "timestamp with time zone": "text",
}


@cache
def _copy_types(model, columns: tuple[str, ...]) -> tuple[str, ...]:
    types = []
    for column in columns:
        db_type = model._meta.get_field(column).db_type(connection).split("(")[0]
        if db_type not in _COPY_TYPE_OF:
            raise ValueError(f"insert_rows cannot write {column} ({db_type}) with a type.")
        types.append(_COPY_TYPE_OF[db_type])
    return tuple(types)


def insert_new_rows(
    model, columns: Sequence[str], rows: Sequence[tuple], returning: Sequence[str]
) -> list[tuple]:
    """Insert ``rows`` (tuples in the order of ``columns``, attribute names of ``model``),
    skipping those a unique constraint already holds, in ONE statement; returns the
    ``returning`` columns of the rows inserted (not of those skipped). PostgreSQL only.

    Django's ``bulk_create(ignore_conflicts=True)`` gives no ids back, so its caller reads
    the rows again; here the insert gives them (``INSERT … ON CONFLICT DO NOTHING
    RETURNING``), one array a column."""
    if not rows:
        return []
    quote = connection.ops.quote_name

    def field(name):
        return model._meta.pk if name == "pk" else model._meta.get_field(name)

    # Column types without their lengths (from code, never input): see ``AnyOf``.
    types = [field(column).db_type(connection).split("(")[0] for column in columns]
    arrays = ", ".join(f"%s::{sql_type}[]" for sql_type in types)
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} "  # noqa: S608 (names from code)
        f"({', '.join(quote(field(column).column) for column in columns)}) "
        f"SELECT * FROM unnest({arrays}) ON CONFLICT DO NOTHING "
        f"RETURNING {', '.join(quote(field(column).column) for column in returning)}"
    )
    params = [array_literal([row[index] for row in rows]) for index in range(len(columns))]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


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
        params = [array_literal(ids), array_literal([values[pk] for pk in ids])]
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


def rows_by_key(model, columns: Sequence[str], key: str, values, sql_type: str, **equal) -> list:
    """The ``columns`` (attribute names) of the rows of ``model`` whose ``key`` is one of
    ``values`` and whose other columns equal ``equal``, as tuples. For a UNIQUE index on
    (``equal``'s columns, ``key``): each value names at most one row.

    The values go as ONE parameter: Django prepares each value of an ``__in`` lookup on its
    own, which for the thousand event ids of a usage batch costs more than the query.
    On PostgreSQL each value is one probe of that index (a lateral join with ``LIMIT 1``):
    given them as an array in one ``= ANY`` condition, the planner prefers reading every row
    of ``equal`` as the table grows (a thousand ids against 80,000 usage records of one key:
    a 35 ms sequential scan against 5 ms of probes). ``sql_type`` is ``key``'s PostgreSQL
    type (``bigint``, ``varchar``); ``key``, ``columns`` and ``equal``'s names come from
    code, never input.
    """
    values = sorted(set(values))  # probes in index order
    if not values:
        return []
    if connection.vendor != "postgresql":
        # SQLite (the embedded default): the list as one JSON array.
        name = connection.ops.quote_name(model._meta.get_field(key).column)
        return list(
            model.objects.filter(**equal)
            .extra(  # noqa: S610 (no input in the SQL text)
                where=[f"{name} IN (SELECT value FROM json_each(%s))"],  # noqa: S608
                params=[json.dumps(values)],
            )
            .order_by()
            .values_list(*columns)
        )
    quote, field = connection.ops.quote_name, model._meta.get_field
    selected = ", ".join(f"found.{quote(field(column).column)}" for column in columns)
    conditions = [f"found.{quote(field(key).column)} = wanted.value"]
    params: list = [array_literal(values)]
    for column, value in equal.items():
        conditions.append(f"found.{quote(field(column).column)} = %s")
        params.append(value.pk if hasattr(value, "pk") else value)
    sql = (
        f"SELECT {selected} FROM unnest(%s::{sql_type}[]) AS wanted(value) "  # noqa: S608
        f"CROSS JOIN LATERAL (SELECT * FROM {quote(model._meta.db_table)} AS found "
        f"WHERE {' AND '.join(conditions)} LIMIT 1) AS found"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


class AnyOf(Lookup):
    """``field__any=values``: the field equals one of ``values``, sent as ONE parameter.

    ``field__in`` prepares each value on its own and writes a placeholder for each, which
    the driver then parses and fills one by one: for the hundreds of companies of a usage
    batch that costs more than the query. ``values`` are ids or strings, already in their
    database form. On PostgreSQL ``= ANY(array)`` (the column's own type, so its index
    serves); on SQLite the list as one JSON array. Registered on every field by
    ``BillingConfig.ready``.
    """

    lookup_name = "any"
    prepare_rhs = False

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        values = list(self.rhs)
        if connection.vendor == "postgresql":
            # The column's type without its length (from code, never input): a cast to
            # varchar(64) would cut a longer value down to one that may exist.
            array_type = self.lhs.output_field.db_type(connection).split("(")[0]
            return f"{lhs} = ANY(%s::{array_type}[])", [*lhs_params, array_literal(values)]
        sql = f"{lhs} IN (SELECT value FROM json_each(%s))"  # noqa: S608 (no input in it)
        return sql, [*lhs_params, json.dumps(values)]


class ReusableQuery:
    """A queryset whose SQL is compiled once per database connection, then run again with
    other values: for the few queries a usage group runs each time with other ids.

    Django builds and compiles a queryset on every evaluation (lookups resolved, the select
    list, the ordering): 0.2–0.5 ms for these, which is more than PostgreSQL takes to run
    them, and a usage batch runs a dozen. ``build`` makes the queryset from its arguments;
    on PostgreSQL it is called once per connection with stand-in values, whose places among
    the compiled parameters are found, and each call then sends the same SQL with its own
    values there; the rows pass through the same converters and become the same model
    instances (or ``values_list`` tuples) as the queryset's. Each argument is a list, tuple
    or set (for an ``__any`` lookup, of ints or strings) or an aware datetime. Elsewhere
    (SQLite, the embedded default) ``build`` is evaluated as it is.
    """

    def __init__(self, build):
        self._build = build

    def __call__(self, *values) -> list:
        wrapper = connections[DEFAULT_DB_ALIAS]
        if wrapper.vendor != "postgresql":
            return list(self._build(*values))
        # Kept on the connection (one per thread), which the compiler refers to: they live
        # and go together.
        compiled_here = wrapper.__dict__.setdefault("reusable_queries", {})
        compiled = compiled_here.get(self)
        if compiled is None:
            compiled = compiled_here[self] = _CompiledQuery(self._build, values, wrapper)
        return compiled.run(values)


class _CompiledQuery:
    """``ReusableQuery``'s SQL, the places of its arguments and how its rows are read."""

    def __init__(self, build, values, wrapper):
        stand_ins = [_stand_in(value, index) for index, value in enumerate(values)]
        queryset = build(*stand_ins)
        compiler = queryset.query.get_compiler(using=DEFAULT_DB_ALIAS)
        self.sql, params = compiler.as_sql()
        self.params = list(params)
        self.stand_ins, self.places = stand_ins, []
        for stand_in in stand_ins:
            wanted = array_literal(stand_in) if isinstance(stand_in, list) else stand_in
            found = [place for place, param in enumerate(self.params) if param == wanted]
            if len(found) != 1:
                raise ValueError(f"An argument of a reusable query is used {len(found)} times.")
            self.places.append(found[0])
        self.compiler = compiler
        self.converters = compiler.get_converters(
            [column[0] for column in compiler.select[0 : compiler.col_count]]
        )
        iterable = queryset._iterable_class
        if iterable is ModelIterable:
            klass_info = compiler.klass_info
            if klass_info.get("related_klass_infos") or compiler.annotation_col_map:
                raise ValueError("A reusable query reads the columns of one model only.")
            fields = klass_info["select_fields"]
            self.model = klass_info["model"]
            self.start, self.end = fields[0], fields[-1] + 1
            self.attnames = [
                column[0].target.attname for column in compiler.select[self.start : self.end]
            ]
        elif iterable is ValuesListIterable:
            self.model = None
        else:
            raise ValueError("A reusable query gives model instances or values_list tuples.")
        self.db = wrapper.alias
        self.for_update = queryset.query.select_for_update

    def run(self, values) -> list:
        if self.for_update and not connections[self.db].in_atomic_block:
            # As Django says when it compiles one (here it was compiled in another).
            raise TransactionManagementError(
                "select_for_update cannot be used outside of a transaction."
            )
        params = list(self.params)
        for place, value, stand_in in zip(self.places, values, self.stand_ins, strict=True):
            if isinstance(value, _COLLECTIONS) and isinstance(stand_in, list):
                params[place] = array_literal(value)
            elif isinstance(value, datetime) and isinstance(stand_in, datetime):
                params[place] = value
            else:
                _stand_in(value, 0)  # says what it takes
                raise TypeError("A reusable query's arguments keep their kinds from call to call.")
        with connections[self.db].cursor() as cursor:
            cursor.execute(self.sql, params)
            rows = cursor.fetchall()
        if self.converters:
            rows = self.compiler.apply_converters(rows, self.converters)
        if self.model is None:
            return [tuple(row) for row in rows]
        start, end, attnames, from_db = self.start, self.end, self.attnames, self.model.from_db
        return [from_db(self.db, attnames, row[start:end]) for row in rows]


_COLLECTIONS = list | tuple | set | frozenset


def _stand_in(value, index: int):
    """A value no real argument has, of ``value``'s kind (its place in the compiled SQL's
    parameters is found by it)."""
    if isinstance(value, _COLLECTIONS):
        return [-(10**15) - index]
    if isinstance(value, datetime):
        return datetime(1, 1, 1 + index, tzinfo=UTC)
    raise TypeError(f"A reusable query takes lists and datetimes, not {type(value).__name__}.")
