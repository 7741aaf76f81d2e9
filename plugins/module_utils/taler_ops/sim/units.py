"""The model's money, time and randomness.

Amounts are ints of 1e-8 units (``UNIT``); times are ints of microseconds since
the epoch, as Taler stores them.  Every random choice of a generator run comes
from one ``Rand``, so a seed gives the same history.
"""

import hashlib
import json
import random
from typing import Any

UNIT = 100_000_000
CENT = UNIT // 100
SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WEEK = 7 * DAY
YEAR = 365 * DAY

IDLE_RESERVE_EXPIRATION = 4 * WEEK    # [exchangedb] IDLE_RESERVE_EXPIRATION_TIME
LEGAL_RESERVE_EXPIRATION = 7 * YEAR   # [exchangedb] LEGAL_RESERVE_EXPIRATION_TIME
HISTORY_SPAN = 120 * DAY              # bulk history covers now - 120 days .. now
# An audit run within this long after `now` must not see a deadline or an
# expiration fall due that the generated exchange had no chance to act on.
MARGIN = DAY
FEE_PERIOD = YEAR                     # wire and global fees are set per year


class Rand(random.Random):
    def key32(self) -> bytes:
        return self.randbytes(32)

    def key64(self) -> bytes:
        return self.randbytes(64)

    def between(self, lo: int, hi: int) -> int:
        return lo + int(self.random() * (hi - lo))


def A(units: int) -> tuple[int, int]:
    """An amount of 1e-8 units as the (val, frac) pair the signature blocks take."""
    return divmod(int(units), UNIT)


def canonical_json(obj: Any) -> str:
    """JSON as the model stores it (sorted keys, no spaces): equal objects, equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def hashcode(data: bytes | str) -> bytes:
    """A gnunet_hashcode value (Taler's domain is 32 bytes)."""
    return hashlib.sha512(data if isinstance(data, bytes) else data.encode()).digest()[:32]
