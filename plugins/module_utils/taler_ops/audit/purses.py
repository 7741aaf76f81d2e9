"""The purses check (Taler's purses helper): purse balances and purses not closed.

Per purse, Taler's auditor_purses keeps the balance the audit computed (each
purse deposit's amount minus its coin's deposit fee), the target
(purse_requests.amount_with_fee) and the expiration date, from the purse's
request until its decision, when the row is deleted.  Rules:

* a purse decided as merged (purse_decision.refunded false) whose computed
  balance is below its target was merged without being paid: Taler's
  amount_arithmetic_inconsistency "purse-decision: merge" (problem_row_id =
  purse_decision serial, exchange amount = the target, auditor amount = the
  balance), and the target is added to purse_total_balance_insufficient_loss;
* a purse still in auditor_purses (undecided) whose expiration date is before
  "now" was not closed by the exchange: Taler's
  auditor_purse_not_closed_inconsistencies (amount = its balance), once per purse
  (Taler's helper adds a row on every run), and its balance is added to
  purse_total_delayed_decisions.

Differences from Taler's helper, on purpose: a purse merge does not add the
purse's amount to its balance a second time (it would make the merge rule never
fire); a purse refunded with a full balance is not reported (a purse nobody
merged in time is refunded whatever it holds); purse fees are left out on both
sides (Taler adds an account merge's fee and subtracts the global purse fee
again); deposits into a purse of a partner exchange (partner_serial_id set) are
not this exchange's purses and are skipped.  The helper's purse_merges and
account_merges passes feed only those, so their progress keys are not kept.
"""

from .common import Check, Units, num, units

NAME = "purses"

P_REQUEST = "purse_request_serial_id"
P_DEPOSIT = "purse_deposits_serial_id"
P_DECISION = "purse_decision_serial_id"
PROGRESS_KEYS = (P_REQUEST, P_DEPOSIT, P_DECISION)

B_GLOBAL = "purse_global_balance"
B_INSUFFICIENT = "purse_total_balance_insufficient_loss"
B_DELAYED = "purse_total_delayed_decisions"
BALANCE_KEYS = (B_GLOBAL, B_INSUFFICIENT, B_DELAYED)

_REQUESTS = f"""
SELECT purse_requests_serial_id, purse_pub, {num('amount_with_fee')}, purse_expiration
  FROM exchange.purse_requests
 WHERE purse_requests_serial_id BETWEEN %(p)s AND %(hi)s ORDER BY 1
"""

_DEPOSITS = f"""
SELECT pd.purse_deposit_serial_id, pd.purse_pub,
       {num('pd.amount_with_fee')} - COALESCE({num('d.fee_deposit')}, 0),
       d.denominations_serial IS NULL
  FROM exchange.purse_deposits pd
  LEFT JOIN exchange.known_coins kc ON kc.coin_pub = pd.coin_pub
  LEFT JOIN exchange.denominations d ON d.denominations_serial = kc.denominations_serial
 WHERE pd.purse_deposit_serial_id BETWEEN %(p)s AND %(hi)s AND pd.partner_serial_id IS NULL
 ORDER BY 1
"""

_DECISIONS = """
SELECT purse_decision_serial_id, purse_pub, refunded FROM exchange.purse_decision
 WHERE purse_decision_serial_id BETWEEN %(p)s AND %(hi)s ORDER BY 1
"""

# A purse the audit has no state for (its request examined before a restart of the
# exchange side, or never): its target and expiration from the exchange.
_PURSE = f"""
SELECT {num('amount_with_fee')}, purse_expiration FROM exchange.purse_requests
 WHERE purse_pub = %s
"""


class _Purse:
    """One purse's row of Taler's auditor_purses."""
    __slots__ = ("balance", "target", "expiration", "stored")

    def __init__(self, balance: int, target: int, expiration: int, stored: bool) -> None:
        self.balance, self.target, self.expiration = balance, target, expiration
        self.stored = stored        # the row is in auditor_purses already


class _Purses:
    """The purses touched by this increment: state loaded once, written back at the end."""

    def __init__(self, check: Check) -> None:
        self.check = check
        self.state: dict[bytes, _Purse] = {}     # by purse_pub
        self.gone: set[bytes] = set()            # decided: deleted from auditor_purses

    def new(self, pub: bytes, target: int, expiration: int) -> None:
        self.state[pub] = _Purse(0, target, expiration, False)

    def get(self, pub: bytes) -> _Purse | None:
        if pub in self.state:
            return self.state[pub]
        row = self.check.aud.execute(
            f"SELECT {num('balance')}, {num('target')}, expiration_date "
            "FROM auditor.auditor_purses WHERE purse_pub = %s FOR UPDATE", (pub,)).fetchone()
        if row is not None:
            self.state[pub] = _Purse(units(row[0]), units(row[1]), row[2], True)
            return self.state[pub]
        row = self.check.ex.execute(_PURSE, (pub,)).fetchone()
        if row is None:
            return None
        self.new(pub, units(row[0]), row[1])
        return self.state[pub]

    def decided(self, pub: bytes) -> None:
        entry = self.state.pop(pub, None)
        if entry is not None and entry.stored:
            self.gone.add(pub)

    def write(self) -> None:
        aud = self.check.aud
        if self.gone:
            aud.execute("DELETE FROM auditor.auditor_purses WHERE purse_pub = ANY(%s)",
                        (list(self.gone),))
        rows = [(pub, *divmod(p.balance, 10**8), *divmod(p.target, 10**8), p.expiration)
                for pub, p in self.state.items()]
        if rows:
            with aud.cursor() as cur:
                cur.executemany(
                    "INSERT INTO auditor.auditor_purses (purse_pub, balance, target, "
                    "expiration_date) VALUES (%s, ROW(%s, %s)::auditor.taler_amount, "
                    "ROW(%s, %s)::auditor.taler_amount, %s) ON CONFLICT (purse_pub) DO UPDATE "
                    "SET balance = EXCLUDED.balance", rows)


def run(check: Check) -> None:
    check.load_progress(PROGRESS_KEYS)
    for key in BALANCE_KEYS:
        check.add(key, 0)
    purses = _Purses(check)
    for rows in check.stream(_REQUESTS, {"p": check.next_serial(P_REQUEST),
                                         "hi": check.hi("purse_requests")}):
        for _serial, pub, target, expiration in rows:
            purses.new(bytes(pub), units(target), expiration)
        check.count("purse_requests", len(rows))
        check.processed(P_REQUEST, rows[-1][0])
    for rows in check.stream(_DEPOSITS, {"p": check.next_serial(P_DEPOSIT),
                                         "hi": check.hi("purse_deposits")}):
        for serial, pub, net, unknown_coin in rows:
            entry = purses.get(bytes(pub))
            if entry is None or unknown_coin:
                check.finding("row_inconsistency", row_table="purse_deposits",
                              problem_row_id=serial,
                              diagnostic="purse deposit into an unknown purse" if entry is None
                              else "purse deposit of a coin of unknown denomination")
                continue
            entry.balance += max(units(net), 0)
            check.add(B_GLOBAL, max(units(net), 0))
        check.count("purse_deposits", len(rows))
        check.processed(P_DEPOSIT, rows[-1][0])
    for rows in check.stream(_DECISIONS, {"p": check.next_serial(P_DECISION),
                                          "hi": check.hi("purse_decision")}):
        for serial, pub, refunded in rows:
            pub = bytes(pub)
            entry = purses.get(pub)
            if entry is None:
                check.finding("row_inconsistency", row_table="purse_decision",
                              problem_row_id=serial, diagnostic="decision on an unknown purse")
                continue
            balance, target = entry.balance, entry.target
            if not refunded and balance < target:
                check.finding("amount_arithmetic_inconsistency", _table="purse_decision",
                              problem_row_id=serial, operation="purse-decision: merge",
                              exchange_amount=Units(target), auditor_amount=Units(balance),
                              profitable=False)
                check.add(B_INSUFFICIENT, target)
            purses.decided(pub)
        check.count("purse_decision", len(rows))
        check.processed(P_DECISION, rows[-1][0])
    purses.write()
    _not_closed(check)


def _not_closed(check: Check) -> None:
    """Undecided purses past their expiration, each reported once."""
    rows = check.aud.execute(
        f"SELECT p.purse_pub, {num('p.balance')}, p.expiration_date "
        "FROM auditor.auditor_purses p WHERE p.expiration_date < %s AND NOT EXISTS ("
        "  SELECT 1 FROM auditor.auditor_purse_not_closed_inconsistencies n "
        "   WHERE n.purse_pub = p.purse_pub) ORDER BY p.auditor_purses_rowid",
        (check.now_us,)).fetchall()
    serials: dict[bytes, int] = {}
    if rows:
        serials = dict(check.ex.execute(
            "SELECT purse_pub, purse_requests_serial_id FROM exchange.purse_requests "
            "WHERE purse_pub = ANY(%s)", ([bytes(r[0]) for r in rows],)).fetchall())
    for pub, balance, expiration in rows:
        pub = bytes(pub)
        check.finding("purse_not_closed", purse_pub=pub, amount=Units(units(balance)),
                      expiration_date=expiration, _serial=serials.get(pub))
        check.add(B_DELAYED, units(balance))
