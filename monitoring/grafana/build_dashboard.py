#!/usr/bin/env python3
"""Write monitoring/grafana/taler-ops.json, the Grafana dashboard of taler-ops' metrics.

The JSON is generated so that its ~25 panels stay readable here; the committed file is
what operators import, and tests/test_monitoring.py checks the two agree.  Run
`python3 monitoring/grafana/build_dashboard.py` after changing this file.

Queries use only metrics that plugins/module_utils/taler_ops/monitor/metrics.py exports (also
checked by the test).  `$instance` is the scrape target (the node_exporter whose
textfile collector serves the taler-ops files); taler_ops_instance_up's own label
`instance` arrives as `exported_instance`.
"""

import json
import os

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$instance"'
WIDTH = 24


class Layout:
    """Places panels left to right in rows of 24 grid units."""

    def __init__(self):
        self.panels, self.x, self.y, self.row_h = [], 0, 0, 0

    def row(self, title):
        self._newline()
        self._add({"type": "row", "title": title, "collapsed": False, "panels": []}, WIDTH, 1)
        self._newline()

    def add(self, panel, w, h):
        if self.x + w > WIDTH:
            self._newline()
        self._add(panel, w, h)

    def _add(self, panel, w, h):
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)

    def _newline(self):
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0


def target(expr, legend="", ref="A", instant=False):
    t = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}
    if instant:
        t.update(instant=True, range=False, format="table")
    return t


def panel(kind, title, targets, unit="short", description="", **options):
    p = {"type": kind, "title": title, "datasource": DS, "description": description,
         "targets": targets,
         "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}}
    p.update(options)
    return p


def thresholds(*steps):
    """steps: (value or None for the base, colour)."""
    return {"mode": "absolute",
            "steps": [{"value": v, "color": c} for v, c in steps]}


def stat(title, targets, unit="short", steps=((None, "green"),), mappings=(), description=""):
    p = panel("stat", title, targets, unit, description,
              options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                         "values": False},
                       "colorMode": "background", "graphMode": "none", "textMode": "auto"})
    p["fieldConfig"]["defaults"].update(thresholds=thresholds(*steps), mappings=list(mappings))
    return p


def series(title, targets, unit="short", description=""):
    return panel("timeseries", title, targets, unit, description,
                 options={"legend": {"displayMode": "table", "placement": "right",
                                     "calcs": ["lastNotNull", "max"]},
                          "tooltip": {"mode": "multi", "sort": "desc"}})


def flag_mapping(zero, one):
    """Show a 0/1 gauge as words."""
    return {"type": "value", "options": {"0": {"text": zero, "index": 0},
                                         "1": {"text": one, "index": 1}}}


def build():
    lay = Layout()

    lay.row("Overview")
    lay.add(stat("Sync", [target(f"max(taler_ops_sync_halted{{{SEL}}})")],
                 steps=((None, "green"), (1, "red")),
                 mappings=[flag_mapping("running", "HALTED")],
                 description="TalerOpsSyncHalted: the sync stopped on an invariant violation."),
            4, 4)
    lay.add(stat("PostgreSQL instances", [target(f"taler_ops_instance_up{{{SEL}}}",
                                                 "{{exported_instance}}")],
                 steps=((None, "red"), (1, "green")), mappings=[flag_mapping("down", "up")]),
            6, 4)
    lay.add(stat("Status healthy", [target(f"taler_ops_healthy{{{SEL}}}", "{{parts}}")],
                 steps=((None, "red"), (1, "green")),
                 mappings=[flag_mapping("UNHEALTHY", "healthy")],
                 description="Per metrics writer; `taler-ops status` lists the problems."),
            5, 4)
    lay.add(stat("Open audit findings",
                 [target(f"sum(taler_ops_audit_findings{{{SEL}}})")],
                 steps=((None, "green"), (1, "orange"))), 4, 4)
    lay.add(stat("Metrics age", [target(f"time() - taler_ops_report_timestamp_seconds{{{SEL}}}",
                                        "{{parts}}")],
                 unit="s", steps=((None, "green"), (60, "orange"), (300, "red")),
                 description="TalerOpsMetricsStale fires above 300 s."), 5, 4)

    lay.row("Safe sync")
    lay.add(series("Sync lag per table (seconds rows have waited)",
                   [target(f"topk(10, taler_ops_sync_lag_seconds{{{SEL}}})", "{{table}}")],
                   unit="s", description="TalerOpsSyncBehind fires above 300 s."), 12, 8)
    lay.add(series("Sync lag per table (rows)",
                   [target(f"topk(10, taler_ops_sync_lag_rows{{{SEL}}})", "{{table}}")]),
            12, 8)
    lay.add(series("Copied rows/s",
                   [target(f"sum(rate(taler_ops_sync_rows_copied_total{{{SEL}}}"
                           "[$__rate_interval]))", "all tables", "A"),
                    target(f"topk(10, sum by (table) (rate(taler_ops_sync_rows_copied_total"
                           f"{{{SEL}}}[$__rate_interval])))", "{{table}}", "B")],
                   unit="rowsps"), 12, 8)
    lay.add(series("Backlog drain time at the current copy rate",
                   [target(f"sum by (instance) (taler_ops_sync_lag_rows{{{SEL}}}) / clamp_min("
                           f"sum by (instance) (rate(taler_ops_sync_rows_copied_total{{{SEL}}}"
                           "[10m])), 1)", "{{instance}}")],
                   unit="s", description="TalerOpsSyncBacklog fires above 600 s for 10 min."),
            12, 8)
    lay.add(series("Halts and time since a watermark last moved",
                   [target(f"taler_ops_sync_halted{{{SEL}}}", "halted", "A"),
                    target(f"time() - taler_ops_sync_last_pass_timestamp_seconds{{{SEL}}}",
                           "seconds since a watermark moved", "B")]), 12, 8)
    lay.add(series("Open holes per table (serials still searched for late commits)",
                   [target(f"taler_ops_sync_open_holes{{{SEL}}} > 0", "{{table}}", "A"),
                    target(f"taler_ops_sync_oldest_open_hole_seconds{{{SEL}}} > 0",
                           "oldest, s: {{table}}", "B")],
                   description="Holes below the watermark that an exchange transaction may "
                               "still fill; the audit does not pass them (docs/sync.md)."),
            12, 8)
    lay.add(panel("table", "Sync progress per table",
                  [target(f"taler_ops_sync_watermark{{{SEL}}}", ref="A", instant=True),
                   target(f"taler_ops_sync_source_max_serial{{{SEL}}}", ref="B", instant=True),
                   target(f"taler_ops_sync_lag_rows{{{SEL}}}", ref="C", instant=True)],
                  transformations=[
                      {"id": "merge", "options": {}},
                      {"id": "organize", "options": {
                          "excludeByName": {"Time": True, "job": True, "__name__": True},
                          "renameByName": {"Value #A": "watermark", "Value #B": "ingres max",
                                           "Value #C": "lag rows"}}}]), 12, 8)

    lay.row("Replication: exchange -> ingres")
    lay.add(series("Slot lag (WAL not confirmed by the subscriber)",
                   [target(f"taler_ops_slot_lag_bytes{{{SEL}}}", "{{slot}}")],
                   unit="bytes"), 8, 8)
    lay.add(series("Slot retained WAL and its limit",
                   [target(f"taler_ops_slot_retained_bytes{{{SEL}}}", "{{slot}} retained", "A"),
                    target(f"taler_ops_slot_retained_bytes{{{SEL}}} + "
                           f"taler_ops_slot_safe_wal_bytes{{{SEL}}}",
                           "{{slot}} limit (max_slot_wal_keep_size)", "B")],
                   unit="bytes", description="TalerOpsSlotWalNearLimit fires above 80%."),
            8, 8)
    lay.add(series("Slot active / lost",
                   [target(f"taler_ops_slot_active{{{SEL}}}", "{{slot}} active", "A"),
                    target(f"taler_ops_slot_lost{{{SEL}}}", "{{slot}} lost", "B")]), 8, 8)
    lay.add(series("Subscription worker up and apply errors (per hour)",
                   [target(f"taler_ops_subscription_worker_up{{{SEL}}}",
                           "{{subscription}} worker up", "A"),
                    target(f"increase(taler_ops_subscription_apply_errors{{{SEL}}}[1h])",
                           "{{subscription}} apply errors / h", "B")]), 8, 8)
    lay.add(series("Seconds since the last message from the exchange",
                   [target(f"taler_ops_subscription_last_message_age_seconds{{{SEL}}}",
                           "{{subscription}}", "A"),
                    target(f"taler_ops_standby_last_message_age_seconds{{{SEL}}}",
                           "standby", "B")], unit="s"), 8, 8)
    lay.add(series("Streaming standby: receiver and replay lag",
                   [target(f"taler_ops_standby_receiver_up{{{SEL}}}", "receiver up", "A"),
                    target(f"taler_ops_standby_replay_lag_bytes{{{SEL}}}",
                           "replay lag (bytes)", "B")],
                   description="Streaming mode only (taler_ingres_replication: streaming)."),
            8, 8)

    lay.row("Audit")
    lay.add(series("Unsuppressed findings per kind",
                   [target(f"taler_ops_audit_findings{{{SEL}}} > 0", "{{kind}}")]), 12, 8)
    lay.add(series("Audit progress (serials examined per second)",
                   [target(f"rate(taler_ops_audit_progress{{{SEL}}}[$__rate_interval]) > 0",
                           "{{key}}")],
                   description="Flat while the safe copy grows: TalerOpsAuditStalled."),
            12, 8)

    return {
        "title": "taler-ops auditor",
        "uid": "taler-ops",
        "description": "GNU Taler auditor database side: replication, safe sync, audit "
                       "(taler-ops, docs/operations.md)",
        "tags": ["taler", "taler-ops"],
        "editable": True,
        "schemaVersion": 37,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "utc",
        "graphTooltip": 1,
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0},
            {"name": "instance", "label": "host", "type": "query", "datasource": DS,
             "query": {"query": "label_values(taler_ops_report_timestamp_seconds, instance)",
                       "refId": "instances"},
             "definition": "label_values(taler_ops_report_timestamp_seconds, instance)",
             "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*",
             "current": {}, "hide": 0, "sort": 1},
        ]},
        "annotations": {"list": []},
        "panels": lay.panels,
    }


def render():
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "taler-ops.json")
    with open(out, "w") as fh:
        fh.write(render())
    print(out)
