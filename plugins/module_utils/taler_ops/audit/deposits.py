"""The deposits check (Taler's deposits helper): merchants' deposit confirmations.

Merchants submit the exchange's deposit confirmations to the auditor (Taler's
auditor-httpd stores them in auditor_deposit_confirmations).  Every run looks
at every confirmation still there, suppressed ones included, as Taler's helper
does: a confirmation whose coins are all found as deposits in the exchange's
database (same contract hash, merchant, coin, refund deadline and h_wire of the
merchant's account and the deposit's wire salt) is deleted; one with a coin the
exchange's database lacks stays, and that remaining row is the finding: an
exchange that confirmed a deposit it did not record (or a safe copy still
behind, which the next run settles).

The progress key (Taler's deposit_confirmation_serial_id) is the next row_id
not examined yet: a missing confirmation is reported and added to
total_missed_deposit_confirmations once, when first examined, and taken off the
balance again if its deposit turns up later (Taler's helper adds it on every
run).  After auditor-dbinit -r (which keeps the confirmations) the remaining ones
are reported again, from zero.
"""

from .common import Check, num, units
from ..crypto.hashes import merchant_wire_hash

NAME = "deposits"

P_CONFIRMATION = "deposit_confirmation_serial_id"
PROGRESS_KEYS = (P_CONFIRMATION,)
B_MISSED = "total_missed_deposit_confirmations"
BALANCE_KEYS = (B_MISSED,)

_CONFIRMATIONS = f"""
SELECT row_id, h_contract_terms, h_wire, merchant_pub, refund_deadline, coin_pubs,
       {num('total_without_fee')}, exchange_timestamp
  FROM auditor.auditor_deposit_confirmations ORDER BY row_id
"""

# The exchange's deposits of the confirmed contracts (a consistent cut of them).
_DEPOSITS = """
SELECT bd.h_contract_terms, bd.merchant_pub, cd.coin_pub, bd.refund_deadline, bd.wire_salt,
       wt.payto_uri
  FROM exchange.batch_deposits bd
  JOIN exchange.coin_deposits cd USING (batch_deposit_serial_id)
  LEFT JOIN exchange.wire_targets wt USING (wire_target_h_payto)
 WHERE bd.h_contract_terms = ANY(%(contracts)s)
   AND bd.batch_deposit_serial_id <= %(hi_batch)s AND cd.coin_deposit_serial_id <= %(hi_coin)s
"""


def run(check: Check) -> None:
    check.load_progress(PROGRESS_KEYS)
    check.add(B_MISSED, 0)
    confirmations = check.aud.execute(_CONFIRMATIONS).fetchall()
    if not confirmations:
        return
    found: set[tuple[bytes, bytes, bytes, int, bytes]] = set()
    wire_hashes: dict[tuple[str, bytes], bytes] = {}
    for rows in check.stream(_DEPOSITS, {
            "contracts": list({bytes(c[1]) for c in confirmations}),
            "hi_batch": check.hi("batch_deposits"), "hi_coin": check.hi("coin_deposits")}):
        for h_contract, merchant, coin, refund_deadline, salt, payto in rows:
            if payto is None:
                continue            # no account: cannot match any h_wire
            key = (payto, bytes(salt))
            if key not in wire_hashes:
                wire_hashes[key] = merchant_wire_hash(payto, bytes(salt))
            found.add((bytes(h_contract), bytes(merchant), bytes(coin), refund_deadline,
                       wire_hashes[key]))
    start = check.next_serial(P_CONFIRMATION)
    matched = []
    for (row_id, h_contract, h_wire, merchant, refund_deadline, coins, total,
         timestamp) in confirmations:
        base = (bytes(h_contract), bytes(merchant))
        missing = [bytes(c) for c in coins
                   if (*base, bytes(c), refund_deadline, bytes(h_wire)) not in found]
        if not missing:
            matched.append(row_id)
            if row_id < start:       # reported missing before: no longer missed
                check.add(B_MISSED, -units(total))
        elif row_id >= start:
            check.finding("deposit_confirmation_missing", row_id=row_id, _stored=True,
                          h_contract_terms=bytes(h_contract), merchant_pub=bytes(merchant),
                          exchange_timestamp=timestamp, missing_coins=len(missing))
            check.add(B_MISSED, units(total))
    if matched:
        check.aud.execute("DELETE FROM auditor.auditor_deposit_confirmations "
                          "WHERE row_id = ANY(%s)", (matched,))
    check.count("auditor_deposit_confirmations", len(confirmations))
    check.processed(P_CONFIRMATION, confirmations[-1][0])
