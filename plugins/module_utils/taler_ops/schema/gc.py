"""Garbage collection of an exchange database, by Taler's rules (exchange_do_gc).

The rules, in order, with ``now`` and ``ancient = now - 10 years``:

 1. prewire: finished transfers.
 2. wire_fee: fees whose end_date < ancient.
 3. reserves: gc_date < now and balance zero (cascades to their history).
    primary:   balance = the exchange's mutable reserves.current_balance.
    safe copy: current_balance is never replicated (it stays (0,0) there), so
               the balance is derived from the append-only history:
               credits  reserves_in.credit + recoups into the reserve
                        + purses merged into it + wad_in_entries for it
                        + reserves_open_deposits contributions
             - debits   reserves_out.amount_with_fee + reserves_close amount and
                        closing_fee + history_requests.history_fee
                        + reserves_open_requests.reserve_payment.
               Only a derived balance of exactly zero is collected: a missing
               debit kind can only keep a reserve, and a negative balance is
               evidence the audit must still see.
 4. recoup rows below the oldest remaining withdrawal.
 5. reserves_out rows below the oldest remaining reserve.
 6. denominations past expire_legal that no withdrawal and no recouped coin uses.
 7. refresh_revealed_coins / refresh_transfer_keys below the oldest melt.
 8. recoup_refresh below the oldest remaining coin.
 9. batch_deposits whose wire_deadline < ancient.
10. refunds, aggregation_tracking, coin_deposits below the oldest batch deposit.
11. cs_nonce_locks below the oldest denomination.

Refused on an ingres copy: it is the sync's only source (the publication
carries inserts only, so the exchange's GC does not reach it), and deleting
there could remove rows the sync has not copied yet.  A Taler-built primary is
collected by Taler's own exchange_do_gc.
"""

import contextlib
import time
from collections.abc import Iterator
from typing import Any, Literal, NotRequired, TypedDict

import psycopg
from psycopg import sql

from .. import locks
from ..errors import DatabaseNotReady, TalerOpsError
from .bookkeeping import Role
from .exchange_schema import amount_units
from .exchange_tables import TABLES
from .state import assert_exchange_current, exchange_flavour, read_setup

TEN_YEARS_US = 10 * 365 * 24 * 3600 * 1_000_000


class GcResult(TypedDict):
    role: Role
    now: int                      # µs since the epoch: what the rules compared with
    deleted: dict[str, int]       # table -> rows deleted (tables without deletions left out)
    rules: NotRequired[Literal["taler"]]   # collected by Taler's own exchange_do_gc


_DERIVED_BALANCE = f"""
      COALESCE((SELECT sum({amount_units('ri.credit')}) FROM exchange.reserves_in ri
                 WHERE ri.reserve_pub = r.reserve_pub), 0)
    + COALESCE((SELECT sum({amount_units('rc.amount')}) FROM exchange.recoup rc
                  JOIN exchange.reserves_out ro USING (reserve_out_serial_id)
                 WHERE ro.reserve_uuid = r.reserve_uuid), 0)
    + COALESCE((SELECT sum({amount_units('pr.amount_with_fee')}) FROM exchange.account_merges am
                  JOIN exchange.purse_requests pr USING (purse_pub)
                 WHERE am.reserve_pub = r.reserve_pub), 0)
    + COALESCE((SELECT sum({amount_units('wi.amount_with_fee')}) FROM exchange.wad_in_entries wi
                 WHERE wi.reserve_pub = r.reserve_pub), 0)
    + COALESCE((SELECT sum({amount_units('od.contribution')}) FROM exchange.reserves_open_deposits od
                 WHERE od.reserve_pub = r.reserve_pub), 0)
    - COALESCE((SELECT sum({amount_units('ro.amount_with_fee')}) FROM exchange.reserves_out ro
                 WHERE ro.reserve_uuid = r.reserve_uuid), 0)
    - COALESCE((SELECT sum({amount_units('cl.amount')} + {amount_units('cl.closing_fee')})
                  FROM exchange.reserves_close cl WHERE cl.reserve_pub = r.reserve_pub), 0)
    - COALESCE((SELECT sum({amount_units('hr.history_fee')}) FROM exchange.history_requests hr
                 WHERE hr.reserve_pub = r.reserve_pub), 0)
    - COALESCE((SELECT sum({amount_units('oq.reserve_payment')}) FROM exchange.reserves_open_requests oq
                 WHERE oq.reserve_pub = r.reserve_pub), 0)
"""

_RESERVE_RULE = {
    "primary": "r.current_balance = ROW(0, 0)::exchange.taler_amount",
    "safe-copy": f"({_DERIVED_BALANCE}) = 0",
}

_STEPS = (
    "DELETE FROM exchange.prewire WHERE finished",
    "DELETE FROM exchange.wire_fee WHERE end_date < %(ancient)s",
    "DELETE FROM exchange.reserves r WHERE r.gc_date < %(now)s AND {reserve_rule}",
    """DELETE FROM exchange.recoup WHERE reserve_out_serial_id <
         (SELECT min(reserve_out_serial_id) FROM exchange.reserves_out)""",
    """DELETE FROM exchange.reserves_out WHERE reserve_uuid <
         (SELECT min(reserve_uuid) FROM exchange.reserves)""",
    """DELETE FROM exchange.denominations d WHERE d.expire_legal < %(now)s
         AND NOT EXISTS (SELECT 1 FROM exchange.reserves_out ro
                          WHERE ro.denominations_serial = d.denominations_serial)
         AND NOT EXISTS (SELECT 1 FROM exchange.known_coins kc
                          WHERE kc.denominations_serial = d.denominations_serial
                            AND (EXISTS (SELECT 1 FROM exchange.recoup rc
                                          WHERE rc.coin_pub = kc.coin_pub)
                              OR EXISTS (SELECT 1 FROM exchange.recoup_refresh rr
                                          WHERE rr.coin_pub = kc.coin_pub)))""",
    """DELETE FROM exchange.refresh_revealed_coins WHERE melt_serial_id <
         (SELECT min(melt_serial_id) FROM exchange.refresh_commitments)""",
    """DELETE FROM exchange.refresh_transfer_keys WHERE melt_serial_id <
         (SELECT min(melt_serial_id) FROM exchange.refresh_commitments)""",
    """DELETE FROM exchange.recoup_refresh WHERE known_coin_id <
         (SELECT min(known_coin_id) FROM exchange.known_coins)""",
    "DELETE FROM exchange.batch_deposits WHERE wire_deadline < %(ancient)s",
    """DELETE FROM exchange.refunds WHERE batch_deposit_serial_id <
         (SELECT min(batch_deposit_serial_id) FROM exchange.batch_deposits)""",
    """DELETE FROM exchange.aggregation_tracking WHERE batch_deposit_serial_id <
         (SELECT min(batch_deposit_serial_id) FROM exchange.batch_deposits)""",
    """DELETE FROM exchange.coin_deposits WHERE batch_deposit_serial_id <
         (SELECT min(batch_deposit_serial_id) FROM exchange.batch_deposits)""",
    """DELETE FROM exchange.cs_nonce_locks WHERE max_denomination_serial <=
         (SELECT min(denominations_serial) FROM exchange.denominations)""",
)


def current_time_us() -> int:
    return int(time.time() * 1_000_000)


def _counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    query = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}, count(*) FROM {}").format(sql.Literal(t.name),
                                                      sql.Identifier("exchange", t.name))
        for t in TABLES)
    return dict(conn.execute(query).fetchall())


def collect(conn: psycopg.Connection[Any], now_us: int | None = None, dry_run: bool = False) -> GcResult:
    """Run the GC rules in one transaction; returns {table: rows deleted} (cascades included)."""
    assert_exchange_current(conn)
    setup = read_setup(conn)
    if setup is None:
        raise DatabaseNotReady("the exchange database has no taler_ops.database_setup; "
                               "run exchange-dbinit first")
    role = setup.role
    if role == "primary" and exchange_flavour(conn) == "taler":
        return _collect_as_taler(conn, now_us, dry_run)
    if role not in _RESERVE_RULE:
        raise TalerOpsError(
            f"garbage collection refused on an {role} copy: it is the sync's only source, "
            "and deleting there could lose rows the sync has not copied yet")
    now = now_us if now_us is not None else current_time_us()
    params = {"now": now, "ancient": now - TEN_YEARS_US}
    if role == "safe-copy" and not dry_run:  # a dry run rolls back: nothing to protect
        with _sync_excluded(conn):
            return _collect(conn, role, now, params, dry_run)
    return _collect(conn, role, now, params, dry_run)


@contextlib.contextmanager
def _sync_excluded(conn: psycopg.Connection[Any]) -> Iterator[None]:
    if not locks.try_hold(conn, locks.SYNC):
        raise TalerOpsError("garbage collection refused: a taler-ops sync is running on this "
                            "safe copy; stop it (or wait for its pass to end) and retry")
    try:
        yield
    finally:
        locks.release(conn, locks.SYNC)


def _collect_as_taler(conn: psycopg.Connection[Any], now_us: int | None, dry_run: bool) -> GcResult:
    """A Taler-built primary is collected by Taler's own exchange_do_gc, as its dbinit -g does."""
    now = now_us if now_us is not None else current_time_us()
    try:
        with conn.transaction():
            before = _counts(conn)
            conn.execute("SET LOCAL search_path TO exchange")
            conn.execute("CALL exchange.exchange_do_gc(%s, %s)", (now - TEN_YEARS_US, now))
            after = _counts(conn)
            if dry_run:
                raise psycopg.Rollback()
    except psycopg.Error as exc:
        # Taler's dbinit only prints this and exits 0; an operator should know.  (v0.14's
        # procedure compares taler_amount with (0, 0), which PostgreSQL refuses as soon
        # as a reserve is due: docs/real-taler.md.)
        reason = " ".join(str(exc).split())
        raise TalerOpsError(f"Taler's exchange_do_gc failed, nothing was deleted: {reason}") from None
    return {"role": "primary", "now": now, "rules": "taler",
            "deleted": {t: before[t] - after[t] for t in before if before[t] != after[t]}}


def _collect(conn: psycopg.Connection[Any], role: Role, now: int, params: dict[str, int],
             dry_run: bool) -> GcResult:
    with conn.transaction():
        # Deleting fires Taler's own triggers on a Taler-built copy (recoup_by_reserve,
        # coin_history, ...); they name their tables without a schema.
        conn.execute("SET LOCAL search_path TO exchange, pg_catalog")
        before = _counts(conn)
        for step in _STEPS:
            conn.execute(step.replace("{reserve_rule}", _RESERVE_RULE[role]), params)
        after = _counts(conn)
        if dry_run:
            raise psycopg.Rollback()
    return {"role": role, "now": now,
            "deleted": {t: before[t] - after[t] for t in before if before[t] != after[t]}}
