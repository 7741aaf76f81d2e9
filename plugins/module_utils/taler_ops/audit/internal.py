"""Internal-audit checks (``-i``): the exchange's mutable summaries against the audit.

Only meaningful on the exchange primary (or a replica that carries its updates):
the sync never copies mutable columns, so on a safe copy they keep their
defaults.  These compare state, not new rows, so they look at every row each
run; a finding is stored again only when the pair of amounts (or the flag)
changed since it was last reported.

R4: reserves.current_balance = the audited balance (auditor_reserves).
C4: known_coins.remaining = value - (spent - refunded) (taler_ops.audit_coins).
A3: batch_deposits.done is true exactly for aggregated batch deposits.
"""

from .common import Check, Units, num, units
from ..schema.auditor_schema import AUDIT_COINS

NAME = "internal"
# The operation of a C4 finding (auditor_amount_arithmetic_inconsistency names no table).
C4_OPERATION = "known_coins.remaining"
PROGRESS_KEYS = ()


def run(check: Check) -> None:
    recent = _recent(check)
    _reserve_balances(check, recent["reserve"])
    _coin_remaining(check, recent["coin"])
    _deposits_done(check, recent["batch"])


# What rows above a run's bounds (--settle) touch: the exchange's summaries already
# include them, the audit's state does not yet, so those objects wait a run.
_RECENT = (
    ("reserve", "reserves", "SELECT reserve_pub FROM exchange.reserves WHERE reserve_uuid > %s"),
    ("reserve", "reserves_in",
     "SELECT reserve_pub FROM exchange.reserves_in WHERE reserve_in_serial_id > %s"),
    ("reserve", "reserves_out",
     "SELECT r.reserve_pub FROM exchange.reserves_out ro JOIN exchange.reserves r "
     "USING (reserve_uuid) WHERE ro.reserve_out_serial_id > %s"),
    ("reserve", "reserves_close",
     "SELECT reserve_pub FROM exchange.reserves_close WHERE close_uuid > %s"),
    ("reserve", "recoup",
     "SELECT r.reserve_pub FROM exchange.recoup rc JOIN exchange.reserves_out ro "
     "USING (reserve_out_serial_id) JOIN exchange.reserves r USING (reserve_uuid) "
     "WHERE rc.recoup_uuid > %s"),
    ("reserve", "account_merges", "SELECT reserve_pub FROM exchange.account_merges "
     "WHERE account_merge_request_serial_id > %s"),
    ("reserve", "purse_decision",
     "SELECT pm.reserve_pub FROM exchange.purse_decision pd JOIN exchange.purse_merges pm "
     "USING (purse_pub) WHERE pd.purse_decision_serial_id > %s"),
    ("reserve", "wad_in_entries",
     "SELECT reserve_pub FROM exchange.wad_in_entries WHERE wad_in_entry_serial_id > %s"),
    ("reserve", "reserves_open_deposits", "SELECT reserve_pub FROM "
     "exchange.reserves_open_deposits WHERE reserve_open_deposit_uuid > %s"),
    ("reserve", "reserves_open_requests",
     "SELECT reserve_pub FROM exchange.reserves_open_requests WHERE open_request_uuid > %s"),
    ("reserve", "history_requests", "SELECT reserve_pub FROM exchange.history_requests "
     "WHERE history_request_serial_id > %s"),
    ("coin", "known_coins", "SELECT coin_pub FROM exchange.known_coins WHERE known_coin_id > %s"),
    ("coin", "coin_deposits",
     "SELECT coin_pub FROM exchange.coin_deposits WHERE coin_deposit_serial_id > %s"),
    ("coin", "refresh_commitments",
     "SELECT old_coin_pub FROM exchange.refresh_commitments WHERE melt_serial_id > %s"),
    ("coin", "refunds", "SELECT coin_pub FROM exchange.refunds WHERE refund_serial_id > %s"),
    ("coin", "recoup", "SELECT coin_pub FROM exchange.recoup WHERE recoup_uuid > %s"),
    ("coin", "recoup_refresh",
     "SELECT coin_pub FROM exchange.recoup_refresh WHERE recoup_refresh_uuid > %s "
     "UNION ALL SELECT kc.coin_pub FROM exchange.recoup_refresh rr JOIN exchange.known_coins kc "
     "ON kc.known_coin_id = rr.known_coin_id WHERE rr.recoup_refresh_uuid > %s"),
    ("coin", "purse_deposits",
     "SELECT coin_pub FROM exchange.purse_deposits WHERE purse_deposit_serial_id > %s"),
    ("coin", "purse_decision",
     "SELECT pdep.coin_pub FROM exchange.purse_decision pd JOIN exchange.purse_deposits pdep "
     "USING (purse_pub) WHERE pd.refunded AND pd.purse_decision_serial_id > %s"),
    ("batch", "batch_deposits", "SELECT batch_deposit_serial_id FROM exchange.batch_deposits "
     "WHERE batch_deposit_serial_id > %s"),
    ("batch", "aggregation_tracking", "SELECT batch_deposit_serial_id FROM "
     "exchange.aggregation_tracking WHERE aggregation_serial_id > %s"),
)


def _recent(check: Check) -> dict[str, set[bytes | int]]:
    """Reserves and coins (their public keys) and batch deposits (serials) to skip."""
    out: dict[str, set[bytes | int]] = {"reserve": set(), "coin": set(), "batch": set()}
    if check.bounds is None:
        return out
    for kind, table, query in _RECENT:
        hi = check.hi(table)
        for (key,) in check.ex.execute(query, (hi,) * query.count("%s")):
            out[kind].add(bytes(key) if isinstance(key, (bytes, memoryview)) else key)
    return out


def _reserve_balances(check: Check, skip: set[bytes | int]) -> None:
    audited = {bytes(pub): units(bal) for pub, bal in check.aud.execute(
        f"SELECT reserve_pub, {num('reserve_balance')} FROM auditor.auditor_reserves")}
    seen = {(bytes(pub), units(ex), units(au)) for pub, ex, au in check.aud.execute(
        f"""SELECT reserve_pub, {num('exchange_amount')}, {num('auditor_amount')}
              FROM auditor.auditor_reserve_balance_summary_wrong_inconsistency""")}
    examined = 0
    for rows in check.stream(
            f"SELECT reserve_uuid, reserve_pub, {num('current_balance')} "
            "FROM exchange.reserves ORDER BY reserve_uuid"):
        examined += len(rows)
        for uuid, pub, current in rows:
            pub, current = bytes(pub), units(current)
            if pub in skip:
                continue
            mine = audited.get(pub, 0)
            if current != mine and (pub, current, mine) not in seen:
                check.finding("reserve_balance_summary_wrong", reserve_pub=pub, _serial=uuid,
                              exchange_amount=Units(current),
                              auditor_amount=Units(mine))
    check.count("reserves (internal)", examined)


def _coin_remaining(check: Check, skip: set[bytes | int]) -> None:
    audited = {bytes(pub): units(spent) - units(refunded) for pub, spent, refunded in
               check.aud.execute(f"SELECT coin_pub, spent, refunded FROM {AUDIT_COINS}")}
    seen = {(serial, units(ex), units(au)) for serial, ex, au in check.aud.execute(
        f"""SELECT problem_row_id, {num('exchange_amount')}, {num('auditor_amount')}
              FROM auditor.auditor_amount_arithmetic_inconsistency
             WHERE operation = %s""", (C4_OPERATION,))}
    examined = 0
    for rows in check.stream(
            f"""SELECT kc.known_coin_id, kc.coin_pub, {num('kc.remaining')}, {num('d.coin')}
                  FROM exchange.known_coins kc
                  JOIN exchange.denominations d USING (denominations_serial)
                 ORDER BY kc.known_coin_id"""):
        examined += len(rows)
        for serial, pub, remaining, value in rows:
            if bytes(pub) in skip:
                continue
            expected = max(units(value) - audited.get(bytes(pub), 0), 0)
            remaining = units(remaining)
            if remaining != expected and (serial, remaining, expected) not in seen:
                check.finding("amount_arithmetic_inconsistency",
                              operation=C4_OPERATION, _table="known_coins",
                              problem_row_id=serial, exchange_amount=Units(remaining),
                              auditor_amount=Units(expected), profitable=remaining < expected)
    check.count("known_coins (internal)", examined)


def _deposits_done(check: Check, skip: set[bytes | int]) -> None:
    seen = {(serial, diag) for serial, diag in check.aud.execute(
        "SELECT problem_row_id, diagnostic FROM auditor.auditor_row_inconsistency "
        "WHERE row_table = 'batch_deposits'")}
    examined = 0
    for rows in check.stream(
            """SELECT bd.batch_deposit_serial_id, bd.done,
                      EXISTS (SELECT 1 FROM exchange.aggregation_tracking t
                               WHERE t.batch_deposit_serial_id = bd.batch_deposit_serial_id)
                 FROM exchange.batch_deposits bd ORDER BY 1"""):
        examined += len(rows)
        for serial, done, aggregated in rows:
            if done == aggregated or serial in skip:
                continue
            diag = ("batch_deposits.done is true but no aggregation_tracking row exists"
                    if done else "aggregated, but batch_deposits.done is false")
            if (serial, diag) not in seen:
                check.finding("row_inconsistency", row_table="batch_deposits",
                              problem_row_id=serial, diagnostic=diag)
    check.count("batch_deposits (internal)", examined)
