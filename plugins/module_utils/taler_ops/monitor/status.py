"""``taler-ops status``: is replication healthy, how far behind are sync and audit?

Everything is read-only.  Each part is optional, so the same command serves
the exchange operator (publisher only) and the auditor (ingres, safe copy,
auditor database).  The ingres copy is either a logical subscriber or a hot
standby of the primary (streaming replication); ``ingres.mode`` says which.
``healthy`` is false when an instance is down, a slot is lost or inactive, a
subscription has no worker or is disabled, a standby has no streaming WAL
receiver or its replay is paused, the sync is halted, or a lag exceeds the
operator's threshold.
"""

import datetime
from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, TypedDict

import psycopg
from psycopg import sql

from ..schema import auditor_schema, registry
from ..ingres import replication
from ..db import connect
from ..errors import DatabaseNotReady

SLOT_BAD = ("lost", "unreserved")

# The instance, slot, subscription and WAL receiver dicts are ingres.replication's
# (rows of PostgreSQL's views, with their keys; status adds the ages): read here only.
Instance = Mapping[str, Any]
ViewRow = Mapping[str, Any]


class PublisherPart(TypedDict):
    instance: Instance
    problems: list[str]
    slots: NotRequired[Sequence[ViewRow]]


class IngresPart(TypedDict):
    instance: Instance
    problems: list[str]
    mode: NotRequired[str]                  # "logical" or "streaming"
    subscriptions: NotRequired[Sequence[ViewRow]]
    standby: NotRequired[ViewRow]


class SafeCopyPart(TypedDict):
    instance: Instance
    problems: list[str]


class SyncTable(TypedDict):
    watermark: int
    rows_copied: int
    # serials missing below the watermark that a later pass still looks into
    open_holes: int
    oldest_hole_seconds: float | None
    # with the ingres copy readable:
    source_max: NotRequired[int]
    lag_rows: NotRequired[int]
    lag_seconds: NotRequired[float | None]


class SyncPart(TypedDict):
    problems: list[str]
    tables: dict[str, SyncTable]
    # with the safe copy's sync state readable:
    halted: NotRequired[bool]
    halt: NotRequired[ViewRow | None]       # the newest open halt (taler_ops.sync_halts)
    open_holes: NotRequired[int]
    last_pass: NotRequired[datetime.datetime | None]
    # with the ingres copy readable too:
    lag_rows: NotRequired[int]
    lag_seconds: NotRequired[float]


class AuditPart(TypedDict):
    problems: list[str]
    progress: NotRequired[dict[str, int]]
    findings: NotRequired[dict[str, int]]   # unsuppressed rows per report table


class Parts(TypedDict, total=False):
    """The parts a report covers: those its caller named databases for."""
    publisher: PublisherPart
    ingres: IngresPart
    safe_copy: SafeCopyPart
    sync: SyncPart
    audit: AuditPart


class StatusReport(Parts):
    time: str
    problems: list[str]                     # every part's, in the order above
    healthy: bool


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _age(ts: datetime.datetime | None, now: datetime.datetime) -> float | None:
    return None if ts is None else max(0.0, (now - ts).total_seconds())


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def publisher(uri: str, slot_name: str | None = None) -> PublisherPart:
    part: PublisherPart = {"instance": replication.instance(uri, "exchange database"),
                           "problems": []}
    if not part["instance"]["up"]:
        part["problems"].append("exchange database is down")
        return part
    with connect(uri, "exchange database", autocommit=True) as conn:
        part["slots"] = replication.publisher_slots(conn, slot_name)
    if slot_name and not part["slots"]:
        part["problems"].append(f"replication slot {slot_name} does not exist")
    for slot in part["slots"]:
        if slot["wal_status"] in SLOT_BAD:
            part["problems"].append(f"slot {slot['slot_name']} is {slot['wal_status']}: the "
                                    "subscriber can no longer catch up")
        elif not slot["active"]:
            part["problems"].append(f"slot {slot['slot_name']} has no consumer")
    return part


def ingres(uri: str) -> IngresPart:
    """The ingres copy: a logical subscriber, or a hot standby (pg_is_in_recovery())."""
    part: IngresPart = {"instance": replication.instance(uri, "ingres database"), "problems": []}
    if not part["instance"]["up"]:
        part["problems"].append("ingres database is down")
        return part
    part["mode"] = "streaming" if part["instance"]["in_recovery"] else "logical"
    if part["mode"] == "streaming":
        return _standby(uri, part)
    now = _now()
    try:
        with connect(uri, "ingres database", autocommit=True) as conn:
            subs = replication.subscriptions(conn)
    except psycopg.Error as exc:
        # e.g. the sync's role may read the exchange tables but not every catalog
        part["problems"].append(f"cannot read the subscriptions: {_one_line(exc)}")
        return part
    for sub in subs:
        sub["last_msg_age_seconds"] = _age(sub["last_msg_receipt_time"], now)
        if not sub["enabled"]:
            part["problems"].append(f"subscription {sub['name']} is disabled (apply error?)")
        elif not sub["worker_pid"]:
            part["problems"].append(f"subscription {sub['name']} has no apply worker")
        # apply_error_count is cumulative history (also after a repaired link cut):
        # reported and exported as a metric for rate alerts, not a problem by itself.
    part["subscriptions"] = subs
    return part


def _standby(uri: str, part: IngresPart) -> IngresPart:
    now = _now()
    try:
        with connect(uri, "ingres database", autocommit=True) as conn:
            rx = replication.wal_receiver(conn)
    except psycopg.Error as exc:
        part["problems"].append(f"cannot read the WAL receiver: {_one_line(exc)}")
        return part
    rx["last_msg_age_seconds"] = _age(rx["last_msg_receipt_time"], now)
    rx["last_replay_age_seconds"] = _age(rx["last_replay_time"], now)
    part["standby"] = rx
    if not rx["receiver_pid"]:
        part["problems"].append("ingres standby has no WAL receiver: it is not connected to "
                                "the exchange primary")
    elif rx["status"] is not None and rx["status"] != "streaming":
        part["problems"].append(f"ingres standby's WAL receiver is {rx['status']}, not streaming")
    if rx["replay_paused"]:
        part["problems"].append("WAL replay is paused on the ingres standby")
    return part


def _exists(conn: psycopg.Connection[Any], relation: str) -> bool:
    """Whether ``relation`` (schema-qualified) exists."""
    row = conn.execute(sql.SQL("SELECT to_regclass({})").format(sql.Literal(relation))).fetchone()
    return bool(row and row[0])


def _max_serials(conn: psycopg.Connection[Any]) -> dict[str, int]:
    query = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}, (SELECT max({}) FROM {})").format(
            sql.Literal(e.name), sql.Identifier(e.serial), sql.Identifier("exchange", e.name))
        for e in registry.REPLICATED)
    return {name: value or 0 for name, value in conn.execute(query).fetchall()}


def sync(source_uri: str, dest_uri: str, max_lag_rows: int | None = None,
         max_lag_seconds: float | None = None) -> SyncPart:
    """Per-table watermark vs ingres max, lag in rows and seconds, and the halt if any."""
    part: SyncPart = {"problems": [], "tables": {}}
    now = _now()
    try:
        with connect(dest_uri, "safe copy", autocommit=True) as dst:
            cur = dst.cursor(row_factory=psycopg.rows.dict_row)
            marks = {r["table_name"]: r for r in cur.execute(
                "SELECT table_name, last_serial, rows_copied, updated_tsz "
                "FROM taler_ops.sync_watermarks")}
            holes: dict[str, ViewRow] = {}
            if _exists(dst, "taler_ops.sync_holes"):
                holes = {r["table_name"]: r for r in cur.execute(
                    "SELECT table_name, count(*) AS open_holes, min(seen_tsz) AS oldest "
                    "FROM taler_ops.sync_holes WHERE expired_tsz IS NULL GROUP BY 1")}
            halts: Sequence[ViewRow] = []
            if _exists(dst, "taler_ops.sync_halts"):
                halts = cur.execute(
                    "SELECT table_name, serial, rule, message, halted_tsz FROM taler_ops.sync_halts "
                    "WHERE cleared_tsz IS NULL ORDER BY halt_id DESC LIMIT 1").fetchall()
    except DatabaseNotReady as exc:
        part["problems"].append(str(exc))
        return part
    except psycopg.Error as exc:
        part["problems"].append(f"safe copy has no sync state: {_one_line(exc)}")
        return part
    part["halted"] = bool(halts)
    part["halt"] = halts[0] if halts else None
    if halts:
        h = halts[0]
        part["problems"].append(f"sync halted: table={h['table_name']} serial={h['serial']} "
                                f"rule={h['rule']}: {h['message']}")
    part["open_holes"] = sum(h["open_holes"] for h in holes.values())
    part["last_pass"] = max((m["updated_tsz"] for m in marks.values()), default=None)
    try:
        with connect(source_uri, "ingres database", autocommit=True) as src:
            maxima = _max_serials(src)
    except DatabaseNotReady as exc:
        part["problems"].append(str(exc))
        maxima = None
    for entry in registry.REPLICATED:
        mark = marks.get(entry.name)
        watermark = mark["last_serial"] if mark else 0
        hole = holes.get(entry.name)
        row: SyncTable = {"watermark": watermark, "rows_copied": mark["rows_copied"] if mark else 0,
                          "open_holes": hole["open_holes"] if hole else 0,
                          "oldest_hole_seconds": _age(hole["oldest"], now) if hole else None}
        if maxima is not None:
            row["source_max"] = maxima[entry.name]
            row["lag_rows"] = max(0, maxima[entry.name] - watermark)
            # Staleness: how long the table has had rows waiting since it last advanced.
            row["lag_seconds"] = (_age(mark["updated_tsz"], now) if mark else None) \
                if row["lag_rows"] else 0.0
        part["tables"][entry.name] = row
    if maxima is not None:
        lag_rows = sum(t["lag_rows"] for t in part["tables"].values())
        lag_secs = max((t["lag_seconds"] or 0.0 for t in part["tables"].values()), default=0.0)
        part["lag_rows"], part["lag_seconds"] = lag_rows, lag_secs
        if max_lag_rows is not None and lag_rows > max_lag_rows:
            part["problems"].append(f"sync lags {lag_rows} rows (limit {max_lag_rows})")
        if max_lag_seconds is not None and lag_secs > max_lag_seconds:
            part["problems"].append(f"sync lags {lag_secs:.0f} s (limit {max_lag_seconds})")
    return part


def audit(auditor_uri: str) -> AuditPart:
    part: AuditPart = {"problems": []}
    try:
        with connect(auditor_uri, "auditor database", autocommit=True) as conn:
            part["progress"] = dict(conn.execute(
                "SELECT progress_key, progress_offset FROM auditor.auditor_progress "
                "ORDER BY 1").fetchall())
            query = sql.SQL(" UNION ALL ").join(
                sql.SQL("SELECT {}, count(*) FILTER (WHERE NOT suppressed) FROM {}").format(
                    sql.Literal(t), sql.Identifier("auditor", t))
                for t in auditor_schema.REPORT_TABLES)
            part["findings"] = dict(conn.execute(query).fetchall())
    except DatabaseNotReady as exc:
        part["problems"].append(str(exc))
    except psycopg.Error as exc:
        part["problems"].append(f"auditor database unreadable: {_one_line(exc)}")
    return part


def collect(publisher_uri: str | None = None, slot_name: str | None = None,
            ingres_uri: str | None = None, safe_uri: str | None = None,
            auditor_uri: str | None = None, max_lag_rows: int | None = None,
            max_lag_seconds: float | None = None) -> StatusReport:
    time = _now().isoformat()
    parts: Parts = {}
    if publisher_uri:
        parts["publisher"] = publisher(publisher_uri, slot_name)
    if ingres_uri:
        parts["ingres"] = ingres(ingres_uri)
    if safe_uri:
        safe: SafeCopyPart = {"instance": replication.instance(safe_uri, "safe copy"),
                              "problems": []}
        parts["safe_copy"] = safe
        if not safe["instance"]["up"]:
            safe["problems"].append("safe copy database is down")
        elif ingres_uri:
            parts["sync"] = sync(ingres_uri, safe_uri, max_lag_rows, max_lag_seconds)
    if auditor_uri:
        parts["audit"] = audit(auditor_uri)
    problems = [p for part in (parts.get("publisher"), parts.get("ingres"),
                               parts.get("safe_copy"), parts.get("sync"), parts.get("audit"))
                if part is not None for p in part["problems"]]
    return {"time": time, **parts, "problems": problems, "healthy": not problems}
