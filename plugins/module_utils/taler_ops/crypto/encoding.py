"""Byte encodings inside Taler's signed blocks.

Every block is a packed C struct: an 8-byte purpose header (``u32 size`` of the
whole block, header included, then ``u32 purpose``, both big-endian) followed
by the body.  Integers in the body are big-endian too.
"""

import struct
from typing import Any

INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
# Taler refuses amounts above 2^52 units (TALER_AMOUNT_MAX_VALUE) and fractions
# of a whole unit or more (TALER_AMOUNT_FRAC_BASE).
AMOUNT_MAX_VALUE = 2**52
AMOUNT_FRAC_BASE = 10**8
CURRENCY_LEN = 12  # TALER_CURRENCY_LEN, including the terminating NUL

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HEADER = struct.Struct(">II")
ZERO32 = bytes(32)
ZERO64 = bytes(64)


def u16(x: int) -> bytes:
    return struct.pack(">H", x)


def u32(x: int) -> bytes:
    return _U32.pack(x)


def u64(x: int) -> bytes:
    return _U64.pack(x)


def timestamp(db_value: int) -> bytes:
    """An INT8 time column (absolute µs, or relative µs) as signed.

    The database stores "never"/"forever" as INT64_MAX (PostgreSQL has no
    unsigned type); GNUnet's own value for it, and so what was signed, is
    UINT64_MAX.  Every other value is signed unchanged.
    """
    if db_value == INT64_MAX:
        return u64(UINT64_MAX)
    if not 0 <= db_value < INT64_MAX:
        raise ValueError(f"time value out of range: {db_value}")
    return u64(db_value)


relative_time = timestamp  # same rule for GNUNET_TIME_RelativeNBO columns


def check_currency(currency: str) -> str:
    """``[exchange] CURRENCY`` as Taler uses it: 1-11 ASCII letters, upper-cased."""
    cur = currency.strip().upper()
    if not (1 <= len(cur) < CURRENCY_LEN and cur.isascii() and cur.isalpha()):
        raise ValueError(f"invalid currency {currency!r}")
    return cur


# An amount as the database (or a caller) gives it: (val, frac), a mapping or an
# object with val and frac; the currency is the configured one.
Amount = Any


def amount_parts(amount: Amount) -> tuple[int, int]:
    """(val, frac) from a tuple/list, a mapping or an object with val/frac."""
    if isinstance(amount, (tuple, list)):
        val, frac = amount
    elif isinstance(amount, dict):
        val, frac = amount["val"], amount["frac"]
    else:
        val, frac = amount.val, amount.frac
    return int(val), int(frac)


def amount_nbo(amount: Amount, currency: str) -> bytes:
    """``TALER_AmountNBO`` (24 bytes): u64 value, u32 fraction, 12-byte currency.

    The database's ``taler_amount`` has no currency: it is the configured one.
    ``currency`` must already be checked (``check_currency``).  Taler aborts
    on an out-of-range amount instead of signing it, so we refuse it too.
    """
    val, frac = amount_parts(amount)
    if not (0 <= val <= AMOUNT_MAX_VALUE and 0 <= frac < AMOUNT_FRAC_BASE):
        raise ValueError(f"amount out of range: ({val}, {frac})")
    return u64(val) + u32(frac) + currency.encode("ascii").ljust(CURRENCY_LEN, b"\0")


def block(purpose: int, *fields: bytes) -> bytes:
    """Purpose header followed by the fields, packed."""
    body = b"".join(fields)
    return _HEADER.pack(8 + len(body), purpose) + body


def header(blk: bytes) -> tuple[int, int]:
    """(size, purpose) of a block; ValueError when it is too short."""
    if len(blk) < 8:
        raise ValueError("block shorter than its purpose header")
    return _HEADER.unpack_from(blk)
