"""The reserves check's rules on closing reserves (docs/economics.md R3 and R5), after
Taler's reserves helper: each close pays the right account and charges the closing fee
due (R5, handle_reserve_closed), and a reserve expired with a balance worth wiring back
has been closed (R3).  Called by reserves.run inside the reserves check's auditor
transaction; the running balances are reserves.py's.
"""

from decimal import Decimal
from typing import Any

from .common import Check, Units, num, units

# Taler's reserves helper: a reserve is "not closed" only once it is expired by more
# than this grace period (CLOSING_GRACE_PERIOD, one day, for unsynchronised clocks).
CLOSING_GRACE_US = 86_400_000_000


def check_close(check: Check, serial: int, ts: int, origin: str | None, fee: int,
                target: str | None, request_row: int, request_payto: str | None,
                due: Decimal | None, method: str | None, wired: Decimal | None) -> None:
    """A close pays the reserve's origin account (or the account of the close request
    that asked for it) and charges the closing fee of that account's wire method at
    the close time, as Taler's reserves helper checks (handle_reserve_closed)."""
    if request_row:
        expected_target = request_payto
        if request_payto is None:
            check.finding("row_inconsistency", row_table="reserves_close", problem_row_id=serial,
                          diagnostic="reserve close request unknown")
    else:
        expected_target = origin
    if expected_target is None and not (request_row and request_payto is None):
        check.finding("row_inconsistency", row_table="reserves_close", problem_row_id=serial,
                      diagnostic="target account not verified, auditor does not know reserve")
    elif expected_target is not None and expected_target != target:
        check.finding("row_inconsistency", row_table="reserves_close", problem_row_id=serial,
                      diagnostic="target account does not match origin account")
    if due is None:
        # Taler names the close time where the row id would be.
        check.finding("row_inconsistency", row_table="closing-fee", problem_row_id=ts,
                      diagnostic=f"closing fee for `{method}' unavailable at {ts}")
        return
    due_units = units(due)
    # The exchange's closer takes the whole balance as fee when it is below the
    # closing fee (nothing is wired then): not an inconsistency.
    if fee != due_units and not (units(wired) == 0 and fee < due_units):
        check.finding("amount_arithmetic_inconsistency", operation="closing aggregation fee",
                      _table="reserves_close", problem_row_id=serial,
                      exchange_amount=Units(fee), auditor_amount=Units(due_units),
                      profitable=True)


def not_closed(check: Check) -> None:
    """R3, as Taler's reserves helper: a reserve is "not closed" once it is expired by
    more than CLOSING_GRACE_US and its balance exceeds the closing fee of its origin
    account's wire method at the expiration date; reported once per reserve.

    The expiration date is mutable on the exchange and the safe copy holds its first-seen
    value.  Taler's helper extends it to (execution date of each incoming transfer or
    recoup) + [exchangedb] IDLE_RESERVE_EXPIRATION_TIME; the idle interval is not in the
    replicated data, so it is derived per reserve as first-seen expiration - first
    transfer's execution date (what the exchange set when the reserve was created).  A
    reserve opened with a later expiration (reserves_open_requests) counts too.  The
    candidates (expired by the stored date) are re-dated from the exchange's history and
    the new date is stored, so an extended reserve gives no finding.
    """
    cutoff = check.now_us - CLOSING_GRACE_US
    candidates = check.aud.execute(
        f"""SELECT ar.reserve_pub, {num('ar.reserve_balance')}, ar.expiration_date,
                   ar.origin_account
              FROM auditor.auditor_reserves ar
             WHERE ar.expiration_date < %s
               AND ((ar.reserve_balance).val > 0 OR (ar.reserve_balance).frac > 0)
               AND NOT EXISTS (SELECT 1 FROM auditor.auditor_reserve_not_closed_inconsistency f
                                WHERE f.reserve_pub = ar.reserve_pub)""",
        (cutoff,)).fetchall()
    if not candidates:
        return
    info: dict[bytes, tuple[Any, ...]] = {}
    for row in check.ex.execute(
            """SELECT r.reserve_pub, r.reserve_uuid, r.expiration_date,
                      EXISTS (SELECT 1 FROM exchange.reserves_close c
                               WHERE c.reserve_pub = r.reserve_pub),
                      i.first_in, GREATEST(i.last_in, rc.last_recoup), o.opened_until
                 FROM exchange.reserves r
                 LEFT JOIN LATERAL (SELECT min(ri.execution_date) AS first_in,
                                           max(ri.execution_date) AS last_in
                                      FROM exchange.reserves_in ri
                                     WHERE ri.reserve_pub = r.reserve_pub) i ON TRUE
                 LEFT JOIN LATERAL (SELECT max(x.recoup_timestamp) AS last_recoup
                                      FROM exchange.recoup x
                                      JOIN exchange.reserves_out ro USING (reserve_out_serial_id)
                                     WHERE ro.reserve_uuid = r.reserve_uuid) rc ON TRUE
                 LEFT JOIN LATERAL (SELECT max(oq.expiration_date) AS opened_until
                                      FROM exchange.reserves_open_requests oq
                                     WHERE oq.reserve_pub = r.reserve_pub) o ON TRUE
                WHERE r.reserve_pub = ANY(%s)""",
            ([bytes(c[0]) for c in candidates],)).fetchall():
        info[bytes(row[0])] = row[1:]
    redated = []
    for pub, balance, stored, origin in candidates:
        row = info.get(bytes(pub))
        if row is None:
            continue   # garbage-collected on the exchange side
        uuid, first_seen, closed, first_in, last_activity, opened_until = row
        expiration = max(stored or 0, first_seen or 0, opened_until or 0)
        if first_in is not None and last_activity is not None and first_seen:
            idle = first_seen - first_in
            if idle > 0:
                expiration = max(expiration, last_activity + idle)
        if expiration != stored:
            redated.append((expiration, bytes(pub)))
        if closed or expiration >= cutoff:
            continue   # closed, or not expired beyond the grace period
        balance = units(balance)
        fee = _closing_fee(check, origin, expiration)
        if fee is None:
            diagnostic = "could not determine closing fee"
        elif balance > fee:
            diagnostic = origin
        else:
            continue   # closing would eat the whole balance: nothing to wire back
        check.finding("reserve_not_closed", reserve_pub=bytes(pub), _serial=uuid,
                      balance=Units(balance), expiration_time=expiration,
                      diagnostic=diagnostic)
    if redated:
        with check.aud.cursor() as cur:
            cur.executemany("UPDATE auditor.auditor_reserves SET expiration_date = %s "
                            "WHERE reserve_pub = %s", redated)


def _closing_fee(check: Check, origin: str | None, when: int) -> int | None:
    """The closing fee for the wire method of the payto URI ``origin`` at ``when``."""
    if not origin or "://" not in origin:
        return None
    method = origin.split("://", 1)[1].split("/", 1)[0]
    row = check.ex.execute(
        f"""SELECT {num('closing_fee')} FROM exchange.wire_fee
             WHERE wire_method = %s AND start_date <= %s AND %s < end_date
             ORDER BY start_date DESC LIMIT 1""", (method, when, when)).fetchone()
    return None if row is None else units(row[0])
