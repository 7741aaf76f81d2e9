"""model-exchange-0002 on databases made by the previous release (model-exchange-0001 only).

The previous release's dbinit is this engine with PATCHES cut to the first
patch: model-exchange-0001 renders the same DDL in both, which test_schema checks.
"""

import psycopg
import pytest

import builders as b
from taler_ops.schema import dbinit, exchange_schema, state, versioning
from taler_ops.errors import DatabaseNotReady

PREVIOUS = exchange_schema.PATCHES[:1]


@pytest.fixture
def previous_release(monkeypatch):
    """Run the block as the previous release's tools (they know model-exchange-0001 only)."""
    class Previous:
        def __enter__(self):
            monkeypatch.setattr(exchange_schema, "PATCHES", PREVIOUS)

        def __exit__(self, *exc):
            monkeypatch.setattr(exchange_schema, "PATCHES", PREVIOUS + (
                exchange_schema.Patch("model-exchange-0002", requires=("model-exchange-0001",)),))
    return Previous()


def _columns(conn, table):
    return [r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum", (f"exchange.{table}",))]


@pytest.mark.parametrize("role,partitions", [("primary", None), ("primary", 2),
                                             ("ingres", None), ("safe-copy", None)])
def test_upgrade_applies_only_the_new_patch_and_keeps_rows(fresh_db, previous_release, role,
                                                           partitions):
    with previous_release:
        dbinit.exchange_dbinit(fresh_db, role=role, partitions=partitions)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        pub, _ = b.reserve(conn, "r1", gc_date=0)
        serial = b.reserve_in(conn, pub, (5, 0))
        assert conn.execute("SELECT to_regclass('exchange.kycauths_in')").fetchone()[0] is None

    result = dbinit.exchange_dbinit(fresh_db)
    assert result["applied"] == ["model-exchange-0002"]
    assert result["setup"] == {"role": role, "partitions": partitions,
                               "foreign_keys": partitions is None and role != "ingres"}
    with psycopg.connect(fresh_db) as conn:
        # The rows written before the upgrade are untouched.
        assert conn.execute("SELECT reserve_in_serial_id FROM exchange.reserves_in"
                            ).fetchall() == [(serial,)]
        assert _columns(conn, "kycauths_in") == [
            "kycauth_in_serial_id", "account_pub", "wire_reference", "credit",
            "wire_source_h_payto", "exchange_account_section", "execution_date"]
        partitioned = conn.execute(
            "SELECT relkind = 'p' FROM pg_class WHERE oid = 'exchange.kycauths_in'::regclass"
        ).fetchone()[0]
        assert partitioned == (partitions is not None)
        # As in Taler: kycauths_in has no foreign key at all.
        fks = conn.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND "
                           "conrelid = 'exchange.kycauths_in'::regclass").fetchone()[0]
        assert fks == 0
    # And the next run has nothing to do.
    assert dbinit.exchange_dbinit(fresh_db)["applied"] == []


def test_new_table_keys_hold_after_the_upgrade(fresh_db, previous_release):
    with previous_release:
        dbinit.exchange_dbinit(fresh_db)
    dbinit.exchange_dbinit(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        h = b.wire_target(conn, "k")
        insert = ("INSERT INTO exchange.kycauths_in (account_pub, wire_reference, credit, "
                  "wire_source_h_payto, exchange_account_section, execution_date) "
                  "VALUES (%s, 7, ROW(0, 1000000), %s, 'main', 0)")
        conn.execute(insert, (b"\x01" * 32, h))
        # Taler's key: one transfer id per source account.
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert, (b"\x02" * 32, h))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(insert.replace("7,", "8,"), (b"\x03" * 31, h))
        # account_pub is nullable and no FK ties the source to wire_targets (as in Taler).
        conn.execute(insert.replace("7,", "9,"), (None, b"\x09" * 32))


def test_new_tools_refuse_the_previous_schema(cluster, fresh_db, previous_release, cli, conf):
    ingres = cluster.createdb(fresh_db.rsplit("/", 1)[1].split("?")[0] + "_ingres")
    with previous_release:
        dbinit.exchange_dbinit(fresh_db, role="safe-copy")
        dbinit.exchange_dbinit(ingres, role="ingres")
    with psycopg.connect(fresh_db) as conn:
        with pytest.raises(DatabaseNotReady, match="patch model-exchange-0002 is missing") as exc:
            state.assert_exchange_current(conn)
    assert exc.value.exit_code == 5
    source = conf("ingres.conf", {"exchangedb-postgres": {"CONFIG": ingres}})
    destination = conf("safe.conf", {"exchangedb-postgres": {"CONFIG": fresh_db}})
    out = cli("sync", "-s", source, "-d", destination, "-t")
    assert out.returncode == 5, out.stderr
    assert "model-exchange-0002" in out.stderr and "dbinit" in out.stderr


def test_previous_tools_refuse_the_new_schema(fresh_db, previous_release):
    dbinit.exchange_dbinit(fresh_db)
    with previous_release:
        for call in (lambda: dbinit.exchange_dbinit(fresh_db),
                     lambda: dbinit.exchange_dbinit(fresh_db, check=True)):
            with pytest.raises(DatabaseNotReady, match="model-exchange-0002, which this taler-ops "
                                                       "does not know") as exc:
                call()
            assert exc.value.exit_code == 5
        with psycopg.connect(fresh_db) as conn:
            with pytest.raises(DatabaseNotReady, match="newer than this tool"):
                state.assert_exchange_current(conn)
            assert versioning.applied(conn, "model-exchange-") == ["model-exchange-0001", "model-exchange-0002"]
