"""Issue 16: the untrusted ingres copy can neither hide, forge nor make the sync lose a row.

Real PostgreSQL, real concurrency: exchange transactions are open sessions that
commit (or abort) in an order the test chooses; the sync runs in between.
Nothing waits on a clock: every step follows an observable event (a commit, a
pass that returned, a standby that replayed).
"""

import random

import psycopg
import pytest

from taler_ops import sync
from taler_ops.schema import bookkeeping, registry

import sync_data
from conftest import FLAVOURS, flavour_param, wait_for
from sync_helpers import all_digests, clone, execute, make_template, watermarks

BASE_ROWS = 20
ONLY = ("extensions",)


@pytest.fixture(scope="module", params=[flavour_param(f) for f in FLAVOURS])
def templates(cluster, request):
    """A synced pair of one flavour: the built-in model, or built by Taler's SQL."""
    flavour = request.param
    names = f"trust_tpl_src_{flavour}", f"trust_tpl_synced_{flavour}"
    src = make_template(cluster, names[0], "ingres", rows=BASE_ROWS, flavour=flavour)
    make_template(cluster, names[1], "safe-copy", flavour=flavour)
    synced = cluster.uri(names[1])
    sync.sync_once(src, synced)
    # Identity values continue after the generated rows, as on a real exchange.
    for entry in registry.REPLICATED:
        execute(src, f"SELECT setval(pg_get_serial_sequence('exchange.{entry.name}', "
                     f"'{entry.serial}'), {BASE_ROWS})")
    return names


@pytest.fixture
def pair(cluster, templates):
    return clone(cluster, templates[0], "trust_src"), clone(cluster, templates[1], "trust_dst")


class Exchange:
    """One exchange session: an open transaction holding the serials it inserted."""

    def __init__(self, uri):
        self.conn = psycopg.connect(uri)
        self.serials = []

    def insert_extension(self, name):
        serial = self.conn.execute("INSERT INTO exchange.extensions (name) VALUES (%s) "
                                   "RETURNING extension_id", (name,)).fetchone()[0]
        self.serials.append(serial)
        return serial

    def commit(self):
        self.conn.commit()
        self.conn.close()

    def abort(self):
        self.conn.rollback()
        self.conn.close()


def _holes(dst, table="extensions"):
    return execute(dst, f"SELECT lo, hi, expired_tsz IS NOT NULL FROM {bookkeeping.HOLES} "
                        "WHERE table_name = %s ORDER BY lo", params=(table,))


def _complete(dst, table="extensions"):
    return execute(dst, f"SELECT complete_serial FROM {bookkeeping.WATERMARKS} "
                        "WHERE table_name = %s", params=(table,))[0][0]


def _extension_ids(uri):
    return [r[0] for r in execute(uri, "SELECT extension_id FROM exchange.extensions ORDER BY 1")]


def _once(src, dst, horizon=3600.0, **kw):
    return sync.sync_once(src, dst, hole_horizon=horizon, **kw)


# -- 2. no row lost to commit order ---------------------------------------------------

def test_a_row_committed_after_a_higher_serial_is_copied_by_a_later_t_run(pair):
    src, dst = pair
    early, late = Exchange(src), Exchange(src)
    first = early.insert_extension("early")          # serial 21, still in flight
    second = late.insert_extension("late")           # serial 22
    late.commit()
    result = _once(src, dst)
    assert result["tables"]["extensions"]["copied"] == 1
    assert result["open_holes"] == 1
    assert _holes(dst) == [(BASE_ROWS, second, False)]
    # The audit's cut must not pass the hole: 21 may still come.
    assert _complete(dst) == BASE_ROWS
    early.commit()
    result = _once(src, dst)
    assert result["tables"]["extensions"]["copied"] == 1 and result["holes_filled"] == 1
    assert _holes(dst) == []
    assert _extension_ids(dst) == _extension_ids(src)
    assert first < second and _complete(dst) == second


def test_status_and_metrics_show_open_holes_and_the_halt(pair):
    from taler_ops.monitor import metrics, status
    src, dst = pair
    execute(src, "INSERT INTO exchange.extensions (extension_id, name) VALUES (23, 'x')")
    _once(src, dst)
    part = status.sync(src, dst)
    assert part["open_holes"] == 1 and part["tables"]["extensions"]["open_holes"] == 1
    assert part["tables"]["extensions"]["oldest_hole_seconds"] >= 0
    text = metrics.render({"sync": part, "healthy": True, "time": "2026-01-01T00:00:00+00:00"})
    assert 'taler_ops_sync_open_holes{table="extensions"} 1.0' in text
    _once(src, dst, horizon=0)
    execute(src, "INSERT INTO exchange.extensions (extension_id, name) VALUES (22, 'y')")
    with pytest.raises(sync.SyncHalt):
        _once(src, dst, horizon=0)
    part = status.sync(src, dst)
    assert part["halted"] and part["halt"]["rule"] == "late-row"
    assert part["open_holes"] == 0


def test_a_hole_does_not_expire_while_a_transaction_seen_running_is_open(pair):
    src, dst = pair
    early, late = Exchange(src), Exchange(src)
    early.insert_extension("early")
    late.insert_extension("late")
    late.commit()
    for _ in range(3):                         # horizon 0: only the xid bound holds it
        _once(src, dst, horizon=0)
        assert _holes(dst) == [(BASE_ROWS, BASE_ROWS + 2, False)]
    early.commit()
    assert _once(src, dst, horizon=0)["copied"] == 1
    assert _extension_ids(dst) == _extension_ids(src)


def test_a_burned_serial_expires_and_a_row_appearing_there_later_halts(pair):
    src, dst = pair
    burned, late = Exchange(src), Exchange(src)
    burned.insert_extension("burned")                # serial 21, will abort
    late.insert_extension("late")                    # serial 22
    late.commit()
    burned.abort()
    assert _once(src, dst, horizon=0)["open_holes"] == 0
    assert _holes(dst) == [(BASE_ROWS, BASE_ROWS + 2, True)]
    assert _complete(dst) == BASE_ROWS + 2, "an expired hole no longer holds the audit back"
    # The ingres owner (or a very late commit) now shows serial 21.
    execute(src, "INSERT INTO exchange.extensions (extension_id, name) VALUES (21, 'very late')")
    before = all_digests(dst)
    with pytest.raises(sync.SyncHalt) as info:
        _once(src, dst, horizon=0)
    assert (info.value.table, info.value.serial, info.value.rule) == \
        ("extensions", BASE_ROWS + 1, "late-row")
    assert all_digests(dst) == before
    assert execute(dst, f"SELECT rule FROM {bookkeeping.HALTS} WHERE cleared_tsz IS NULL") == \
        [("late-row",)]
    # It stays halted: another run halts again, nothing copied.
    with pytest.raises(sync.SyncHalt):
        _once(src, dst, horizon=0)


def test_holes_inside_a_batch_and_in_a_table_that_was_empty_are_recorded(pair):
    src, dst = pair
    # No exemption for a table's first row: the exchange's first rows may commit late.
    execute(src, "INSERT INTO exchange.extensions (extension_id, name) VALUES "
                 "(25, 'a'), (30, 'b'), (31, 'c'), (40, 'd')")
    _once(src, dst, batch_size=2)
    assert _holes(dst) == [(20, 25, False), (25, 30, False), (31, 40, False)]
    execute(src, "INSERT INTO exchange.extensions (extension_id, name) VALUES "
                 "(21, 'e'), (27, 'f'), (28, 'g'), (35, 'h')")
    result = _once(src, dst, batch_size=1)
    assert result["holes_filled"] == 3
    assert _holes(dst) == [(21, 25, False), (25, 27, False), (28, 30, False),
                           (31, 35, False), (35, 40, False)]
    assert _extension_ids(dst) == _extension_ids(src)


def test_a_planted_far_serial_cannot_blind_the_table(pair):
    """A row at a huge serial: the exchange's next rows land in its hole, copied or halted."""
    src, dst = pair
    execute(src, "INSERT INTO exchange.extensions (extension_id, name) VALUES (5000000, 'far')")
    _once(src, dst)
    assert watermarks(dst)["extensions"] == 5000000
    assert _complete(dst) == BASE_ROWS, "the audit does not pass an open hole"
    ex = Exchange(src)
    serial = ex.insert_extension("next")
    ex.commit()
    assert _once(src, dst)["holes_filled"] == 1
    assert serial in _extension_ids(dst)
    # Once the hole expired, a further exchange row halts instead of vanishing.
    _once(src, dst, horizon=0)
    ex = Exchange(src)
    serial = ex.insert_extension("after")
    ex.commit()
    with pytest.raises(sync.SyncHalt) as info:
        _once(src, dst, horizon=0)
    assert (info.value.serial, info.value.rule) == (serial, "late-row")


def test_large_legitimate_gaps_never_halt(pair):
    """ON CONFLICT DO NOTHING burns identity values: gaps of any size are holes, no halt."""
    src, dst = pair
    conn = psycopg.connect(src, autocommit=True)
    for _ in range(3):
        conn.execute("SELECT setval(pg_get_serial_sequence('exchange.extensions', "
                     "'extension_id'), nextval(pg_get_serial_sequence('exchange.extensions', "
                     "'extension_id')) + 2000000)")
        conn.execute("INSERT INTO exchange.extensions (name) VALUES (md5(random()::text))")
    conn.close()
    result = _once(src, dst, horizon=0)
    assert result["tables"]["extensions"]["copied"] == 3
    assert _extension_ids(dst) == _extension_ids(src)
    assert _complete(dst) == max(_extension_ids(src))


# -- 3. one consistent cut -----------------------------------------------------------

def test_complete_serial_never_splits_a_transaction_over_tables(pair):
    """A transaction filling a hole in one table and adding a row to another: the audit sees
    both or neither."""
    src, dst = pair
    tx = Exchange(src)
    tx.insert_extension("tx")                                  # extensions 21, in flight
    other = Exchange(src)
    other.insert_extension("other")                            # extensions 22
    other.commit()
    _once(src, dst)
    cut_before = dict(execute(dst, f"SELECT table_name, complete_serial FROM "
                                   f"{bookkeeping.WATERMARKS}"))
    # The in-flight transaction also writes a reserve, then commits.
    tx.conn.execute("INSERT INTO exchange.reserves (reserve_pub, expiration_date, gc_date) "
                    "VALUES (sha256('tx'::bytea), 1, 2)")
    tx.commit()
    _once(src, dst)
    cut = dict(execute(dst, f"SELECT table_name, complete_serial FROM {bookkeeping.WATERMARKS}"))
    assert cut_before["extensions"] == BASE_ROWS and cut_before["reserves"] == BASE_ROWS
    assert cut["extensions"] == BASE_ROWS + 2 and cut["reserves"] == BASE_ROWS + 1


# -- 1. validity decided on the trusted side -----------------------------------------

def test_functions_and_search_path_of_the_ingres_owner_change_nothing(pair):
    """The source computes nothing: a shadowing sha512 on ingres cannot make a forged hash pass."""
    src, dst = pair
    dbname = psycopg.conninfo.conninfo_to_dict(src)["dbname"]
    execute(src,
            "CREATE FUNCTION exchange.sha512(bytea) RETURNS bytea LANGUAGE sql "
            "AS 'SELECT sha512(''forged''::bytea)'",
            f'ALTER DATABASE "{dbname}" SET search_path = exchange, pg_catalog',
            _forged_denomination())
    with pytest.raises(sync.SyncHalt) as info:
        _once(src, dst)
    assert (info.value.table, info.value.rule) == ("denominations", "derived-hash")


def _forged_denomination():
    """A copy of denomination 1 under a new serial whose derived hash is forged."""
    entry = registry.entry("denominations")
    names = [c.name for c in entry.copy_columns]
    exprs = [f"{n} + 1000" if n == entry.serial else
             ("sha512('forged'::bytea)" if n == "denom_pub_hash" else n) for n in names]
    return (f"INSERT INTO exchange.denominations ({', '.join(names)}) SELECT {', '.join(exprs)} "
            f"FROM exchange.denominations WHERE {entry.serial} = 1")


@pytest.mark.parametrize("hide", [
    "ALTER TABLE exchange.extensions ENABLE ROW LEVEL SECURITY",
    "CREATE RULE hide AS ON INSERT TO exchange.extensions DO INSTEAD NOTHING",
    "CREATE POLICY p ON exchange.extensions USING (extension_id < 22)",
])
def test_a_source_that_could_hide_rows_is_refused(pair, hide):
    src, dst = pair
    execute(src, hide)
    before = all_digests(dst)
    with pytest.raises(sync.SyncHalt) as info:
        _once(src, dst)
    assert (info.value.table, info.value.rule) == ("extensions", "hidden-rows")
    assert all_digests(dst) == before


def test_row_security_off_makes_a_filtering_policy_fail_not_hide(cluster, pair):
    """Even past the catalogue check, row_security=off turns filtering into an error."""
    src, _ = pair
    dbname = psycopg.conninfo.conninfo_to_dict(src)["dbname"]
    reader = f"reader_{dbname}"      # roles are cluster-wide: one per test database
    execute(cluster.uri(), f'CREATE ROLE "{reader}" LOGIN')
    execute(src, f'GRANT USAGE ON SCHEMA exchange TO "{reader}"',
            f'GRANT SELECT ON exchange.extensions TO "{reader}"',
            "ALTER TABLE exchange.extensions ENABLE ROW LEVEL SECURITY",
            f'CREATE POLICY p ON exchange.extensions TO "{reader}" USING (extension_id < 5)')
    with psycopg.connect(cluster.uri(dbname, user=reader)) as conn:
        assert conn.execute("SELECT count(*) FROM exchange.extensions").fetchone()[0] == 4
        conn.execute("SET row_security TO off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM exchange.extensions")


# -- 6. property: random interleavings, kills and tampering ----------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_interleavings_lose_nothing(pair, seed):
    """Exchange transactions commit or abort in random order, syncs run (and are cut short)
    at random points, a row is sometimes forged: afterwards every committed row is in the
    safe copy, or the sync halted naming it."""
    src, dst = pair
    rnd = random.Random(seed)
    open_tx, committed = [], []
    halted = None
    # The ingres owner's preparation for forged rows (an ALTER would wait for open sessions).
    execute(src, "ALTER TABLE exchange.extensions ALTER COLUMN name DROP NOT NULL")
    for step in range(60):
        action = rnd.random()
        if action < 0.4:
            tx = Exchange(src)
            tx.insert_extension(f"s{seed}-{step}")
            open_tx.append(tx)
        elif action < 0.7 and open_tx:
            tx = open_tx.pop(rnd.randrange(len(open_tx)))
            if rnd.random() < 0.8:
                committed += tx.serials
                tx.commit()
            else:
                tx.abort()
        elif action < 0.95:
            # Some syncs die after a random number of committed batches.
            kill_after = rnd.choice([None, 0, 1, 2])
            try:
                _once(src, dst, batch_size=rnd.choice([1, 2, 5]), progress=_killer(kill_after))
            except Killed:
                pass
            except sync.SyncHalt as exc:
                halted = exc
                break
        elif rnd.random() < 0.5:
            # Tampering: a forged row (a NULL where the exchange never writes one).
            execute(src, "INSERT INTO exchange.extensions (name) VALUES (NULL)")
    for tx in open_tx:
        committed += tx.serials
        tx.commit()
    if halted is None:
        try:
            _once(src, dst)
        except sync.SyncHalt as exc:
            halted = exc
    have = set(_extension_ids(dst))
    source = set(_extension_ids(src))
    missing = sorted(source - have)
    if halted is None:
        assert not missing, f"rows silently absent: {missing}"
    else:
        assert halted.table == "extensions" and halted.serial is not None
        # Everything below the named row that the source holds was copied or is in a hole.
        holes = _holes(dst)
        for serial in missing:
            in_open_hole = any(lo < serial < hi and not exp for lo, hi, exp in holes)
            above = serial >= halted.serial or serial > watermarks(dst)["extensions"]
            assert in_open_hole or above, f"row {serial} silently absent (halt {halted})"
    assert have <= source
    assert set(committed) <= source


class Killed(Exception):
    """The sync process dies (between two committed batches)."""


def _killer(after):
    seen = [0]

    def progress(event):
        seen[0] += 1
        if after is not None and seen[0] > after:
            raise Killed()
    return progress


# -- 2. a replication stall while the daemon runs ---------------------------------------

def test_a_stalled_standby_keeps_holes_open_while_the_daemon_runs():
    """Replay paused on the ingres standby: its stream clock stops, so however long the
    daemon keeps passing, the hole stays open, and the late row is copied after the stall."""
    import threading
    import time
    from pgcluster import Cluster
    from taler_ops.schema import dbinit
    primary = Cluster("trust-primary").start()
    standby = Cluster("trust-standby")
    stop = threading.Event()
    passes, errors = [], []
    try:
        src = primary.createdb("ingres")
        dbinit.exchange_dbinit(src, role="ingres")
        sync_data.populate(src, 5)
        execute(src, "SELECT setval(pg_get_serial_sequence('exchange.extensions', "
                     "'extension_id'), 5)")
        dst = primary.createdb("safe")
        dbinit.exchange_dbinit(dst, role="safe-copy")
        standby.start_standby_of(primary)
        replica = standby.uri("ingres")
        early, late = Exchange(src), Exchange(src)
        early.insert_extension("early")                       # 6, in flight
        late.insert_extension("late")                         # 7
        late.commit()
        wait_for(lambda: _extension_ids(replica)[-1] == 7, 60, 0.05, "the standby to replay 7")

        def daemon():
            try:
                sync.run_daemon(replica, dst, stop=stop, on_pass=passes.append,
                                max_delay=0.1, hole_horizon=0.5)
            except Exception as exc:   # reported by the assertions below
                errors.append(exc)
        thread = threading.Thread(target=daemon)
        thread.start()
        wait_for(lambda: 7 in _extension_ids(dst) or errors, 60, 0.05, "the daemon to copy 7")
        assert _holes(dst) == [(5, 7, False)]

        execute(replica, "SELECT pg_wal_replay_pause()")
        wait_for(lambda: execute(replica, "SELECT pg_get_wal_replay_pause_state()")
                 == [("paused",)], 60, 0.05, "replay to pause")
        early.commit()                                        # 6 commits on the exchange
        ex = Exchange(src)
        ex.insert_extension("during the stall")
        ex.commit()
        # A pass that began before the pause may still carry an earlier clock: skip it.
        first = len(passes) + 1
        wait_for(lambda: len(passes) > first or errors, 60, 0.05, "a pass that began paused")
        paused_at, seen = time.monotonic(), len(passes)
        # The daemon keeps passing for longer than the horizon, on the auditor's clock.
        wait_for(lambda: len(passes) >= seen + 5 and time.monotonic() - paused_at > 2.0
                 or errors, 60, 0.05, "passes during the stall")
        stalled = passes[seen:]
        assert len({p["source_clock"] for p in stalled}) == 1, "the stream clock moved"
        assert _holes(dst) == [(5, 7, False)], "a hole expired during the stall"

        execute(replica, "SELECT pg_wal_replay_resume()")
        wait_for(lambda: _extension_ids(dst) == [1, 2, 3, 4, 5, 6, 7, 8] or errors,
                 60, 0.05, "the daemon to copy the late row")
        stop.set()
        thread.join()
        assert not errors, errors
        assert all_digests(dst) == all_digests(src)
    finally:
        stop.set()
        standby.destroy()
        primary.destroy()


