"""The exchange schema as created on a real server agrees with the table registry."""

import pytest

from taler_ops.schema import dbinit, exchange_schema, hashing, registry, spec
from taler_ops.schema.exchange_tables import TABLES

TALER_44 = set("""denominations denomination_revocations wire_targets legitimization_measures
legitimization_outcomes legitimization_processes reserves reserves_in reserves_close
reserves_open_requests reserves_open_deposits reserves_out auditors auditor_denom_sigs
exchange_sign_keys signkey_revocations known_coins refresh_commitments refresh_revealed_coins
refresh_transfer_keys batch_deposits coin_deposits refunds wire_out aggregation_tracking
wire_fee global_fee recoup recoup_refresh extensions policy_details policy_fulfillments
purse_requests purse_decision purse_merges purse_deposits account_merges history_requests
close_requests wads_out wad_out_entries wads_in wad_in_entries profit_drains""".split())


def _catalog_columns(conn, table):
    return conn.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
             FROM pg_attribute a
            WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum""", (f"exchange.{table}",)).fetchall()


def test_registry_covers_taler_44_plus_partners_and_kycauths_in():
    names = {e.name for e in registry.REPLICATED}
    assert len(TALER_44) == 44
    assert set(registry.TALER_SYNC_TABLES) == TALER_44
    # partners: referenced by purse and wad tables; kycauths_in: model-exchange-0002.
    assert names == TALER_44 | {"partners", "kycauths_in"}


def test_copy_order_puts_parents_first():
    seen = set()
    for entry in registry.REPLICATED:
        for parent in entry.parents:
            assert parent.table in seen or parent.table == entry.name, \
                f"{entry.name} copied before its parent {parent.table}"
        seen.add(entry.name)
    order = [e.name for e in registry.REPLICATED]
    # taler-facts §8.6: Taler copied these children first.
    assert order.index("policy_fulfillments") < order.index("policy_details") \
        < order.index("batch_deposits")
    assert order.index("partners") < order.index("purse_merges")


def test_mutable_columns_are_never_copied():
    reserves = registry.entry("reserves")
    assert "current_balance" in [c.name for c in reserves.mutable_columns]
    assert "current_balance" not in reserves.copy_column_names
    assert "remaining" not in registry.entry("known_coins").copy_column_names
    assert "done" not in registry.entry("batch_deposits").copy_column_names
    for entry in registry.REPLICATED:
        assert entry.copy_column_names[0] == entry.serial
        for col in entry.mutable_columns:
            assert col.default is not None or col.nullable, \
                f"{entry.name}.{col.name}: a safe copy needs a default for it"


def test_dbinit_creates_every_table_with_keys_and_fks(exchange_db):
    import psycopg
    with psycopg.connect(exchange_db) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'exchange'")}
        assert TALER_44 <= tables
        for entry in registry.REPLICATED:
            catalog = _catalog_columns(conn, entry.name)
            by_name = {name: (typ, notnull) for name, typ, notnull in catalog}
            for col in entry.copy_columns + entry.mutable_columns:
                assert col.name in by_name, f"{entry.name}.{col.name} missing"
                assert by_name[col.name][0] == col.sql_type, f"{entry.name}.{col.name}"
                assert by_name[col.name][1] == (not col.nullable), f"{entry.name}.{col.name}"
            # The serial is an identity column (explicit values allowed, as Taler's sync needs).
            ident = conn.execute(
                "SELECT attidentity FROM pg_attribute WHERE attrelid = %s::regclass "
                "AND attname = %s", (entry.qualified, entry.serial)).fetchone()[0]
            assert ident == "d"
        fks = conn.execute(
            """SELECT cl.relname, rf.relname FROM pg_constraint c
                 JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_class rf ON rf.oid = c.confrelid
                 JOIN pg_namespace n ON n.oid = cl.relnamespace
                WHERE c.contype = 'f' AND n.nspname = 'exchange'""").fetchall()
        expected = {(e.name, p.table) for e in registry.REPLICATED for p in e.parents}
        assert expected <= set(fks)
        keys = conn.execute(
            """SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
                WHERE n.nspname = 'exchange' AND c.contype IN ('p', 'u')
                  AND c.conrelid::regclass::text = ANY(%s)""",
            ([f"exchange.{t.name}" for t in TABLES],)).fetchone()[0]
        # Tables without a primary key (as in Taler) carry only their UNIQUEs.
        assert keys == sum(len(t.keys) for t in TABLES)
        assert not [t.name for t in TABLES if t.primary_key is None and any(
            k == "PRIMARY KEY" for k, _ in t.keys)]


@pytest.mark.parametrize("pub,sig", [(b"p" * 31, b"s" * 64), (b"p" * 32, b"s" * 63),
                                     (b"p" * 33, b"s" * 64)])
def test_length_checks_reject_wrong_sizes(exchange_db, pub, sig):
    import psycopg
    insert = ("INSERT INTO exchange.exchange_sign_keys (exchange_pub, master_sig, valid_from, "
              "expire_sign, expire_legal) VALUES (%s, %s, 1, 2, 3)")
    with psycopg.connect(exchange_db, autocommit=True) as conn:
        conn.execute(insert, (b"k" * 32, b"s" * 64))  # the right sizes pass
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(insert, (pub, sig))


def test_amounts_are_checked_by_the_sync_rules_not_the_schema(exchange_db):
    """Taler's schema has no amount CHECKs, so neither has the model; the sync's row
    rules (sync/validate.py) reject unnormalized and negative amounts instead."""
    import psycopg

    from taler_ops.sync import validate
    base = ("INSERT INTO exchange.wire_fee (wire_method, start_date, end_date, wire_fee, "
            "closing_fee, master_sig) VALUES ('x', %s, 1, ROW(%s, %s), ROW(0, 0), %s)")
    cases = {1: (1, 99_999_999, None), 2: (0, 100_000_000, "amount-not-normalized"),
             3: (-1, 0, "amount-negative"), 4: (0, -1, "amount-negative"),
             5: (2 ** 52 + 1, 0, "amount-not-normalized")}
    with psycopg.connect(exchange_db, autocommit=True) as conn:
        for start, (val, frac, _) in cases.items():
            conn.execute(base, (start, val, frac, b"s" * 64))
        found = dict(conn.execute(
            f"SELECT start_date, {validate.first_violation_sql(registry.entry('wire_fee'))} "
            "FROM exchange.wire_fee").fetchall())
    for start, (_, _, rule) in cases.items():
        assert (found[start] or "").split("\t")[0] == (rule or ""), start


def test_partitioned_schema_has_partitions_and_only_inline_fks(fresh_db):
    import psycopg
    dbinit.exchange_dbinit(fresh_db, partitions=3)
    with psycopg.connect(fresh_db) as conn:
        parts = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'exchange.reserves'::regclass"
        ).fetchone()[0]
        assert parts == 3
        fks = conn.execute(
            "SELECT c.conrelid::regclass::text FROM pg_constraint c "
            "JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE n.nspname = 'exchange' AND c.contype = 'f' ORDER BY 1").fetchall()
        # As Taler under -P: only the inline FKs of three never-partitioned tables.
        assert [r[0] for r in fks] == [
            "exchange.auditor_denom_sigs", "exchange.auditor_denom_sigs",
            "exchange.denomination_revocations", "exchange.signkey_revocations"]
        # Natural keys still hold inside a partition (here the partition key is the key).
        conn.execute("INSERT INTO exchange.reserves (reserve_pub, expiration_date, gc_date) "
                     "VALUES (%s, 1, 1)", (b"r" * 32,))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO exchange.reserves (reserve_pub, expiration_date, gc_date) "
                         "VALUES (%s, 2, 2)", (b"r" * 32,))


@pytest.mark.parametrize("rule,value", [
    ("denom_pub_hash", b"\x00\x00\x00\x02\x00\x00\x00\x00denomination key"),
    ("full_payto", "payto://x-taler-bank/bank.example/Alice?receiver-name=A%20B"),
    ("normalized_payto", "payto://x-taler-bank/Bank.Example/Alice?receiver-name=A%20B"),
    ("normalized_payto", "PAYTO://IBAN/DE12ÄÖ?receiver-name=Ünï"),    # invalid: NULL
])
def test_hash_rules_agree_between_python_and_sql(exchange_db, rule, value):
    import psycopg
    with psycopg.connect(exchange_db) as conn:
        typ = "bytea" if isinstance(value, bytes) else "text"
        got = conn.execute(f"SELECT {hashing.sql_expression(rule, 'x.v')} "
                           f"FROM (SELECT %s::{typ} AS v) x", (value,)).fetchone()[0]
    want = hashing.compute(rule, value)
    assert (None if got is None else bytes(got)) == want


def test_derived_hash_columns_are_in_the_registry():
    derived = {(e.name, d.column) for e in registry.REPLICATED for d in e.derived}
    assert derived == {("denominations", "denom_pub_hash"),
                       ("wire_targets", "wire_target_h_payto"),
                       ("wire_targets", "h_normalized_payto"),
                       ("refresh_revealed_coins", "h_coin_ev")}


def test_patch_rendering_is_stable():
    first = exchange_schema.render(spec.FIRST_PATCH)
    assert first == exchange_schema.render(spec.FIRST_PATCH)
    # Under -P only the foreign keys Taler declares inline survive (never-partitioned tables).
    fks = [s for s in exchange_schema.render(spec.FIRST_PATCH, 2) if "FOREIGN KEY" in s]
    assert sorted(s.split()[2] for s in fks) == [
        'exchange."auditor_denom_sigs"', 'exchange."auditor_denom_sigs"',
        'exchange."denomination_revocations"', 'exchange."signkey_revocations"']
    assert not any("FOREIGN KEY" in s
                   for s in exchange_schema.render(spec.FIRST_PATCH, 2, inline_foreign_keys=False))


def test_registry_describes_taler_keys_and_column_kinds():
    no_pk = {t.name for t in TABLES if t.primary_key is None}
    # taler-real-schema.md §2.2: the eight replicated tables without a primary key.
    assert no_pk == {"legitimization_measures", "legitimization_outcomes",
                     "legitimization_processes", "reserves_out", "recoup", "recoup_refresh",
                     "extensions", "policy_details"}
    assert {e.name for e in registry.REPLICATED if not e.serial_unique} == {
        "reserves_open_deposits", "policy_fulfillments"}
    # Under -P a per-partition serial UNIQUE is not enforced table-wide ...
    reserves = registry.entry("reserves")
    assert ("reserve_uuid",) in reserves.enforced_keys(None)
    assert ("reserve_uuid",) not in reserves.enforced_keys(2)
    assert ("reserve_pub",) in reserves.enforced_keys(2)
    # ... and a key Taler adds by a "foreign" action does not exist at all.
    processes = registry.entry("legitimization_processes")
    assert ("legitimization_measure_serial_id", "measure_index") in processes.enforced_keys(None)
    assert ("legitimization_measure_serial_id", "measure_index") not in \
        processes.enforced_keys(0)
    for entry in registry.REPLICATED:
        for col in entry.copy_columns + entry.mutable_columns:
            assert not (col.mutable and col.first_seen), f"{entry.name}.{col.name}"
        # first-seen columns are copied but never compared by verify
        assert set(entry.first_seen_columns) <= set(entry.copy_columns)
        assert not set(entry.first_seen_columns) & set(entry.compared_columns)
    assert {c.name for c in registry.entry("reserves").first_seen_columns} == {
        "expiration_date", "gc_date"}
    for table, column in (("known_coins", "age_commitment_hash"),
                          ("reserves_close", "close_request_row"),
                          ("purse_requests", "in_reserve_quota"),
                          ("legitimization_outcomes", "new_measure_name")):
        assert column in [c.name for c in registry.entry(table).compared_columns], column
    assert "sender_name" not in registry.entry("reserves_in").copy_column_names


def test_access_token_defaults_to_random_bytes_as_in_taler(exchange_db):
    import psycopg
    with psycopg.connect(exchange_db, autocommit=True) as conn:
        for tag in ("a", "b"):
            uri = f"payto://x-taler-bank/bank.example/{tag}?receiver-name={tag}"
            conn.execute("INSERT INTO exchange.wire_targets (wire_target_h_payto, payto_uri) "
                         "VALUES (%s, %s)", (hashing.full_payto_hash(uri), uri))
        tokens = [bytes(r[0]) for r in conn.execute(
            "SELECT access_token FROM exchange.wire_targets ORDER BY wire_target_serial_id")]
        default = conn.execute(
            "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = "
            "'exchange.wire_targets'::regclass AND adnum = (SELECT attnum FROM pg_attribute "
            "WHERE attrelid = 'exchange.wire_targets'::regclass AND attname = 'access_token')"
        ).fetchone()[0]
    assert default == "exchange.random_bytea(32)"
    assert [len(t) for t in tokens] == [32, 32] and tokens[0] != tokens[1]
