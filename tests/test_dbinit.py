"""exchange-dbinit and auditor-dbinit against real PostgreSQL, through the real CLI."""

import subprocess
import sys

import psycopg
import pytest

import builders as b
from conftest import FLAVOURS, ROOT, flavour_param
from taler_build import build_taler_exchange, require_taler_sql
from taler_ops.schema import auditor_schema, dbinit, gc, state, versioning
from taler_ops import locks
from taler_ops.errors import DatabaseNotReady, TalerOpsError


@pytest.fixture
def exconf(conf, fresh_db):
    return conf("exchange.conf", {"exchangedb-postgres": {"CONFIG": fresh_db}}), fresh_db


ALL_EXCHANGE = ["model-exchange-0001", "model-exchange-0002"]


def _patches(uri):
    with psycopg.connect(uri) as conn:
        return conn.execute(
            "SELECT patch_name, applied_tsz FROM _v.patches ORDER BY 1").fetchall()


def test_create_then_rerun_changes_nothing(cli, exconf):
    path, uri = exconf
    first = cli("exchange-dbinit", "-c", path)
    assert first.returncode == 0, first.stderr
    assert "applied model-exchange-0001" in first.stdout and "applied model-exchange-0002" in first.stdout
    before = _patches(uri)
    second = cli("exchange-dbinit", "-c", path)
    assert second.returncode == 0, second.stderr
    assert "nothing to apply" in second.stdout
    assert _patches(uri) == before


def test_check_lists_pending_and_changes_nothing(cli, exconf):
    path, uri = exconf
    out = cli("exchange-dbinit", "-c", path, "--check")
    assert out.returncode == 0
    assert "pending patches: model-exchange-0001 model-exchange-0002" in out.stdout
    with psycopg.connect(uri) as conn:
        assert conn.execute("SELECT to_regnamespace('_v')").fetchone()[0] is None
    cli("exchange-dbinit", "-c", path, check=True)
    assert "no pending patches" in cli("exchange-dbinit", "-c", path, "--check").stdout


def test_two_concurrent_runs_both_succeed_and_apply_once(exconf):
    path, uri = exconf
    cmd = [sys.executable, "-m", "taler_ops.cli", "exchange-dbinit", "-c", path]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert sum("applied model-exchange-0001" in o for o, _ in outs) == 1
    assert sum("applied model-exchange-0002" in o for o, _ in outs) == 1
    assert [name for name, _ in _patches(uri)] == ALL_EXCHANGE


def test_reset_drops_data_and_recreates(cli, exconf):
    path, uri = exconf
    cli("exchange-dbinit", "-c", path, check=True)
    with psycopg.connect(uri, autocommit=True) as conn:
        b.wire_target(conn)
    out = cli("exchange-dbinit", "-c", path, "-r")
    assert out.returncode == 0, out.stderr
    assert "dropped the exchange schema" in out.stdout
    with psycopg.connect(uri) as conn:
        assert b.count(conn, "wire_targets") == 0
    assert [n for n, _ in _patches(uri)] == ALL_EXCHANGE


def test_layout_is_fixed_at_creation(exconf):
    _, uri = exconf
    dbinit.exchange_dbinit(uri, role="safe-copy")
    with pytest.raises(TalerOpsError, match="created as 'safe-copy'"):
        dbinit.exchange_dbinit(uri, role="primary")
    with pytest.raises(TalerOpsError, match="partitioning is fixed"):
        dbinit.exchange_dbinit(uri, partitions=2)
    # Repeating what it is, or saying nothing, is fine.
    assert dbinit.exchange_dbinit(uri, role="safe-copy")["applied"] == []
    assert dbinit.exchange_dbinit(uri)["setup"]["role"] == "safe-copy"


def test_ingres_gets_no_foreign_keys(fresh_db):
    result = dbinit.exchange_dbinit(fresh_db, role="ingres")
    assert result["setup"] == {"role": "ingres", "partitions": None, "foreign_keys": False}
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE n.nspname = 'exchange' AND c.contype = 'f'").fetchone()[0] == 0


def _serial_indexes(uri):
    with psycopg.connect(uri) as conn:
        return sorted(r[0] for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'exchange' "
            "AND indexname LIKE 'taler_ops_%%_by_serial'"))


@pytest.mark.parametrize("flavour", [flavour_param(f) for f in FLAVOURS])
def test_the_auditor_copies_get_an_index_on_every_serial(cluster, flavour):
    """The sync reads and checks by serial range (docs/sync.md "Scale"): every replicated
    table of a model ingres or safe copy has an index its serial leads; the primary and
    Taler-built copies (adopted with bookkeeping only) are left alone."""
    from taler_ops.schema import registry
    uris = {role: cluster.createdb(f"serial_idx_{flavour}_{role[:4]}")
            for role in ("primary", "ingres", "safe-copy")}
    for role, uri in uris.items():
        if flavour == "taler":
            build_taler_exchange(uri, sql_root=require_taler_sql())
        dbinit.exchange_dbinit(uri, role=role)
    assert _serial_indexes(uris["primary"]) == []
    expected = ([] if flavour == "taler" else
                ["taler_ops_policy_fulfillments_by_serial",
                 "taler_ops_reserves_open_deposits_by_serial"])
    for role in ("ingres", "safe-copy"):
        assert _serial_indexes(uris[role]) == expected
        dbinit.exchange_dbinit(uris[role])                  # idempotent
        assert _serial_indexes(uris[role]) == expected
        if flavour == "taler":
            continue
        with psycopg.connect(uris[role]) as conn:
            for entry in registry.REPLICATED:
                conn.execute("SET LOCAL enable_seqscan = off")
                plan = " ".join(r[0] for r in conn.execute(
                    f"EXPLAIN SELECT * FROM {entry.qualified} WHERE {entry.serial} > 5 "
                    f"AND {entry.serial} <= 10 ORDER BY {entry.serial}"))
                assert "Seq Scan" not in plan, (role, entry.name, plan)


def test_register_patch_semantics(exchange_db):
    with psycopg.connect(exchange_db, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="already applied"):
            conn.execute("SELECT _v.register_patch('model-exchange-0001')")
        with pytest.raises(psycopg.errors.RaiseException, match="requires missing"):
            conn.execute("SELECT _v.register_patch('x-1', ARRAY['x-0'])")
        with pytest.raises(psycopg.errors.RaiseException, match="conflicts"):
            conn.execute("SELECT _v.register_patch('x-2', NULL, ARRAY['model-exchange-0001'])")
        conn.execute("SELECT _v.register_patch('x-3', ARRAY['model-exchange-0001'])")
        with pytest.raises(psycopg.errors.RaiseException, match="required by"):
            conn.execute("SELECT _v.unregister_patch('model-exchange-0001')")


def test_runtime_components_refuse_outdated_or_newer_schema(fresh_db):
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        with pytest.raises(DatabaseNotReady, match="patch model-exchange-0001 is missing"):
            state.assert_exchange_current(conn)
    dbinit.exchange_dbinit(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        state.assert_exchange_current(conn)
        conn.execute("SELECT _v.register_patch('model-exchange-0999')")
        with pytest.raises(DatabaseNotReady, match="model-exchange-0999.*newer than this tool"):
            state.assert_exchange_current(conn)
    # An older dbinit must not touch (upgrade, GC) a newer schema either; -r still may.
    with pytest.raises(DatabaseNotReady, match="newer than this tool"):
        dbinit.exchange_dbinit(fresh_db, run_gc=True)
    assert dbinit.exchange_dbinit(fresh_db, reset=True)["reset"] is True


# -- bad input: exit codes as Taler's -------------------------------------------------------

def test_missing_config_file_exits_6(cli, tmp_path):
    out = cli("exchange-dbinit", "-c", tmp_path / "nope.conf")
    assert out.returncode == 6
    assert "nope.conf does not exist" in out.stderr


def test_missing_section_and_option_exit_6(cli, conf):
    path = conf("a.conf", {"exchange": {"CURRENCY": "KUDOS"}})
    out = cli("exchange-dbinit", "-c", path)
    assert out.returncode == 6
    assert "section [exchangedb-postgres] is missing" in out.stderr
    path = conf("b.conf", {"exchangedb-postgres": {"SQL_DIR": "/x/"}})
    out = cli("exchange-dbinit", "-c", path)
    assert out.returncode == 6 and "option CONFIG in section [exchangedb-postgres]" in out.stderr


def test_malformed_config_line_exits_6(cli, tmp_path):
    path = tmp_path / "bad.conf"
    path.write_text("[exchangedb-postgres]\nthis is not an option\n")
    out = cli("exchange-dbinit", "-c", path)
    assert out.returncode == 6 and f"{path}:2" in out.stderr


def test_bad_uri_exits_6(cli, conf):
    path = conf("c.conf", {"exchangedb-postgres": {"CONFIG": "postgresql://[::1"}})
    out = cli("exchange-dbinit", "-c", path)
    assert out.returncode == 6
    assert "not a valid libpq connection URI" in out.stderr


def test_unreachable_server_exits_5_without_password(cli, conf, cluster):
    from pgcluster import free_port
    uri = f"postgresql://taler:s3cret-pw@127.0.0.1:{free_port()}/taler?connect_timeout=3"
    path = conf("d.conf", {"exchangedb-postgres": {"CONFIG": uri}})
    out = cli("exchange-dbinit", "-c", path)
    assert out.returncode == 5
    assert "cannot connect to the exchange database" in out.stderr
    assert "s3cret-pw" not in out.stderr + out.stdout


def test_bad_arguments_exit_2(cli, exconf):
    path, _ = exconf
    assert cli("exchange-dbinit", "-c", path, "-P", "-1").returncode == 2
    assert cli("exchange-dbinit", "-c", path, "--role", "boss").returncode == 2
    assert cli("exchange-dbinit", "--bogus").returncode == 2
    # without -c: Taler's default taler-exchange.conf search (tests/test_config_locations.py), not a usage error


def test_config_expansion_and_inline(cli, tmp_path, fresh_db, monkeypatch):
    # As in Taler, [exchangedb-postgres] CONFIG is a string: $-references stay as written.
    (tmp_path / "db.conf").write_text("[exchangedb-postgres]\nCONFIG = ${DBURI}\n")
    main = tmp_path / "main.conf"
    main.write_text(f"[PATHS]\nDBURI = {fresh_db}\n\n@INLINE@ db.conf\n")
    out = cli("exchange-dbinit", "-c", main)
    assert out.returncode == 6 and f"{tmp_path}/db.conf:2: option CONFIG" in out.stderr
    (tmp_path / "db.conf").write_text(f"[exchangedb-postgres]\nCONFIG = {fresh_db}\n")
    out = cli("exchange-dbinit", "-c", main)
    assert out.returncode == 0, out.stderr


# -- auditor-dbinit ---------------------------------------------------------------------------

AUDITOR_PATCHES = [p.name for p in auditor_schema.PATCHES]

def _auditor_rows(uri):
    with psycopg.connect(uri) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM auditor.{t}").fetchone()[0]
                for t in ("auditor_progress", "auditor_balances", "auditor_row_inconsistency",
                          "auditor_deposit_confirmations", "auditor_exchange_signkeys")} | {
            "audit_coins": conn.execute("SELECT count(*) FROM taler_ops.audit_coins").fetchone()[0]}


def _fill_auditor(uri):
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("INSERT INTO auditor.auditor_progress VALUES ('coins_deposit_serial_id', 7)")
        conn.execute("INSERT INTO auditor.auditor_balances (balance_key, balance_value) "
                     "VALUES ('total_escrowed', ROW(1, 0))")
        conn.execute("INSERT INTO auditor.auditor_row_inconsistency (row_table, problem_row_id, "
                     "diagnostic) VALUES ('reserves_in', 3, 'test')")
        conn.execute("INSERT INTO auditor.auditor_exchange_signkeys (exchange_pub, master_sig, "
                     "ep_valid_from, ep_expire_sign, ep_expire_legal) VALUES (%s, %s, 1, 2, 3)",
                     (b"k" * 32, b"S" * 64))
        conn.execute("INSERT INTO taler_ops.audit_coins VALUES (%s, 1, 5, 0)", (b"c" * 32,))
        conn.execute(
            "INSERT INTO auditor.auditor_deposit_confirmations (h_contract_terms, h_policy, "
            "h_wire, exchange_timestamp, wire_deadline, refund_deadline, total_without_fee, "
            "coin_pubs, coin_sigs, merchant_pub, exchange_sig, exchange_pub, master_sig) "
            "VALUES (%s, %s, %s, 1, 2, 3, ROW(1, 0), ARRAY[%s], ARRAY[%s], %s, %s, %s, %s)",
            (b"h" * 64, b"p" * 64, b"w" * 64, b"c" * 32, b"s" * 64, b"m" * 32, b"e" * 64,
             b"x" * 32, b"M" * 64))


def test_auditor_restart_keeps_deposit_confirmations(cli, conf, fresh_db):
    path = conf("auditor.conf", {"auditordb-postgres": {"CONFIG": fresh_db}})
    assert cli("auditor-dbinit", "-c", path).returncode == 0
    _fill_auditor(fresh_db)
    out = cli("auditor-dbinit", "-c", path, "-r")
    assert out.returncode == 0, out.stderr
    # What Taler's restart.sql clears, and taler-ops' per-coin audit state.
    assert _auditor_rows(fresh_db) == {"auditor_progress": 0, "auditor_balances": 0,
                                       "auditor_row_inconsistency": 0,
                                       "auditor_deposit_confirmations": 1,
                                       "auditor_exchange_signkeys": 1, "audit_coins": 0}


def test_auditor_drop_recreates_empty_schema(cli, conf, fresh_db):
    path = conf("auditor.conf", {"auditordb-postgres": {"CONFIG": fresh_db}})
    cli("auditor-dbinit", "-c", path, check=True)
    _fill_auditor(fresh_db)
    out = cli("auditor-dbinit", "-c", path, "-R")
    assert out.returncode == 0 and "dropped the auditor schema" in out.stdout
    assert set(_auditor_rows(fresh_db).values()) == {0}
    assert [n for n, _ in _patches(fresh_db)] == AUDITOR_PATCHES


def test_first_release_auditor_layout_is_migrated(fresh_db):
    """model-auditor-0002 on a database of the first release's layout: the merchants'
    deposit confirmations survive, the old audit state goes, Taler's tables arrive."""
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        versioning.ensure_versioning(conn)
        versioning.apply_patch(conn, auditor_schema.PATCHES[0],
                               auditor_schema.render(auditor_schema.FIRST_PATCH))
        conn.execute("INSERT INTO auditor.auditor_progress (progress_key, progress_offset) "
                     "VALUES ('coins_deposit_serial_id', 7)")
        conn.execute(
            "INSERT INTO auditor.auditor_deposit_confirmations (h_contract_terms, h_policy, "
            "h_wire, exchange_timestamp, wire_deadline, refund_deadline, total_without_fee, "
            "coin_pubs, coin_sigs, merchant_pub, exchange_sig, exchange_pub, master_sig, "
            "suppressed) VALUES (%s, %s, %s, 1, 2, 3, ROW(4, 5), ARRAY[%s], ARRAY[%s], %s, %s, "
            "%s, %s, TRUE)",
            (b"h" * 64, b"p" * 64, b"w" * 64, b"c" * 32, b"s" * 64, b"m" * 32, b"e" * 64,
             b"x" * 32, b"M" * 64))
    with psycopg.connect(fresh_db) as conn:
        with pytest.raises(DatabaseNotReady, match="model-auditor-0002 is missing"):
            state.assert_auditor_current(conn)
    result = dbinit.auditor_dbinit(fresh_db)
    assert result["applied"] == ["model-auditor-0002"]
    with psycopg.connect(fresh_db) as conn:
        state.assert_auditor_current(conn)
        assert conn.execute("SELECT count(*) FROM auditor.auditor_progress").fetchone()[0] == 0
        assert conn.execute(
            "SELECT exchange_timestamp, wire_deadline, refund_deadline, "
            "(total_without_fee).val, (total_without_fee).frac, suppressed "
            "FROM auditor.auditor_deposit_confirmations").fetchall() == [(1, 2, 3, 4, 5, True)]
        assert conn.execute("SELECT to_regclass('auditor.auditor_coins')").fetchone()[0] is None


def test_exchange_and_auditor_share_one_database(fresh_db):
    dbinit.exchange_dbinit(fresh_db)
    dbinit.auditor_dbinit(fresh_db)
    dbinit.auditor_dbinit(fresh_db, drop=True)
    assert [n for n, _ in _patches(fresh_db)] == AUDITOR_PATCHES + ALL_EXCHANGE
    dbinit.exchange_drop(fresh_db)
    assert [n for n, _ in _patches(fresh_db)] == AUDITOR_PATCHES


# -- garbage collection --------------------------------------------------------------------------

NOW = 50 * b.YEAR_US
PAST, FUTURE = NOW - b.YEAR_US, NOW + b.YEAR_US


def _gc_history(uri):
    """Four reserves that tell the primary and the safe-copy rules apart (see schema/gc.py rule 3).

    A: expired, exchange balance 0, history balance 0  -> collected everywhere
    B: expired, exchange balance 5, history balance 10 -> kept everywhere
    C: not expired                                     -> kept everywhere
    D: expired, exchange balance 0, history balance 7  -> primary collects, safe copy keeps
    """
    with psycopg.connect(uri, autocommit=True) as conn:
        # Taler's own triggers (on a Taler-built database) name their tables without a schema.
        conn.execute("SET search_path TO exchange, public")
        d = b.denomination(conn, expire_legal=FUTURE)
        a_pub, a_uuid = b.reserve(conn, "A", PAST)
        b.reserve_in(conn, a_pub, (10, 0))
        b.reserve_out(conn, a_uuid, d, (10, 0), "A")
        b_pub, _ = b.reserve(conn, "B", PAST, current_balance=(5, 0))
        b.reserve_in(conn, b_pub, (10, 0))
        c_pub, _ = b.reserve(conn, "C", FUTURE)
        b.reserve_in(conn, c_pub, (3, 0))
        d_pub, _ = b.reserve(conn, "D", PAST)
        b.reserve_in(conn, d_pub, (7, 0))
        b.wire_fee(conn, "iban", 0, NOW - 11 * b.YEAR_US)        # older than ancient
        b.wire_fee(conn, "iban", NOW - 11 * b.YEAR_US, FUTURE)   # still in force
        return {k: v for k, v in zip("ABCD", (a_pub, b_pub, c_pub, d_pub))}


def _left(uri):
    with psycopg.connect(uri) as conn:
        return {bytes(r[0]) for r in conn.execute("SELECT reserve_pub FROM exchange.reserves")}


def test_gc_on_primary_follows_exchange_balances(fresh_db):
    dbinit.exchange_dbinit(fresh_db)
    pubs = _gc_history(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        result = gc.collect(conn, now_us=NOW)
    assert result["role"] == "primary"
    assert _left(fresh_db) == {pubs["B"], pubs["C"]}
    # Cascades count too: A and D's incoming transfers, A's withdrawal, one wire fee.
    assert result["deleted"] == {"reserves": 2, "reserves_in": 2, "reserves_out": 1,
                                 "wire_fee": 1}


def _init_flavour(uri, role, flavour):
    """An exchange database of ``flavour``: the model, or built from Taler's SQL and adopted."""
    if flavour == "taler":
        build_taler_exchange(uri, sql_root=require_taler_sql())
    dbinit.exchange_dbinit(uri, role=role)


@pytest.mark.parametrize("flavour", [flavour_param(f) for f in FLAVOURS])
def test_gc_on_safe_copy_derives_balances_from_history(fresh_db, flavour):
    _init_flavour(fresh_db, "safe-copy", flavour)
    pubs = _gc_history(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        # On a safe copy current_balance is never replicated: make it look like one.
        conn.execute("UPDATE exchange.reserves SET current_balance = ROW(0, 0)")
        result = gc.collect(conn, now_us=NOW)
    assert result["role"] == "safe-copy"
    assert _left(fresh_db) == {pubs["B"], pubs["C"], pubs["D"]}
    assert result["deleted"] == {"reserves": 1, "reserves_in": 1, "reserves_out": 1,
                                 "wire_fee": 1}


def test_gc_dry_run_deletes_nothing_and_rerun_finds_nothing(fresh_db):
    dbinit.exchange_dbinit(fresh_db)
    _gc_history(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        dry = gc.collect(conn, now_us=NOW, dry_run=True)
        assert dry["deleted"]["reserves"] == 2
        assert b.count(conn, "reserves") == 4
        gc.collect(conn, now_us=NOW)
        assert gc.collect(conn, now_us=NOW)["deleted"] == {}


@pytest.mark.parametrize("flavour", [flavour_param(f) for f in FLAVOURS])
def test_gc_refused_on_ingres(fresh_db, flavour):
    _init_flavour(fresh_db, "ingres", flavour)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        with pytest.raises(TalerOpsError, match="refused on an ingres copy"):
            gc.collect(conn)


def test_gc_through_the_cli(cli, exconf):
    path, uri = exconf
    cli("exchange-dbinit", "-c", path, check=True)
    out = cli("exchange-dbinit", "-c", path, "-g")
    assert out.returncode == 0, out.stderr
    assert "garbage collection (primary): nothing to delete" in out.stdout


def test_versioning_lock_is_released(exchange_db):
    with psycopg.connect(exchange_db, autocommit=True) as conn:
        assert conn.execute("SELECT pg_try_advisory_lock(%s)",
                            (locks.DBINIT,)).fetchone()[0]


def test_gc_on_safe_copy_refused_while_a_sync_runs(fresh_db):
    dbinit.exchange_dbinit(fresh_db, role="safe-copy")
    with psycopg.connect(fresh_db, autocommit=True) as sync_conn:
        sync_conn.execute("SELECT pg_advisory_lock(%s)", (locks.SYNC,))
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            with pytest.raises(TalerOpsError, match="a taler-ops sync is running"):
                gc.collect(conn)
        sync_conn.execute("SELECT pg_advisory_unlock(%s)", (locks.SYNC,))
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        assert gc.collect(conn)["deleted"] == {}
        # and it released the lock again for the sync
        assert conn.execute("SELECT pg_try_advisory_lock(%s)", (locks.SYNC,)).fetchone()[0]
