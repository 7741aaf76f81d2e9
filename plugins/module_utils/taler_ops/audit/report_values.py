"""How the report writes values: Taler amounts, keys, times.

Amounts are Taler amount strings (``KUDOS:1.5``; without a configured currency just
``1.5``) of exact integers of 1e-8 units; keys are Crockford base32 as Taler shows
them; times are UTC ``YYYY-MM-DD HH:MM:SSZ`` strings.  None stays None throughout
(hence the overloads: a value that cannot be None gives a string; the first
overload is the one an untyped database value matches).
"""

import datetime
from decimal import Decimal
from typing import overload

from .common import text_amount
from ..crypto import crockford as base32
from ..schema.exchange_schema import AMOUNT_FRAC_BASE as FRAC_BASE

FOREVER_US = 2 ** 63 - 1


@overload
def amount(units_: int | Decimal, currency: str | None = None) -> str: ...
@overload
def amount(units_: None, currency: str | None = None) -> None: ...
def amount(units_: int | Decimal | None, currency: str | None = None) -> str | None:
    """Exact Taler amount string of an int (or SQL numeric) of 1e-8 units."""
    return None if units_ is None else text_amount(units_, currency)


@overload
def parse_amount(text: str) -> int: ...
@overload
def parse_amount(text: None) -> None: ...
def parse_amount(text: str | None) -> int | None:
    """Inverse of :func:`amount` (units); for tests and --since."""
    if text is None:
        return None
    text = text.split(":", 1)[-1]
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("-")
    val, _, frac = text.partition(".")
    return sign * (int(val) * FRAC_BASE + int((frac + "0" * 8)[:8] or 0))


@overload
def crockford(data: bytes | memoryview) -> str: ...
@overload
def crockford(data: None) -> None: ...
def crockford(data: bytes | memoryview | None) -> str | None:
    """Taler's (GNUnet's) Crockford base32 of bytes, as Taler shows keys."""
    return None if data is None else base32.encode(bytes(data))


@overload
def time_us(value: int) -> str: ...
@overload
def time_us(value: None) -> None: ...
def time_us(value: int | None) -> str | None:
    """A Taler timestamp (µs since the epoch; the largest INT8 is "never")."""
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


@overload
def tstamp(value: datetime.datetime) -> str: ...
@overload
def tstamp(value: None) -> None: ...
def tstamp(value: datetime.datetime | None) -> str | None:
    """A PostgreSQL timestamptz."""
    if value is None:
        return None
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
