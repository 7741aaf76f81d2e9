"""exchange-dbinit and auditor-dbinit on Taler's own SQL files ([...-postgres] SQL_DIR)."""

import os
import shutil

import psycopg
import pytest

from taler_build import build_taler_auditor, build_taler_exchange

EXCHANGE_PATCHES = [f"exchange-{n:04d}" for n in range(1, 8)]


def _one(uri, query, params=None):
    with psycopg.connect(uri) as conn:
        return conn.execute(query, params).fetchone()[0]


def _patches(uri):
    with psycopg.connect(uri) as conn:
        return [r[0] for r in conn.execute("SELECT patch_name FROM _v.patches ORDER BY 1")]


def _exchange_catalog(uri):
    """Everything Taler's schema consists of: relations, columns, constraints, functions."""
    with psycopg.connect(uri) as conn:
        return {
            "relations": conn.execute(
                "SELECT relname, relkind FROM pg_class WHERE relnamespace = 'exchange'::regnamespace "
                "ORDER BY 1").fetchall(),
            "columns": conn.execute(
                "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull "
                "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                "WHERE c.relnamespace = 'exchange'::regnamespace AND a.attnum > 0 "
                "AND NOT a.attisdropped ORDER BY 1, 2").fetchall(),
            "constraints": conn.execute(
                "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE connamespace = 'exchange'::regnamespace ORDER BY 1, 2").fetchall(),
            "functions": conn.execute(
                "SELECT proname, md5(prosrc) FROM pg_proc WHERE pronamespace = 'exchange'::regnamespace "
                "ORDER BY 1, 2").fetchall(),
        }


def _conf(conf, name, uri, sql_dir=None, section="exchangedb-postgres"):
    options = {"CONFIG": uri}
    if sql_dir:
        options["SQL_DIR"] = sql_dir
    return conf(name, {section: options})


def test_builds_taler_schema_from_its_files(fresh_db, conf, cli, sql_root):
    cfg = _conf(conf, "x.conf", fresh_db, os.path.join(sql_root, "exchange") + "/")
    done = cli("exchange-dbinit", "-c", cfg)
    assert done.returncode == 0, done.stderr
    for name in EXCHANGE_PATCHES:
        assert f"applied {name}" in done.stdout
    assert _patches(fresh_db) == EXCHANGE_PATCHES
    assert _one(fresh_db, "SELECT count(*) FROM pg_tables WHERE schemaname = 'exchange'") == 66
    assert _one(fresh_db, "SELECT count(*) FROM exchange.exchange_tables WHERE NOT finished") == 0
    assert _one(fresh_db, "SELECT role FROM taler_ops.database_setup") == "primary"
    # taler-ops' bookkeeping is not inside Taler's schema.
    assert _one(fresh_db, "SELECT count(*) FROM pg_tables WHERE schemaname = 'exchange' "
                          "AND tablename IN ('database_setup', 'sync_watermarks', 'sync_halts')") == 0
    again = cli("exchange-dbinit", "-c", cfg)
    assert again.returncode == 0, again.stderr
    assert "nothing to apply" in again.stdout
    check = cli("exchange-dbinit", "-c", cfg, "--check")
    assert "no pending patches" in check.stdout


def test_check_lists_the_patch_files_not_yet_applied(fresh_db, conf, cli, sql_root, tmp_path):
    partial = tmp_path / "sql"
    partial.mkdir()
    src = os.path.join(sql_root, "exchange")
    for name in ("versioning.sql", "procedures.sql", "drop.sql"):
        shutil.copy(os.path.join(src, name), partial)
    # procedures.sql of v0.14 needs 0006's types: the "previous release" stops there.
    for n in range(1, 7):
        shutil.copy(os.path.join(src, f"exchange-{n:04d}.sql"), partial)
    cfg = _conf(conf, "x.conf", fresh_db, str(partial))
    assert cli("exchange-dbinit", "-c", cfg).returncode == 0
    assert _patches(fresh_db) == EXCHANGE_PATCHES[:6]
    shutil.copy(os.path.join(src, "exchange-0007.sql"), partial)   # the next release arrives
    check = cli("exchange-dbinit", "-c", cfg, "--check")
    assert check.returncode == 0, check.stderr
    assert "pending patches: exchange-0007" in check.stdout
    assert _patches(fresh_db) == EXCHANGE_PATCHES[:6]
    done = cli("exchange-dbinit", "-c", cfg)
    assert done.returncode == 0, done.stderr
    assert _patches(fresh_db) == EXCHANGE_PATCHES
    # exchange-0007's queued actions ran: its columns exist.
    assert _one(fresh_db, "SELECT count(*) FROM information_schema.columns WHERE table_schema = "
                          "'exchange' AND table_name = 'wire_targets' AND column_name = "
                          "'h_normalized_payto'") == 1


def test_partitioned_build_is_fixed_at_creation(fresh_db, conf, cli, sql_root):
    cfg = _conf(conf, "x.conf", fresh_db, os.path.join(sql_root, "exchange"))
    done = cli("exchange-dbinit", "-c", cfg, "-P", "2", "--json")
    assert done.returncode == 0, done.stderr
    assert _one(fresh_db, "SELECT count(*) FROM pg_inherits "
                          "WHERE inhparent = 'exchange.reserves'::regclass") == 2
    assert _one(fresh_db, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
                          "AND conrelid = 'exchange.reserves_in'::regclass") == 0
    assert _one(fresh_db, "SELECT partitions FROM taler_ops.database_setup") == 2
    other = cli("exchange-dbinit", "-c", cfg, "-P", "3")
    assert other.returncode == 1
    assert "partitioning is fixed at creation" in other.stderr


def test_a_database_taler_built_is_adopted_with_bookkeeping_only(cluster, conf, cli, sql_root):
    uri = build_taler_exchange(cluster.createdb("taler_built_safe"), sql_root=sql_root)
    before_catalog, before_patches = _exchange_catalog(uri), _patches(uri)
    cfg = _conf(conf, "safe.conf", uri)       # no SQL_DIR: adopt as it is
    done = cli("exchange-dbinit", "-c", cfg, "--role", "safe-copy")
    assert done.returncode == 0, done.stderr
    assert _exchange_catalog(uri) == before_catalog
    assert _patches(uri) == before_patches
    assert _one(uri, "SELECT role FROM taler_ops.database_setup") == "safe-copy"
    # Adopted again under another role: refused, as for the model.
    again = cli("exchange-dbinit", "-c", cfg, "--role", "primary")
    assert again.returncode == 1 and "'safe-copy'" in again.stderr
    # Without the files taler-ops cannot reset a Taler-built database.
    reset = cli("exchange-dbinit", "-c", cfg, "-r")
    assert reset.returncode == 2 and "SQL_DIR" in reset.stderr


def test_tables_still_queued_are_refused(cluster, conf, cli, sql_root):
    uri = cluster.createdb("taler_queued")
    d = os.path.join(sql_root, "exchange")
    from taler_build import psql_file
    psql_file(uri, os.path.join(d, "versioning.sql"))
    for n in range(1, 8):
        psql_file(uri, os.path.join(d, f"exchange-{n:04d}.sql"))
    # Patches registered, but exchange_do_create_tables never ran: not usable yet.
    done = cli("exchange-dbinit", "-c", _conf(conf, "q.conf", uri), "--role", "safe-copy")
    assert done.returncode == 5
    assert "queued table action" in done.stderr
    from taler_ops.schema import state
    from taler_ops.errors import DatabaseNotReady
    with psycopg.connect(uri) as conn, pytest.raises(DatabaseNotReady):
        state.assert_exchange_current(conn)


def test_reset_runs_talers_drop_and_taler_drop_keeps_bookkeeping(fresh_db, conf, cli, sql_root):
    sql_dir = os.path.join(sql_root, "exchange")
    cfg = _conf(conf, "x.conf", fresh_db, sql_dir)
    assert cli("exchange-dbinit", "-c", cfg, "--role", "safe-copy").returncode == 0
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("INSERT INTO exchange.exchange_sign_keys (exchange_pub, master_sig, "
                     "valid_from, expire_sign, expire_legal) VALUES "
                     "(%s, %s, 1, 2, 3)", (b"\x01" * 32, b"\x02" * 64))
    # Taler's own drop.sql (its dbinit -r) neither sees nor breaks taler_ops.
    from taler_build import psql_file
    psql_file(fresh_db, os.path.join(sql_dir, "drop.sql"))
    assert _one(fresh_db, "SELECT role FROM taler_ops.database_setup") == "safe-copy"
    analyze_function = "SELECT to_regprocedure('taler_ops.analyze_exchange_table(text)') IS NOT NULL"
    assert _one(fresh_db, analyze_function)      # the sync's ANALYZE, on a safe copy only
    assert _patches(fresh_db) == []
    assert cli("exchange-dbinit", "-c", cfg).returncode == 0   # rebuilt, role kept
    assert _patches(fresh_db) == EXCHANGE_PATCHES
    # taler-ops' -r resets both: Taler's schema through drop.sql, and the bookkeeping.
    done = cli("exchange-dbinit", "-c", cfg, "-r", "--role", "primary")
    assert done.returncode == 0, done.stderr
    assert _one(fresh_db, "SELECT role FROM taler_ops.database_setup") == "primary"
    assert not _one(fresh_db, analyze_function)
    assert _one(fresh_db, "SELECT count(*) FROM exchange.exchange_sign_keys") == 0
    assert _one(fresh_db, "SELECT to_regnamespace('_v') IS NOT NULL")


def test_model_and_taler_files_are_never_mixed(exchange_db, conf, cli, sql_root):
    cfg = _conf(conf, "x.conf", exchange_db, os.path.join(sql_root, "exchange"))
    done = cli("exchange-dbinit", "-c", cfg)
    assert done.returncode == 5
    assert "built-in model" in done.stderr
    # -r converts it, dropping the model's schema.
    done = cli("exchange-dbinit", "-c", cfg, "-r")
    assert done.returncode == 0, done.stderr
    assert _patches(exchange_db) == EXCHANGE_PATCHES


def test_sql_dir_without_talers_files_is_a_config_error(fresh_db, conf, cli, tmp_path):
    cfg = _conf(conf, "x.conf", fresh_db, str(tmp_path))
    done = cli("exchange-dbinit", "-c", cfg)
    assert done.returncode == 6
    assert "versioning.sql" in done.stderr


def test_gc_on_a_taler_primary_runs_talers_own_procedure(fresh_db, conf, cli, sql_root):
    cfg = _conf(conf, "x.conf", fresh_db, os.path.join(sql_root, "exchange"))
    assert cli("exchange-dbinit", "-c", cfg).returncode == 0
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("INSERT INTO exchange.prewire (wire_method, finished, buf) "
                     "VALUES ('iban', TRUE, '\\x00'), ('iban', FALSE, '\\x00')")
    done = cli("exchange-dbinit", "-c", cfg, "-g", "--json")
    assert done.returncode == 0, done.stderr
    import json
    gc_result = json.loads(done.stdout)["gc"]
    assert gc_result["rules"] == "taler"
    assert gc_result["deleted"] == {"prewire": 1}


def test_auditor_schema_from_talers_files(fresh_db, conf, cli, sql_root):
    cfg = _conf(conf, "a.conf", fresh_db, os.path.join(sql_root, "auditor"),
                section="auditordb-postgres")
    done = cli("auditor-dbinit", "-c", cfg)
    assert done.returncode == 0, done.stderr
    assert _patches(fresh_db) == ["auditor-0001", "auditor-0002"]
    assert _one(fresh_db, "SELECT count(*) FROM pg_tables WHERE schemaname = 'auditor'") == 31
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("INSERT INTO auditor.auditor_progress VALUES ('reserves_reserve_in_serial_id', 7)")
        conn.execute("INSERT INTO auditor.auditor_exchange_signkeys (exchange_pub, master_sig, "
                     "ep_valid_from, ep_expire_sign, ep_expire_legal) VALUES (%s, %s, 1, 2, 3)",
                     (b"\x01" * 32, b"\x02" * 64))
        # taler-ops' own audit state, beside Taler's schema.
        conn.execute("INSERT INTO taler_ops.audit_coins VALUES (%s, 1, 5, 0)", (b"c" * 32,))
    restart = cli("auditor-dbinit", "-c", cfg, "-r")
    assert restart.returncode == 0, restart.stderr
    # Taler's restart.sql clears progress and keeps the exchange's signing keys.
    assert _one(fresh_db, "SELECT count(*) FROM auditor.auditor_progress") == 0
    assert _one(fresh_db, "SELECT count(*) FROM auditor.auditor_exchange_signkeys") == 1
    assert _one(fresh_db, "SELECT count(*) FROM taler_ops.audit_coins") == 0
    drop = cli("auditor-dbinit", "-c", cfg, "-R")
    assert drop.returncode == 0, drop.stderr
    assert _one(fresh_db, "SELECT count(*) FROM auditor.auditor_exchange_signkeys") == 0
    assert _patches(fresh_db) == ["auditor-0001", "auditor-0002"]


def test_a_taler_built_auditor_database_is_recognised(cluster, conf, cli, sql_root):
    uri = build_taler_auditor(cluster.createdb("taler_auditor_built"), sql_root=sql_root)
    check = cli("auditor-dbinit", "-c", _conf(conf, "a.conf", uri, section="auditordb-postgres"),
                "--check", "--json")
    assert check.returncode == 0, check.stderr
    assert '"flavour": "taler"' in check.stdout
    # Without its files taler-ops does not migrate it with the model.
    done = cli("auditor-dbinit", "-c", _conf(conf, "b.conf", uri, section="auditordb-postgres"))
    assert done.returncode == 2 and "SQL_DIR" in done.stderr


def test_a_database_of_an_earlier_taler_ops_is_refused_then_recreated(exchange_db, conf, cli):
    # Earlier taler-ops registered Taler's own patch names for its model.
    with psycopg.connect(exchange_db, autocommit=True) as conn:
        conn.execute("SELECT _v.register_patch('exchange-0001', NULL, NULL)")
    cfg = _conf(conf, "legacy.conf", exchange_db)
    done = cli("exchange-dbinit", "-c", cfg)
    assert done.returncode == 5
    assert "earlier taler-ops" in done.stderr
    recreated = cli("exchange-dbinit", "-c", cfg, "-r")
    assert recreated.returncode == 0, recreated.stderr
    assert not any(p.startswith("exchange-") for p in _patches(exchange_db))


def test_talers_own_gc_failing_is_reported_not_hidden(fresh_db, conf, cli, sql_root):
    cfg = _conf(conf, "x.conf", fresh_db, os.path.join(sql_root, "exchange"))
    assert cli("exchange-dbinit", "-c", cfg).returncode == 0
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("INSERT INTO exchange.reserves (reserve_pub, expiration_date, gc_date) "
                     "VALUES (%s, 1, 1)", (b"\x07" * 32,))
    # v0.14's exchange_do_gc compares taler_amount with (0, 0), which PostgreSQL refuses
    # once a reserve is due; Taler's dbinit prints that and exits 0, taler-ops exits 1.
    done = cli("exchange-dbinit", "-c", cfg, "-g")
    assert done.returncode == 1
    assert "exchange_do_gc failed, nothing was deleted" in done.stderr
    assert _one(fresh_db, "SELECT count(*) FROM exchange.reserves") == 1
