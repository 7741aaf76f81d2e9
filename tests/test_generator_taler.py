"""The generator writes what a real Taler exchange writes (taler-real-schema.md §2.1, §3),
into the model and into a database built from Taler's own SQL files."""

import psycopg
import pytest

import taler_build
from economics_check import violations
from taler_ops.schema import hashing, registry
from taler_ops.sim import generator
from taler_ops.crypto import keyring
from taler_ops.sim.units import DAY, HOUR

NOW = 1_760_000_000_000_000


def _check_taler_layouts(conn):
    # Every payto URI is valid for Taler, so every account has a normalized hash.
    rows = conn.execute("SELECT payto_uri, wire_target_h_payto, h_normalized_payto "
                        "FROM exchange.wire_targets").fetchall()
    assert rows
    for uri, full, norm in rows:
        assert hashing.payto_invalid(uri) is None, uri
        assert "receiver-name=" in uri or uri.startswith("payto://taler-reserve/")
        assert bytes(full) == hashing.full_payto_hash(uri)
        assert bytes(norm) == hashing.normalized_payto_hash(uri)
    ibans = [u for u, _, _ in rows if u.startswith("payto://iban/")]
    assert ibans and all(hashing.iban_valid(u.split("?")[0].split("/")[-1]) for u in ibans)
    # denom_pub: cipher || age_mask || key; the hash is Taler's (header swapped).
    for pub, h, age_mask, denom_type in conn.execute(
            "SELECT denom_pub, denom_pub_hash, age_mask, denom_type FROM exchange.denominations"):
        pub = bytes(pub)
        cipher = int.from_bytes(pub[:4], "big")
        assert cipher in (1, 2) and int.from_bytes(pub[4:8], "big") == age_mask
        assert denom_type == 1          # the exchange never writes it
        assert len(pub) == (8 + 32 if cipher == 2 else 8 + 4 + keyring.RSA_BITS // 8 + 3)
        assert bytes(h) == hashing.denom_pub_hash(pub)
    # Envelopes and signatures carry their header; h_coin_ev is the exchange's value.
    bad = conn.execute("""
        SELECT count(*) FROM exchange.refresh_revealed_coins r
          JOIN exchange.denominations d USING (denominations_serial)
         WHERE substring(r.coin_ev from 1 for 4) <> substring(d.denom_pub from 1 for 4)
            OR substring(r.coin_ev from 5 for 4) <> '\\x00000100'::bytea
            OR substring(r.ewv from 5 for 4) <> '\\x00010000'::bytea
            OR substring(r.ev_sig from 5 for 4) <> '\\x00000001'::bytea
            OR r.h_coin_ev <> sha512(d.denom_pub_hash || substring(r.coin_ev from 1 for 4)
                                     || substring(r.coin_ev from 9))""").fetchone()[0]
    assert bad == 0
    assert conn.execute("SELECT count(*) FROM exchange.refresh_revealed_coins").fetchone()[0] > 0
    bad = conn.execute("""
        SELECT (SELECT count(*) FROM exchange.known_coins
                 WHERE substring(denom_sig from 5 for 4) <> '\\x00000000'::bytea)
             + (SELECT count(*) FROM exchange.reserves_out
                 WHERE substring(denom_sig from 5 for 4) <> '\\x00000001'::bytea)""").fetchone()[0]
    assert bad == 0
    # KYC tables and account merges hold normalized payto hashes, never full ones.
    assert conn.execute("""
        SELECT count(*) FROM exchange.legitimization_outcomes o
         WHERE NOT EXISTS (SELECT 1 FROM exchange.wire_targets w
                            WHERE w.h_normalized_payto = o.h_payto)""").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM exchange.legitimization_outcomes").fetchone()[0] > 0
    # gnunet_hashcode values are 32 bytes (the domain would refuse anything else).
    n, = conn.execute("SELECT count(*) FROM exchange.policy_fulfillments "
                      "WHERE cardinality(policy_hash_codes) = 1").fetchone()
    assert n > 0


def test_model_history_is_taler_correct(exchange_db):
    generator.bulk(exchange_db, 5_000, seed=3, now_us=NOW)
    with psycopg.connect(exchange_db) as conn:
        _check_taler_layouts(conn)


@pytest.mark.parametrize("partitions", [None, 2])
def test_generator_fills_a_taler_built_database(fresh_db, partitions):
    taler_build.build_taler_exchange(fresh_db, partitions)     # skips without Taler's SQL
    # No taler-ops step at all: the generator takes the database as Taler built it.
    inserted = generator.bulk(fresh_db, 5_000, seed=3, now_us=NOW)
    with psycopg.connect(fresh_db) as conn:
        counts = {e.name: conn.execute(f"SELECT count(*) FROM exchange.{e.name}").fetchone()[0]
                  for e in registry.REPLICATED}
        assert [t for t, n in counts.items() if n == 0] == []
        assert inserted == {t: n for t, n in counts.items() if n}
        _check_taler_layouts(conn)
        assert violations(conn, NOW, DAY - HOUR) == {}


def test_live_traffic_on_a_taler_built_database(fresh_db):
    taler_build.build_taler_exchange(fresh_db)                 # skips without Taler's SQL
    generator.bulk(fresh_db, 2_000, seed=4)
    stats = generator.live(fresh_db, 200, 1.5, seed=5)
    assert stats["inserted"]["reserves_out"] > 0 and stats["updated"]["reserves"] > 0
    with psycopg.connect(fresh_db) as conn:
        _check_taler_layouts(conn)
        # Taler's own triggers ran for every generated row (search_path = exchange).
        history, credits = conn.execute(
            "SELECT (SELECT count(*) FROM exchange.reserve_history "
            "WHERE table_name = 'reserves_in'), (SELECT count(*) FROM exchange.reserves_in)"
        ).fetchone()
    assert history == credits > 0
