"""The generator (taler-ops generate) against real PostgreSQL."""

import hashlib
import json
import os
import time

import psycopg
import pytest
from psycopg import sql

from economics_check import violations
from taler_ops.schema import dbinit, registry, state
from taler_ops.sim import generator
from taler_ops.errors import DatabaseNotReady, TalerOpsError, UsageError
from taler_ops.sim.units import DAY, HOUR, SECOND

NOW = 1_760_000_000_000_000          # a fixed "now" makes bulk runs reproducible
# An audit run within a day of `now` must find nothing (docs/economics.md).
AUDIT_MARGIN = DAY - HOUR
ALL_KINDS = ("coin_overspend", "reserve_overdraft", "wire_out_mismatch",
             "reserve_balance_mismatch")


def _counts(uri):
    with psycopg.connect(uri) as conn:
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}, count(*) FROM {}").format(
                sql.Literal(e.name), sql.Identifier("exchange", e.name))
            for e in registry.REPLICATED)
        return dict(conn.execute(query).fetchall())


def _digest(uri):
    """One hash per table over every column of every row, in serial order."""
    out = {}
    with psycopg.connect(uri) as conn:
        for e in registry.REPLICATED:
            h = hashlib.sha256()
            query = sql.SQL("SELECT t::text FROM {} t ORDER BY {}").format(
                sql.Identifier("exchange", e.name), sql.Identifier(e.serial))
            for (row,) in conn.execute(query):
                h.update(row.encode())
            out[e.name] = h.hexdigest()
    return out


def _violations(uri, now=NOW, margin=AUDIT_MARGIN):
    with psycopg.connect(uri) as conn:
        return violations(conn, now, margin)


def test_bulk_100k_fills_every_replicated_table_consistently(exchange_db):
    inserted = generator.bulk(exchange_db, 100_000, seed=7, now_us=NOW)
    counts = _counts(exchange_db)
    empty = [e.name for e in registry.REPLICATED if counts[e.name] == 0]
    assert empty == []
    assert len(registry.REPLICATED) == 46
    assert inserted == {t: n for t, n in counts.items() if n}
    assert 95_000 <= sum(counts.values()) <= 110_000
    # Withdrawals and deposits dominate, as on a real exchange.
    ranked = sorted(counts, key=counts.get, reverse=True)
    assert set(ranked[:3]) <= {"reserves_out", "known_coins", "coin_deposits"}
    # Every foreign key and CHECK held during COPY (non-partitioned schema); the
    # economic rules, derived hashes and mutable columns hold too.
    with psycopg.connect(exchange_db) as conn:
        assert state.read_setup(conn)[2] is True      # the schema has its FKs
    assert _violations(exchange_db) == {}
    # Identity sequences were moved past the generated serials.
    with psycopg.connect(exchange_db) as conn:
        for e in registry.REPLICATED:
            top, = conn.execute(sql.SQL("SELECT max({}) FROM {}").format(
                sql.Identifier(e.serial), sql.Identifier("exchange", e.name))).fetchone()
            nxt, = conn.execute("SELECT nextval(pg_get_serial_sequence(%s, %s))",
                                (f"exchange.{e.name}", e.serial)).fetchone()
            assert nxt > top, e.name


def test_server_checked_foreign_keys_accept_the_history(exchange_db):
    # The per-row foreign-key triggers (not the writer's set-based check) see every row.
    inserted = generator.bulk(exchange_db, 10_000, seed=8, now_us=NOW, fk_check="triggers")
    assert len(inserted) == len(registry.REPLICATED)
    assert _violations(exchange_db) == {}


def test_set_based_foreign_key_check_rejects_a_dangling_reference(exchange_db):
    from taler_ops.sim.copywriter import CopyWriter, ForeignKeyViolation
    from taler_ops.sim.columns import COLUMNS
    with psycopg.connect(exchange_db) as conn:
        writer = CopyWriter(conn, COLUMNS, fk_check="set")
        serial = writer.serial("denomination_revocations")
        writer.add("denomination_revocations", (serial, 4242, b"\x01" * 64))
        with pytest.raises(ForeignKeyViolation, match=r"denomination_revocations row "
                           r"denom_revocations_serial_id=1 violates .* -> denominations"):
            writer.flush()
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM exchange.denomination_revocations"
                            ).fetchone()[0] == 0


def test_equal_seeds_give_identical_databases(cluster):
    uris = [cluster.createdb(f"generator_seed_{i}") for i in range(3)]
    for uri in uris:
        dbinit.exchange_dbinit(uri)
    generator.bulk(uris[0], 15_000, seed=11, now_us=NOW)
    generator.bulk(uris[1], 15_000, seed=11, now_us=NOW)
    generator.bulk(uris[2], 15_000, seed=12, now_us=NOW)
    first, second, other = map(_digest, uris)
    assert first == second
    assert all(first[t] != other[t] for t in ("reserves", "coin_deposits", "wire_targets"))


def test_partitioned_schema_and_continued_runs(fresh_db):
    dbinit.exchange_dbinit(fresh_db, partitions=3)
    first = generator.bulk(fresh_db, 8_000, seed=1, now_us=NOW)
    # Again with the same seed, then another one: new keys, no collisions.
    again = generator.bulk(fresh_db, 8_000, seed=1, now_us=NOW)
    other = generator.bulk(fresh_db, 8_000, seed=2, now_us=NOW)
    counts = _counts(fresh_db)
    for table in ("reserves", "reserves_out", "coin_deposits", "wire_targets"):
        assert counts[table] == first[table] + again[table] + other[table]
    # Fee years and extensions are shared, not repeated.
    assert "extensions" not in again and "wire_fee" not in other
    assert _violations(fresh_db) == {}


def test_injected_misbehaviour_is_planted_and_recorded(exchange_db, tmp_path):
    record_path = tmp_path / "planted.json"
    generator.bulk(exchange_db, 12_000, seed=3, now_us=NOW, inject=list(ALL_KINDS),
                   record_path=str(record_path))
    record = json.loads(record_path.read_text())
    assert sorted(r["kind"] for r in record) == sorted(ALL_KINDS)
    by_kind = {r["kind"]: r for r in record}
    found = _violations(exchange_db)
    with psycopg.connect(exchange_db) as conn:
        # coin_overspend: the recorded deposit exists and takes its coin past its value.
        r = by_kind["coin_overspend"]
        assert r["table"] == "coin_deposits"
        coin_id, = conn.execute(
            "SELECT kc.known_coin_id FROM exchange.coin_deposits cd JOIN exchange.known_coins kc"
            " USING (coin_pub) WHERE cd.coin_deposit_serial_id = %s AND kc.coin_pub = %s",
            (r["serial"], bytes.fromhex(r["coin_pub"]))).fetchone()
        assert found["C1 overspent"] == [coin_id]
        # reserve_overdraft: the recorded withdrawal drives its reserve negative.
        r = by_kind["reserve_overdraft"]
        uuid, = conn.execute("SELECT reserve_uuid FROM exchange.reserves_out"
                             " WHERE reserve_out_serial_id = %s", (r["serial"],)).fetchone()
        assert uuid == r["reserve_uuid"]
        assert found["R1 derived balance negative"] == [uuid]
        # wire_out_mismatch: that wire transfer and no other is wrong, by the recorded amount.
        r = by_kind["wire_out_mismatch"]
        assert found["A1 wire_out amount"] == [r["serial"]]
        val, frac = conn.execute("SELECT (amount).val, (amount).frac FROM exchange.wire_out"
                                 " WHERE wireout_uuid = %s", (r["serial"],)).fetchone()
        assert val * 100_000_000 + frac == r["claimed"] != r["expected"]
        # reserve_balance_mismatch: stored balance differs from the derived one.
        r = by_kind["reserve_balance_mismatch"]
        assert r["serial"] in found["R4 current_balance"]
        val, frac = conn.execute("SELECT (current_balance).val, (current_balance).frac"
                                 " FROM exchange.reserves WHERE reserve_uuid = %s",
                                 (r["serial"],)).fetchone()
        assert val * 100_000_000 + frac == r["stored"] == r["expected"] + 100_000_000
    # Nothing else broke: the overdraft's reserve shows in R4 and the
    # overspent coin in C4 as the exchange's own bookkeeping, nothing more.
    assert set(found) == {"C1 overspent", "C4 remaining", "R1 derived balance negative",
                          "R4 current_balance", "A1 wire_out amount"}
    assert set(found["R4 current_balance"]) == {by_kind["reserve_balance_mismatch"]["serial"],
                                                by_kind["reserve_overdraft"]["reserve_uuid"]}


def test_live_mode_updates_mutable_columns_at_the_asked_rate(exchange_db):
    generator.bulk(exchange_db, 3_000, seed=1)
    before = _counts(exchange_db)
    rate, duration = 400, 3.0
    stats = generator.live(exchange_db, rate, duration, seed=5, gc_every=1.0)
    after = _counts(exchange_db)
    inserted = sum(stats["inserted"].values()) - stats["setup_rows"]
    assert 0.6 * rate * duration <= inserted <= 1.5 * rate * duration
    assert stats["transactions"] >= 10                 # small transactions, not one
    for table in ("reserves", "known_coins", "batch_deposits"):
        assert stats["updated"].get(table, 0) > 0, table
    for table in ("reserves_in", "reserves_out", "coin_deposits", "wire_out",
                  "aggregation_tracking"):
        assert stats["inserted"].get(table, 0) > 0, table
    # GC ran on the primary and deleted emptied reserves it was allowed to.
    assert stats["gc_runs"] >= 1 and stats["deleted"].get("reserves", 0) > 0
    assert after["reserves"] == (before["reserves"] + stats["inserted"]["reserves"]
                                 - stats["deleted"]["reserves"])
    with psycopg.connect(exchange_db) as conn:
        done = conn.execute("SELECT count(*) FROM exchange.batch_deposits WHERE done"
                            " AND exchange_timestamp > %s",
                            (int(time.time() - 60) * SECOND,)).fetchone()[0]
        assert done == stats["updated"]["batch_deposits"]
    # The mutable columns match the history: balances, remaining values, done flags.
    assert _violations(exchange_db, now=int(time.time() * SECOND)) == {}


def test_live_mode_plants_and_records_every_kind(exchange_db, tmp_path):
    record_path = tmp_path / "live.json"
    # 4 s: planting waits for the second half and an aggregation with deposits due.
    stats = generator.live(exchange_db, 300, 4.0, seed=9, inject=",".join(ALL_KINDS),
                           record_path=str(record_path))
    record = json.loads(record_path.read_text())
    assert record == stats["injected"]
    assert sorted(r["kind"] for r in record) == sorted(ALL_KINDS)
    found = _violations(exchange_db, now=int(time.time() * SECOND))
    by_kind = {r["kind"]: r for r in record}
    assert found["A1 wire_out amount"] == [by_kind["wire_out_mismatch"]["serial"]]
    assert found["R1 derived balance negative"] == [by_kind["reserve_overdraft"]["reserve_uuid"]]
    assert by_kind["reserve_balance_mismatch"]["serial"] in found["R4 current_balance"]
    assert len(found["C1 overspent"]) == 1


def test_refusals(fresh_db, cluster):
    with pytest.raises(DatabaseNotReady):
        generator.bulk(fresh_db, 100)                   # no exchange schema yet
    with pytest.raises(UsageError):
        generator.bulk(fresh_db, 0)
    with pytest.raises(UsageError):
        generator.live(fresh_db, 0, 1)
    with pytest.raises(UsageError, match="unknown --inject kind 'bogus'"):
        generator.bulk(fresh_db, 100, inject=["coin_overspend,bogus"])
    safe = cluster.createdb("generator_safe_copy")
    dbinit.exchange_dbinit(safe, role="safe-copy")
    with pytest.raises(TalerOpsError, match="safe copy") as err:
        generator.bulk(safe, 100)
    assert err.value.exit_code == 1
    ingres = cluster.createdb("generator_ingres")
    dbinit.exchange_dbinit(ingres, role="ingres")
    with pytest.raises(UsageError, match="--gc-every needs the exchange primary"):
        generator.live(ingres, 100, 1, gc_every=1)
    assert _counts(safe)["reserves"] == 0 and _counts(ingres)["reserves"] == 0


def test_cli(cli, conf, exchange_db, cluster, tmp_path):
    good = conf("good.conf", {"exchangedb-postgres": {"CONFIG": exchange_db}})
    record = tmp_path / "rec.json"
    r = cli("generate", "-c", good, "--rows", "2000", "--seed", "4", "--now", NOW,
            "--inject", "wire_out_mismatch", "--record", record, "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["reserves"] > 0 and r.stderr == ""   # no progress line off a terminal
    assert [e["kind"] for e in json.loads(record.read_text())] == ["wire_out_mismatch"]

    r = cli("generate", "-c", good, "--rate", "200", "--duration", "1")
    assert r.returncode == 0, r.stderr
    assert "rows/s" in r.stdout

    for args, needle in ((("--rows", "10", "--inject", "bogus"), "unknown --inject kind"),
                         (("--rate", "0", "--duration", "1"), "--rate must be a positive"),
                         (("--rate", "10", "--duration", "-1"), "--duration must be"),
                         (("--rows", "0"), "--rows must be a positive"),
                         (("--rows", "10", "--rate", "5", "--duration", "1"), "either --rows"),
                         ((), "either --rows")):
        r = cli("generate", "-c", good, *args)
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr

    empty_db = cluster.createdb("generator_cli_empty")
    empty = conf("empty.conf", {"exchangedb-postgres": {"CONFIG": empty_db}})
    r = cli("generate", "-c", empty, "--rows", "10")
    assert r.returncode == 5 and "run dbinit first" in r.stderr

    safe = cluster.createdb("generator_cli_safe")
    dbinit.exchange_dbinit(safe, role="safe-copy")
    r = cli("generate", "-c", conf("safe.conf", {"exchangedb-postgres": {"CONFIG": safe}}),
            "--rows", "10")
    assert r.returncode == 1 and "safe copy" in r.stderr

    r = cli("generate", "-c", tmp_path / "missing.conf", "--rows", "10")
    assert r.returncode == 6


def test_progress_on_a_terminal_only():
    import io
    assert generator.tty_progress(io.StringIO()) is None
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as tty:
        show = generator.tty_progress(tty)
        show({"reserves": 10, "coin_deposits": 30}, 2.0)
        show.done()
        out = os.read(master, 4096).decode()
    os.close(master)
    assert "rows 40" in out and "coin_deposits 30" in out and "20 rows/s" in out
