"""Alert rules, their promtool unit tests and the Grafana dashboard (monitoring/).

No database: the metric names the code exports come from rendering status reports of
every shape (tests/monitoring_reports.py) with ``metrics.render``.
"""

from prometheus_client.parser import text_string_to_metric_families

import monitoring_reports as reports
from taler_ops import metrics


def _samples(report):
    """{(sample name, sorted labels): value} of one rendered report."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(metrics.render(report))
            for s in fam.samples}


def exported_names():
    return {name for report in reports.every() for name, _ in _samples(report)}


def test_metrics_added_for_the_alerts():
    pub = _samples(reports.publisher())
    assert pub[("taler_ops_slot_safe_wal_bytes", (("slot", "taler_sub"),))] == 1000
    daemon = _samples(reports.daemon())
    assert daemon[("taler_ops_sync_rows_copied_total", (("table", "coin_deposits"),))] == 10
    assert daemon[("taler_ops_report_timestamp_seconds", (("parts", "ingres+safe_copy"),))] \
        == reports.NOW.timestamp()
    assert daemon[("taler_ops_healthy", (("parts", "ingres+safe_copy"),))] == 1
    assert "# TYPE taler_ops_sync_rows_copied_total counter" in metrics.render(reports.daemon())


def test_no_safe_wal_series_without_a_limit():
    report = reports.publisher()
    report["publisher"]["slots"][0]["safe_wal_size"] = None  # max_slot_wal_keep_size = -1
    assert not any(n == "taler_ops_slot_safe_wal_bytes" for n, _ in _samples(report))


def test_writers_sharing_a_textfile_directory_never_export_the_same_series():
    """node_exporter refuses a series that two .prom files both contain."""
    seen = {}
    for report in (reports.publisher(), reports.daemon(), reports.audit()):
        for key in _samples(report):
            assert key not in seen, f"{key} exported by two writers"
            seen[key] = report
