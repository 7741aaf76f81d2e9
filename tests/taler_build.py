"""Build an exchange schema from Taler's own SQL files, as taler-exchange-dbinit does.

The files are read from ``TALER_SQL_DIR`` (environment), defaulting to
``<repo>/../shared/taler-sql/v0.14`` when that exists; they are never copied
into this repository.  The steps are the ones shared/taler-sql/README.md
gives: versioning.sql if ``_v`` is missing, each unregistered exchange-NNNN.sql
(stopping at the first missing file), procedures.sql, then
``exchange_do_create_tables(partitions)`` with search_path = exchange.
"""

import os
import subprocess

import psycopg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PSQL = "/usr/lib/postgresql/15/bin/psql"


def taler_sql_dir():
    """The directory holding exchange/ and auditor/, or None when Taler's SQL is absent."""
    path = os.environ.get("TALER_SQL_DIR") or os.path.join(ROOT, "..", "shared", "taler-sql",
                                                           "v0.14")
    path = os.path.abspath(path)
    if os.path.isfile(os.path.join(path, "exchange", "exchange-0001.sql")):
        return path
    return None


def skip_reason():
    return ("Taler's SQL files are not available (set TALER_SQL_DIR or provide "
            "../shared/taler-sql/v0.14)")


def _psql(uri, *args):
    exe = PSQL if os.path.exists(PSQL) else "psql"
    done = subprocess.run([exe, uri, "-q", "--set", "ON_ERROR_STOP=1", *args],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"psql {' '.join(args)} failed: {done.stderr.strip()}")


def build_taler_exchange(uri, partitions=None, sql_dir=None):
    """Create (or upgrade) Taler's exchange schema in ``uri``; ``partitions`` as dbinit -P."""
    sql_dir = sql_dir or taler_sql_dir()
    if sql_dir is None:
        raise RuntimeError(skip_reason())
    d = os.path.join(sql_dir, "exchange")
    with psycopg.connect(uri, autocommit=True) as conn:
        has_v = conn.execute("SELECT 1 FROM information_schema.schemata "
                             "WHERE schema_name = '_v'").fetchone()
    if not has_v:
        _psql(uri, "-f", os.path.join(d, "versioning.sql"))
    for n in range(1, 10000):
        name = f"exchange-{n:04d}"
        with psycopg.connect(uri, autocommit=True) as conn:
            done = conn.execute("SELECT 1 FROM _v.patches WHERE patch_name = %s",
                                (name,)).fetchone()
        if done:
            continue
        path = os.path.join(d, name + ".sql")
        if not os.path.isfile(path):
            break
        _psql(uri, "-f", path)
    _psql(uri, "-f", os.path.join(d, "procedures.sql"))
    arg = "NULL" if partitions is None else str(int(partitions))
    _psql(uri, "-c", f"SET search_path TO exchange; SELECT exchange_do_create_tables({arg});")
    return uri
