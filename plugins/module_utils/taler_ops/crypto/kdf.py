"""GNUnet's key derivation (``GNUNET_CRYPTO_kdf`` and ``GNUNET_CRYPTO_kdf_mod_mpi``).

It is HKDF with two hashes: extract with HMAC-SHA512, expand with HMAC-SHA256,
the context chunks concatenated before the one-byte counter that starts at 1.
(Standard HKDF uses one hash for both, so no library's HKDF fits.)
"""

import hashlib
import hmac


def kdf(length: int, xts: bytes, skm: bytes, *ctx: bytes) -> bytes:
    prk = hmac.new(xts, skm, hashlib.sha512).digest()
    info = b"".join(ctx)
    out = bytearray()
    t = b""
    counter = 1
    while len(out) < length:
        t = hmac.new(prk, t + info + bytes([counter]), hashlib.sha256).digest()
        out += t
        counter += 1
    return bytes(out[:length])


def kdf_mod(n: int, xts: bytes, skm: bytes, label: bytes) -> int:
    """A number uniformly below ``n``: KDF output of n's byte length, masked to
    n's bit length, with a 16-bit big-endian counter retried until below n."""
    bits = n.bit_length()
    length = (bits + 7) // 8
    mask = (1 << bits) - 1
    counter = 0
    while True:
        r = int.from_bytes(kdf(length, xts, skm, label, counter.to_bytes(2, "big")), "big") & mask
        if r < n:
            return r
        counter += 1
