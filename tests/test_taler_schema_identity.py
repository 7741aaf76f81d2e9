"""The built-in model is Taler v0.14, column for column (shared/reference/taler-real-schema.md §2.2).

One database is built from Taler's own SQL files (tests/taler_build.py), one by
the model (dbinit.exchange_dbinit); every table the model carries is compared
through pg_catalog: columns (type, NOT NULL, default), CHECKs, PK, UNIQUEs,
FKs with their ON DELETE action, and under -P the partition key, the
partitions and the constraints on each of them.
"""

import subprocess

import psycopg
import pytest

import catalog
import taler_build
from taler_ops.schema import auditor_schema, dbinit, exchange_schema, spec
from taler_ops.schema.exchange_tables import TABLES

# Differences kept on purpose (docs/taler-schema.md); empty: none.
KEPT_DIFFERENCES = ()

# Taler's SQL files, or skip saying why (conftest.py's sql_root).
needs_taler = pytest.mark.usefixtures("sql_root")


def _describe_all(uri):
    with psycopg.connect(uri) as conn:
        return {t.name: catalog.describe(conn, t.name) for t in TABLES}


def _compare(cluster, name, partitions):
    taler = taler_build.build_taler_exchange(cluster.createdb(f"{name}_taler"), partitions)
    model = cluster.createdb(f"{name}_model")
    dbinit.exchange_dbinit(model, partitions=partitions)
    names = [t.name for t in TABLES]
    return catalog.diff(_describe_all(taler), _describe_all(model), names)


@needs_taler
def test_model_equals_taler_unpartitioned(cluster):
    differences = _compare(cluster, "ident_null", None)
    assert [d for d in differences if d not in KEPT_DIFFERENCES] == []


@needs_taler
@pytest.mark.parametrize("partitions", [0, 3])
def test_model_equals_taler_partitioned(cluster, partitions):
    differences = _compare(cluster, f"ident_p{partitions}", partitions)
    assert [d for d in differences if d not in KEPT_DIFFERENCES] == []


@needs_taler
def test_comparison_sees_a_difference(cluster):
    """The comparison is not blind: a dropped FK and a changed NOT NULL show up."""
    uri = cluster.createdb("ident_blind")
    dbinit.exchange_dbinit(uri)
    before = _describe_all(uri)
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("ALTER TABLE exchange.reserves_in ALTER COLUMN credit DROP NOT NULL")
        conn.execute("ALTER TABLE exchange.recoup DROP CONSTRAINT recoup_coin_pub_fkey")
    found = catalog.diff(before, _describe_all(uri), [t.name for t in TABLES])
    assert any(d.startswith("reserves_in.credit") for d in found)
    assert any(d.startswith("recoup constraints") for d in found)


def test_no_model_patch_bears_a_taler_name(fresh_db):
    names = [p.name for p in exchange_schema.PATCHES + auditor_schema.PATCHES]
    assert names == ["model-exchange-0001", "model-exchange-0002", "model-auditor-0001",
                     "model-auditor-0002"]
    for name in names:
        assert not name.startswith(spec.TALER_PATCH_PREFIXES), name
    dbinit.exchange_dbinit(fresh_db)
    dbinit.auditor_dbinit(fresh_db)
    with psycopg.connect(fresh_db) as conn:
        registered = [r[0] for r in conn.execute("SELECT patch_name FROM _v.patches")]
    assert sorted(registered) == sorted(names)
    # Taler's dbinit applies exchange-NNNN it does not find: none may be there.
    assert not [n for n in registered if n.startswith(spec.TALER_PATCH_PREFIXES)]


@needs_taler
def test_taler_dbinit_does_not_take_a_model_database_for_its_own(fresh_db):
    """With no exchange-NNNN registered, Taler's dbinit applies its exchange-0001 and stops
    loudly on the existing schema, instead of skipping patches it believes applied."""
    dbinit.exchange_dbinit(fresh_db)
    with pytest.raises(subprocess.CalledProcessError) as failed:
        taler_build.build_taler_exchange(fresh_db)
    assert "exchange-0001.sql" in " ".join(failed.value.cmd)
    assert 'schema "exchange" already exists' in failed.value.stderr
    with psycopg.connect(fresh_db) as conn:
        names = sorted(r[0] for r in conn.execute("SELECT patch_name FROM _v.patches"))
    assert names == ["model-exchange-0001", "model-exchange-0002"]
