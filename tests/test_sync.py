"""taler-ops sync against real PostgreSQL: completeness, preflight, crash safety, daemon,
lock, one sync with --json, a hot standby as the source.  Halts: tests/test_sync_halts.py.

The template databases and the synced ``pair`` are tests/conftest.py's fixtures, shared
with tests/test_sync_halts.py.
"""

import json
import signal
import subprocess
import sys

import psycopg
import pytest

from taler_ops import sync
from taler_ops.schema import hashing, registry
from taler_ops.errors import ConfigError, DatabaseNotReady

import sync_data
from conftest import ROOT, wait_for
from sync_helpers import BASE_ROWS, NEW, all_digests, clone, conf_pair, execute, watermarks


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
    from taler_ops.sim import generator
    src = clone(cluster, templates["empty"], "generator_src")   # the generator writes any role
    execute(src, "UPDATE taler_ops.database_setup SET role = 'primary'")
    dst = clone(cluster, templates["empty"], "generator_dst")
    inserted = generator.bulk(src, 3000, seed=1)
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


# -- one sync with --json ------------------------------------------------------------------

def test_dry_run_then_one_sync_then_nothing_then_a_halt_as_json(pair, conf, cli):
    """One sync to completion as an operator (or the sync_service role's run_once) runs it:
    a dry run counts and writes nothing, -t copies it all, a rerun finds nothing, and a
    halt is exit 1 with the violation as JSON."""
    src, dst = pair
    sync_data.populate(src, 3, start=BASE_ROWS + 1)
    s_conf, d_conf = conf_pair(conf, src, dst)
    before = all_digests(dst)

    def sync_json(*mode, returncode=0):
        proc = cli("sync", "-s", s_conf, "-d", d_conf, "-b", 2, "--json", *mode)
        assert proc.returncode == returncode, proc.stderr
        return proc, json.loads(proc.stdout)

    _, result = sync_json("--dry-run")
    assert result["copied"] == 3 * len(registry.REPLICATED)
    assert result["tables"]["reserves"]["copied"] == 3
    assert all_digests(dst) == before

    _, result = sync_json("-t")
    assert result["copied"] == 3 * len(registry.REPLICATED), result
    assert result["tables"]["reserves"]["watermark"] == BASE_ROWS + 3
    assert all_digests(dst) == all_digests(src)

    assert sync_json("-t")[1]["copied"] == 0
    assert sync_json("--dry-run")[1]["copied"] == 0

    sync_data.populate(src, NEW[1], start=NEW[0] + 3)
    execute(src, "UPDATE exchange.coin_deposits SET batch_deposit_serial_id = 999999 "
                 "WHERE coin_deposit_serial_id = 40")
    proc, result = sync_json("-t", returncode=1)
    halts = [line for line in proc.stderr.splitlines() if line.startswith("HALT ")]
    assert len(halts) == 1 and halts[0].startswith("HALT table=coin_deposits serial=40 rule=parent-missing")
    assert result["halt"]["rule"] == "parent-missing"
    assert result["halt"]["message"].startswith("HALT table=coin_deposits serial=40")


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
