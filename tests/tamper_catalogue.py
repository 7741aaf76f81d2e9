"""Manipulations of an ingres database that already synced once (issue 9), as data.

Each case is what a malicious exchange (or a compromised ingres owner) could do,
the outcome taler-ops must show, and how the operator repairs it:

- ``Halt(rule, table)``: ``taler-ops sync -t`` exits 1 naming table and rule, and
  the safe copy stays byte-identical (nothing of the offending batch written).
- ``Ignored(kinds)``: the sync copies nothing of it (UPDATE/DELETE/out-of-range
  rows are never propagated) and exits 0; ``taler-ops verify`` reports ``kinds``.
- ``Copied()``: structurally valid data, copied verbatim (e.g. hostile text).
- ``Refused(code)``: the sync refuses to run at all (exit code), safe copy untouched.

SQL runs on the ingres clone as superuser.  New rows are derived from existing
generated rows with fresh keys, so everything except the planted defect is valid.
"""

from dataclasses import dataclass, field
from typing import Tuple

from taler_ops.schema import hashing


@dataclass(frozen=True)
class Halt:
    rule: str
    table: str


@dataclass(frozen=True)
class Ignored:
    kinds: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Copied:
    rows: dict    # {table: rows the sync must add}; every other table stays identical


@dataclass(frozen=True)
class Refused:
    exit_code: int


@dataclass(frozen=True)
class LateRow:
    """Issue 16: the sync exits 0 with the hole recorded (``--hole-horizon 0``, so it expires
    at once); then ``then`` runs on ingres (what arrives next) and the sync halts with
    ``late-row`` naming ``table``, the safe copy unchanged by that second run."""
    table: str
    then: Tuple[str, ...]


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    tamper: Tuple[str, ...]
    expect: object
    repair: Tuple[str, ...] = ()
    partitioned: bool = False
    batch: int = 5000
    extra: dict = field(default_factory=dict)


def drop_checks(table):
    """What a compromised ingres owner does before inserting rows its schema would refuse."""
    return f"""DO $$DECLARE c record; BEGIN
  FOR c IN SELECT conname FROM pg_constraint
            WHERE conrelid = 'exchange.{table}'::regclass AND contype = 'c' LOOP
    EXECUTE format('ALTER TABLE exchange.{table} DROP CONSTRAINT %I', c.conname);
  END LOOP; END$$"""


def _payto_row(uri, h_payto=None):
    h = h_payto or hashing.sql_expression("full_payto", "v.p")
    norm = hashing.sql_expression("normalized_payto", "v.p")
    literal = uri.replace("'", "''")
    return (f"INSERT INTO exchange.wire_targets (wire_target_h_payto, payto_uri, "
            f"h_normalized_payto) SELECT {h}, v.p, {norm} FROM (VALUES ('{literal}')) v(p)")


def _new_reserve(tag, **cols):
    pub = cols.pop("reserve_pub", f"sha256('{tag}'::bytea)")
    values = {"reserve_pub": pub, "expiration_date": "1", "gc_date": "2"}
    values.update(cols)
    return (f"INSERT INTO exchange.reserves ({', '.join(values)}) "
            f"VALUES ({', '.join(values.values())})")


def _new_reserve_in(credit="credit", execution_date="execution_date", tag="new-in"):
    # A fresh reserve plus an incoming transfer copied from an existing one.
    return (_new_reserve(tag),
            f"INSERT INTO exchange.reserves_in (reserve_pub, wire_reference, credit, "
            f"wire_source_h_payto, exchange_account_section, execution_date) "
            f"SELECT sha256('{tag}'::bytea), wire_reference + 1000000, {credit}, "
            f"wire_source_h_payto, exchange_account_section, {execution_date} "
            f"FROM exchange.reserves_in ORDER BY reserve_in_serial_id LIMIT 1")


def _history_request(fee):
    """A new history request of an existing reserve (so no other table changes)."""
    return ("INSERT INTO exchange.history_requests (reserve_pub, request_timestamp, "
            f"reserve_sig, history_fee) SELECT reserve_pub, request_timestamp + 1, "
            f"sha512(reserve_sig), {fee}::exchange.taler_amount "
            "FROM exchange.history_requests ORDER BY 1 LIMIT 1")


def _undo_new(table, where):
    return f"DELETE FROM exchange.{table} WHERE {where}"


# The serial the exchange hands out next for reserves (planted far serials excluded).
_NEXT_RESERVE = ("(SELECT max(reserve_uuid) + 1 FROM exchange.reserves "
                 "WHERE reserve_uuid < 1000000000000)")


def _forged_denomination():
    """Denomination 1 again under a new serial and key, with a forged derived hash."""
    from taler_ops.schema import registry
    entry = registry.entry("denominations")
    names = [c.name for c in entry.copy_columns]
    exprs = [f"{n} + 1000000" if n == entry.serial else
             ("sha512('forged'::bytea)" if n == "denom_pub_hash" else
              ("denom_pub || '\\x00'::bytea" if n == "denom_pub" else n)) for n in names]
    return (f"INSERT INTO exchange.denominations ({', '.join(names)}) SELECT {', '.join(exprs)} "
            f"FROM exchange.denominations ORDER BY {entry.serial} LIMIT 1")


_INJECT_TEXT = "payto://x-taler-bank/bank.example/x'); DROP TABLE exchange.reserves; --"
_INJECT_CONNINFO = "payto://iban/DE00 host=evil.example password=x dbname=postgres sslmode=disable"

CASES = (
    Case("update-immutable", "UPDATE of a copied row's immutable column",
         ("UPDATE exchange.reserves_in SET credit = ROW((credit).val + 1000, (credit).frac) "
          "WHERE reserve_in_serial_id = 1",),
         Ignored(("changed",)),
         ("UPDATE exchange.reserves_in SET credit = ROW((credit).val - 1000, (credit).frac) "
          "WHERE reserve_in_serial_id = 1",)),
    Case("delete-child", "DELETE of copied child rows (deposits)",
         ("DELETE FROM exchange.coin_deposits WHERE coin_deposit_serial_id IN (1, 2)",),
         Ignored(("deleted-suspicious",))),
    Case("delete-parent", "DELETE of a copied parent row (a reserve) without its children",
         ("DELETE FROM exchange.reserves WHERE reserve_uuid = 1",),
         Ignored(("deleted-suspicious",))),
    Case("truncate", "TRUNCATE of a copied table",
         ("TRUNCATE exchange.refunds",),
         Ignored(("deleted-suspicious",))),
    Case("missing-parent", "a new deposit that references a batch deposit that does not exist",
         ("INSERT INTO exchange.coin_deposits (batch_deposit_serial_id, coin_pub, coin_sig, "
          "amount_with_fee) SELECT 999999999, coin_pub, sha512('forged'::bytea), "
          "amount_with_fee FROM exchange.coin_deposits ORDER BY 1 LIMIT 1",),
         Halt("parent-missing", "coin_deposits"),
         (_undo_new("coin_deposits", "batch_deposit_serial_id = 999999999"),)),
    Case("duplicate-natural-key", "an existing reserve_pub again under a new serial",
         # CASCADE: a copy built from Taler's SQL has foreign keys on the key.
         ("ALTER TABLE exchange.reserves DROP CONSTRAINT reserves_pkey CASCADE",
          "INSERT INTO exchange.reserves (reserve_pub, expiration_date, gc_date) "
          "SELECT reserve_pub, expiration_date, gc_date FROM exchange.reserves "
          "ORDER BY reserve_uuid LIMIT 1"),
         Halt("duplicate-key", "reserves"),
         ("DELETE FROM exchange.reserves WHERE reserve_uuid = "
          "(SELECT max(reserve_uuid) FROM exchange.reserves)",
          "ALTER TABLE exchange.reserves ADD PRIMARY KEY (reserve_pub)")),
    Case("serial-below-watermark", "a new row with a serial at or below the watermark",
         (_new_reserve("below", reserve_uuid="0"),),
         Ignored(("missing-on-safe-copy",)),
         (_undo_new("reserves", "reserve_uuid = 0"),)),
    Case("serial-far-beyond", "a valid row with a serial far beyond the rest (would make the "
         "sync skip every later row): it opens a hole, and the exchange's next row, once the "
         "hole expired, halts instead of vanishing",
         (_new_reserve("beyond", reserve_uuid="1000000000000000"),),
         LateRow("reserves", (_new_reserve("next", reserve_uuid=_NEXT_RESERVE),))),
    Case("late-commit-after-horizon", "a serial left out (a transaction still open, or burned) "
         "commits after its hole expired",
         (_new_reserve("second", reserve_uuid=f"{_NEXT_RESERVE} + 1"),),
         LateRow("reserves", (_new_reserve("first", reserve_uuid=(
             "(SELECT max(reserve_uuid) - 1 FROM exchange.reserves "
             "WHERE reserve_uuid < 1000000000000)")),))),
    Case("late-commit-in-an-emptied-table", "after a TRUNCATE upstream, rows come back with "
         "new serials above the watermark but one commits late below them",
         ("TRUNCATE exchange.extensions",
          "INSERT INTO exchange.extensions (extension_id, name) VALUES (1000000000, 'second')"),
         LateRow("extensions", ("INSERT INTO exchange.extensions (extension_id, name) "
                                "VALUES (999999999, 'first')",))),
    Case("row-level-security", "a policy that hides rows from the sync's reader",
         ("ALTER TABLE exchange.reserves ENABLE ROW LEVEL SECURITY",
          "CREATE POLICY hide ON exchange.reserves USING (reserve_uuid % 2 = 0)"),
         Halt("hidden-rows", "reserves"),
         ("DROP POLICY hide ON exchange.reserves",
          "ALTER TABLE exchange.reserves DISABLE ROW LEVEL SECURITY")),
    Case("rewrite-rule", "a rule on a source table",
         ("CREATE RULE hide AS ON INSERT TO exchange.refunds DO INSTEAD NOTHING",),
         Halt("hidden-rows", "refunds"),
         ("DROP RULE hide ON exchange.refunds",)),
    Case("table-swapped-for-a-view", "the table renamed and a filtering view in its place",
         ("ALTER TABLE exchange.wire_out RENAME TO wire_out_real",
          "CREATE VIEW exchange.wire_out AS SELECT * FROM exchange.wire_out_real "
          "WHERE wireout_uuid % 2 = 0"),
         Halt("schema-drift", "wire_out"),
         ("DROP VIEW exchange.wire_out",
          "ALTER TABLE exchange.wire_out_real RENAME TO wire_out")),
    Case("shadowed-hash-function", "a forged denom_pub_hash plus an sha512 in schema exchange "
         "and a search_path that would pick it: the source computes nothing",
         ("CREATE FUNCTION exchange.sha512(bytea) RETURNS bytea LANGUAGE sql "
          "AS 'SELECT ''\\x00''::bytea'",
          "DO $$BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = exchange, pg_catalog',"
          " current_database()); END$$",
          _forged_denomination()),
         Halt("derived-hash", "denominations"),
         ("DELETE FROM exchange.denominations WHERE denominations_serial > 1000000",)),
    Case("short-key", "a 31-byte reserve public key",
         (drop_checks("reserves"), _new_reserve("short", reserve_pub="'\\x00'::bytea || "
                                                 "substring(sha256('s'::bytea) from 1 for 30)")),
         Halt("length", "reserves"),
         (_undo_new("reserves", "length(reserve_pub) <> 32"),)),
    Case("long-signature", "a 65-byte reserve signature on a history request",
         (drop_checks("history_requests"),
          "INSERT INTO exchange.history_requests (reserve_pub, request_timestamp, reserve_sig, "
          "history_fee) SELECT reserve_pub, request_timestamp + 1, reserve_sig || '\\x00'::bytea, "
          "history_fee FROM exchange.history_requests ORDER BY 1 LIMIT 1"),
         Halt("length", "history_requests"),
         (_undo_new("history_requests", "length(reserve_sig) <> 64"),)),
    Case("oversized-key", "a 2000-byte reserve public key (what a btree key still takes)",
         (drop_checks("reserves"),
          _new_reserve("huge", reserve_pub="decode(repeat('ab', 2000), 'hex')")),
         Halt("length", "reserves"),
         (_undo_new("reserves", "length(reserve_pub) <> 32"),)),
    Case("negative-amount", "a history fee with a negative amount",
         (drop_checks("history_requests"), _history_request("ROW(-5, 0)")),
         Halt("amount-negative", "history_requests"),
         (_undo_new("history_requests", "(history_fee).val < 0"),)),
    Case("unnormalized-amount", "an amount with frac >= 10^8",
         (drop_checks("history_requests"), _history_request("ROW(1, 100000000)")),
         Halt("amount-not-normalized", "history_requests"),
         (_undo_new("history_requests", "(history_fee).frac >= 100000000"),)),
    Case("oversized-amount", "an amount above Taler's 2^52 limit",
         (drop_checks("history_requests"), _history_request("ROW(4503599627370497, 0)")),
         Halt("amount-not-normalized", "history_requests"),
         (_undo_new("history_requests", "(history_fee).val > 4503599627370496"),)),
    Case("derived-hash", "a wire target whose h_payto is not the hash of its payto URI",
         (_payto_row("payto://x-taler-bank/bank.example/mallory?receiver-name=M",
                     h_payto="sha256('someone else'::bytea)"),),
         Halt("derived-hash", "wire_targets"),
         (_undo_new("wire_targets", "payto_uri LIKE '%/mallory?%'"),)),
    Case("coin-ev-hash-of-taler-sync", "a revealed coin whose h_coin_ev is SHA-512(coin_ev), "
         "the value Taler's own sync writes, not the exchange's (denomination-dependent) one",
         ("INSERT INTO exchange.refresh_revealed_coins (melt_serial_id, freshcoin_index, "
          "link_sig, denominations_serial, coin_ev, h_coin_ev, ev_sig, ewv) "
          "SELECT melt_serial_id, freshcoin_index + 100, link_sig, denominations_serial, "
          "coin_ev || '\\x00'::bytea, sha512(coin_ev || '\\x00'::bytea), ev_sig, ewv "
          "FROM exchange.refresh_revealed_coins ORDER BY rrc_serial LIMIT 1",),
         Halt("derived-hash", "refresh_revealed_coins"),
         (_undo_new("refresh_revealed_coins", "freshcoin_index >= 100"),)),
    Case("null-required", "NULL in a required column",
         ("ALTER TABLE exchange.reserves ALTER COLUMN gc_date DROP NOT NULL",
          _new_reserve("null", gc_date="NULL")),
         Halt("null", "reserves"),
         (_undo_new("reserves", "gc_date IS NULL"),
          "ALTER TABLE exchange.reserves ALTER COLUMN gc_date SET NOT NULL")),
    Case("column-dropped", "a copied column dropped",
         ("ALTER TABLE exchange.wire_targets DROP COLUMN h_normalized_payto",),
         Halt("schema-drift", "wire_targets"),
         # A derived column, so the repair can restore every value exactly.
         ("ALTER TABLE exchange.wire_targets ADD COLUMN h_normalized_payto BYTEA "
          "CHECK (LENGTH(h_normalized_payto) = 32)",
          "UPDATE exchange.wire_targets SET h_normalized_payto = "
          + hashing.sql_expression("normalized_payto", "payto_uri"))),
    Case("column-renamed", "a copied column renamed",
         ("ALTER TABLE exchange.known_coins RENAME COLUMN denom_sig TO denom_signature",),
         Halt("schema-drift", "known_coins"),
         ("ALTER TABLE exchange.known_coins RENAME COLUMN denom_signature TO denom_sig",)),
    Case("column-retyped", "a copied column given another type",
         ("ALTER TABLE exchange.wire_out ALTER COLUMN execution_date TYPE numeric",),
         Halt("schema-drift", "wire_out"),
         ("ALTER TABLE exchange.wire_out ALTER COLUMN execution_date TYPE INT8",)),
    Case("column-added", "an extra column on an ingres table (not copied, only reported)",
         ("ALTER TABLE exchange.reserves ADD COLUMN backdoor TEXT DEFAULT 'x'",
          _new_reserve("added")),
         Copied({"reserves": 1})),
    Case("table-dropped", "a replicated table dropped (the operator kept a backup)",
         ("CREATE TABLE exchange.wad_in_entries_backup "
          "(LIKE exchange.wad_in_entries INCLUDING ALL)",
          "INSERT INTO exchange.wad_in_entries_backup SELECT * FROM exchange.wad_in_entries",
          "DROP TABLE exchange.wad_in_entries"),
         Halt("schema-drift", "wad_in_entries"),
         ("ALTER TABLE exchange.wad_in_entries_backup RENAME TO wad_in_entries",)),
    Case("table-renamed", "a replicated table renamed",
         ("ALTER TABLE exchange.refunds RENAME TO refunds_old",),
         Halt("schema-drift", "refunds"),
         ("ALTER TABLE exchange.refunds_old RENAME TO refunds",)),
    Case("table-replaced-by-view", "a table swapped for a view that forges rows",
         ("ALTER TABLE exchange.recoup RENAME TO recoup_real",
          "CREATE VIEW exchange.recoup AS SELECT * FROM exchange.recoup_real"),
         Halt("schema-drift", "recoup"),
         ("DROP VIEW exchange.recoup", "ALTER TABLE exchange.recoup_real RENAME TO recoup")),
    Case("extra-trigger", "a trigger on an ingres table (the sync only reads, it never fires)",
         ("CREATE FUNCTION exchange.evil() RETURNS trigger LANGUAGE plpgsql AS "
          "$$BEGIN RAISE EXCEPTION 'trigger ran'; END$$",
          "CREATE TRIGGER evil BEFORE UPDATE OR DELETE ON exchange.reserves "
          "FOR EACH ROW EXECUTE FUNCTION exchange.evil()",
          _new_reserve("trigger")),
         Copied({"reserves": 1})),
    Case("extra-rule", "a rewrite rule on an ingres table (rules can hide rows: refused)",
         ("CREATE RULE evil AS ON INSERT TO exchange.extensions DO ALSO "
          "DELETE FROM exchange.reserves",
          _new_reserve("rule")),
         Halt("hidden-rows", "extensions"),
         ("DROP RULE evil ON exchange.extensions",)),
    Case("patches-deleted", "the _v.patches rows deleted (schema looks uninitialised)",
         ("CREATE TABLE public.patches_kept AS SELECT * FROM _v.patches",
          "DELETE FROM _v.patches"),
         Refused(5),
         ("INSERT INTO _v.patches SELECT * FROM public.patches_kept",
          "DROP TABLE public.patches_kept")),
    Case("patches-future", "a patch registered that this taler-ops does not know",
         ("SELECT _v.register_patch('model-exchange-9999')",),
         Refused(5),
         ("DELETE FROM _v.patches WHERE patch_name = 'model-exchange-9999'",)),
    Case("non-replicated-table", "rows in a table that is never replicated",
         ("INSERT INTO exchange.prewire (wire_method, buf) VALUES ('x-taler-bank', 'x')",
          "INSERT INTO exchange.cs_nonce_locks (nonce, op_hash, max_denomination_serial) "
          "VALUES (sha256('n'::bytea), sha512('o'::bytea), 1)"),
         Copied({})),
    Case("partition-move", "a row moved between partitions of a partitioned ingres",
         ("UPDATE exchange.reserves SET reserve_pub = sha256(reserve_pub) WHERE reserve_uuid = 2",),
         Ignored(("changed",)), partitioned=True),
    Case("time-travel", "timestamps far in the past and future (data, not an invariant)",
         _new_reserve_in(execution_date="-9000000000000000", tag="past")
         + _new_reserve_in(execution_date="9000000000000000", tag="future"),
         Copied({"reserves": 2, "reserves_in": 2})),
    Case("sql-injection-text", "SQL in a text column, with correct hashes",
         (_payto_row(_INJECT_TEXT),),
         Copied({"wire_targets": 1}), extra={"verbatim": _INJECT_TEXT}),
    Case("conninfo-injection-text", "libpq conninfo keywords in a text column",
         (_payto_row(_INJECT_CONNINFO),),
         Copied({"wire_targets": 1}), extra={"verbatim": _INJECT_CONNINFO}),
    Case("huge-batch-one-bad", "20000 valid rows with one bad row among them",
         (drop_checks("reserves"),
          "INSERT INTO exchange.reserves (reserve_pub, expiration_date, gc_date) "
          "SELECT CASE WHEN i = 12345 THEN sha512(i::text::bytea) ELSE sha256(i::text::bytea) "
          "END, 1, 2 FROM generate_series(1, 20000) i"),
         Halt("length", "reserves"),
         (_undo_new("reserves", "length(reserve_pub) <> 32"),), batch=4000),
)
