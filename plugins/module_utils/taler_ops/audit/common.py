"""What every audit check shares: amounts, progress points, balances and findings.

Amounts are Python ints of 1e-8 units (Taler's frac base), so arithmetic is
exact and has no overflow; SQL hands them over as numeric.  A check collects
everything it wants to write in a ``Check`` and ``Check.write`` stores it in
the auditor transaction that also moves the check's progress points, so a
crash loses a whole increment or nothing.
"""

import itertools
from typing import NamedTuple, Optional

from psycopg import sql

from ..schema.exchange_schema import AMOUNT_FRAC_BASE as FRAC_BASE
from ..schema.exchange_schema import amount_units as num  # noqa: F401 (used by the checks)

MAX_SERIAL = 2 ** 63 - 1

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

KINDS = {
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


def units(value):
    """An int of 1e-8 units from SQL's numeric (None -> 0)."""
    return 0 if value is None else int(value)


def split(amount):
    if amount < 0:
        raise ValueError(f"negative amount {amount} cannot be stored as a taler_amount")
    return divmod(int(amount), FRAC_BASE)


def fmt(amount, currency=None):
    """'KUDOS:1.5' with a currency, {"val", "frac"} without one."""
    sign = "-" if amount < 0 else ""
    val, frac = divmod(abs(int(amount)), FRAC_BASE)
    if not currency:
        if sign:
            return {"val": -val, "frac": frac, "negative": True}
        return {"val": val, "frac": frac}
    text = f"{sign}{val}"
    if frac:
        text += "." + f"{frac:08d}".rstrip("0")
    return f"{currency}:{text}"


def text_amount(amount, currency=None):
    """'KUDOS:1.5' with a currency, '1.5' without one (for diagnostics)."""
    shown = fmt(amount, currency or "X")
    return shown if currency else shown.split(":", 1)[1]


def findings_table_of(kind):
    return KINDS[kind].table


class Check:
    """One check's increment: progress points read and moved, balance deltas, findings."""

    def __init__(self, name, ex, aud, now_us, currency=None, bounds=None):
        self.name = name
        self.ex = ex          # exchange connection inside its REPEATABLE READ snapshot
        self.aud = aud        # auditor connection inside the check's transaction
        self.now_us = now_us
        self.currency = currency
        self.progress_before = {}
        self.progress = {}
        self.balance_deltas = {}
        self.findings = []    # (kind, columns) to insert
        self.examined = {}    # exchange table -> rows examined
        self.bounds = bounds  # {table: last serial of a consistent cut}, None: no bound

    def hi(self, table):
        """Highest serial of ``table`` this run may examine (see audit.sync_cut)."""
        if self.bounds is None:
            return MAX_SERIAL
        return self.bounds.get(table, 0)

    # -- progress points ("next serial to process", as Taler's helpers) --------
    def load_progress(self, keys):
        # Not through Taler's auditor_do_get_auditor_progress: its body names the
        # table unqualified, and the audit runs with search_path pg_catalog only.
        rows = self.aud.execute(
            "SELECT progress_key, progress_offset FROM auditor.auditor_progress "
            "WHERE progress_key = ANY(%s)", (list(keys),)).fetchall()
        found = dict(rows)
        for key in keys:
            self.progress_before[key] = found.get(key, 0)
            self.progress[key] = found.get(key, 0)

    def next_serial(self, key):
        return self.progress[key]

    def processed(self, key, serial):
        """Rows up to ``serial`` are done: the next run starts after it."""
        if serial is not None and serial + 1 > self.progress[key]:
            self.progress[key] = serial + 1

    def count(self, table, n=1):
        self.examined[table] = self.examined.get(table, 0) + n

    @property
    def moved(self):
        return self.progress != self.progress_before

    # -- balances ---------------------------------------------------------------
    def add(self, key, amount):
        if amount:
            self.balance_deltas[key] = self.balance_deltas.get(key, 0) + int(amount)
        else:
            self.balance_deltas.setdefault(key, 0)

    # -- findings ---------------------------------------------------------------
    def finding(self, kind, **columns):
        """A finding of ``kind`` with the columns of its Taler report table (KINDS).

        ``_table`` and ``_serial`` name the exchange row where Taler's table has
        no column for it (e.g. auditor_coin_inconsistency): shown in the run's
        report, not stored.
        """
        self.findings.append((kind, columns))

    def report_findings(self):
        return [report_entry(kind, cols, self.currency) for kind, cols in self.findings]

    # -- exchange reads -----------------------------------------------------------
    def stream(self, query, params=None, size=5000):
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
    def write(self):
        self._write_balances()
        self._write_findings()
        self._write_progress()

    def _write_balances(self):
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

    def _write_findings(self):
        by_table = {}
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
                values = []
                for name in names:
                    value = row[name]
                    values.extend(split(value) if isinstance(value, Units) else (value,))
                params.append(values)
            with self.aud.cursor() as cur:
                cur.executemany(query, params)

    def _write_progress(self):
        rows = [(k, v) for k, v in self.progress.items() if v != self.progress_before[k]]
        if rows:
            with self.aud.cursor() as cur:
                cur.executemany(
                    "INSERT INTO auditor.auditor_progress (progress_key, progress_offset) "
                    "VALUES (%s, %s) ON CONFLICT (progress_key) DO UPDATE "
                    "SET progress_offset = EXCLUDED.progress_offset", rows)


def report_entry(kind, cols, currency=None):
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
