"""The auditor's report in a real headless browser (Debian's chromium): no console errors,
the charts drawn, rows paged, a screenshot and a PDF kept as test artefacts."""

import os
import shutil
import subprocess

import pytest

from conftest import ROOT
from report_data import auditor_db, fill_with_history, safe_copy_with_sync_state
from report_forms import config


def _chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    reason = "chromium is missing (Debian's chromium package; `make chromium`)"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(reason + ": CI must run the browser test")
    pytest.skip(reason)


def _artefacts():
    path = (os.environ.get("TALER_OPS_TEST_ARTEFACTS")
            or os.path.join(ROOT, "build", "test-artefacts"))
    os.makedirs(path, exist_ok=True)
    return path


def browse(chromium, page, tmp_path, *extra):
    """chromium --headless on a file:// page: (dumped DOM, console messages on stderr)."""
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.iterdir()))}"
    done = subprocess.run(
        [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
         "--disable-extensions", "--disable-background-networking", "--disable-sync",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         "--window-size=1280,2400", *extra, f"file://{page}"],
        capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # Chromium logs page console messages as "...:INFO:CONSOLE:<line>] \"text\", source: ..."
    console = [ln for ln in done.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    return done.stdout, console


def test_a_headless_browser_loads_the_report_without_console_errors(cluster, conf, cli, sql_root,
                                                                    tmp_path):
    chromium = _chromium()
    # The console check can fail: a page that logs an error and throws is caught.
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><html><body><script>console.error('boom');"
                      "undefinedFunction();</script></body></html>")
    _, console = browse(chromium, broken, tmp_path, "--dump-dom")
    assert any("boom" in ln for ln in console) and any("undefinedFunction" in ln for ln in console)

    uri = auditor_db(cluster, "report_browser", sql_root)
    fill_with_history(uri)
    safe = safe_copy_with_sync_state(cluster, "report_browser_safe")
    page = tmp_path / "report.html"
    assert cli("report", "-c", config(conf, uri, safe), "-o", page).returncode == 0
    dom, console = browse(chromium, page, tmp_path, "--dump-dom")
    assert console == [], console
    # the charts over time are drawn (inline SVG, no script needed)
    assert dom.count('class="chart timechart"') == 3
    assert 'data-report-ready="1"' in dom           # the inline script ran to its end
    # 30 open row inconsistencies: paged, 25 shown, 5 paged out, and a pager.
    assert 'class="pager"' in dom and "page 1 of 2 (30 rows)" in dom
    assert dom.count('class="paged-out"') == 5
    artefacts = _artefacts()
    shot = os.path.join(artefacts, "report.png")
    if os.path.exists(shot):
        os.remove(shot)
    _, console = browse(chromium, page, tmp_path, f"--screenshot={shot}")
    assert console == [], console
    with open(shot, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    # Printable: the browser's own print to PDF (the print CSS shows every paged row).
    pdf = os.path.join(artefacts, "report.pdf")
    if os.path.exists(pdf):
        os.remove(pdf)
    _, console = browse(chromium, page, tmp_path, "--no-pdf-header-footer", f"--print-to-pdf={pdf}")
    assert console == [], console
    with open(pdf, "rb") as fh:
        assert fh.read(5) == b"%PDF-"
    shutil.copy(page, os.path.join(artefacts, "report.html"))
    print(f"\nbrowser test artefacts (screenshot, PDF, report): {artefacts}")
