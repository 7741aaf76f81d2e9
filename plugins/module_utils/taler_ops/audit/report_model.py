"""The shape of the report's model: what ``report.collect`` returns and the JSON form is.

Plain dicts at run time (the JSON form dumps them as they are, the HTML template
reads them by key); the types say which keys each part has.  Amounts are Taler
amount strings, times UTC strings (report_values); None is shown as "-".
"""

from decimal import Decimal
from typing import Any, NotRequired, TypedDict

# A database row whose columns the query names (report_read).
Row = tuple[Any, ...]
# A finding's cell as the report shows it (report_read._cell).
Cell = str | int | None


# -- read from the auditor database (report_read.auditor_part) --------------------------
class ColumnInfo(TypedDict):
    name: str
    kind: str
    label: str


class MeasureTotal(TypedDict):
    name: str
    label: str
    category: str
    amount: str


class SectionPart(TypedDict):
    """One of Taler's report tables: its findings and the sums of its measures."""
    table: str
    title: str
    helper: str
    what: str
    columns: list[ColumnInfo]
    # why the table could not be read (missing, or not Taler's shape)
    unavailable: NotRequired[str]
    open: int
    suppressed: int
    max_row_id: int | None
    measures: list[MeasureTotal]
    # row_id and one cell per column, by column name
    rows: list[dict[str, Cell]]
    suppressed_rows: list[dict[str, Cell]]
    truncated: bool


class Patch(TypedDict):
    name: str
    applied: str
    by: str


class LastAudit(TypedDict):
    time: str | None
    source: str


class HistoryRows(TypedDict):
    """taler_ops.audit_runs as read, thinned to report_read.HISTORY_POINTS rows."""
    rows: list[Row]
    recorded: int
    reason: str | None


class AuditorRaw(TypedDict):
    """Everything read from the auditor database, before report.build_model."""
    patches: list[Patch]
    patch_level: str | None
    progress: list[tuple[str, int]]
    balances: list[tuple[str, Decimal | None]]
    last_audit: LastAudit
    sections: list[SectionPart]
    # (hash, balance, loss, issued, risk, recoup loss)
    pending: list[Row]
    # (hash, expired, revenue, loss)
    historic: list[Row]
    # (from, until, profits)
    reserve_summary: list[Row]
    # (count, then the sums report_read asked for)
    reserves: Row | None
    purses: Row | None
    signkeys: int | None
    history: HistoryRows


# -- read from the safe copy (report_read.sync_part) ------------------------------------
class Watermark(TypedDict):
    table: str
    last_serial: int
    complete_serial: int | None
    rows_copied: int
    updated: str


# "from" is a keyword: the functional form.
Hole = TypedDict("Hole", {"table": str, "from": int, "to": int, "seen": str})


class Halt(TypedDict):
    table: str
    serial: int
    rule: str
    message: str
    halted: str


class SyncState(TypedDict):
    """The sync's state on the safe copy, or why it is not ``available``."""
    available: bool
    database: NotRequired[str]
    reason: NotRequired[str]
    tables: NotRequired[list[Watermark]]
    last_sync: NotRequired[str | None]
    holes: NotRequired[list[Hole]]
    halts: NotRequired[list[Halt]]
    cleared_halts: NotRequired[int]


# -- the model (report.build_model) -------------------------------------------------------
class Since(TypedDict):
    """An earlier JSON report (--since): its per-table marks (largest row_id)."""
    report: str
    generated: str
    marks: dict[str, int]


class SinceRef(TypedDict):
    report: str
    generated: str


class ProgressEntry(TypedDict):
    key: str
    helper: str
    table: str | None
    next: int
    covered: str
    # with the sync's state: the table's watermark, and how far the audit is behind it
    synced: NotRequired[int]
    behind: NotRequired[int]


class Audited(TypedDict):
    exchange_url: str | None
    currency: str | None
    auditor_database: str
    safe_copy: str | None
    patch_level: str | None
    patches: list[Patch]
    last_audit: str | None
    last_audit_source: str
    last_sync: str | None
    progress: list[ProgressEntry]
    exchange_signkeys: int | None


class MoneyEntry(TypedDict):
    label: str
    table: str
    amount: str


class Summary(TypedDict):
    findings_open: int
    findings_suppressed: int
    tables_with_findings: int
    loss_total: str
    risk_total: str
    at_issue_total: str
    losses: list[MoneyEntry]
    risks: list[MoneyEntry]
    at_issue: list[MoneyEntry]
    balance_losses: str
    balance_risk: str
    fee_revenue: str
    unreadable_tables: list[str]


class Balance(TypedDict):
    key: str
    helper: str
    category: str
    value: str | None


class HistoricDenomination(TypedDict):
    denomination: str
    expired: str
    revenue: str
    loss: str


class PendingDenomination(TypedDict):
    denomination: str
    balance: str
    loss: str
    issued: int
    risk: str
    recoup_loss: str


ReserveSummary = TypedDict("ReserveSummary", {"from": str, "until": str, "profits": str})


class ReservesTotal(TypedDict):
    count: int
    balance: str
    loss: str
    fee_balance: str


class PursesTotal(TypedDict):
    count: int
    balance: str
    target: str


class Revenue(TypedDict):
    fee_revenue: list[Balance]
    historic_denominations: list[HistoricDenomination]
    pending_denominations: list[PendingDenomination]
    reserve_summary: list[ReserveSummary]
    reserves: ReservesTotal | None
    purses: PursesTotal | None


class HistoryPoint(TypedDict):
    """One row of taler_ops.audit_runs: the summary's figures when a run ended."""
    run_id: int
    started: str
    ended: str
    runs: int
    rows_examined: int
    findings_open: int
    findings_suppressed: int
    open_by_table: dict[str, int]
    loss_total: str
    risk_total: str
    at_issue_total: str
    fee_revenue: str
    sync_last_copy: str | None
    # how long the sync had not copied a row when the run ended
    sync_age_seconds: int | None
    sync_rows_beyond_cut: int | None


class History(TypedDict):
    available: bool
    reason: str | None
    recorded: int
    points: list[HistoryPoint]


class Model(TypedDict):
    format: int
    generated: str
    audited: Audited
    since: SinceRef | None
    summary: Summary
    sections: list[SectionPart]
    balances: list[Balance]
    revenue: Revenue
    sync: SyncState
    history: History
