"""Taler's own SQL files, and databases built from them the way Taler's dbinit does.

Independent of the engine on purpose: psql runs each file exactly as
taler-exchange-dbinit does (shared/taler-sql/README.md), so a test can tell
"what Taler builds" from "what taler-ops builds".
"""

import os
import subprocess

import psycopg
import pytest

from pgcluster import PG_BIN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SQL_DIR = os.path.join(os.path.dirname(ROOT), "shared", "taler-sql", "v0.14")


def taler_sql_root():
    """TALER_SQL_DIR, else ../shared/taler-sql/v0.14 beside the checkout, else None."""
    path = os.environ.get("TALER_SQL_DIR") or DEFAULT_SQL_DIR
    return path if os.path.isfile(os.path.join(path, "exchange", "exchange-0001.sql")) else None


def require_taler_sql():
    """The directory holding exchange/ and auditor/, or skip the test saying why."""
    path = taler_sql_root()
    if path is None:
        pytest.skip("Taler's SQL files are not available: set TALER_SQL_DIR to a directory "
                    f"with exchange/ and auditor/ (default {DEFAULT_SQL_DIR})")
    return path


def psql_file(uri, path):
    subprocess.run([os.path.join(PG_BIN, "psql"), uri, "-X", "-q", "--set", "ON_ERROR_STOP=1",
                    "-f", path], check=True, capture_output=True, text=True)


def build_taler_exchange(uri, partitions=None, sql_root=None, patches=None):
    """taler-exchange-dbinit's sequence; ``patches``: apply only the first N patch files."""
    d = os.path.join(sql_root or require_taler_sql(), "exchange")
    with psycopg.connect(uri, autocommit=True) as conn:
        if not conn.execute("SELECT to_regnamespace('_v') IS NOT NULL").fetchone()[0]:
            psql_file(uri, os.path.join(d, "versioning.sql"))
        for n in range(1, (patches or 9999) + 1):
            name = f"exchange-{n:04d}"
            path = os.path.join(d, name + ".sql")
            if not os.path.exists(path):
                break
            if conn.execute("SELECT 1 FROM _v.patches WHERE patch_name = %s", (name,)).fetchone():
                continue
            psql_file(uri, path)
        psql_file(uri, os.path.join(d, "procedures.sql"))
        conn.execute("SET search_path TO exchange")
        conn.execute("SELECT exchange_do_create_tables(%s::INTEGER)", (partitions,))
    return uri


def build_taler_auditor(uri, sql_root=None):
    d = os.path.join(sql_root or require_taler_sql(), "auditor")
    with psycopg.connect(uri, autocommit=True) as conn:
        if not conn.execute("SELECT to_regnamespace('_v') IS NOT NULL").fetchone()[0]:
            psql_file(uri, os.path.join(d, "versioning.sql"))
        for name in ("auditor-0001", "auditor-0002"):
            if not conn.execute("SELECT 1 FROM _v.patches WHERE patch_name = %s",
                                (name,)).fetchone():
                psql_file(uri, os.path.join(d, name + ".sql"))
        conn.execute("SET search_path TO auditor")
        conn.execute("SELECT auditor.do_create_tables(NULL::INTEGER)")
        psql_file(uri, os.path.join(d, "procedures.sql"))
    return uri
