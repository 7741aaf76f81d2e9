"""The coins check's reports on denominations and melts (Taler's coins helper):
emergencies by value and by count, hanging refreshes, denominations without
this auditor's signature.  Called by audit_coins inside the coins check's
auditor transaction; docs/audit.md has the rules and the differences from Taler.

Emergencies are judged on the running totals of auditor_denomination_pending,
for the denominations this increment touched (as Taler's helper, when it writes
them back).  Taler's helper inserts a row every run the condition holds; here a
denomination has at most one row per table: it is inserted when the emergency
is first seen and updated (amounts, counts) when it grows, so one misbehaviour
is one finding however many runs follow.
"""

from collections.abc import Mapping
from typing import Any, Protocol

from .common import Check, Units, num, units

B_EMERGENCY_RISK = "coins_reported_emergency_risk_by_amount"
B_EMERGENCY_LOSS = "coins_emergencies_loss"
B_EMERGENCY_RISK_COUNT = "coins_reported_emergency_risk_by_count"
B_EMERGENCY_LOSS_COUNT = "coins_emergencies_loss_by_count"
B_REFRESH_HANGING = "total_refresh_hanging"
BALANCE_KEYS = (B_EMERGENCY_RISK, B_EMERGENCY_LOSS, B_EMERGENCY_RISK_COUNT,
                B_EMERGENCY_LOSS_COUNT, B_REFRESH_HANGING)

# A melt is revealed when the exchange stored its reveal: in v0.14 the reveal
# transaction writes the fresh coins (refresh_revealed_coins) and the transfer
# public key (refresh_transfer_keys) of the melt.
_HANGING = f"""
SELECT rc.melt_serial_id, {num('rc.amount_with_fee')}
  FROM exchange.refresh_commitments rc
 WHERE rc.melt_serial_id BETWEEN %(p)s AND %(hi)s
   AND NOT EXISTS (SELECT 1 FROM exchange.refresh_revealed_coins rrc
                    WHERE rrc.melt_serial_id = rc.melt_serial_id AND rrc.rrc_serial <= %(hi_rrc)s)
   AND NOT EXISTS (SELECT 1 FROM exchange.refresh_transfer_keys rtk
                    WHERE rtk.melt_serial_id = rc.melt_serial_id AND rtk.rtc_serial <= %(hi_rtk)s)
 ORDER BY 1"""


class PendingTotals(Protocol):
    """A denomination's running totals, as coins._Denom keeps them."""
    issued: int
    risk: int
    loss: int


def refreshes_hanging(check: Check, first_melt: int) -> None:
    """Melts from ``first_melt`` (the melt pass's progress point) up to the cut whose
    reveal is not in the exchange database: Taler's coins helper reports them when
    it processes the melt (no grace: its refresh_session_cb looks the reveal up at
    once), in auditor_refreshes_hanging with the melted amount."""
    for rows in check.stream(_HANGING, {
            "p": first_melt, "hi": check.hi("refresh_commitments"),
            "hi_rrc": check.hi("refresh_revealed_coins"),
            "hi_rtk": check.hi("refresh_transfer_keys")}):
        for serial, amount in rows:
            check.finding("refresh_hanging", problem_row_id=serial, amount=Units(units(amount)))
            check.add(B_REFRESH_HANGING, units(amount))


def _denomination_info(check: Check, hashes: list[bytes]) -> dict[bytes, list[Any]]:
    return {bytes(h): rest for h, *rest in check.ex.execute(
        f"""SELECT denom_pub_hash, denominations_serial, valid_from, expire_deposit,
                   expire_legal, {num('coin')}
              FROM exchange.denominations WHERE denom_pub_hash = ANY(%s)""",
        (hashes,)).fetchall()}


def emergencies(check: Check, touched: Mapping[bytes, PendingTotals]) -> None:
    """Taler's report_emergency_by_amount / _by_count for the denominations touched.

    By value: a spend the denomination's outstanding balance could not cover
    (denom_loss > 0, see audit_coins._apply).  By count: more coins of the
    denomination in known_coins (up to the cut) than the audit saw issued.
    Only denominations with at least one coin issued are judged: the audit
    otherwise cannot tell forged coins from coins issued before its history.
    """
    hashes = [h for h, d in touched.items() if d.issued > 0]
    if not hashes:
        return
    info = _denomination_info(check, hashes)
    serials = [info[h][0] for h in hashes if h in info]
    known = dict(check.ex.execute(
        """SELECT denominations_serial, count(*) FROM exchange.known_coins
            WHERE denominations_serial = ANY(%s) AND known_coin_id <= %s GROUP BY 1""",
        (serials, check.hi("known_coins"))).fetchall())
    by_value = {bytes(h): (row_id, units(risk), units(loss)) for h, row_id, risk, loss in
                check.aud.execute(
                    f"""SELECT denompub_h, row_id, {num('denom_risk')}, {num('denom_loss')}
                          FROM auditor.auditor_emergency WHERE denompub_h = ANY(%s)""",
                    (hashes,)).fetchall()}
    by_count = {bytes(h): (row_id, n_issued, n_known, units(risk)) for h, row_id, n_issued,
                n_known, risk in check.aud.execute(
                    f"""SELECT denompub_h, row_id, num_issued, num_known, {num('risk')}
                          FROM auditor.auditor_emergency_by_count WHERE denompub_h = ANY(%s)""",
                    (hashes,)).fetchall()}
    for h in hashes:
        if h not in info:
            continue        # spends of unknown denominations are row inconsistencies
        d = touched[h]
        serial, start, deposit_end, _, value = info[h]
        value = units(value)
        if d.loss > 0:
            _by_value(check, h, d, serial, start, deposit_end, value, by_value.get(h))
        n_known = known.get(serial, 0)
        if n_known > d.issued:
            _by_count(check, h, d, serial, n_known, start, deposit_end, value, by_count.get(h))


def _by_value(check: Check, h: bytes, d: PendingTotals, serial: int, start: int,
              deposit_end: int, value: int, old: tuple[int, int, int] | None) -> None:
    if old is None:
        check.finding("emergency", denompub_h=h, denom_risk=Units(d.risk),
                      denom_loss=Units(d.loss), deposit_start=start, deposit_end=deposit_end,
                      value=Units(value), _table="denominations", _serial=serial)
        old_risk = old_loss = 0
    else:
        row_id, old_risk, old_loss = old
        if (old_risk, old_loss) == (d.risk, d.loss):
            return
        check.aud.execute(
            """UPDATE auditor.auditor_emergency
                  SET denom_risk = ROW(%s, %s)::auditor.taler_amount,
                      denom_loss = ROW(%s, %s)::auditor.taler_amount WHERE row_id = %s""",
            (*divmod(d.risk, 10 ** 8), *divmod(d.loss, 10 ** 8), row_id))
    check.add(B_EMERGENCY_RISK, d.risk - old_risk)
    check.add(B_EMERGENCY_LOSS, d.loss - old_loss)


def _by_count(check: Check, h: bytes, d: PendingTotals, serial: int, n_known: int, start: int,
              deposit_end: int, value: int, old: tuple[int, int, int, int] | None) -> None:
    loss = value * (n_known - d.issued)
    if old is None:
        check.finding("emergency_by_count", denompub_h=h, num_issued=d.issued,
                      num_known=n_known, risk=Units(d.risk), start=start,
                      deposit_end=deposit_end, value=Units(value), _table="denominations",
                      _serial=serial)
        old_risk = old_loss = 0
    else:
        row_id, old_issued, old_known, old_risk = old
        if (old_issued, old_known, old_risk) == (d.issued, n_known, d.risk):
            return
        old_loss = value * max(old_known - old_issued, 0)
        check.aud.execute(
            """UPDATE auditor.auditor_emergency_by_count
                  SET num_issued = %s, num_known = %s,
                      risk = ROW(%s, %s)::auditor.taler_amount WHERE row_id = %s""",
            (d.issued, n_known, *divmod(d.risk, 10 ** 8), row_id))
    check.add(B_EMERGENCY_RISK_COUNT, d.risk - old_risk)
    check.add(B_EMERGENCY_LOSS_COUNT, loss - old_loss)


def denominations_without_sigs(check: Check) -> None:
    """Denominations in use (a row in auditor_denomination_pending: coins of them
    issued or spent) for which the exchange database holds no auditor_denom_sigs
    row of this auditor ([auditor] PUBLIC_KEY); reported once per denomination
    (the table's primary key).  Skipped without the key."""
    auditor_pub = check.auditor_pub
    if auditor_pub is None:
        return
    used = [bytes(h) for (h,) in check.aud.execute(
        """SELECT p.denom_pub_hash FROM auditor.auditor_denomination_pending p
            WHERE NOT EXISTS (SELECT 1 FROM auditor.auditor_denominations_without_sigs w
                               WHERE w.denompub_h = p.denom_pub_hash)""").fetchall()]
    if not used:
        return
    for serial, h, start, end, value in check.ex.execute(
            f"""SELECT d.denominations_serial, d.denom_pub_hash, d.valid_from, d.expire_legal, {num('d.coin')}
                  FROM exchange.denominations d
                 WHERE d.denom_pub_hash = ANY(%(used)s)
                   AND d.denominations_serial <= %(hi_d)s
                   AND NOT EXISTS (
                       SELECT 1 FROM exchange.auditor_denom_sigs ads
                         JOIN exchange.auditors a ON a.auditor_uuid = ads.auditor_uuid
                        WHERE ads.denominations_serial = d.denominations_serial
                          AND a.auditor_pub = %(pub)s
                          AND ads.auditor_denom_serial <= %(hi_ads)s
                          AND a.auditor_uuid <= %(hi_a)s)
                 ORDER BY d.denominations_serial""",
            {"used": used, "pub": auditor_pub, "hi_d": check.hi("denominations"),
             "hi_ads": check.hi("auditor_denom_sigs"), "hi_a": check.hi("auditors")}):
        check.finding("denomination_without_sigs", denompub_h=bytes(h), value=Units(units(value)),
                      start_time=start, end_time=end, _table="denominations", _serial=serial)
