"""taler-ops sync against real PostgreSQL: a row that breaks a rule halts the sync, keeps
the batches before it and resumes after the repair; a partitioned safe copy, serials Taler
does not make unique, a halt message whatever ingres holds, and the least-privilege roles.

The template databases and the synced ``pair`` are tests/conftest.py's fixtures, shared
with tests/test_sync.py.
"""

import os

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from taler_ops import sync
from taler_ops.schema import registry
from taler_ops.errors import ConfigError

import sync_data
from sync_helpers import (BAD, BASE_ROWS, BATCH, NEW, all_digests, clone, conf_pair, drop_checks,
                          drop_keys, execute, make_template, table_digest, watermarks)


# -- halts -------------------------------------------------------------------------

def _set(table, column, value):
    entry = registry.entry(table)
    return (f'UPDATE exchange."{table}" SET "{column}" = {value} '
            f'WHERE "{entry.serial}" = {BAD}')


def _restore(table, column):
    """SQL that puts the generated value back (the operator's repair)."""
    original = sync_data.value(table, column, BAD)
    entry = registry.entry(table)
    if isinstance(original, bytes):
        shown = f"'\\x{original.hex()}'::bytea"
    elif isinstance(original, str):
        shown = "'" + original.replace("'", "''") + "'"
        if entry.column(column).is_amount:
            shown += "::exchange.taler_amount"
    else:
        shown = str(original)
    return _set(table, column, shown)


def _col_change(table, column, value, drop=("checks",), rule=None):
    def tamper(src):
        if "checks" in drop:
            drop_checks(src, table)
        if "keys" in drop:
            drop_keys(src, table)
        if "notnull" in drop:
            execute(src, f'ALTER TABLE exchange."{table}" ALTER COLUMN "{column}" DROP NOT NULL')
        execute(src, _set(table, column, value))

    def repair(src):
        execute(src, _restore(table, column))
    return table, rule, tamper, repair


def _duplicate_serial():
    def tamper(src):
        drop_keys(src, "extensions")
        execute(src, "INSERT INTO exchange.extensions (extension_id, name, manifest) "
                     f"VALUES ({BAD}, 'evil', 'x')")

    def repair(src):
        execute(src, "DELETE FROM exchange.extensions WHERE name = 'evil'")
    return "extensions", "duplicate-serial", tamper, repair


def _schema_drift():
    def tamper(src):
        execute(src, "ALTER TABLE exchange.extensions ALTER COLUMN name TYPE varchar(200)")

    def repair(src):
        execute(src, "ALTER TABLE exchange.extensions ALTER COLUMN name TYPE text")
    return "extensions", "schema-drift", tamper, repair


TAMPERS = {
    "null": _col_change("reserves_in", "exchange_account_section", "NULL", drop=("notnull",),
                        rule="null"),
    "length": _col_change("reserves_out", "reserve_sig", "'\\x0102'::bytea", rule="length"),
    "amount-negative": _col_change("reserves_in", "credit", "ROW(-1, 0)", rule="amount-negative"),
    "amount-not-normalized": _col_change("coin_deposits", "amount_with_fee", "ROW(1, 100000000)",
                                         rule="amount-not-normalized"),
    "amount-null": _col_change("refunds", "amount_with_fee", "ROW(NULL, 5)", rule="amount-null"),
    "derived-hash": _col_change("denominations", "denom_pub_hash",
                                "sha512('forged'::bytea)", drop=("keys",), rule="derived-hash"),
    "derived-hash-normalized": _col_change("wire_targets", "h_normalized_payto",
                                           "sha256('forged'::bytea)", rule="derived-hash"),
    "check": _col_change("policy_details", "fulfillment_state", "9", rule="check"),
    "parent-missing": _col_change("coin_deposits", "batch_deposit_serial_id", "999999",
                                  drop=(), rule="parent-missing"),
    "parent-missing-nullable": _col_change("batch_deposits", "policy_details_serial_id",
                                           "424242", drop=(), rule="parent-missing"),
    "duplicate-key": _col_change("wire_out", "wtid_raw",
                                 "(SELECT wtid_raw FROM exchange.wire_out "
                                 "WHERE wireout_uuid = 3)", drop=("keys",),
                                 rule="duplicate-key"),
    "duplicate-serial": _duplicate_serial(),
    "schema-drift": _schema_drift(),
}


@pytest.mark.parametrize("kind", sorted(TAMPERS))
def test_tampering_halts_keeps_earlier_batches_and_resumes_after_repair(pair, kind):
    src, dst = pair
    table, rule, tamper, repair = TAMPERS[kind]
    sync_data.populate(src, NEW[1], start=NEW[0])
    tamper(src)
    order = [e.name for e in registry.REPLICATED]
    later = order[order.index(table) + 1:]
    before = all_digests(dst)

    with pytest.raises(sync.SyncHalt) as info:
        sync.sync_once(src, dst, batch_size=BATCH)
    halt = info.value
    assert (halt.table, halt.rule) == (table, rule)
    assert str(halt).startswith(f"HALT table={table} serial=")
    assert halt.exit_code == 1

    after = all_digests(dst)
    for name in later:
        assert after[name] == before[name], f"{name} was written after the halt"
    marks = watermarks(dst)
    if rule == "schema-drift":
        assert halt.serial is None
        assert after == before, "a schema halt must come before any write"
    else:
        assert halt.serial == BAD
        # Batches before the offending one are kept, nothing of it is written.
        assert marks[table] == 40
        assert table_digest(dst, table) == table_digest(dst, table, upto=40)
        assert table_digest(dst, table)[0] == 40
    # The audit's consistent cut stays at the last complete pass.
    cut = dict(execute(dst, "SELECT table_name, complete_serial FROM taler_ops.sync_watermarks"))
    assert set(cut.values()) == {BASE_ROWS}
    if table not in ("denominations", "extensions"):
        assert marks["denominations"] == 50, "earlier tables of the pass were copied"
    recorded = execute(dst, "SELECT table_name, serial, rule, cleared_tsz IS NULL "
                            "FROM taler_ops.sync_halts")
    assert recorded == [(table, halt.serial, rule, True)]

    # Running again without a repair halts the same way (and records it once).
    with pytest.raises(sync.SyncHalt):
        sync.sync_once(src, dst, batch_size=BATCH)
    assert len(execute(dst, "SELECT 1 FROM taler_ops.sync_halts")) == 1

    repair(src)
    result = sync.sync_once(src, dst, batch_size=BATCH)
    assert result["copied"] > 0
    src_d, dst_d = all_digests(src), all_digests(dst)
    assert dst_d == src_d
    assert execute(dst, "SELECT count(*) FROM taler_ops.sync_halts WHERE cleared_tsz IS NULL") \
        == [(0,)]
    assert execute(dst, "SELECT count(*) FROM taler_ops.sync_watermarks "
                        "WHERE complete_serial <> 50") == [(0,)]


def test_halt_on_the_command_line(pair, conf, cli):
    src, dst = pair
    sync_data.populate(src, NEW[1], start=NEW[0])
    TAMPERS["parent-missing"][2](src)
    s_conf, d_conf = conf_pair(conf, src, dst)
    proc = cli("sync", "-s", s_conf, "-d", d_conf, "-t", "-b", BATCH)
    assert proc.returncode == 1
    halt_lines = [line for line in proc.stderr.splitlines() if line.startswith("HALT ")]
    assert len(halt_lines) == 1
    assert halt_lines[0].startswith(f"HALT table=coin_deposits serial={BAD} rule=parent-missing")
    assert "batch_deposit_serial_id" in halt_lines[0]


def test_partitioned_safe_copy_checks_relations_itself(cluster, templates):
    """No FKs and per-partition keys on the destination: the sync checks them explicitly."""
    src = clone(cluster, templates["src"], "part_src")
    dst = make_template(cluster, f"sync_part_dst_{templates['flavour']}", "safe-copy",
                        partitions=2, flavour=templates["flavour"])
    assert execute(dst, "SELECT foreign_keys FROM taler_ops.database_setup") == [(False,)]
    sync_data.populate(src, NEW[1], start=NEW[0])
    drop_keys(src, "known_coins")
    # known_coins is partitioned by coin_pub; known_coin_id is unique per partition only.
    execute(src, "INSERT INTO exchange.known_coins (known_coin_id, denominations_serial, coin_pub,"
                 " denom_sig) SELECT 45, denominations_serial, sha256(coin_pub), denom_sig"
                 " FROM exchange.known_coins WHERE known_coin_id = 44")
    with pytest.raises(sync.SyncHalt) as info:
        sync.sync_once(src, dst, batch_size=BATCH)
    assert (info.value.table, info.value.serial, info.value.rule) == \
        ("known_coins", 45, "duplicate-serial")
    execute(src, "DELETE FROM exchange.known_coins WHERE known_coin_id = 45 AND "
                 "coin_pub NOT IN (SELECT coin_pub FROM exchange.coin_deposits)")
    TAMPERS["parent-missing"][2](src)
    with pytest.raises(sync.SyncHalt) as info:
        sync.sync_once(src, dst, batch_size=BATCH)
    assert (info.value.table, info.value.serial, info.value.rule) == \
        ("coin_deposits", BAD, "parent-missing")
    TAMPERS["parent-missing"][3](src)
    sync.sync_once(src, dst, batch_size=BATCH)
    assert all_digests(dst) == all_digests(src)


def test_halt_message_stays_one_line_whatever_ingres_holds(pair):
    src, dst = pair
    drop_keys(src, "extensions")
    execute(src, "INSERT INTO exchange.extensions (extension_id, name) VALUES "
                 f"({BASE_ROWS + 1}, E'evil\\nHALT table=reserves serial=1 rule=forged'), "
                 f"({BASE_ROWS + 2}, E'evil\\nHALT table=reserves serial=1 rule=forged')")
    with pytest.raises(sync.SyncHalt) as info:
        sync.sync_once(src, dst)
    assert (info.value.serial, info.value.rule) == (BASE_ROWS + 2, "duplicate-key")
    assert "\n" not in str(info.value) and "evil\\x0aHALT" in str(info.value)


@pytest.mark.parametrize("table,serial,key", [
    # Taler has only a plain index on this serial: the schema would take a duplicate.
    ("reserves_open_deposits", "reserve_open_deposit_uuid", ("coin_pub", "coin_sig")),
    # Taler makes fulfillment_id unique only together with h_fulfillment_proof.
    ("policy_fulfillments", "fulfillment_id", ("h_fulfillment_proof",)),
])
def test_serials_taler_does_not_make_unique_are_checked_by_the_sync(pair, table, serial, key):
    src, dst = pair
    entry = registry.entry(table)
    assert not entry.serial_unique
    assert (serial,) not in entry.enforced_keys(None)
    # Two new rows sharing one serial, with distinct natural keys: the schema (Taler's,
    # and so the safe copy's) accepts both, so only the sync's own check stops them.
    cols = [c.name for c in entry.copy_columns if c.name not in key and c.name != serial]
    for tag in ("x", "y"):
        fresh = ", ".join(
            f"{'sha512' if entry.column(k).length == 64 else 'sha256'}({k} || '{tag}'::bytea)"
            for k in key)
        execute(src, f"INSERT INTO exchange.{table} ({serial}, {', '.join(key)}, "
                     f"{', '.join(cols)}) "
                     f"SELECT (SELECT max({serial}) FROM exchange.{table}) + "
                     f"{1 if tag == 'x' else 0}, {fresh}, {', '.join(cols)} "
                     f"FROM exchange.{table} ORDER BY {serial} LIMIT 1")
    with pytest.raises(sync.SyncHalt) as info:
        sync.sync_once(src, dst)
    assert (info.value.table, info.value.rule) == (table, "duplicate-serial")


# Rows committed out of serial order, serial gaps and planted serials: tests/test_sync_trust.py.


# -- least privilege -------------------------------------------------------------------

def _grant_sync_roles(cluster, src, dst, reader, writer):
    execute(cluster.uri(), f'CREATE ROLE "{reader}" LOGIN', f'CREATE ROLE "{writer}" LOGIN')
    execute(src, f'GRANT USAGE ON SCHEMA exchange, _v, taler_ops TO "{reader}"',
            f'GRANT SELECT ON ALL TABLES IN SCHEMA exchange, _v TO "{reader}"',
            f'GRANT SELECT ON taler_ops.database_setup TO "{reader}"')
    grants = [f'GRANT USAGE ON SCHEMA exchange, _v, taler_ops TO "{writer}"',
              f'GRANT SELECT ON _v.patches, taler_ops.database_setup TO "{writer}"',
              f'GRANT SELECT, INSERT, UPDATE ON taler_ops.sync_watermarks, taler_ops.sync_halts '
              f'TO "{writer}"',
              f'GRANT SELECT, INSERT, UPDATE, DELETE ON taler_ops.sync_holes, taler_ops.sync_cuts '
              f'TO "{writer}"']
    grants += [f'GRANT SELECT, INSERT ON exchange."{e.name}" TO "{writer}"'
               for e in registry.REPLICATED]
    execute(dst, *grants)


def test_least_privilege_roles_sync_and_diagnose(cluster, pair, templates):
    """The sync needs SELECT on ingres; INSERT (+SELECT) on the safe copy's tables and
    write access only to its own bookkeeping tables; no UPDATE/DELETE/TRUNCATE."""
    src, dst = pair
    tag = f"{os.getpid()}_{templates['flavour']}"
    reader, writer = f"sync_reader_{tag}", f"sync_writer_{tag}"
    _grant_sync_roles(cluster, src, dst, reader, writer)
    src_db, dst_db = (conninfo_to_dict(u)["dbname"] for u in (src, dst))
    src_ro, dst_w = cluster.uri(src_db, user=reader), cluster.uri(dst_db, user=writer)
    sync_data.populate(src, NEW[1], start=NEW[0])
    TAMPERS["parent-missing"][2](src)

    with pytest.raises(ConfigError, match="session_replication_role"):
        sync.sync_once(src_ro, dst_w, trigger_free=True)
    if templates["flavour"] == "taler":
        # Taler's own triggers on a Taler-built safe copy must not run on copied rows:
        # without the grant the sync refuses instead of copying with them on.
        with pytest.raises(ConfigError, match="built from Taler's SQL files"):
            sync.sync_once(src_ro, dst_w, batch_size=BATCH)
        assert "coin_deposits" not in watermarks(dst) or watermarks(dst)["coin_deposits"] == 20
    else:
        # Without the grant the FK constraints check parents; the diagnosis still names the row.
        with pytest.raises(sync.SyncHalt) as info:
            sync.sync_once(src_ro, dst_w, batch_size=BATCH)
        assert (info.value.table, info.value.serial, info.value.rule) == \
            ("coin_deposits", BAD, "parent-missing")
        assert watermarks(dst)["coin_deposits"] == 40

    TAMPERS["parent-missing"][3](src)
    execute(cluster.uri(), f'GRANT SET ON PARAMETER session_replication_role TO "{writer}"')
    result = sync.sync_once(src_ro, dst_w, batch_size=BATCH, trigger_free=True)
    assert result["copied"] > 0
    assert all_digests(dst) == all_digests(src)
    with psycopg.connect(dst_w) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM exchange.reserves")
