"""Planted exchange misbehaviour (``taler-ops generate --inject``) and its record.

Each kind breaks exactly one rule of docs/economics.md at one row, so the
audit's tests can compare its findings with the record: a JSON list of
``{"kind", "table", "serial", ...}`` (amounts in 1e-8 units).
"""

import hashlib
import json
import os
from collections.abc import Iterable
from typing import Any

import psycopg

from ..errors import UsageError
from .core import Due, ExchangeCore
from .entities import Coin, Denomination, DepositConfirmation, Merchant, Reserve, deposit_confirmation
from .exchange_model import Exchange
from .units import CENT, DAY, HOUR, MARGIN, MINUTE, UNIT, WEEK

# One planted finding: {"kind", "table", "serial", details...} (bytes as hex), as JSON.
RecordEntry = dict[str, Any]

KINDS = {
    "coin_overspend": "a deposit that takes a coin past its value (coin_overspent)",
    "reserve_overdraft": "a withdrawal beyond the reserve's balance "
                         "(reserve_balance_insufficient)",
    "wire_out_mismatch": "a wire transfer whose amount differs from its deposits minus fees "
                         "(wire_out_inconsistency)",
    "reserve_balance_mismatch": "reserves.current_balance off by one unit "
                                "(reserve_balance_summary_wrong, internal audit only)",
    "close_wrong_account": "a reserve closed to another customer's account than its origin "
                           "(row_inconsistency on reserves_close)",
    "close_fee_mismatch": "a reserve close charging one cent more than the closing fee "
                          "(amount_arithmetic_inconsistency on reserves_close)",
}
# Planted by the aggregator (like wire_out_mismatch): the history's last chance is
# its final aggregation, not a wallet's lifecycle.
AT_AGGREGATION = {"wire_out_mismatch", "wire_out_wrong_account", "wire_out_before_deposit"}
KINDS.update({
    "wire_out_wrong_account": "a wire transfer paying a deposit to another merchant's account "
                              "(row_inconsistency on aggregation)",
    "wire_out_before_deposit": "a wire transfer executed before the deposit it pays was made "
                               "(row_inconsistency on aggregation)",
})

KINDS.update({
    "purse_not_closed": "an expired purse the exchange never decided "
                        "(purse_not_closed)",
    "purse_merge_unpaid": "a purse merged although nothing was paid into it "
                          "(amount_arithmetic_inconsistency on purse_decision)",
})

KINDS["deposit_confirmation_unknown"] = (
    "a merchant's deposit confirmation of a deposit the exchange's database lacks "
    "(deposit_confirmation_missing; needs the auditor database: generate --auditor)")
# Planted after the history is written, into the auditor database.
AT_END = {"deposit_confirmation_unknown"}

# Forged signatures: kind -> the signature column (crypto.catalog) whose next
# value is signed with a wrong key (EdDSA: the right block under another key;
# known_coins.denom_sig: the denomination's signature on another coin; the
# blinded ev_sig: the signature of another planchet).  Each makes exactly one
# bad_sig_loss finding (auditor_bad_sig_losses) and breaks no other rule.
FORGED = {
    "bad_sig_denomination": "denominations.master_sig",
    "bad_sig_wire_fee": "wire_fee.master_sig",
    "bad_sig_withdraw": "reserves_out.reserve_sig",
    "bad_sig_coin": "known_coins.denom_sig",
    "bad_sig_deposit": "coin_deposits.coin_sig",
    "bad_sig_contract": "batch_deposits.merchant_sig",
    "bad_sig_refund": "refunds.merchant_sig",
    "bad_sig_melt": "refresh_commitments.old_coin_sig",
    "bad_sig_reveal": "refresh_revealed_coins.ev_sig",
    "bad_sig_close": "close_requests.reserve_sig",
    "bad_sig_purse": "purse_requests.purse_sig",
    "bad_sig_merge": "purse_merges.merge_sig",
    "bad_sig_purse_deposit": "purse_deposits.coin_sig",
    "bad_sig_account_merge": "account_merges.reserve_sig",
}
FORGED_COLUMNS = {column: kind for kind, column in FORGED.items()}
for _kind, _column in FORGED.items():
    KINDS[_kind] = f"a forged {_column} (bad_sig_loss)"

# The coins helper's reports on denominations and melts (audit/coins_checks.py).
KINDS.update({
    "emergency": "a fully spent coin deposited again for more than its denomination ever "
                 "issued (emergency, with the coin's coin_overspent)",
    "emergency_by_count": "coins never withdrawn, signed with a denomination's key, one more "
                          "than its issued coins never spent, each deposited for a small "
                          "amount (emergency_by_count)",
    "refresh_hanging": "a melt whose reveal never happens (refresh_hanging)",
    "denomination_without_sigs": "a denomination in use that the active auditor never signed "
                                 "(denomination_without_sigs; needs [auditor] PUBLIC_KEY)",
})
# More than any generated history issues of one denomination.
EMERGENCY_AMOUNT = 1_000_000 * UNIT


def parse_kinds(kinds: str | Iterable[str] | None) -> list[str]:
    """'a,b' or an iterable of names -> list of kinds (repeats plant several); exit 2 if unknown."""
    if kinds is None:
        return []
    if isinstance(kinds, str):
        kinds = [kinds]
    out = []
    for item in kinds:
        for name in str(item).split(","):
            name = name.strip()
            if not name:
                continue
            if name not in KINDS:
                raise UsageError(f"unknown --inject kind {name!r}; known kinds: "
                                 + ", ".join(sorted(KINDS)))
            out.append(name)
    return out


def _amount(units: int) -> str:
    return f"{units // UNIT}.{units % UNIT:08d}"


class Injector:
    """Plants the requested kinds at the first chance the history offers."""

    def __init__(self, kinds: Iterable[str]):
        self.pending = list(kinds)
        self.record: list[RecordEntry] = []

    # Forged signatures (any time; the model asks before signing) -----------------
    def forge(self, column: str) -> bool:
        """True (once per planted kind) if the next signature of ``column`` is to be forged."""
        kind = FORGED_COLUMNS.get(column)
        return kind is not None and self._take(kind)

    def forged_written(self, column: str, serial: int) -> None:
        table, col = column.split(".")
        self._note(FORGED_COLUMNS[column], table, serial, column=col)

    def _take(self, kind: str) -> bool:
        if kind in self.pending:
            self.pending.remove(kind)
            return True
        return False

    def _note(self, kind: str, table: str, serial: int, **details: Any) -> None:
        entry: RecordEntry = {"kind": kind, "table": table, "serial": serial}
        for key, value in details.items():
            if isinstance(value, bytes):
                value = value.hex()
            entry[key] = value
        self.record.append(entry)

    # Called by the model -------------------------------------------------------
    def wire_out_amount(self, serial: int, expected: int) -> int:
        if not self._take("wire_out_mismatch"):
            return expected
        claimed = expected + 50 * CENT
        self._note("wire_out_mismatch", "wire_out", serial, expected=expected, claimed=claimed,
                   expected_amount=_amount(expected), claimed_amount=_amount(claimed))
        return claimed

    def wire_out_plan(self, ex: ExchangeCore, item: Due,
                      t: int) -> tuple[str | None, int, Merchant]:
        """(kind or None, execution time, target merchant) of a one-deposit wire transfer."""
        merchant, deadline, _serial, _net = item
        if "wire_out_wrong_account" in self.pending:
            other = next((m for m in ex.merchants if m.h_payto != merchant.h_payto), None)
            if other is not None:
                self._take("wire_out_wrong_account")
                return "wire_out_wrong_account", t, other
        if "wire_out_before_deposit" in self.pending:
            # A deposit's wire deadline is at most two weeks after it was made.
            self._take("wire_out_before_deposit")
            return "wire_out_before_deposit", deadline - 3 * WEEK, merchant
        return None, t, merchant

    def wire_out_planted(self, kind: str, aggregation_row: int, wire_out: int, item: Due,
                         t: int, target: Merchant) -> None:
        merchant, deadline, batch, _net = item
        self._note(kind, "aggregation", aggregation_row, wire_out=wire_out,
                   batch_deposit=batch, deadline=deadline, executed=t,
                   owed_to=merchant.payto, paid_to=target.payto)

    def unknown_confirmation(self, ex: ExchangeCore) -> DepositConfirmation | None:
        """A confirmation, as a merchant would submit it, of a deposit never recorded."""
        if not self._take("deposit_confirmation_unknown"):
            return None
        merchant = ex.merchants[0]
        t = ex.now - 2 * DAY
        contract = hashlib.sha512(b"unrecorded contract").digest()
        coin = hashlib.sha256(b"unrecorded coin").digest()
        return deposit_confirmation(0, contract, bytes(64), t, t, t + DAY, UNIT - CENT, [coin],
                                    [bytes(64)], merchant.pub)

    def confirmation_written(self, row_id: int, confirmation: DepositConfirmation) -> None:
        self._note("deposit_confirmation_unknown", "auditor_deposit_confirmations", row_id,
                   h_contract_terms=confirmation["h_contract_terms"],
                   merchant_pub=confirmation["merchant_pub"])

    def after_lifecycle(self, ex: Exchange, res: Reserve, coins: list[Coin], t_end: int) -> None:
        """Plant per-wallet kinds into a finished history, before the reserve is written."""
        if "coin_overspend" in self.pending:
            coin = next((c for c in coins if c.fully_spent_by_deposit and not c.denom.revoked
                         and c.spent == c.denom.value), None)
            if coin is not None and t_end + HOUR < ex.now - MARGIN:
                self._take("coin_overspend")
                spent_before = coin.spent
                merchant = ex.pick_merchant()
                # Wire deadline far ahead: the deposit is not aggregated, so the
                # only rule it breaks is C1.
                _, deposit_serials, _, _ = ex.batch_deposit(
                    merchant, t_end + HOUR, [(coin, coin.denom.value)],
                    wire_delay=max(WEEK, ex.now + MARGIN + DAY - t_end), pending=True)
                self.record_overspend(coin, deposit_serials[0], spent_before)
        if "reserve_overdraft" in self.pending and res.balance == 0 and not res.closed \
                and res.origin is not None:
            t = max(res.last_activity, t_end) + HOUR
            denom = next((d for d in ex.denoms if d.value == UNIT
                          and d.valid_from <= t < d.expire_withdraw), None)
            if denom is not None and t < ex.now - MARGIN:
                self._take("reserve_overdraft")
                serial = ex.w.peek_serial("reserves_out")
                ex.withdraw(res, denom, t)
                self.record_overdraft(res, serial, 0, denom.cost)
        for kind in ("close_wrong_account", "close_fee_mismatch"):
            if kind in self.pending and not res.closed and res.origin is not None:
                self._plant_close(ex, res, kind, max(res.last_activity, t_end) + HOUR)
        if t_end + HOUR < ex.now - MARGIN:
            self._plant_emergencies(ex, coins, t_end + HOUR)
        t = t_end + HOUR
        if "purse_not_closed" in self.pending and t + DAY < ex.now - MARGIN:
            self._take("purse_not_closed")
            serial = ex.expired_purse(t, decided=False)
            self._note("purse_not_closed", "purse_requests", serial, expiration=t + DAY)
        if "purse_merge_unpaid" in self.pending and t + DAY < ex.now - MARGIN:
            self._take("purse_merge_unpaid")
            pub, amount, _ = ex.purse([], t, unpaid=UNIT)
            decision = ex.w.peek_serial("purse_decision")
            other = ex.merge_local(pub, amount, t + MINUTE)
            ex.finish_reserve(other)
            self._note("purse_merge_unpaid", "purse_decision", decision, purse_pub=pub,
                       target=amount, paid=0)
        if "reserve_balance_mismatch" in self.pending and res.balance >= 0:
            self._take("reserve_balance_mismatch")
            res.balance_offset = UNIT     # finish_reserve stores it; reserve_written records it

    def _plant_emergencies(self, ex: Exchange, coins: list[Coin], t: int) -> None:
        """A denomination pays out more than it issued: by value (one coin deposited
        again for an amount no history issues) or by count (a coin never withdrawn,
        as if the denomination's private key had leaked).  The deposits' wire
        deadlines lie past ``now``, so no other rule than the emergency's is broken
        (by value: and the coin's C1)."""
        wire_delay = max(WEEK, ex.now + MARGIN + DAY - t)
        if "emergency" in self.pending:
            coin = next((c for c in coins if c.fully_spent_by_deposit and not c.denom.revoked
                         and c.spent == c.denom.value), None)
            if coin is not None:
                self._take("emergency")
                _, serials, _, _ = ex.batch_deposit(
                    ex.pick_merchant(), t, [(coin, EMERGENCY_AMOUNT)], wire_delay=wire_delay,
                    pending=True)
                self._note("emergency", "denominations", coin.denom.serial,
                           denom_pub_hash=coin.denom.h, coin_pub=coin.pub,
                           deposit_serial=serials[0], amount=EMERGENCY_AMOUNT)

    def at_end(self, ex: Exchange, conn: psycopg.Connection[Any], t: int) -> list[Coin]:
        """Plant what needs the whole history: ``emergency_by_count``, coins of a
        denomination that was never withdrawn (as if its private key had leaked),
        one more than the denomination's issued coins that were never spent, so that
        more coins are known than were issued.  Each pays a small part of its value,
        so the denomination's outstanding value covers them (no emergency by value).
        Returns the coins to write."""
        if "emergency_by_count" not in self.pending:
            return []
        # Not the denomination of a planted emergency by value: one finding per kind.
        taken = {e["serial"] for e in self.record if e["kind"] == "emergency"}
        candidates = {d.serial: d for d in ex.denoms if d.value >= UNIT and not d.age_mask
                      and d.fee_deposit + CENT <= d.value // 4 and d.serial not in taken}
        unknown = conn.execute(
            """SELECT d.denominations_serial,
                      (SELECT count(*) FROM exchange.reserves_out ro
                        WHERE ro.denominations_serial = d.denominations_serial)
                    + (SELECT count(*) FROM exchange.refresh_revealed_coins rrc
                        WHERE rrc.denominations_serial = d.denominations_serial)
                    - (SELECT count(*) FROM exchange.known_coins kc
                        WHERE kc.denominations_serial = d.denominations_serial)
                 FROM exchange.denominations d WHERE d.denominations_serial = ANY(%s)""",
            (list(candidates),)).fetchall()
        conn.commit()
        usable = sorted((n, serial) for serial, n in unknown if n >= 1)
        if not usable:
            return []
        n_unknown, serial = usable[0]
        denom = candidates[serial]
        self._take("emergency_by_count")
        forged = [ex.new_coin(denom) for _ in range(n_unknown + 1)]
        small = denom.fee_deposit + CENT
        wire_delay = max(WEEK, ex.now + MARGIN + DAY - t)
        deposits = []
        for i in range(0, len(forged), 20):
            _, serials, _, _ = ex.batch_deposit(
                ex.pick_merchant(), t, [(c, small) for c in forged[i:i + 20]],
                wire_delay=wire_delay, pending=True)
            deposits += serials
        self._note("emergency_by_count", "denominations", denom.serial,
                   denom_pub_hash=denom.h, forged_coins=len(forged),
                   unspent_issued=n_unknown, deposit_serials=deposits)
        return forged

    def hang_refresh(self, melt_serial: int, amount: int) -> bool:
        """True (once) if the melt ``melt_serial`` is to stay without its reveal."""
        if not self._take("refresh_hanging"):
            return False
        self._note("refresh_hanging", "refresh_commitments", melt_serial, amount=amount)
        return True

    def skip_auditor_sig(self, denom: Denomination) -> bool:
        """True (once) if the active auditor is not to sign ``denom`` (a withdrawable
        denomination of one unit, which wallets use)."""
        if denom.value != UNIT or denom.revoked or denom.age_mask \
                or not self._take("denomination_without_sigs"):
            return False
        self._note("denomination_without_sigs", "denominations", denom.serial,
                   denom_pub_hash=denom.h)
        return True

    def _plant_close(self, ex: Exchange, res: Reserve, kind: str, t: int) -> None:
        """Close the reserve early, to the wrong account or for a wrong fee (R5)."""
        assert res.origin is not None, "only a reserve filled by wire is closed to its origin"
        try:
            fee = ex.fees.closing_fee(t)
        except LookupError:
            return
        other = next((c for c in ex.customers if c[0] != res.origin[0]), None)
        if res.balance <= fee + CENT or t >= ex.now - MARGIN or other is None:
            return
        self._take(kind)
        serial = ex.w.peek_serial("reserves_close")
        if kind == "close_wrong_account":
            ex.close(res, t, other[0])
            self._note(kind, "reserves_close", serial, reserve_pub=res.pub, origin=res.origin[1],
                       target=other[1])
            return
        charged = fee + CENT
        ex.put("reserves_close", ex.w.serial("reserves_close"), res.pub, t, ex.rng.key32(),
               res.origin[0], res.balance - charged, charged, 0)
        ex._debit(res, res.balance, t)
        res.closed = True
        self._note(kind, "reserves_close", serial, reserve_pub=res.pub, expected=fee,
                   charged=charged)

    def record_overspend(self, coin: Coin, deposit_serial: int,
                         spent_before: int | None = None) -> None:
        value = coin.denom.value
        self._note("coin_overspend", "coin_deposits", deposit_serial, coin_pub=coin.pub,
                   value=value, spent_before=value if spent_before is None else spent_before,
                   amount=value)

    def record_overdraft(self, res: Reserve, serial: int, balance_before: int,
                         amount: int) -> None:
        self._note("reserve_overdraft", "reserves_out", serial, reserve_pub=res.pub,
                   reserve_uuid=res.uuid, balance_before=balance_before, amount=amount)

    def reserve_written(self, res: Reserve, stored: int) -> None:
        if res.balance_offset:
            self._note("reserve_balance_mismatch", "reserves", res.uuid, reserve_pub=res.pub,
                       expected=res.balance, stored=stored)


def write_record(path: str, record: list[RecordEntry]) -> None:
    """Write the record atomically (a reader never sees half a file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)

