"""Status reports shaped like ``status.collect`` returns them, every part filled in.

The monitoring tests render them with ``metrics.render`` to learn which metric names
the code exports, without a database.
"""

import datetime

NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.timezone.utc)
TABLES = ("reserves_in", "coin_deposits")


def _instance():
    return {"up": True, "version": "15.10", "in_recovery": False}


def publisher():
    slot = {"slot_name": "taler_sub", "slot_type": "logical", "active": True,
            "wal_status": "reserved", "safe_wal_size": 1000, "retained_bytes": 300,
            "lag_bytes": 20}
    return {"time": NOW.isoformat(), "healthy": True, "problems": [],
            "publisher": {"instance": _instance(), "problems": [], "slots": [slot]}}


def daemon(mode="logical"):
    """What the sync daemon exports: ingres and sync (and the safe copy's instance)."""
    ingres = {"instance": _instance(), "problems": [], "mode": mode}
    if mode == "logical":
        ingres["subscriptions"] = [{"name": "taler_sub", "enabled": True, "worker_pid": 42,
                                    "apply_error_count": 1, "last_msg_age_seconds": 0.5}]
    else:
        ingres["standby"] = {"receiver_pid": 43, "status": "streaming", "replay_lag_bytes": 0,
                             "last_msg_age_seconds": 0.5}
    tables = {t: {"watermark": 10, "rows_copied": 10, "source_max": 12, "lag_rows": 2,
                  "lag_seconds": 1.5} for t in TABLES}
    return {"time": NOW.isoformat(), "healthy": True, "problems": [], "ingres": ingres,
            "safe_copy": {"instance": _instance(), "problems": []},
            "sync": {"problems": [], "tables": tables, "halted": False, "halt": None,
                     "last_pass": NOW}}


def audit():
    return {"time": NOW.isoformat(), "healthy": True, "problems": [],
            "audit": {"problems": [], "progress": {"coins_deposit_serial_id": 7},
                      "findings": {"auditor_row_inconsistency": 0}}}


def every():
    """One report of each writer, both ingres modes."""
    return [publisher(), daemon("logical"), daemon("streaming"), audit()]
