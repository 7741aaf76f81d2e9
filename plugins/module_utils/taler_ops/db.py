"""Connections: one place that turns a libpq URI into a psycopg connection.

Connection failures become DatabaseNotReady (Taler's exit 5).  Messages name
host, port, database and user, never the password.
"""

from typing import Any, TypeVar, overload

import psycopg
from psycopg import conninfo as _conninfo
from psycopg.abc import ConnDict, ConnParam
from psycopg.rows import RowFactory, TupleRow

from .errors import DatabaseNotReady

Row = TypeVar("Row")

APPLICATION_NAME = "taler-ops"


def parse_conninfo(uri: str) -> ConnDict:
    """Parse a libpq URI or keyword string; ValueError with libpq's reason if malformed."""
    try:
        return _conninfo.conninfo_to_dict(uri)
    except psycopg.ProgrammingError as exc:
        raise ValueError(str(exc).strip()) from None


def describe(uri: str) -> str:
    """A password-free description of where a conninfo points."""
    try:
        params = parse_conninfo(uri)
    except ValueError:
        return "<malformed connection string>"
    parts = []
    for key in ("host", "port", "dbname", "user"):
        if params.get(key):
            parts.append(f"{key}={params[key]}")
    return " ".join(parts) or "<libpq defaults>"


@overload
def connect(uri: str, what: str = ..., autocommit: bool = ..., *,
            row_factory: RowFactory[Row], **params: ConnParam) -> psycopg.Connection[Row]: ...


@overload
def connect(uri: str, what: str = ..., autocommit: bool = ..., *, row_factory: None = ...,
            **params: ConnParam) -> psycopg.Connection[TupleRow]: ...


def connect(uri: str, what: str = "database", autocommit: bool = False, *,
            row_factory: RowFactory[Any] | None = None,
            **params: ConnParam) -> psycopg.Connection[Any]:
    """A connection with taler-ops' session settings (see _SESSION).

    ``params``: libpq parameters (e.g. connect_timeout) over those of ``uri``.
    """
    try:
        # The parameters are merged into the conninfo as psycopg.connect would merge
        # them (theirs over the URI's), so that each keyword keeps its own type here.
        conninfo = _conninfo.make_conninfo(uri, **{"application_name": APPLICATION_NAME, **params})
        conn = psycopg.connect(conninfo, autocommit=autocommit, row_factory=row_factory)
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split())
        raise DatabaseNotReady(f"cannot connect to the {what} ({describe(uri)}): {reason}") from None
    except psycopg.ProgrammingError as exc:
        raise DatabaseNotReady(f"invalid connection string for the {what}: {exc}") from None
    try:
        conn.execute(_SESSION)
        if not autocommit:
            conn.commit()
    except psycopg.Error as exc:
        close_quietly(conn)
        reason = " ".join(str(exc).split())
        raise DatabaseNotReady(f"cannot set up the session on the {what} ({describe(uri)}): "
                               f"{reason}") from None
    return conn


def one_row(cursor: psycopg.Cursor[Row]) -> Row:
    """The row of a query that always returns exactly one (an aggregate, a catalog test)."""
    row = cursor.fetchone()
    if row is None:     # such a query cannot return nothing: a bug, not a database state
        raise AssertionError("a single-row query returned no row")
    return row


# No JIT compilation (PostgreSQL's default is on): the sync's and the audit's statements
# read one batch of a serial range, but their estimates (generic plans, correlated
# subqueries per reserve in the GC) grow with the tables, cross jit_above_cost, and
# each execution then pays 0.2-5 s of LLVM compilation for a few thousand rows
# (bench/bench_scale.py, docs/sync.md "Scale").
_SESSION = "SET jit = off"


def close_quietly(conn: psycopg.Connection[Any] | None) -> None:
    """Close a connection that may already be broken; errors of a dead link are moot."""
    if conn is not None:
        try:
            conn.close()
        except psycopg.Error:
            pass


def build_conninfo(dbname: str, host: str | None = None, port: int | str | None = None,
                   user: str | None = None, password: str | None = None,
                   sslmode: str | None = None, sslrootcert: str | None = None,
                   **extra: ConnParam) -> str:
    """A libpq conninfo from parts, every value quoted by libpq's own rules.

    Used by the Ansible modules, whose parameters arrive as separate options;
    never log the result (it may hold the password).
    """
    params: dict[str, ConnParam] = {
        "dbname": dbname, "host": host, "port": port, "user": user, "password": password,
        "sslmode": sslmode, "sslrootcert": sslrootcert}
    params.update(extra)
    return _conninfo.make_conninfo(**{k: str(v) for k, v in params.items() if v not in (None, "")})
