"""How the report writes values: Taler amounts, keys, times.

Amounts are Taler amount strings (``KUDOS:1.5``; without a configured currency just
``1.5``) of exact integers of 1e-8 units; keys are Crockford base32 as Taler shows
them; times are UTC ``YYYY-MM-DD HH:MM:SSZ`` strings.  None stays None throughout.
"""

import datetime

FRAC_BASE = 100_000_000
FOREVER_US = 2 ** 63 - 1
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def amount(units_, currency=None):
    """Exact Taler amount string of an int of 1e-8 units (None stays None)."""
    if units_ is None:
        return None
    units_ = int(units_)
    sign = "-" if units_ < 0 else ""
    val, frac = divmod(abs(units_), FRAC_BASE)
    text = f"{sign}{val}"
    if frac:
        text += "." + f"{frac:08d}".rstrip("0")
    return f"{currency}:{text}" if currency else text


def parse_amount(text):
    """Inverse of :func:`amount` (units); for tests and --since."""
    if text is None:
        return None
    text = text.split(":", 1)[-1]
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("-")
    val, _, frac = text.partition(".")
    return sign * (int(val) * FRAC_BASE + int((frac + "0" * 8)[:8] or 0))


def crockford(data):
    """Taler's (GNUnet's) Crockford base32 of bytes, as Taler shows keys."""
    if data is None:
        return None
    bits = int.from_bytes(bytes(data), "big") if data else 0
    nbits = len(data) * 8
    pad = (5 - nbits % 5) % 5
    bits <<= pad
    n = (nbits + pad) // 5
    return "".join(_CROCKFORD[(bits >> (5 * (n - 1 - i))) & 31] for i in range(n))


def time_us(value):
    if value is None:
        return None
    value = int(value)
    if value >= FOREVER_US:
        return "never"
    try:
        return (datetime.datetime.fromtimestamp(value / 1e6, datetime.timezone.utc)
                .strftime("%Y-%m-%d %H:%M:%SZ"))
    except (OverflowError, OSError, ValueError):
        return str(value)


def tstamp(value):
    if value is None:
        return None
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
