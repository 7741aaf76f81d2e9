"""taler-ops sync against real PostgreSQL: completeness, halts, crash safety, daemon, lock."""

import os
import signal
import subprocess
import sys

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from taler_ops import sync
from taler_ops.schema import hashing, registry
from taler_ops.errors import ConfigError, DatabaseNotReady

import sync_data
from conftest import FLAVOURS, flavour_param, wait_for
from sync_helpers import (all_digests, clone, conf_pair, drop_checks, drop_keys, execute,
                          make_template, table_digest, watermarks)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_ROWS = 20          # rows per table in the templates
NEW = (21, 30)          # rows appended before each tamper test: serials 21..50
BAD = 46                # the tampered serial
BATCH = 10              # so 21..30 and 31..40 commit before the bad batch 41..50


@pytest.fixture(scope="module", params=[flavour_param(f) for f in FLAVOURS])
def templates(cluster, request):
    """Template databases of one flavour: the built-in model, or built by Taler's SQL."""
    flavour = request.param
    names = {k: f"sync_tpl_{k}_{flavour}" for k in ("src", "empty", "synced")}
    src = make_template(cluster, names["src"], "ingres", rows=BASE_ROWS, flavour=flavour)
    make_template(cluster, names["empty"], "safe-copy", flavour=flavour)
    synced = make_template(cluster, names["synced"], "safe-copy", flavour=flavour)
    sync.sync_once(src, synced)
    return dict(names, flavour=flavour)


@pytest.fixture
def pair(cluster, templates):
    """(source, destination): a source with BASE_ROWS rows per table, destination in sync."""
    return clone(cluster, templates["src"], "sync_src"), clone(cluster, templates["synced"], "sync_dst")


def _spawn(*args):
    return subprocess.Popen([sys.executable, "-m", "taler_ops.cli", *map(str, args)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# -- a complete sync ---------------------------------------------------------------

def test_full_sync_copies_every_table_and_keeps_mutable_defaults(cluster, templates, conf, cli):
    src = clone(cluster, templates["src"], "full_src")
    dst = clone(cluster, templates["empty"], "full_dst")
    s_conf, d_conf = conf_pair(conf, src, dst)
    proc = cli("sync", "-s", s_conf, "-d", d_conf, "-t", "-b", 7)
    assert proc.returncode == 0, proc.stderr
    assert f"copied {BASE_ROWS * len(registry.REPLICATED)} rows" in proc.stdout

    assert len(registry.TALER_SYNC_TABLES) == 44
    assert all_digests(src) == all_digests(dst)
    assert all(v == BASE_ROWS for v in watermarks(dst).values())
    assert set(watermarks(dst)) == {e.name for e in registry.REPLICATED}
    with psycopg.connect(dst) as conn:
        for entry in registry.REPLICATED:
            for col in entry.mutable_columns:
                expected = "NULL" if col.default is None else f"({col.default})::{col.sql_type}"
                bad = conn.execute(
                    f'SELECT count(*) FROM exchange."{entry.name}" '
                    f'WHERE "{col.name}" IS DISTINCT FROM {expected}').fetchone()[0]
                assert bad == 0, f"{entry.name}.{col.name} was copied instead of defaulted"
    # The source really had non-default values there.
    assert execute(src, "SELECT count(*) FROM exchange.reserves "
                        "WHERE current_balance = ROW(0,0)::exchange.taler_amount")[0][0] == 0

    again = cli("sync", "-s", s_conf, "-d", d_conf, "-t")
    assert again.returncode == 0, again.stderr
    assert "copied 0 rows in 1 pass" in again.stdout


def test_a_generated_exchange_history_syncs_completely(cluster, templates):
    from taler_ops.sim import workload
    src = clone(cluster, templates["empty"], "gen_src")   # the generator writes any role
    execute(src, "UPDATE taler_ops.database_setup SET role = 'primary'")
    dst = clone(cluster, templates["empty"], "gen_dst")
    inserted = workload.bulk(src, 3000, seed=1)
    filled = {name for name, n in inserted.items() if n}
    assert filled >= {e.name for e in registry.REPLICATED}, "every replicated table has rows"
    result = sync.sync_once(src, dst, batch_size=500)
    assert result["copied"] == sum(inserted[e.name] for e in registry.REPLICATED
                                   if e.name in inserted)
    assert all_digests(dst) == all_digests(src)
    assert sync.sync_once(src, dst)["copied"] == 0


def test_derived_hashes_are_recomputed_by_the_rules(pair):
    src, dst = pair
    with psycopg.connect(dst) as conn:
        rows = conn.execute("SELECT payto_uri, wire_target_h_payto, h_normalized_payto "
                            "FROM exchange.wire_targets").fetchall()
    assert rows
    for uri, h, hn in rows:
        assert bytes(h) == hashing.full_payto_hash(uri)
        assert bytes(hn) == hashing.normalized_payto_hash(uri)
    # h_coin_ev is the exchange's value: it depends on the row's denomination.
    with psycopg.connect(dst) as conn:
        bad = conn.execute(
            "SELECT count(*) FROM exchange.refresh_revealed_coins r JOIN exchange.denominations d "
            "USING (denominations_serial) WHERE r.h_coin_ev <> sha512(d.denom_pub_hash || "
            "substring(r.coin_ev from 1 for 4) || substring(r.coin_ev from 9))").fetchone()[0]
    assert bad == 0


def test_dry_run_reports_without_writing(pair):
    src, dst = pair
    sync_data.populate(src, 5, start=BASE_ROWS + 1)
    before = all_digests(dst)
    result = sync.sync_once(src, dst, dry_run=True)
    assert result["copied"] == 5 * len(registry.REPLICATED)
    assert result["tables"]["reserves"]["copied"] == 5
    assert all_digests(dst) == before
    assert sync.sync_once(src, dst)["copied"] == 5 * len(registry.REPLICATED)


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


# -- preflight -----------------------------------------------------------------------

def test_refuses_wrong_roles_outdated_schemas_and_same_files(cluster, templates, pair, conf, cli):
    src, dst = pair
    with pytest.raises(ConfigError, match="not 'safe-copy'"):
        sync.sync_once(dst, src)
    other_safe = clone(cluster, templates["empty"], "safe2")
    with pytest.raises(ConfigError, match="source database is itself a 'safe-copy'"):
        sync.sync_once(dst, other_safe)
    execute(src, "INSERT INTO _v.patches (patch_name, applied_by) VALUES ('model-exchange-0099', 'x')")
    with pytest.raises(DatabaseNotReady, match="model-exchange-0099"):
        sync.sync_once(src, dst)
    s_conf, d_conf = conf_pair(conf, src, dst)
    assert cli("sync", "-s", s_conf, "-d", d_conf, "-t").returncode == 5
    same = cli("sync", "-s", s_conf, "-d", s_conf, "-t")
    assert same.returncode == 2 and "must differ" in same.stderr


# -- crashes, the daemon and the lock ------------------------------------------------

def test_kill_9_mid_pass_then_rerun_leaves_no_duplicate_and_no_gap(pair, conf, cli):
    src, dst = pair
    sync_data.populate(src, 400, start=BASE_ROWS + 1)
    s_conf, d_conf = conf_pair(conf, src, dst)

    def copied():
        return execute(dst, "SELECT coalesce(sum(rows_copied), 0) "
                            "FROM taler_ops.sync_watermarks")[0][0]

    def table_rows():
        return sum(n for n, _ in all_digests(dst).values())

    # SIGTERM: the current batch is finished and committed, then exit 0.
    proc = _spawn("sync", "-s", s_conf, "-d", d_conf, "-t", "-b", 20)
    wait_for(lambda: copied() > BASE_ROWS * len(registry.REPLICATED) + 500,
              what="the sync to copy some batches")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.startswith("stopped") or "\nstopped: copied" in out
    assert table_rows() == copied()

    # kill -9: whatever was committed is consistent, the rest is copied by a rerun.
    proc = _spawn("sync", "-s", s_conf, "-d", d_conf, "-t", "-b", 20)
    mark = copied()
    wait_for(lambda: copied() > mark + 2000, what="the sync to copy more batches")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    partial = sum(n for n, _ in all_digests(dst).values())
    total = sum(n for n, _ in all_digests(src).values())
    assert partial < total, "the sync finished before it could be killed"

    rerun = cli("sync", "-s", s_conf, "-d", d_conf, "-t", "-b", 20)
    assert rerun.returncode == 0, rerun.stderr
    assert all_digests(dst) == all_digests(src)
    with psycopg.connect(dst) as conn:
        for entry in registry.REPLICATED:
            n, distinct, top = conn.execute(
                f'SELECT count(*), count(DISTINCT "{entry.serial}"), max("{entry.serial}") '
                f'FROM exchange."{entry.name}"').fetchone()
            assert n == distinct == top == BASE_ROWS + 400, entry.name
        copied = conn.execute("SELECT sum(rows_copied) FROM taler_ops.sync_watermarks").fetchone()
    assert copied[0] == total


def test_daemon_follows_new_rows_reconnects_and_holds_the_lock(pair, conf, cli, tmp_path):
    src, dst = pair
    s_conf, d_conf = conf_pair(conf, src, dst)
    pidfile = tmp_path / "sync.pid"
    daemon = _spawn("sync", "-s", s_conf, "-d", d_conf, "-b", 50, "--pidfile", pidfile)
    try:
        wait_for(pidfile.exists, what="the pidfile")
        assert int(pidfile.read_text()) == daemon.pid

        def synced():
            return all_digests(dst) == all_digests(src)
        sync_data.populate(src, 5, start=BASE_ROWS + 1)
        wait_for(synced, what="the daemon to copy new rows")

        second = cli("sync", "-s", s_conf, "-d", d_conf, "-t")
        assert second.returncode == 1
        assert "already running" in second.stderr

        # Lose the destination connection: the daemon reconnects and carries on.
        execute(dst, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                     "AND application_name = 'taler-ops'")
        sync_data.populate(src, 5, start=BASE_ROWS + 6)
        wait_for(synced, what="the daemon to reconnect and copy")
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err
    assert "stopped: copied" in out
    assert not pidfile.exists()
    assert "reconnect" in err or "event=reconnect" in err


# -- the Ansible module -----------------------------------------------------------------

def test_module_check_mode_then_idempotent_sync_then_halt(pair, conf, module_runner):
    src, dst = pair
    sync_data.populate(src, 3, start=BASE_ROWS + 1)
    s_conf, d_conf = conf_pair(conf, src, dst)
    args = {"src_config": s_conf, "dst_config": d_conf, "batch_size": 2}
    before = all_digests(dst)

    result, _ = module_runner("taler_auditor_sync", args, check=True)
    assert result["changed"] is True, result
    assert result["copied"] == 3 * len(registry.REPLICATED)
    assert result["tables"]["reserves"]["copied"] == 3
    assert all_digests(dst) == before

    result, _ = module_runner("taler_auditor_sync", args)
    assert result["changed"] is True and result["copied"] == 3 * len(registry.REPLICATED), result
    assert result["tables"]["reserves"]["watermark"] == BASE_ROWS + 3
    assert all_digests(dst) == all_digests(src)

    result, _ = module_runner("taler_auditor_sync", args)
    assert result["changed"] is False and result["copied"] == 0, result
    result, _ = module_runner("taler_auditor_sync", args, check=True)
    assert result["changed"] is False, result

    sync_data.populate(src, NEW[1], start=NEW[0] + 3)
    execute(src, "UPDATE exchange.coin_deposits SET batch_deposit_serial_id = 999999 "
                 "WHERE coin_deposit_serial_id = 40")
    result, _ = module_runner("taler_auditor_sync", args)
    assert result.get("failed") is True
    assert result["msg"].startswith("HALT table=coin_deposits serial=40 rule=parent-missing")
    assert result["halt"]["rule"] == "parent-missing" and result["exit_code"] == 1


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


# Rows committed out of serial order, serial gaps and planted serials: tests/test_sync_trust.py.


# -- a streaming-replication standby as the source -----------------------------------

def test_a_hot_standby_works_as_the_source():
    """REPEATABLE READ, READ ONLY: what a hot standby allows (Taler's SERIALIZABLE is refused)."""
    from pgcluster import Cluster
    from taler_ops.schema import dbinit
    primary = Cluster("sync-primary").start()
    standby = Cluster("sync-standby")
    try:
        src = primary.createdb("ingres")
        dbinit.exchange_dbinit(src, role="ingres")
        sync_data.populate(src, 10)
        dst = primary.createdb("safe")
        dbinit.exchange_dbinit(dst, role="safe-copy")
        standby.start_standby_of(primary)
        replica = standby.uri("ingres")
        assert execute(replica, "SELECT pg_is_in_recovery()") == [(True,)]
        assert sync.sync_once(replica, dst)["copied"] == 10 * len(registry.REPLICATED)
        sync_data.populate(src, 3, start=11)
        wait_for(lambda: execute(replica, "SELECT max(reserve_uuid) FROM exchange.reserves")
                  == [(13,)], what="the standby to replay")
        assert sync.sync_once(replica, dst)["copied"] == 3 * len(registry.REPLICATED)
        assert all_digests(dst) == all_digests(src)
    finally:
        standby.destroy()
        primary.destroy()


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


def test_taler_ops_sessions_run_without_jit(cluster):
    """db.connect switches JIT off (docs/sync.md "Scale"): at millions of rows the
    batch statements' estimates cross jit_above_cost and compiling costs seconds."""
    from taler_ops import db
    uri = cluster.uri()
    with psycopg.connect(uri) as plain:
        assert plain.execute("SHOW jit").fetchone()[0] == "on"    # the server's default
    for autocommit in (True, False):
        with db.connect(uri, autocommit=autocommit) as conn:
            assert conn.execute("SHOW jit").fetchone()[0] == "off"
            if not autocommit:
                conn.rollback()     # the setting outlives the transaction it was made in
                assert conn.execute("SHOW jit").fetchone()[0] == "off"
