"""Shared fixtures: one real PostgreSQL cluster per test session, a fresh database per test."""

import itertools
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
# The tests' shared modules assert too: rewritten like the tests, their failures say why.
pytest.register_assert_rewrite("modules_pg_helpers", "report_forms")
from pgcluster import Cluster  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_db_counter = itertools.count(1)


@pytest.fixture(scope="session")
def cluster():
    c = Cluster("pytest").start()
    yield c
    # By the end of a session it holds a thousand databases, a few hundred thousand files:
    # unlinking them took 27 to 124 s of `make unit`'s 7 min, after the last result was in.
    c.destroy(background=True)


@pytest.fixture
def fresh_db(cluster, request):
    """A new, empty database; returns its URI."""
    name = f"t{next(_db_counter)}_{request.node.name[:40]}".lower()
    name = "".join(ch if ch.isalnum() else "_" for ch in name)
    return cluster.createdb(name)


@pytest.fixture
def own_cluster():
    """own_cluster(name, **settings): a cluster of the test's own (restarted or cut at
    will, with server settings of its own), destroyed afterwards."""
    made = []

    def make(name, **settings):
        c = Cluster(name, settings=settings).start()
        made.append(c)
        return c
    yield make
    for c in made:
        c.destroy()


# -- test tiers ------------------------------------------------------------------------
# `make unit` runs what is neither `slow` nor `molecule`, in a few minutes; `make test` runs
# everything but the long soak.  Marked here rather than in each file so that a new test
# lands in the right tier by what it uses.
SLOW_FILES = {
    "test_crashloop.py", "test_day2_playbooks.py", "test_ingres_link_role.py",
    "test_link_keeper.py", "test_modules_dbinit.py", "test_modules_drain.py",
    "test_modules_pg.py", "test_modules_pg_roles.py", "test_modules_pg_subscription.py",
    "test_outages.py", "test_pg_bin.py", "test_pg_instance_tls.py",
    "test_replication.py", "test_soak.py", "test_streaming.py", "test_streaming_roles.py",
    "test_sync_wakeup.py", "test_taler_replication.py", "test_taler_schema_identity.py",
    "test_auditor_schema_identity.py", "test_crypto_db.py", "test_crypto_batch.py",
    "test_config_layout.py", "test_modules_standby_replay.py",
}
# A cluster of the test's own, a replication pair, an ansible-playbook run per call.
SLOW_FIXTURES = {"own_cluster", "replication_pair", "module_runner"}
# The slowest of the rest in a `pytest --durations=0` run of the fast tier (playbooks, a
# browser, daemons followed for seconds, standbys, live generation at a rate, 100k-row
# generations): each took 2.5 s or more, several times the median test.  tests/test_tiers.py
# checks that every name here is still a test.
SLOW_TESTS = {
    "test_generator.py::test_bulk_100k_fills_every_replicated_table_consistently",
    "test_generator.py::test_equal_seeds_give_identical_databases",
    "test_generator.py::test_partitioned_schema_and_continued_runs",
    "test_monitoring.py::test_monitoring_role_installs_checked_rules_and_the_dashboard",
    "test_audit_cli.py::test_internal_audit_playbook",
    "test_report_playbook.py::test_the_report_playbook_renders_on_the_host_and_fetches",
    "test_report_browser.py::test_a_headless_browser_loads_the_report_without_console_errors",
    "test_audit_signatures.py::test_cli_generate_and_audit_with_the_configured_master_key",
    # measured 2026-12-02, 2.5 to 12.6 s each
    "test_sync.py::test_daemon_follows_new_rows_reconnects_and_holds_the_lock",
    "test_sync.py::test_a_hot_standby_works_as_the_source",
    "test_sync.py::test_kill_9_mid_pass_then_rerun_leaves_no_duplicate_and_no_gap",
    "test_sync_service_templates.py::test_the_roles_grants_let_the_sync_analyze_through_the_owners_function",
    "test_sync_service_templates.py::test_every_unit_is_sandboxed_and_passes_systemd_analyze_verify",
    "test_sync_trust.py::test_a_stalled_standby_keeps_holes_open_while_the_daemon_runs",
    "test_report_end_to_end.py::test_audit_runs_are_the_history_the_report_charts",
    "test_report_end_to_end.py::test_generated_misbehaviour_audited_then_reported",
    "test_status.py::test_sync_daemon_writes_metrics_and_exports_its_halt",
    "test_generator.py::test_cli",
    "test_generator.py::test_live_mode_plants_and_records_every_kind",
    "test_generator.py::test_live_mode_updates_mutable_columns_at_the_asked_rate",
    "test_taler_release_upgrade.py::test_next_release_copies_known_columns_and_names_the_rest",
    "test_taler_release_upgrade.py::test_a_new_column_the_safe_copy_cannot_default_stops_the_sync",
    "test_sync_statistics.py::test_a_pass_that_copied_many_rows_analyzes_those_tables_only",
    "test_sync_statistics.py::test_a_non_owner_sync_role_analyzes_through_the_owners_function",
    "test_audit_progress.py::test_internal_with_settle_skips_what_committed_during_the_wait",
    "test_audit_progress.py::test_settle_waits_for_rows_in_flight",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        if name.startswith("test_molecule_"):
            item.add_marker(pytest.mark.molecule)
            item.add_marker(pytest.mark.slow)
            continue
        params = getattr(item, "callspec", None)
        built_by_taler = params is not None and "taler" in params.params.values()
        if (name in SLOW_FILES or f"{name}::{item.originalname}" in SLOW_TESTS
                or SLOW_FIXTURES & set(item.fixturenames) or built_by_taler):
            item.add_marker(pytest.mark.slow)


# The two flavours of the exchange schema the sync, verify, tamper and GC tests run on:
# taler-ops' built-in model, and a database built from Taler's own SQL files (skipped,
# saying why, when those files are not available).
FLAVOURS = ("model", "taler")


def flavour_param(flavour):
    """A fixture param for ``flavour``; "taler" is skipped without Taler's SQL files."""
    from taler_build import DEFAULT_SQL_DIR, taler_sql_root
    if flavour == "taler" and taler_sql_root() is None:
        return pytest.param(flavour, marks=pytest.mark.skip(
            reason="Taler's SQL files are not available: set TALER_SQL_DIR "
                   f"(default {DEFAULT_SQL_DIR})"))
    return flavour


@pytest.fixture
def sql_root():
    """The root of Taler's SQL files (exchange/, auditor/), or skip saying why."""
    from taler_build import require_taler_sql
    return require_taler_sql()


# The sync tests' template databases and synced pair (tests/test_sync.py and
# tests/test_sync_halts.py): built once a session per flavour, cloned per test.
# test_sync_trust.py and test_verify.py build templates of their own under these names.
@pytest.fixture(scope="session", params=[flavour_param(f) for f in FLAVOURS])
def templates(cluster, request):
    """Template databases of one flavour: the built-in model, or built by Taler's SQL."""
    from sync_helpers import BASE_ROWS, make_template
    from taler_ops import sync
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
    from sync_helpers import clone
    return clone(cluster, templates["src"], "sync_src"), clone(cluster, templates["synced"], "sync_dst")


@pytest.fixture
def exchange_db(fresh_db):
    from taler_ops.schema import dbinit
    dbinit.exchange_dbinit(fresh_db)
    return fresh_db


def write_conf(path, sections):
    """Write a Taler-style INI file: {section: {option: value}}."""
    with open(path, "w") as fh:
        for section, options in sections.items():
            fh.write(f"[{section}]\n")
            for key, value in options.items():
                fh.write(f"{key} = {value}\n")
            fh.write("\n")
    return str(path)


@pytest.fixture
def conf(tmp_path):
    """conf('name', {'section': {...}}) -> path of a new config file."""
    def make(name, sections):
        return write_conf(tmp_path / name, sections)
    return make


def run_cli(*args, check=False, **kwargs):
    """Run the real ``taler-ops`` entry point in a subprocess."""
    return subprocess.run([sys.executable, "-m", "taler_ops.cli", *map(str, args)],
                          capture_output=True, text=True, check=check, cwd=ROOT, **kwargs)


@pytest.fixture
def cli():
    return run_cli


def run_module(module, args, check=False, diff=False, verbosity=0):
    """One module from library/ through a real ansible-playbook (tests/ansible_runner.py).

    Returns (result dict, full output); the output is what an operator's log
    would hold, so tests can grep it for secrets.
    """
    from ansible_runner import run_module as run
    done = run(module, args, check=check, diff=diff, verbosity=verbosity)
    if not done.results:
        raise AssertionError(f"no module result: {done!r}\n{done.stdout}")
    return done.result, done.stdout + done.stderr


@pytest.fixture
def module_runner():
    return run_module


def wait_for(predicate, timeout=30, interval=0.2, what="condition"):
    """Poll an observable condition until predicate() is truthy; return its value or fail
    the test (never a fixed sleep in its place)."""
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout} s")


def publish_replicated_tables(exchange_uri, name="taler_pub"):
    """The publication as roles/exchange_publisher makes it: the registry's tables, inserts only."""
    import psycopg
    from taler_ops.schema import registry
    tables = ", ".join(e.qualified for e in registry.REPLICATED)
    with psycopg.connect(exchange_uri, autocommit=True) as conn:
        conn.execute(f"CREATE PUBLICATION {name} FOR TABLE {tables} WITH (publish = 'insert')")


def subscribe(ingres_uri, publisher, dbname, timeout=120):
    """Subscription ``taler_sub`` to ``taler_pub`` of ``publisher`` (a Cluster); waits for
    the initial copy of every table."""
    import psycopg
    with psycopg.connect(ingres_uri, autocommit=True) as conn:
        conn.execute(
            f"CREATE SUBSCRIPTION taler_sub CONNECTION 'host={publisher.sockets} "
            f"port={publisher.port} dbname={dbname} user=postgres' "
            "PUBLICATION taler_pub WITH (disable_on_error = true)")
        wait_for(lambda: conn.execute(
            "SELECT count(*) = 0 FROM pg_subscription_rel WHERE srsubstate <> 'r'"
        ).fetchone()[0], timeout=timeout)


def caught_up(exchange_uri, timeout=120):
    """Wait until subscription ``taler_sub`` has confirmed every change the exchange wrote so far."""
    import psycopg
    from taler_ops.ingres import replication
    with psycopg.connect(exchange_uri, autocommit=True) as conn:
        lsn = replication.current_wal_lsn(conn)
        wait_for(lambda: replication.slot_confirmed(conn, "taler_sub", lsn), timeout=timeout)


@pytest.fixture
def replication_pair(cluster, request):
    """An exchange primary (session cluster) replicating into an ingres (own cluster).

    Yields (exchange uri, ingres uri, ingres Cluster); the subscription is
    ``taler_sub`` on publication ``taler_pub`` of every replicated table.
    """
    import psycopg
    from taler_ops.schema import dbinit
    name = "repl_" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40]
    ingres = Cluster("ingres").start()
    src = cluster.createdb(name)
    dst = ingres.createdb("ingres")
    try:
        dbinit.exchange_dbinit(src)
        dbinit.exchange_dbinit(dst, role="ingres")
        publish_replicated_tables(src)
        subscribe(dst, cluster, name)
        yield src, dst, ingres
    finally:
        ingres.destroy()  # its subscription dies with it; drop the slot it leaves behind
        with psycopg.connect(cluster.uri(), autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE database = %s AND NOT active", (name,))
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
