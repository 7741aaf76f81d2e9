"""Prometheus metrics from a status report (``status.collect``).

Written for node_exporter's textfile collector (atomically: temp file + rename)
or served over HTTP by a long-running process.  Metric names are documented in
docs/operations.md.
"""

import datetime
import os
import tempfile
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric

from .status import StatusReport

# Parts a report can cover; several writers (the sync daemon, a scheduled
# `status -a`, `status -p`) may share one node_exporter textfile directory.
PARTS = ("publisher", "ingres", "safe_copy", "audit")


def _gauge(reg: CollectorRegistry, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
    return Gauge(name, doc, labels, registry=reg)


class _Families:
    """A collector of ready-made metric families (a counter read from the database)."""

    def __init__(self, *families: Metric) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def registry_from(report: StatusReport) -> CollectorRegistry:
    reg = CollectorRegistry()
    up = _gauge(reg, "taler_ops_instance_up", "1 if the PostgreSQL instance answers", ["instance"])
    for part in ("publisher", "ingres", "safe_copy"):
        if part in report:
            up.labels(part).set(1 if report[part]["instance"]["up"] else 0)

    if "slots" in report.get("publisher", {}):
        lag = _gauge(reg, "taler_ops_slot_lag_bytes",
                     "WAL the subscriber has not confirmed yet", ["slot"])
        kept = _gauge(reg, "taler_ops_slot_retained_bytes", "WAL retained for the slot", ["slot"])
        active = _gauge(reg, "taler_ops_slot_active", "1 if a consumer is connected", ["slot"])
        lost = _gauge(reg, "taler_ops_slot_lost", "1 if the slot's WAL is lost or unreserved",
                      ["slot"])
        # NULL unless max_slot_wal_keep_size limits the slot: then no series at all.
        safe = _gauge(reg, "taler_ops_slot_safe_wal_bytes",
                      "WAL that may still be written before the slot is lost", ["slot"])
        for s in report["publisher"]["slots"]:
            lag.labels(s["slot_name"]).set(s["lag_bytes"] or 0)
            kept.labels(s["slot_name"]).set(s["retained_bytes"] or 0)
            active.labels(s["slot_name"]).set(1 if s["active"] else 0)
            lost.labels(s["slot_name"]).set(1 if s["wal_status"] in ("lost", "unreserved") else 0)
            if s.get("safe_wal_size") is not None:
                safe.labels(s["slot_name"]).set(s["safe_wal_size"])

    if "subscriptions" in report.get("ingres", {}):
        worker = _gauge(reg, "taler_ops_subscription_worker_up",
                        "1 if the subscription is enabled and its apply worker runs",
                        ["subscription"])
        errors = _gauge(reg, "taler_ops_subscription_apply_errors",
                        "apply errors since the statistics were reset", ["subscription"])
        age = _gauge(reg, "taler_ops_subscription_last_message_age_seconds",
                     "seconds since the last message from the publisher", ["subscription"])
        for s in report["ingres"]["subscriptions"]:
            worker.labels(s["name"]).set(1 if s["enabled"] and s["worker_pid"] else 0)
            errors.labels(s["name"]).set(s["apply_error_count"] or 0)
            if s.get("last_msg_age_seconds") is not None:
                age.labels(s["name"]).set(s["last_msg_age_seconds"])

    rx = report.get("ingres", {}).get("standby")
    if rx is not None:
        _gauge(reg, "taler_ops_standby_receiver_up",
               "1 if the ingres standby's WAL receiver runs (streaming mode)").set(
            1 if rx["receiver_pid"] and rx["status"] in (None, "streaming") else 0)
        if rx["replay_lag_bytes"] is not None:
            _gauge(reg, "taler_ops_standby_replay_lag_bytes",
                   "WAL received by the ingres standby but not replayed yet").set(
                rx["replay_lag_bytes"])
        if rx.get("last_msg_age_seconds") is not None:
            _gauge(reg, "taler_ops_standby_last_message_age_seconds",
                   "seconds since the standby last heard from the primary").set(
                rx["last_msg_age_seconds"])

    sync = report.get("sync")
    if sync and "tables" in sync:
        _gauge(reg, "taler_ops_sync_halted", "1 if the sync stopped on an invariant violation"
               ).set(1 if sync.get("halted") else 0)
        mark = _gauge(reg, "taler_ops_sync_watermark", "last serial copied", ["table"])
        smax = _gauge(reg, "taler_ops_sync_source_max_serial", "largest serial on ingres",
                      ["table"])
        lrows = _gauge(reg, "taler_ops_sync_lag_rows", "serials not yet copied", ["table"])
        lsecs = _gauge(reg, "taler_ops_sync_lag_seconds",
                       "seconds rows have waited since the table last advanced", ["table"])
        # A counter, unlike the watermark: rows actually copied, so rate() is rows/s.
        copied = CounterMetricFamily("taler_ops_sync_rows_copied",
                                     "rows copied into the safe copy", labels=["table"])
        holes = _gauge(reg, "taler_ops_sync_open_holes",
                       "serials missing below the watermark, still searched on every pass",
                       ["table"])
        hole_age = _gauge(reg, "taler_ops_sync_oldest_open_hole_seconds",
                          "age of the oldest open hole (0 without one)", ["table"])
        for table, row in sync["tables"].items():
            mark.labels(table).set(row["watermark"])
            copied.add_metric([table], row.get("rows_copied") or 0)
            holes.labels(table).set(row.get("open_holes", 0))
            hole_age.labels(table).set(row.get("oldest_hole_seconds") or 0)
            if "source_max" in row:
                smax.labels(table).set(row["source_max"])
                lrows.labels(table).set(row["lag_rows"])
                lsecs.labels(table).set(row["lag_seconds"] or 0)
        reg.register(_Families(copied))
        last_pass = sync.get("last_pass")
        if last_pass is not None:
            _gauge(reg, "taler_ops_sync_last_pass_timestamp_seconds",
                   "when a watermark last moved").set(last_pass.timestamp())

    audit = report.get("audit", {})
    if "progress" in audit:
        prog = _gauge(reg, "taler_ops_audit_progress", "next serial the check examines", ["key"])
        for key, offset in audit["progress"].items():
            prog.labels(key).set(offset)
        found = _gauge(reg, "taler_ops_audit_findings", "unsuppressed findings", ["kind"])
        for kind, count in audit["findings"].items():
            found.labels(kind).set(count)

    # Labelled by the parts the report covers, so that two writers on one host
    # (e.g. the sync daemon and a scheduled `status -a`) never export the same
    # series, which node_exporter's textfile collector rejects.
    parts = "+".join(p for p in PARTS if p in report)
    _gauge(reg, "taler_ops_healthy", "1 if status found no problem", ["parts"]).labels(
        parts).set(1 if report["healthy"] else 0)
    # When the report was made: a metrics file nobody rewrites still serves its
    # last values, and only this timestamp ages (alert TalerOpsMetricsStale).
    _gauge(reg, "taler_ops_report_timestamp_seconds",
           "when the status report behind these metrics was made (Unix time)",
           ["parts"]).labels(parts).set(datetime.datetime.fromisoformat(report["time"]).timestamp())
    return reg


def render(report: StatusReport) -> str:
    return generate_latest(registry_from(report)).decode()


def write_textfile(report: StatusReport, path: str) -> None:
    """Atomically replace ``path`` so node_exporter never reads half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".taler-ops-", suffix=".prom")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(render(report))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
