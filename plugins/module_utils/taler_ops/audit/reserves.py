"""The reserves check (docs/economics.md, rules R1-R3, R5-R7), after Taler's
taler-helper-auditor-reserves.

Per reserve, the audit keeps a running balance in auditor.auditor_reserves:
credits (reserves_in, recoups into the reserve, purses decided as merged into
it, wad-in entries, open deposits) minus debits (withdrawals with fee, closes
with closing fee, history and open fees, purse fees of account merges).

Order inside one increment: all new credits first, then the new debits
merged by their timestamp (execution_date / request_timestamp; ties by table,
then serial).  Crediting first is deliberate: within one snapshot of the
exchange every visible debit was authorised against credits that are visible
too, so applying them first can only hide an overdraft that the exchange would
have had to commit out of order, never invent one.  A debit larger than the
balance is a finding ``reserve_balance_insufficient`` naming its table and
serial; the shortfall is booked as loss and the balance stays at zero, as in
Taler's helper.  The rules on closing (a close's target account and fee, R5;
expired reserves not closed, R3) are in reserves_closing.py.
"""

from collections.abc import Iterable
from typing import Any

from .common import Check, Conn, Units, num, units
from .reserves_closing import check_close, not_closed

NAME = "reserves"
CACHE_LIMIT = 200_000      # reserves held in memory before their state is written out

P_RESERVES = "reserves_reserves_serial_id"
P_IN = "reserves_reserve_in_serial_id"
P_RECOUP = "reserves_reserve_recoup_serial_id"
P_MERGES = "reserves_account_merges_serial_id"
P_DECISIONS = "reserves_purse_decisions_serial_id"
P_WAD_IN = "reserves_wad_in_entries_serial_id"
P_OPEN_DEPOSITS = "reserves_open_deposits_serial_id"
P_OUT = "reserves_reserve_out_serial_id"
P_CLOSE = "reserves_reserve_close_serial_id"
P_HISTORY = "reserves_history_requests_serial_id"
P_OPEN = "reserves_reserve_open_serial_id"
PROGRESS_KEYS = (P_RESERVES, P_IN, P_RECOUP, P_DECISIONS, P_MERGES, P_WAD_IN,
                 P_OPEN_DEPOSITS, P_OUT, P_CLOSE, P_HISTORY, P_OPEN)

B_TOTAL = "reserves_reserve_total_balance"
B_LOSS = "reserves_reserve_loss"
B_WITHDRAW_FEE = "reserves_withdraw_fee_revenue"
B_CLOSE_FEE = "reserves_close_fee_revenue"
B_HISTORY_FEE = "reserves_history_fee_revenue"
B_OPEN_FEE = "reserves_open_fee_revenue"
B_PURSE_FEE = "reserves_purse_fee_revenue"
BALANCE_KEYS = (B_TOTAL, B_LOSS, B_WITHDRAW_FEE, B_CLOSE_FEE, B_HISTORY_FEE, B_OPEN_FEE,
                B_PURSE_FEE)

# account_merges.flags & TALER_WAMF_MERGE_MODE_MASK: the reserve pays the purse fee
# (TALER_WAMF_MODE_CREATE_WITH_PURSE_FEE); other modes leave its balance alone.
MERGE_MODE_MASK = 3
MODE_CREATE_WITH_PURSE_FEE = 2

# A wire target's payto URI (Taler's helper works with URIs); the hex of its hash where
# the safe copy lacks the wire_targets row.
_PAYTO = """COALESCE((SELECT wt.payto_uri FROM exchange.wire_targets wt
                     WHERE wt.wire_target_h_payto = {h} LIMIT 1), encode({h}, 'hex'))"""
# The wire method of a payto URI: payto://METHOD/...
_METHOD = "split_part(split_part({uri}, '://', 2), '/', 1)"

NOT_REVOKED = "denomination key not in revocation set"

# (progress key, table, serial column, SELECT returning serial, reserve_pub, amount, origin
#  payto URI, revoked)
_CREDITS = (
    (P_IN, "reserves_in", "reserve_in_serial_id",
     f"""SELECT ri.reserve_in_serial_id, ri.reserve_pub, {num('ri.credit')},
               {_PAYTO.format(h='ri.wire_source_h_payto')}, NULL::boolean
          FROM exchange.reserves_in ri WHERE ri.reserve_in_serial_id BETWEEN %(p)s AND %(hi)s"""),
    # The last column: is the recouped coin's denomination revoked (NULL: coin unknown)?
    (P_RECOUP, "recoup", "recoup_uuid",
     f"""SELECT rc.recoup_uuid, r.reserve_pub, {num('rc.amount')}, NULL::text,
               CASE WHEN kc.known_coin_id IS NULL THEN NULL ELSE EXISTS (
                 SELECT 1 FROM exchange.denomination_revocations dr
                  WHERE dr.denominations_serial = kc.denominations_serial) END
          FROM exchange.recoup rc
          LEFT JOIN exchange.reserves_out ro USING (reserve_out_serial_id)
          LEFT JOIN exchange.reserves r ON r.reserve_uuid = ro.reserve_uuid
          LEFT JOIN exchange.known_coins kc ON kc.coin_pub = rc.coin_pub
         WHERE rc.recoup_uuid BETWEEN %(p)s AND %(hi)s"""),
    # A purse decided as merged (refunded = false) into a reserve of this exchange
    # credits the reserve with the purse's value, as Taler's purse_decision_cb; the
    # last column says whether the row credits anything (refunded purses, merges into
    # a partner exchange's reserve and decisions without merge do not).
    (P_DECISIONS, "purse_decision", "purse_decision_serial_id",
     f"""SELECT pd.purse_decision_serial_id, pm.reserve_pub, {num('pr.amount_with_fee')},
               NULL::text, NULL::boolean,
               (NOT pd.refunded AND pm.purse_pub IS NOT NULL AND pm.partner_serial_id IS NULL)
          FROM exchange.purse_decision pd
          LEFT JOIN exchange.purse_merges pm ON pm.purse_pub = pd.purse_pub
          LEFT JOIN exchange.purse_requests pr ON pr.purse_pub = pd.purse_pub
         WHERE pd.purse_decision_serial_id BETWEEN %(p)s AND %(hi)s"""),
    (P_WAD_IN, "wad_in_entries", "wad_in_entry_serial_id",
     f"""SELECT wi.wad_in_entry_serial_id, wi.reserve_pub, {num('wi.amount_with_fee')},
               NULL::text, NULL::boolean
          FROM exchange.wad_in_entries wi
         WHERE wi.wad_in_entry_serial_id BETWEEN %(p)s AND %(hi)s"""),
    (P_OPEN_DEPOSITS, "reserves_open_deposits", "reserve_open_deposit_uuid",
     f"""SELECT od.reserve_open_deposit_uuid, od.reserve_pub, {num('od.contribution')},
               NULL::text, NULL::boolean
          FROM exchange.reserves_open_deposits od
         WHERE od.reserve_open_deposit_uuid BETWEEN %(p)s AND %(hi)s"""),
)

# rank, table, progress key; the query yields (ts, rank, serial, reserve_pub, amount,
# fee, expected withdraw amount) and, for closes, (target payto URI, close request row,
# its payto URI, the closing fee due, the wire method, the amount wired)
_DEBIT_TABLES = ((0, "reserves_out", P_OUT), (1, "reserves_close", P_CLOSE),
                 (2, "history_requests", P_HISTORY), (3, "reserves_open_requests", P_OPEN),
                 (4, "account_merges", P_MERGES))
_NO_CLOSE = "NULL::text, NULL::int8, NULL::text, NULL::numeric, NULL::text, NULL::numeric"
_PURSE_FEE = (f"CASE WHEN (pr.flags & {MERGE_MODE_MASK}) = {MODE_CREATE_WITH_PURSE_FEE} "
              f"THEN {num('pr.purse_fee')} ELSE 0 END")
_DEBITS = f"""
SELECT ro.execution_date, 0, ro.reserve_out_serial_id, r.reserve_pub,
       {num('ro.amount_with_fee')}, {num('d.fee_withdraw')},
       {num('d.coin')} + {num('d.fee_withdraw')}, {_NO_CLOSE}
  FROM exchange.reserves_out ro
  LEFT JOIN exchange.reserves r ON r.reserve_uuid = ro.reserve_uuid
  LEFT JOIN exchange.denominations d ON d.denominations_serial = ro.denominations_serial
 WHERE ro.reserve_out_serial_id BETWEEN %(p_out)s AND %(hi_out)s
UNION ALL
SELECT rc.execution_date, 1, rc.close_uuid, rc.reserve_pub,
       {num('rc.amount')} + {num('rc.closing_fee')}, {num('rc.closing_fee')}, NULL,
       t.payto, COALESCE(rc.close_request_row, 0), cr.payto_uri,
       (SELECT {num('wf.closing_fee')} FROM exchange.wire_fee wf
         WHERE wf.wire_method = {_METHOD.format(uri='t.payto')}
           AND wf.start_date <= rc.execution_date AND rc.execution_date < wf.end_date
         ORDER BY wf.start_date DESC LIMIT 1),
       {_METHOD.format(uri='t.payto')}, {num('rc.amount')}
  FROM exchange.reserves_close rc
  CROSS JOIN LATERAL (SELECT {_PAYTO.format(h='rc.wire_target_h_payto')} AS payto) t
  LEFT JOIN exchange.close_requests cr
         ON cr.close_request_serial_id = rc.close_request_row AND cr.reserve_pub = rc.reserve_pub
 WHERE rc.close_uuid BETWEEN %(p_close)s AND %(hi_close)s
UNION ALL
SELECT hr.request_timestamp, 2, hr.history_request_serial_id, hr.reserve_pub,
       {num('hr.history_fee')}, {num('hr.history_fee')}, NULL, {_NO_CLOSE}
  FROM exchange.history_requests hr
 WHERE hr.history_request_serial_id BETWEEN %(p_history)s AND %(hi_history)s
UNION ALL
SELECT oq.request_timestamp, 3, oq.open_request_uuid, oq.reserve_pub,
       {num('oq.reserve_payment')}, {num('oq.reserve_payment')}, NULL, {_NO_CLOSE}
  FROM exchange.reserves_open_requests oq
 WHERE oq.open_request_uuid BETWEEN %(p_open)s AND %(hi_open)s
UNION ALL
SELECT COALESCE(pm.merge_timestamp, 0), 4, am.account_merge_request_serial_id, am.reserve_pub,
       {_PURSE_FEE}, {_PURSE_FEE}, NULL, {_NO_CLOSE}
  FROM exchange.account_merges am
  LEFT JOIN exchange.purse_requests pr ON pr.purse_pub = am.purse_pub
  LEFT JOIN exchange.purse_merges pm ON pm.purse_pub = am.purse_pub
 WHERE am.account_merge_request_serial_id BETWEEN %(p_merges)s AND %(hi_merges)s
ORDER BY 1, 2, 3
"""

_DEBIT_PARAM = {"reserves_out": "out", "reserves_close": "close",
                "history_requests": "history", "reserves_open_requests": "open",
                "account_merges": "merges"}
_FEE_BALANCE = {0: B_WITHDRAW_FEE, 1: B_CLOSE_FEE, 2: B_HISTORY_FEE, 3: B_OPEN_FEE,
                4: B_PURSE_FEE}


class _Reserve:
    """One row of Taler's auditor_reserves."""
    __slots__ = ("balance", "loss", "withdraw_fee", "close_fee", "purse_fee", "open_fee",
                 "history_fee", "expiration", "origin", "initial", "dirty")

    def __init__(self, balance: int = 0, loss: int = 0, withdraw_fee: int = 0,
                 close_fee: int = 0, purse_fee: int = 0, open_fee: int = 0,
                 history_fee: int = 0, expiration: int = 0, origin: str | None = None,
                 new: bool = True) -> None:
        self.balance, self.loss = balance, loss
        self.withdraw_fee, self.close_fee = withdraw_fee, close_fee
        self.purse_fee, self.open_fee, self.history_fee = purse_fee, open_fee, history_fee
        self.expiration, self.origin = expiration, origin
        self.initial = None if new else balance
        self.dirty = new


class _Reserves:
    """Running state of the reserves touched in this increment, loaded on demand."""

    def __init__(self, aud: Conn) -> None:
        self.aud = aud
        self.known: dict[bytes, _Reserve] = {}

    def load(self, pubs: Iterable[bytes | None]) -> None:
        want = [bytes(p) for p in set(pubs) if p is not None and bytes(p) not in self.known]
        if not want:
            return
        rows = self.aud.execute(
            f"""SELECT reserve_pub, {num('reserve_balance')}, {num('reserve_loss')},
                       {num('withdraw_fee_balance')}, {num('close_fee_balance')},
                       {num('purse_fee_balance')}, {num('open_fee_balance')},
                       {num('history_fee_balance')}, expiration_date, origin_account
                  FROM auditor.auditor_reserves WHERE reserve_pub = ANY(%s)""",
            (want,)).fetchall()
        for pub, bal, loss, wfee, cfee, pfee, ofee, hfee, exp, origin in rows:
            self.known[bytes(pub)] = _Reserve(units(bal), units(loss), units(wfee),
                                              units(cfee), units(pfee), units(ofee),
                                              units(hfee), exp, origin, new=False)

    def get(self, pub: bytes) -> _Reserve:
        pub = bytes(pub)
        res = self.known.get(pub)
        if res is None:
            res = self.known[pub] = _Reserve()
        res.dirty = True
        return res

    def trim(self, check: Check) -> None:
        """Bound memory on a large backlog: store and forget (same transaction)."""
        if len(self.known) > CACHE_LIMIT:
            self.write(check)
            self.known.clear()

    def write(self, check: Check) -> None:
        rows: list[tuple[Any, ...]] = []
        delta = 0
        for pub, r in self.known.items():
            if not r.dirty:
                continue
            delta += r.balance - (r.initial or 0)
            r.initial, r.dirty = r.balance, False
            rows.append((pub, *_amt(r.balance), *_amt(r.loss), *_amt(r.withdraw_fee),
                         *_amt(r.close_fee), *_amt(r.purse_fee), *_amt(r.open_fee),
                         *_amt(r.history_fee), r.expiration, r.origin))
        check.add(B_TOTAL, delta)
        if not rows:
            return
        with self.aud.cursor() as cur:
            cur.executemany(
                """INSERT INTO auditor.auditor_reserves
                     (reserve_pub, reserve_balance, reserve_loss, withdraw_fee_balance,
                      close_fee_balance, purse_fee_balance, open_fee_balance,
                      history_fee_balance, expiration_date, origin_account)
                   VALUES (%s, ROW(%s, %s)::auditor.taler_amount,
                           ROW(%s, %s)::auditor.taler_amount,
                           ROW(%s, %s)::auditor.taler_amount,
                           ROW(%s, %s)::auditor.taler_amount,
                           ROW(%s, %s)::auditor.taler_amount,
                           ROW(%s, %s)::auditor.taler_amount,
                           ROW(%s, %s)::auditor.taler_amount, %s, %s)
                   ON CONFLICT (reserve_pub) DO UPDATE SET
                     reserve_balance = EXCLUDED.reserve_balance,
                     reserve_loss = EXCLUDED.reserve_loss,
                     withdraw_fee_balance = EXCLUDED.withdraw_fee_balance,
                     close_fee_balance = EXCLUDED.close_fee_balance,
                     purse_fee_balance = EXCLUDED.purse_fee_balance,
                     open_fee_balance = EXCLUDED.open_fee_balance,
                     history_fee_balance = EXCLUDED.history_fee_balance,
                     expiration_date = EXCLUDED.expiration_date,
                     origin_account = EXCLUDED.origin_account""", rows)


def _amt(amount: int) -> tuple[int, int]:
    return divmod(amount, 100_000_000)


def run(check: Check) -> None:
    check.load_progress(PROGRESS_KEYS)
    for key in BALANCE_KEYS:
        check.add(key, 0)
    state = _Reserves(check.aud)
    _reserve_rows(check, state)
    _credits(check, state)
    _debits(check, state)
    state.write(check)
    not_closed(check)


def _reserve_rows(check: Check, state: _Reserves) -> None:
    """New reserves: their expiration date, which R3 needs."""
    for rows in check.stream(
            "SELECT reserve_uuid, reserve_pub, expiration_date FROM exchange.reserves "
            "WHERE reserve_uuid BETWEEN %(p)s AND %(hi)s ORDER BY reserve_uuid",
            {"p": check.next_serial(P_RESERVES), "hi": check.hi("reserves")}):
        state.load(r[1] for r in rows)
        for _serial, pub, expiration in rows:
            state.get(pub).expiration = expiration
        check.count("reserves", len(rows))
        check.processed(P_RESERVES, rows[-1][0])
        state.trim(check)


def _missing_reserve(check: Check, table: str, serial: int) -> None:
    check.finding("row_inconsistency", row_table=table, problem_row_id=serial,
                  diagnostic="the reserve (or the row that names it) does not exist")


def _credits(check: Check, state: _Reserves) -> None:
    for key, table, _, query in _CREDITS:
        for rows in check.stream(query + " ORDER BY 1",
                                 {"p": check.next_serial(key), "hi": check.hi(table)}):
            state.load(r[1] for r in rows)
            for serial, pub, amount, origin, revoked, *applies in rows:
                if applies and not applies[0]:
                    continue
                if pub is None or amount is None:
                    _missing_reserve(check, table, serial)
                    continue
                if revoked is False:
                    # Taler's reserves helper: a recoup of a denomination that was never
                    # revoked is a row inconsistency and a reserve loss; the reserve is
                    # credited all the same (the exchange paid it in).
                    check.finding("row_inconsistency", row_table=table, problem_row_id=serial,
                                  diagnostic=NOT_REVOKED)
                    check.add(B_LOSS, units(amount))
                res = state.get(pub)
                res.balance += units(amount)
                if origin is not None and res.origin is None:
                    res.origin = origin     # the first incoming transfer's payto URI
            check.count(table, len(rows))
            check.processed(key, rows[-1][0])
            state.trim(check)


def _debits(check: Check, state: _Reserves) -> None:
    params: dict[str, int] = {}
    for _, table, key in _DEBIT_TABLES:
        short = _DEBIT_PARAM[table]
        params[f"p_{short}"] = check.next_serial(key)
        params[f"hi_{short}"] = check.hi(table)
    tables = {rank: (table, key) for rank, table, key in _DEBIT_TABLES}
    for rows in check.stream(_DEBITS, params):
        state.load(r[3] for r in rows)
        for ts, rank, serial, pub, amount, fee, expected, *close in rows:
            table, key = tables[rank]
            check.count(table)
            check.processed(key, serial)
            if pub is None:
                _missing_reserve(check, table, serial)
                continue
            amount, fee = units(amount), units(fee)
            if rank == 0:
                if expected is None:
                    check.finding("row_inconsistency", row_table=table, problem_row_id=serial,
                                  diagnostic="withdrawal of an unknown denomination")
                elif units(expected) != amount:
                    # R2: amount_with_fee = coin value + withdraw fee
                    check.finding("amount_arithmetic_inconsistency",
                                  operation="withdraw amount_with_fee", _table=table,
                                  problem_row_id=serial, exchange_amount=Units(amount),
                                  auditor_amount=Units(units(expected)),
                                  profitable=amount > units(expected))
            res = state.get(pub)
            if rank == 1:
                check_close(check, serial, ts, res.origin, fee, *close)
            if amount > res.balance:
                shortfall = amount - res.balance
                # Taler's table names the reserve, not the row (docs/audit.md).
                check.finding("reserve_balance_insufficient", reserve_pub=bytes(pub),
                              inconsistency_gain=False, inconsistency_amount=Units(shortfall),
                              _table=table, _serial=serial)
                res.loss += shortfall
                check.add(B_LOSS, shortfall)
                res.balance = 0
            else:
                res.balance -= amount
            check.add(_FEE_BALANCE[rank], fee)
            if rank == 0:
                res.withdraw_fee += fee
            elif rank == 1:
                res.close_fee += fee
            elif rank == 2:
                res.history_fee += fee
            elif rank == 3:
                res.open_fee += fee
            else:
                res.purse_fee += fee
        state.trim(check)
