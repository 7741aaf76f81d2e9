"""What every audit check shares: amounts, progress points, balances and findings.

Amounts are Python ints of 1e-8 units (Taler's frac base), so arithmetic is
exact and has no overflow; SQL hands them over as numeric.  A check collects
everything it wants to write in a ``Check`` and ``Check.write`` stores it in
the auditor transaction that also moves the check's progress points, so a
crash loses a whole increment or nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple, NotRequired, Optional, TypedDict

import psycopg
from psycopg import sql

from ..schema.exchange_schema import AMOUNT_FRAC_BASE as FRAC_BASE
from ..schema.exchange_schema import amount_units

if TYPE_CHECKING:
    # Only for annotations: QueryNoTemplate is newer than the oldest psycopg 3 that
    # the managed hosts may run this code with.
    from psycopg.abc import Params, QueryNoTemplate as Query
    from ..crypto.context import SignatureContext

MAX_SERIAL = 2 ** 63 - 1
# A connection whose rows are tuples of whatever the query selects.
Conn = psycopg.Connection[Any]
# A database row; its columns are the query's.
Row = tuple[Any, ...]
# SQL: a taler_amount expression as numeric 1e-8 units (the checks' short name).
num = amount_units

class Kind(NamedTuple):
    """Where a kind of finding goes: Taler's report table, as Taler's helper writes it.

    ``row_table``: the column naming the exchange table, ``=name`` for a fixed
    one, None where Taler's table records none; ``serial``: the column holding
    the exchange serial (None: Taler's table has none); ``where``: what tells
    this kind's rows apart in a table two kinds share.
    """
    table: str
    row_table: Optional[str]
    serial: Optional[str]
    where: str = "TRUE"


# A spend of a coin whose denomination was revoked: Taler's coins helper has no
# table of its own for it; it is recorded as a row inconsistency of the spending
# row, with this diagnostic (docs/audit.md).
REVOKED_SPEND = "coin of a revoked denomination spent"
_IS_REVOKED = f"diagnostic LIKE '{REVOKED_SPEND}%'"

KINDS: dict[str, Kind] = {
    "reserve_balance_insufficient":
        Kind("auditor_reserve_balance_insufficient_inconsistency", None, None),
    "reserve_balance_summary_wrong":
        Kind("auditor_reserve_balance_summary_wrong_inconsistency", "=reserves", None),
    "reserve_not_closed":
        Kind("auditor_reserve_not_closed_inconsistency", "=reserves", None),
    "coin_overspent":
        Kind("auditor_coin_inconsistency", None, None),
    "denomination_key_validity_withdraw":
        Kind("auditor_denomination_key_validity_withdraw_inconsistency", "=reserves_out",
             "problem_row_id"),
    "revoked_denomination_spend":
        Kind("auditor_row_inconsistency", "row_table", "problem_row_id", _IS_REVOKED),
    "wire_out_inconsistency":
        Kind("auditor_wire_out_inconsistency", "=wire_out", "wire_out_serial_id"),
    "deposit_aggregation_lag":
        Kind("auditor_pending_deposits", "=batch_deposits", "batch_deposit_serial_id"),
    "amount_arithmetic_inconsistency":
        Kind("auditor_amount_arithmetic_inconsistency", None, "problem_row_id"),
    "row_inconsistency":
        Kind("auditor_row_inconsistency", "row_table", "problem_row_id", f"NOT {_IS_REVOKED}"),
    # Taler's table names no exchange table: the operation (one per signature
    # column, e.g. "deposit") stands in for it in the run's report.
    "bad_sig_loss":
        Kind("auditor_bad_sig_losses", "operation", "problem_row_id"),
    # The coins helper's reports on denominations (audit/coins_checks.py): Taler's
    # tables name the denomination by its hash only; the run's report adds its serial.
    "emergency":
        Kind("auditor_emergency", None, None),
    "emergency_by_count":
        Kind("auditor_emergency_by_count", None, None),
    "refresh_hanging":
        Kind("auditor_refreshes_hanging", "=refresh_commitments", "problem_row_id"),
    "denomination_without_sigs":
        Kind("auditor_denominations_without_sigs", None, None),
    # Taler's table names the purse, not its row: the report shows the purse_requests serial.
    "purse_not_closed":
        Kind("auditor_purse_not_closed_inconsistencies", "=purse_requests", None),
    # The merchant's confirmation itself is the finding: it stays while the exchange's
    # database lacks the deposit (audit_deposits; such findings are not inserted).
    "deposit_confirmation_missing":
        Kind("auditor_deposit_confirmations", "=auditor_deposit_confirmations", "row_id"),
}

_cursor_names = itertools.count(1)


class Units(int):
    """An amount in 1e-8 units; stored as auditor.taler_amount, reported as a string."""


class AmountJSON(TypedDict):
    """An amount without a currency, as the run's report shows it."""
    val: int
    frac: int
    negative: NotRequired[bool]


def one_row(conn: Conn, query: Query, params: Params | None = None) -> Row:
    """The row of a query that always returns one (an aggregate without GROUP BY)."""
    row: Row | None = conn.execute(query, params).fetchone()
    assert row is not None, "an aggregate query returned no row"
    return row


def scalar(conn: Conn, query: Query, params: Params | None = None) -> Any:
    """The one value of a query returning one row of one column."""
    return one_row(conn, query, params)[0]


def units(value: int | Decimal | None) -> int:
    """An int of 1e-8 units from SQL's numeric (None -> 0)."""
    return 0 if value is None else int(value)


def split(amount: int) -> tuple[int, int]:
    if amount < 0:
        raise ValueError(f"negative amount {amount} cannot be stored as a taler_amount")
    return divmod(int(amount), FRAC_BASE)


def fmt(amount: int | Decimal, currency: str | None = None) -> str | AmountJSON:
    """'KUDOS:1.5' with a currency, {"val", "frac"} without one."""
    if currency:
        return text_amount(amount, currency)
    val, frac = divmod(abs(int(amount)), FRAC_BASE)
    if amount < 0:
        return {"val": -val, "frac": frac, "negative": True}
    return {"val": val, "frac": frac}


def text_amount(amount: int | Decimal, currency: str | None = None) -> str:
    """'KUDOS:1.5' with a currency, '1.5' without one (diagnostics, the report)."""
    sign = "-" if amount < 0 else ""
    val, frac = divmod(abs(int(amount)), FRAC_BASE)
    text = f"{sign}{val}"
    if frac:
        text += "." + f"{frac:08d}".rstrip("0")
    return f"{currency}:{text}" if currency else text


def findings_table_of(kind: str) -> str:
    return KINDS[kind].table


class Check:
    """One check's increment: progress points read and moved, balance deltas, findings."""

    def __init__(self, name: str, ex: Conn, aud: Conn, now_us: int, currency: str | None = None,
                 bounds: dict[str, int] | None = None) -> None:
        self.name = name
        self.ex = ex          # exchange connection inside its REPEATABLE READ snapshot
        self.aud = aud        # auditor connection inside the check's transaction
        self.now_us = now_us
        self.currency = currency
        self.progress_before: dict[str, int] = {}
        self.progress: dict[str, int] = {}
        self.balance_deltas: dict[str, int] = {}
        self.findings: list[tuple[str, dict[str, Any]]] = []    # (kind, columns) to insert
        self.examined: dict[str, int] = {}    # exchange table -> rows examined
        self.bounds = bounds  # {table: last serial of a consistent cut}, None: no bound
        # Given by the run (None: the check or report that needs it is skipped).
        self.signatures: SignatureContext | None = None
        self.auditor_pub: bytes | None = None     # [auditor] PUBLIC_KEY
        # Set by a check that did not run, saying why (the run's report shows it).
        self.skipped: str | None = None
        # Pending-deposit findings the aggregation check deleted (paid since); not reported.
        self.settled = 0

    def hi(self, table: str) -> int:
        """Highest serial of ``table`` this run may examine (see audit.sync_cut)."""
        if self.bounds is None:
            return MAX_SERIAL
        return self.bounds.get(table, 0)

    # -- progress points ("next serial to process", as Taler's helpers) --------
    def load_progress(self, keys: tuple[str, ...]) -> None:
        # Not through Taler's auditor_do_get_auditor_progress: its body names the
        # table unqualified, and the audit runs with search_path pg_catalog only.
        rows = self.aud.execute(
            "SELECT progress_key, progress_offset FROM auditor.auditor_progress "
            "WHERE progress_key = ANY(%s)", (list(keys),)).fetchall()
        found = dict(rows)
        for key in keys:
            self.progress_before[key] = found.get(key, 0)
            self.progress[key] = found.get(key, 0)

    def next_serial(self, key: str) -> int:
        return self.progress[key]

    def processed(self, key: str, serial: int | None) -> None:
        """Rows up to ``serial`` are done: the next run starts after it."""
        if serial is not None and serial + 1 > self.progress[key]:
            self.progress[key] = serial + 1

    def count(self, table: str, n: int = 1) -> None:
        self.examined[table] = self.examined.get(table, 0) + n

    @property
    def moved(self) -> bool:
        return self.progress != self.progress_before

    # -- balances ---------------------------------------------------------------
    def add(self, key: str, amount: int) -> None:
        if amount:
            self.balance_deltas[key] = self.balance_deltas.get(key, 0) + int(amount)
        else:
            self.balance_deltas.setdefault(key, 0)

    # -- findings ---------------------------------------------------------------
    def finding(self, kind: str, **columns: Any) -> None:
        """A finding of ``kind`` with the columns of its Taler report table (KINDS).

        ``_table`` and ``_serial`` name the exchange row where Taler's table has
        no column for it (e.g. auditor_coin_inconsistency): shown in the run's
        report, not stored.
        """
        self.findings.append((kind, columns))

    def report_findings(self) -> list[dict[str, Any]]:
        return [report_entry(kind, cols, self.currency) for kind, cols in self.findings]

    # -- exchange reads -----------------------------------------------------------
    def stream(self, query: Query, params: Params | None = None,
               size: int = 5000) -> Iterator[list[Row]]:
        """Rows of an exchange query in batches, through a server-side cursor."""
        name = f"taler_ops_audit_{next(_cursor_names)}"
        with self.ex.cursor(name=name) as cur:
            cur.itersize = size
            cur.execute(query, params or {})
            while True:
                rows = cur.fetchmany(size)
                if not rows:
                    return
                yield rows

    # -- writing, inside the auditor transaction -------------------------------------
    def write(self) -> None:
        self._write_balances()
        self._write_findings()
        self._write_progress()

    def _write_balances(self) -> None:
        keys = [k for k, v in self.balance_deltas.items()]
        if not keys:
            return
        have = dict(self.aud.execute(
            f"SELECT balance_key, {num('balance_value')} FROM auditor.auditor_balances "
            "WHERE balance_key = ANY(%s) FOR UPDATE", (keys,)).fetchall())
        rows = []
        for key in sorted(keys):
            new = units(have.get(key)) + self.balance_deltas[key]
            if key in have and not self.balance_deltas[key]:
                continue
            rows.append((key, *split(max(new, 0))))
        with self.aud.cursor() as cur:
            cur.executemany(
                "INSERT INTO auditor.auditor_balances (balance_key, balance_value) "
                "VALUES (%s, ROW(%s, %s)::auditor.taler_amount) ON CONFLICT (balance_key) "
                "DO UPDATE SET balance_value = EXCLUDED.balance_value", rows)

    def _write_findings(self) -> None:
        by_table: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
        for kind, cols in self.findings:
            if cols.get("_stored"):
                continue            # the row is already there (deposit confirmations)
            cols = {k: v for k, v in cols.items() if not k.startswith("_")}
            by_table.setdefault((findings_table_of(kind), tuple(cols)), []).append(cols)
        for (table, names), rows in by_table.items():
            placeholders = []
            for name in names:
                if isinstance(rows[0][name], Units):
                    placeholders.append(sql.SQL("ROW(%s, %s)::auditor.taler_amount"))
                else:
                    placeholders.append(sql.SQL("%s"))
            query = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.Identifier("auditor", table),
                sql.SQL(", ").join(map(sql.Identifier, names)),
                sql.SQL(", ").join(placeholders))
            params = []
            for row in rows:
                values: list[Any] = []
                for name in names:
                    value = row[name]
                    values.extend(split(value) if isinstance(value, Units) else (value,))
                params.append(values)
            with self.aud.cursor() as cur:
                cur.executemany(query, params)

    def _write_progress(self) -> None:
        rows = [(k, v) for k, v in self.progress.items() if v != self.progress_before[k]]
        if rows:
            with self.aud.cursor() as cur:
                cur.executemany(
                    "INSERT INTO auditor.auditor_progress (progress_key, progress_offset) "
                    "VALUES (%s, %s) ON CONFLICT (progress_key) DO UPDATE "
                    "SET progress_offset = EXCLUDED.progress_offset", rows)


def report_entry(kind: str, cols: dict[str, Any], currency: str | None = None) -> dict[str, Any]:
    """A finding as the JSON report shows it: kind, table, serial and the details."""
    info = KINDS[kind]
    table_col, serial_col = info.row_table, info.serial
    if table_col is None:
        table = cols.get("_table")
    elif table_col.startswith("="):
        table = table_col[1:]
    else:
        table = cols.get(table_col)
    entry = {"kind": kind, "taler_table": info.table, "table": table,
             "serial": cols.get(serial_col) if serial_col else cols.get("_serial")}
    for name, value in cols.items():
        if name in (table_col, serial_col) or name.startswith("_"):
            continue
        if isinstance(value, Units):
            entry[name] = fmt(value, currency)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            entry[name] = bytes(value).hex()
        else:
            entry[name] = value
    return entry
