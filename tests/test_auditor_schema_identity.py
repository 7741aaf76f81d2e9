"""The built-in model's auditor schema is Taler's v0.14 auditor schema, table for table.

One database gets Taler's auditor-0001 + auditor-0002 + procedures.sql
(tests/taler_build.py), one the model (dbinit.auditor_dbinit); everything that
matters to a reader or writer of the tables is compared through pg_catalog:
the set of tables, each table's columns (type, NOT NULL, default, identity,
physical order), CHECKs, PKs and UNIQUEs, the indexes, the triggers, and the
functions a Taler helper or the auditor's web service calls (name, arguments,
result type) together with what they return.
"""

import psycopg
import pytest

import catalog
import taler_build
from taler_ops.schema import auditor_schema, dbinit

# Taler's partition machinery, which its own auditor schema leaves unused
# (auditor_tables stays empty): deliberately not in the model.
TALER_ONLY_TABLES = ("auditor_tables",)
TALER_ONLY_FUNCTIONS = ("comment_partitioned_column", "comment_partitioned_table",
                        "create_partitioned_table", "do_create_tables")

# Taler's SQL files, or skip saying why (conftest.py's sql_root).
needs_taler = pytest.mark.usefixtures("sql_root")


def _indexes(conn):
    """Indexes of their own (those behind a PK or UNIQUE are compared as constraints)."""
    return sorted(conn.execute(
        """SELECT x.indexdef FROM pg_indexes x
            WHERE x.schemaname = 'auditor' AND NOT EXISTS (
                  SELECT 1 FROM pg_constraint c
                   WHERE c.conindid = format('%I.%I', x.schemaname, x.indexname)::regclass)"""
    ).fetchall())


def _triggers(conn):
    return sorted(conn.execute(
        """SELECT c.relname, t.tgname, t.tgtype, p.proname
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_proc p ON p.oid = t.tgfoid
            WHERE n.nspname = 'auditor' AND NOT t.tgisinternal""").fetchall())


def _functions(conn):
    return sorted(conn.execute(
        """SELECT p.proname, pg_get_function_identity_arguments(p.oid),
                  pg_get_function_result(p.oid), p.proretset
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'auditor' AND NOT (p.proname = ANY(%s))""",
        (list(TALER_ONLY_FUNCTIONS),)).fetchall())


def _types(conn):
    return sorted(conn.execute(
        """SELECT t.typname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnum
             FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             JOIN pg_class c ON c.oid = t.typrelid JOIN pg_attribute a ON a.attrelid = c.oid
            WHERE n.nspname = 'auditor' AND c.relkind = 'c' AND a.attnum > 0""").fetchall())


def describe(uri):
    with psycopg.connect(uri) as conn:
        conn.execute("SET search_path TO pg_catalog")
        names = [t for t in catalog.tables(conn, "auditor") if t not in TALER_ONLY_TABLES]
        return {
            "tables": {t: catalog.describe(conn, t, "auditor") for t in names},
            "indexes": _indexes(conn),
            "triggers": _triggers(conn),
            "functions": _functions(conn),
            "types": _types(conn),
        }


def differences(a, b):
    out = []
    names = sorted(set(a["tables"]) | set(b["tables"]))
    out += catalog.diff(a["tables"], b["tables"], names)
    for key in ("indexes", "triggers", "functions", "types"):
        for item in sorted(set(map(tuple, a[key])) ^ set(map(tuple, b[key])), key=str):
            side = "taler" if tuple(item) in set(map(tuple, a[key])) else "model"
            out.append(f"{key}: only in {side}: {item}")
    return out


def _readers(uri):
    """What Taler's two reader functions return for known and unknown keys."""
    with psycopg.connect(uri) as conn:
        conn.execute("SET search_path TO auditor")   # as Taler's auditor plugin connects
        conn.execute("INSERT INTO auditor.auditor_progress VALUES ('b', 7), ('a', 3)")
        conn.execute("INSERT INTO auditor.auditor_balances (balance_key, balance_value) "
                     "VALUES ('x', ROW(1, 5)), ('y', NULL)")
        progress = [r[0] for r in conn.execute(
            "SELECT * FROM auditor.auditor_do_get_auditor_progress(ARRAY['a','zz','b','a'])")]
        balances = [tuple(r) for r in conn.execute(
            "SELECT (v).val, (v).frac FROM auditor.auditor_do_get_balance("
            "ARRAY['y','x','nope']) AS v")]
        conn.rollback()
    return progress, balances


@needs_taler
def test_model_auditor_schema_equals_taler(cluster):
    taler = taler_build.build_taler_auditor(cluster.createdb("aud_ident_taler"))
    model = cluster.createdb("aud_ident_model")
    dbinit.auditor_dbinit(model)
    a, b = describe(taler), describe(model)
    assert len(b["tables"]) == 30
    assert sorted(b["tables"]) == sorted(auditor_schema.TABLES)
    assert differences(a, b) == []
    # Same answers from the reader functions, written in our own words.
    assert _readers(taler) == _readers(model) == ([3, None, 7, 3], [(None, None), (1, 5),
                                                                     (None, None)])


@needs_taler
def test_restart_clears_what_taler_restart_sql_clears(cluster, sql_root):
    """Taler's restart.sql names exactly the model's RESTART_CLEARS."""
    import os
    import re
    with open(os.path.join(sql_root, "auditor", "restart.sql")) as f:
        named = sorted(re.findall(r"DELETE FROM (\w+);", f.read()))
    assert named == sorted(auditor_schema.RESTART_CLEARS)


def test_comparison_sees_a_difference(cluster):
    """The comparison is not blind: NOT NULL, a default, a UNIQUE, an index and a
    function result planted on a model database all show up."""
    uri = cluster.createdb("aud_ident_blind")
    dbinit.auditor_dbinit(uri)
    before = describe(uri)
    assert differences(before, describe(uri)) == []
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("ALTER TABLE auditor.auditor_bad_sig_losses "
                     "ALTER COLUMN operation DROP NOT NULL")
        conn.execute("ALTER TABLE auditor.auditor_purses ALTER COLUMN balance DROP DEFAULT")
        conn.execute("ALTER TABLE auditor.auditor_reserves "
                     "DROP CONSTRAINT auditor_reserves_auditor_reserves_rowid_key")
        conn.execute("DROP INDEX auditor.auditor_deposit_confirmations_not_ancient")
        conn.execute("DROP FUNCTION auditor.auditor_do_get_balance(TEXT[])")
        conn.execute("CREATE FUNCTION auditor.auditor_do_get_balance(in_keys TEXT[]) "
                     "RETURNS SETOF INT8 LANGUAGE sql AS 'SELECT 1::INT8'")
    found = differences(before, describe(uri))
    assert any(d.startswith("auditor_bad_sig_losses.operation") for d in found), found
    assert any(d.startswith("auditor_purses.balance") for d in found), found
    assert any(d.startswith("auditor_reserves constraints") for d in found), found
    assert any(d.startswith("indexes: only in taler") for d in found), found
    assert any(d.startswith("functions:") and "auditor_do_get_balance" in d for d in found)
