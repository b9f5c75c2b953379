"""Connecting the benchmarks to the PostgreSQL server that DATABASE_URL names."""

from urllib.parse import urlsplit, urlunsplit


def postgres_config(url: str) -> dict | None:
    """The django-environ config of ``url`` if it names PostgreSQL, else None."""
    if not url:
        return None
    import environ

    try:
        config = environ.Env.db_url_config(url)
    except Exception:  # an unknown scheme is simply "not PostgreSQL"
        return None
    engine = config.get("ENGINE", "")
    return config if engine.endswith(("postgresql", "postgis")) else None


def with_database(url: str, name: str, **query: object) -> str:
    """``url`` naming database ``name``, with extra query parameters."""
    parts = urlsplit(url)
    extra = "&".join(f"{key}={value}" for key, value in query.items())
    joined = "&".join(part for part in (parts.query, extra) if part)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", joined, parts.fragment))


def conninfo(config: dict) -> dict:
    """psycopg.connect() keywords for a Django DATABASES entry (or a db_url_config dict)."""
    info = {
        "dbname": config.get("NAME"),
        "user": config.get("USER"),
        "password": config.get("PASSWORD"),
        "host": config.get("HOST"),
        "port": config.get("PORT"),
        **{k: v for k, v in config.get("OPTIONS", {}).items() if isinstance(v, str | int)},
    }
    return {key: value for key, value in info.items() if value not in (None, "")}


def server_connection(server: dict, bench_db: str):
    """An autocommit connection to the server, outside the bench database: to the database
    DATABASE_URL names, else to ``postgres``."""
    import psycopg

    info = conninfo(server)
    if info.get("dbname") not in (None, bench_db):
        try:
            return psycopg.connect(**info, autocommit=True)
        except psycopg.OperationalError:
            pass
    return psycopg.connect(**{**info, "dbname": "postgres"}, autocommit=True)
