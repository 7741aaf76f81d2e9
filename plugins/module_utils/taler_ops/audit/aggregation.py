"""The aggregation check (docs/economics.md, rules A1 and A2).

A1: each new wire_out row must carry the sum of its batch deposits (coin
amounts minus each coin's deposit fee, minus the batch's refunds) minus the
wire fee of its execution date.  The sum is computed on the exchange side in
one statement, so a different auditor database costs no round trip per row.

A1 also (Taler's aggregation helper, wire_transfer_information_cb and
get_wire_fee): every batch deposit a wire_out pays must belong to the account
the transfer went to, and the wire fee is the one of the payment method named
by the target's payto URI, for the window holding the execution date.  A
transfer executed before a deposit it pays was made is reported too (Taler's own
date comparison reads the transfer's date on both sides and never fires; a
transfer before the wire deadline is not reported, as by Taler's helper).
Both are row inconsistencies of Taler's "aggregation" rows (problem_row_id =
aggregation_tracking serial), once per aggregation row.

A2 (Taler's transfer helper): batch deposits past their wire deadline without
aggregation_tracking row go to Taler's auditor_pending_deposits.  The progress
point (Taler's key wire_batch_deposit_id) is the lowest batch deposit not yet
settled (aggregated or reported), so each run re-reads only the still-open
tail; a deposit is reported once even when rows below it keep the progress
point back.  As Taler's helper does, the row is deleted once the deposit is
paid: new aggregation_tracking rows (Taler's key wire_aggregation_id) settle
the pending deposits they name.
"""

from .common import Check, Units, num, scalar, units

NAME = "aggregation"

P_WIRE_OUT = "aggregation_last_wire_out_serial_id"
P_LAG = "wire_batch_deposit_id"
P_PAID = "wire_aggregation_id"
PROGRESS_KEYS = (P_WIRE_OUT, P_LAG, P_PAID)

# Taler's aggregation helper's keys, except the first (taler-ops' own, docs/audit.md).
B_WIRE_OUT = "aggregation_total_wire_out"
B_WIRE_FEE = "aggregation_total_wire_fee_revenue"
B_DELTA_PLUS = "aggregation_total_wire_out_delta_plus"
B_DELTA_MINUS = "aggregation_total_wire_out_delta_minus"
# auditor_pending_deposits.wire_target_h_payto is NOT NULL; Taler's batch_deposits
# column may be NULL.
NO_PAYTO = bytes(32)
BALANCE_KEYS = (B_WIRE_OUT, B_WIRE_FEE, B_DELTA_PLUS, B_DELTA_MINUS)

# The payment method of a payto URI, as Taler's TALER_payto_get_method reads it:
# what lies between "payto://" (any case) and the next "/"; NULL without one.
PAYTO_METHOD = "substring({} from '(?i)^payto://([^/]+)/')"

_WIRE_OUTS = f"""
WITH wo AS (
    SELECT * FROM exchange.wire_out WHERE wireout_uuid BETWEEN %(p)s AND %(hi)s
), tracked AS (
    SELECT t.wtid_raw, t.batch_deposit_serial_id
      FROM exchange.aggregation_tracking t JOIN wo USING (wtid_raw)
), deposits AS (
    SELECT t.wtid_raw, count(DISTINCT t.batch_deposit_serial_id) AS batches,
           sum({num('cd.amount_with_fee')} - COALESCE({num('d.fee_deposit')}, 0)) AS total,
           count(*) FILTER (WHERE d.denominations_serial IS NULL) AS unknown_coins
      FROM tracked t
      JOIN exchange.coin_deposits cd USING (batch_deposit_serial_id)
      LEFT JOIN exchange.known_coins kc ON kc.coin_pub = cd.coin_pub
      LEFT JOIN exchange.denominations d ON d.denominations_serial = kc.denominations_serial
     GROUP BY t.wtid_raw
), refunded AS (
    SELECT t.wtid_raw, sum({num('rf.amount_with_fee')}) AS total
      FROM tracked t JOIN exchange.refunds rf USING (batch_deposit_serial_id)
     GROUP BY t.wtid_raw
), target AS (
    SELECT wo.wireout_uuid, wt.payto_uri, {PAYTO_METHOD.format('wt.payto_uri')} AS method
      FROM wo LEFT JOIN exchange.wire_targets wt USING (wire_target_h_payto)
)
SELECT wo.wireout_uuid, wo.execution_date, wo.wire_target_h_payto,
       tg.payto_uri, {num('wo.amount')},
       COALESCE(dp.total, 0), COALESCE(rf.total, 0), COALESCE(dp.batches, 0),
       COALESCE(dp.unknown_coins, 0), tg.method,
       (SELECT {num('wf.wire_fee')} FROM exchange.wire_fee wf
         WHERE wf.wire_method = tg.method AND wf.start_date <= wo.execution_date
           AND wo.execution_date < wf.end_date
         ORDER BY wf.start_date DESC LIMIT 1)
  FROM wo
  JOIN target tg USING (wireout_uuid)
  LEFT JOIN deposits dp USING (wtid_raw)
  LEFT JOIN refunded rf USING (wtid_raw)
 ORDER BY wo.wireout_uuid
"""

# Aggregation rows of the new wire_outs that pay a deposit of another account, or
# a deposit made after the transfer was executed.
_AGGREGATION_ROWS = """
SELECT t.aggregation_serial_id, wo.wireout_uuid,
       bd.wire_target_h_payto IS DISTINCT FROM wo.wire_target_h_payto,
       wo.execution_date < bd.exchange_timestamp, bd.exchange_timestamp, wo.execution_date
  FROM exchange.wire_out wo
  JOIN exchange.aggregation_tracking t USING (wtid_raw)
  JOIN exchange.batch_deposits bd USING (batch_deposit_serial_id)
 WHERE wo.wireout_uuid BETWEEN %(p)s AND %(hi)s
   AND (bd.wire_target_h_payto IS DISTINCT FROM wo.wire_target_h_payto
        OR wo.execution_date < bd.exchange_timestamp)
 ORDER BY t.aggregation_serial_id
"""

# Batch deposits paid by aggregation rows not seen yet (Taler's transfer helper
# deletes their pending-deposit findings).
_PAID = """
SELECT aggregation_serial_id, batch_deposit_serial_id FROM exchange.aggregation_tracking
 WHERE aggregation_serial_id BETWEEN %(p)s AND %(hi)s ORDER BY 1
"""

_OPEN_DEPOSITS = f"""
SELECT bd.batch_deposit_serial_id, bd.wire_deadline, bd.wire_target_h_payto,
       EXISTS (SELECT 1 FROM exchange.aggregation_tracking t
                WHERE t.batch_deposit_serial_id = bd.batch_deposit_serial_id) AS aggregated,
       (SELECT sum({num('cd.amount_with_fee')}) FROM exchange.coin_deposits cd
         WHERE cd.batch_deposit_serial_id = bd.batch_deposit_serial_id)
  FROM exchange.batch_deposits bd
 WHERE bd.batch_deposit_serial_id BETWEEN %(p)s AND %(hi)s
   AND NOT EXISTS (SELECT 1 FROM exchange.aggregation_tracking t
                    WHERE t.batch_deposit_serial_id = bd.batch_deposit_serial_id)
 ORDER BY 1
"""


def run(check: Check) -> None:
    check.load_progress(PROGRESS_KEYS)
    for key in BALANCE_KEYS:
        check.add(key, 0)
    _wire_outs(check)
    _aggregation_rows(check)
    _paid(check)
    _lags(check)


def _wire_outs(check: Check) -> None:
    params = {"p": check.next_serial(P_WIRE_OUT), "hi": check.hi("wire_out")}
    for rows in check.stream(_WIRE_OUTS, params):
        for (serial, executed, h_payto, payto, claimed, deposits, refunds, batches, unknown,
             method, fee) in rows:
            claimed = units(claimed)
            check.add(B_WIRE_OUT, claimed)
            # The payto URI as Taler's helper reports it; its hash where the target is
            # unknown, "" where wire_out has none (nullable in Taler's schema).
            account = payto or (bytes(h_payto).hex() if h_payto is not None else "")
            if method is None:
                # Taler's helper stops here: without a method there is no fee to check.
                check.finding("row_inconsistency", row_table="wire_out", problem_row_id=serial,
                              diagnostic="wire target without a payment method in its payto "
                                         f"URI ({account or 'no target'})")
                continue
            if fee is None:
                # As Taler's helper: the row is the "wire-fee" table, the serial the date.
                check.finding("row_inconsistency", row_table="wire-fee", problem_row_id=executed,
                              diagnostic=f"no {method} wire fee covers this execution date "
                                         f"(wire_out {serial})")
                fee = 0
            fee = units(fee)
            check.add(B_WIRE_FEE, fee)
            expected = units(deposits) - units(refunds) - fee
            if unknown:
                check.finding("row_inconsistency", row_table="wire_out", problem_row_id=serial,
                              diagnostic=f"{unknown} aggregated coin deposit(s) of unknown "
                                         "coins or denominations")
            if expected == claimed:
                continue
            if not batches:
                diagnostic = "wire transfer without aggregated deposits"
            elif expected < 0:
                diagnostic = "wire transfer although fees and refunds exceed the deposits"
            else:
                diagnostic = "wire transfer amount differs from its aggregated deposits"
            check.finding("wire_out_inconsistency", wire_out_serial_id=serial,
                          destination_account=account, diagnostic=diagnostic,
                          expected=Units(max(expected, 0)), claimed=Units(claimed))
            if claimed > expected:
                check.add(B_DELTA_PLUS, claimed - max(expected, 0))
            else:
                check.add(B_DELTA_MINUS, expected - claimed)
        check.count("wire_out", len(rows))
        check.processed(P_WIRE_OUT, rows[-1][0])


def _aggregation_rows(check: Check) -> None:
    params = {"p": check.progress_before[P_WIRE_OUT], "hi": check.hi("wire_out")}
    for rows in check.stream(_AGGREGATION_ROWS, params):
        for row_id, wire_out, wrong_target, early, deposited, executed in rows:
            if wrong_target:
                check.finding("row_inconsistency", row_table="aggregation", problem_row_id=row_id,
                              diagnostic=f"wire transfer {wire_out} went to another account than "
                                         "the one of the deposit it pays")
            if early:
                check.finding("row_inconsistency", row_table="aggregation", problem_row_id=row_id,
                              diagnostic=f"wire transfer {wire_out} executed at {executed}, "
                                         f"before the deposit it pays was made ({deposited})")


def _paid(check: Check) -> None:
    """Pending-deposit findings of deposits paid since, deleted (Taler's transfer helper)."""
    params = {"p": check.next_serial(P_PAID), "hi": check.hi("aggregation_tracking")}
    for rows in check.stream(_PAID, params):
        batches = [r[1] for r in rows]
        cur = check.aud.execute(
            "DELETE FROM auditor.auditor_pending_deposits "
            "WHERE batch_deposit_serial_id = ANY(%s)", (batches,))
        check.settled += cur.rowcount
        check.count("aggregation_tracking", len(rows))
        check.processed(P_PAID, rows[-1][0])


def _lags(check: Check) -> None:
    start = check.next_serial(P_LAG)
    hi = check.hi("batch_deposits")
    top = scalar(check.ex, "SELECT max(batch_deposit_serial_id) FROM exchange.batch_deposits "
                 "WHERE batch_deposit_serial_id BETWEEN %s AND %s", (start, hi))
    if top is None:
        return
    reported = {r[0] for r in check.aud.execute(
        "SELECT batch_deposit_serial_id FROM auditor.auditor_pending_deposits "
        "WHERE batch_deposit_serial_id >= %s", (start,)).fetchall()}
    first_open: int | None = None
    examined = 0
    for rows in check.stream(_OPEN_DEPOSITS, {"p": start, "hi": hi}):
        for serial, deadline, h_payto, _aggregated, amount in rows:
            examined += 1
            if deadline >= check.now_us:
                if first_open is None:
                    first_open = serial    # not due yet: look again next run
                continue
            if serial not in reported:
                check.finding("deposit_aggregation_lag", batch_deposit_serial_id=serial,
                              deadline=deadline, total_amount=Units(units(amount)),
                              wire_target_h_payto=bytes(h_payto) if h_payto else NO_PAYTO)
    check.count("batch_deposits", examined)
    check.processed(P_LAG, (first_open - 1) if first_open is not None else top)
