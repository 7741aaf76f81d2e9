"""Every advisory lock taler-ops takes, in one place so no two keys collide.

The keys are arbitrary constants; what matters is that each names one
exclusion and that every taler-ops version uses the same value for it (an
upgrade runs the old and the new engine side by side).
"""

from typing import Any

import psycopg

from .db import one_row

# One dbinit at a time per database: racing runs both succeed, each patch applied once.
DBINIT = 0x7A1E_0D81
# One sync per safe copy; garbage collection takes it too, so it never deletes
# under a running pass.
SYNC = 0x7A1E_5C01
# One audit per auditor database: two would work on the same progress points.
AUDIT = 0x7A1E_A0D1


def hold(conn: psycopg.Connection[Any], key: int) -> None:
    """Wait for the session-level lock ``key``."""
    conn.execute("SELECT pg_advisory_lock(%s)", (key,))


def try_hold(conn: psycopg.Connection[Any], key: int) -> bool:
    """Take the session-level lock ``key`` if it is free; True when taken."""
    return bool(one_row(conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)))[0])


def release(conn: psycopg.Connection[Any], key: int) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
