"""RSA blind signatures with a full-domain hash (GNUnet ``crypto_rsa.c``).

The message a denomination signs (Taler's ``c_hash``, 64 bytes) is mapped to a
number below n by ``kdf_mod`` keyed with the encoded public key (the FDH);
signatures are raw RSA (no padding) over that number.  Wallets blind it with
r^e where r is derived from the 32-byte blinding secret that ``recoup.coin_blind``
stores.  Key generation comes from ``cryptography``; the arithmetic is Python's
own integers, which is all raw RSA needs; GMP (gmpy2) does the modular
exponentiation and gcd when installed, about three times faster than Python's
``pow`` on 2048-bit numbers — the audit's hottest loop.  Results are the same
integers either way.
"""

import functools
import math
from dataclasses import dataclass

from .kdf import kdf_mod

try:
    import gmpy2 as _gmp

    def _powmod(b: int, e: int, m: int) -> int:
        return int(_gmp.powmod(b, e, m))

    def _gcd(a: int, b: int) -> int:
        return int(_gmp.gcd(a, b))
except ImportError:  # pragma: no cover - gmpy2 is a dependency; stay correct without it
    def _powmod(b: int, e: int, m: int) -> int:
        return pow(b, e, m)

    def _gcd(a: int, b: int) -> int:
        return math.gcd(a, b)

FDH_LABEL = b"RSA-FDA FTpsW!"
BLIND_XTS = b"Blinding KDF extractor HMAC key"
BLIND_LABEL = b"Blinding KDF"


def int_bytes(x: int) -> bytes:
    """Minimal unsigned big-endian encoding (GNUnet's MPI format); 0 is b""."""
    return x.to_bytes((x.bit_length() + 7) // 8, "big")


@dataclass(frozen=True)
class RsaPublicKey:
    n: int
    e: int

    @functools.cached_property
    def encoded(self) -> bytes:
        """``GNUNET_CRYPTO_rsa_public_key_encode``: u16 len(n) ‖ u16 len(e) ‖ n ‖ e.
        Cached: the FDH of every coin of a denomination is keyed with it."""
        nb, eb = int_bytes(self.n), int_bytes(self.e)
        return len(nb).to_bytes(2, "big") + len(eb).to_bytes(2, "big") + nb + eb

    def encode(self) -> bytes:
        return self.encoded

    @classmethod
    def decode(cls, data: bytes) -> "RsaPublicKey":
        return _decode(bytes(data))


@functools.lru_cache(maxsize=1024)
def _decode(data: bytes) -> RsaPublicKey:
    # Few denominations, many coins: each key is parsed once per process.
    if len(data) < 4:
        raise ValueError("RSA public key too short")
    ln, le = int.from_bytes(data[0:2], "big"), int.from_bytes(data[2:4], "big")
    if len(data) != 4 + ln + le:
        raise ValueError("RSA public key length fields do not match")
    n = int.from_bytes(data[4:4 + ln], "big")
    e = int.from_bytes(data[4 + ln:], "big")
    if n < 3 or e < 3:
        raise ValueError("RSA public key: n or e too small")
    return RsaPublicKey(n, e)


@dataclass(frozen=True)
class RsaPrivateKey:
    n: int
    e: int
    d: int
    p: int
    q: int

    @property
    def public(self) -> RsaPublicKey:
        return RsaPublicKey(self.n, self.e)

    @classmethod
    def generate(cls, bits: int = 2048) -> "RsaPrivateKey":
        from cryptography.hazmat.primitives.asymmetric import rsa as _rsa
        key = _rsa.generate_private_key(public_exponent=65537, key_size=bits)
        pn = key.private_numbers()
        return cls(pn.public_numbers.n, pn.public_numbers.e, pn.d, pn.p, pn.q)

    @classmethod
    def from_primes(cls, p: int, q: int, e: int = 65537) -> "RsaPrivateKey":
        return cls(p * q, e, pow(e, -1, (p - 1) * (q - 1)), p, q)

    @functools.cached_property
    def _crt(self) -> tuple[int, int, int]:
        # d mod (p-1), d mod (q-1), q^-1 mod p: computed once per key, not per signature.
        return self.d % (self.p - 1), self.d % (self.q - 1), pow(self.q, -1, self.p)

    def sign_raw(self, m: int) -> int:
        """m^d mod n via the Chinese remainder theorem (about 3x faster)."""
        if not 0 <= m < self.n:
            raise ValueError("RSA input out of range")
        dp, dq, qinv = self._crt
        sp = _powmod(m % self.p, dp, self.p)
        sq = _powmod(m % self.q, dq, self.q)
        h = (qinv * (sp - sq)) % self.p
        return sq + h * self.q


def fdh(pub: RsaPublicKey, msg: bytes) -> int | None:
    """The full-domain hash of ``msg``; None when it shares a factor with n,
    which GNUnet treats as a malicious key (the signature is then invalid)."""
    r = kdf_mod(pub.n, pub.encode(), bytes(msg), FDH_LABEL)
    return r if _gcd(r, pub.n) == 1 else None


def blinding_factor(pub: RsaPublicKey, bks: bytes) -> int | None:
    r = kdf_mod(pub.n, BLIND_XTS, bytes(bks), BLIND_LABEL)
    return r if _gcd(r, pub.n) == 1 else None


def blind(pub: RsaPublicKey, msg: bytes, bks: bytes) -> int:
    """Wallet side: the blinded message FDH(msg)·r^e mod n."""
    h, r = fdh(pub, msg), blinding_factor(pub, bks)
    if h is None or r is None:
        raise ValueError("malicious RSA key")
    return h * _powmod(r, pub.e, pub.n) % pub.n


def unblind(pub: RsaPublicKey, blind_sig: int, bks: bytes) -> int:
    r = blinding_factor(pub, bks)
    if r is None:
        raise ValueError("malicious RSA key")
    return blind_sig * pow(r, -1, pub.n) % pub.n


def sign(priv: RsaPrivateKey, msg: bytes) -> int:
    """The unblinded signature FDH(msg)^d directly (generator shortcut)."""
    h = fdh(priv.public, msg)
    if h is None:
        raise ValueError("malicious RSA key")
    return priv.sign_raw(h)


def verify(pub: RsaPublicKey, msg: bytes, sig: int) -> bool:
    """``GNUNET_CRYPTO_rsa_verify``: sig^e mod n == FDH(msg).

    A signature must also be a residue (0 < sig < n): a value ≥ n would be a
    second encoding of the same signature.
    """
    if not 0 < sig < pub.n:
        return False
    h = fdh(pub, msg)
    return h is not None and _powmod(sig, pub.e, pub.n) == h


def verify_blinded(pub: RsaPublicKey, blinded_msg: int, blind_sig: int) -> bool:
    """An exchange's blind signature over a stored blinded message:
    blind_sig^e mod n == blinded_msg (both residues)."""
    if not (0 < blind_sig < pub.n and 0 <= blinded_msg < pub.n):
        return False
    return _powmod(blind_sig, pub.e, pub.n) == blinded_msg
