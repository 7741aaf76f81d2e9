"""GNUnet's key derivation (``GNUNET_CRYPTO_kdf`` and ``GNUNET_CRYPTO_kdf_mod_mpi``).

It is HKDF with two hashes: extract with HMAC-SHA512, expand with HMAC-SHA256,
the context chunks concatenated before the one-byte counter that starts at 1.
(Standard HKDF uses one hash for both, so no library's HKDF fits.)
"""

import hmac


def kdf(length: int, xts: bytes, skm: bytes, *ctx: bytes) -> bytes:
    # hmac.digest: OpenSSL's one-shot HMAC, several times faster than hmac.new
    # for short inputs (the FDH of every RSA coin runs through here).
    prk = _hmac(bytes(xts), bytes(skm), "sha512")
    info = b"".join(ctx)
    out = b""
    t = b""
    counter = 1
    while len(out) < length:
        t = _hmac(prk, t + info + bytes([counter]), "sha256")
        out += t
        counter += 1
    return out[:length]


_hmac = hmac.digest


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
