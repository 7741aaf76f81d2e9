"""The generator's key material, derived deterministically from its seed.

``taler-ops generate`` plays the exchange, its offline master key, its wallets and
merchants, so it needs their private keys: every key here is derived from
the generator's ``--seed`` (and, for denominations, the row's serial), so two
runs with the same seed on equally filled databases write identical rows and
the master public key is known in advance (``master_public_key(seed)``, what
the audit's ``[exchange] MASTER_PUBLIC_KEY`` must say).

Test/demo keys only: they are as secret as the seed, i.e. not at all.
"""

import functools

from . import crockford, denom, eddsa, mint, rsa
from .context import SignatureContext
from .hashes import sha512

DEFAULT_CURRENCY = "KUDOS"
DEFAULT_BASE_URL = "https://exchange.demo.taler.net/"
# Taler's test configurations use 1024-bit denomination keys (taler-signatures.md);
# each withdrawn or refreshed coin costs one RSA private-key operation, about four
# times cheaper than at 2048 bits (docs/generator.md has the measurements).
RSA_BITS = 1024
RSA_E = 65537


def _kdf(*parts: bytes | str | int) -> bytes:
    # The label keeps the CLI's old name (`gen`, now `generate`): changing it would change
    # every derived key, the inventories' configured MASTER_PUBLIC_KEY included.
    data = b"taler-ops-gen\x00" + b"\x00".join(
        p if isinstance(p, bytes) else str(p).encode() for p in parts)
    return sha512(data)


def master_seed(seed: int) -> bytes:
    """The offline master key's 32-byte EdDSA seed for generator seed ``seed``."""
    return _kdf("master", seed)[:32]


def master_public_key(seed: int) -> str:
    """``[exchange] MASTER_PUBLIC_KEY`` (Crockford base32) of generator seed ``seed``."""
    return crockford.encode(eddsa.public_key(master_seed(seed)))


class _Stream:
    """A deterministic byte stream (SHA-512 in counter mode) for key generation."""

    def __init__(self, key: bytes):
        self.key, self.counter = key, 0

    def read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += sha512(self.key + self.counter.to_bytes(8, "big"))
            self.counter += 1
        return out[:n]


def _next_prime(x: int) -> int:
    try:
        import gmpy2
    except ImportError:  # pragma: no cover - gmpy2 is a dependency
        from sympy import nextprime
        return int(nextprime(x))
    return int(gmpy2.next_prime(x))


def _prime(stream: _Stream, bits: int, e: int) -> int:
    while True:
        # Top two bits set: the product of two such primes has exactly 2·bits bits.
        x = int.from_bytes(stream.read(bits // 8), "big") | (3 << (bits - 2)) | 1
        p = _next_prime(x)
        if p.bit_length() == bits and (p - 1) % e != 0:
            return p


@functools.lru_cache(maxsize=256)
def rsa_key(key_seed: bytes, bits: int = RSA_BITS) -> rsa.RsaPrivateKey:
    """A deterministic RSA key (e = 65537) from a seed."""
    stream = _Stream(b"rsa" + key_seed)
    while True:
        p, q = _prime(stream, bits // 2, RSA_E), _prime(stream, bits // 2, RSA_E)
        if p != q:
            return rsa.RsaPrivateKey.from_primes(max(p, q), min(p, q), RSA_E)


class Keyring:
    """Everything the generator signs with: the master key, the signature
    context (currency, master public key, base URL) and denomination keys."""

    def __init__(self, seed: int = 0, currency: str | None = None, base_url: str | None = None,
                 rsa_bits: int = RSA_BITS, master: int | None = None) -> None:
        # An exchange has one master key whatever traffic it sees: ``master`` (default:
        # ``seed``) lets runs with different seeds sign as the same exchange.
        self.seed = seed
        self.master = master_seed(seed if master is None else master)
        self.master_pub = eddsa.public_key(self.master)
        self.ctx = SignatureContext(currency or DEFAULT_CURRENCY, self.master_pub,
                                    base_url or DEFAULT_BASE_URL)
        self.rsa_bits = rsa_bits

    @property
    def master_public_key(self) -> str:
        return crockford.encode(self.master_pub)

    def denomination(self, serial: int, cs: bool, age_mask: int = 0) -> mint.DenominationKey:
        """The private key of denomination row ``serial`` (same seed, same serial:
        same key, so a later run can use the denominations an earlier one wrote)."""
        return _denomination(self.master, int(serial), bool(cs), int(age_mask), self.rsa_bits)


@functools.lru_cache(maxsize=1024)
def _denomination(master: bytes, serial: int, cs: bool, age_mask: int,
                  bits: int) -> mint.DenominationKey:
    key_seed = _kdf("denomination", master, serial)[:32]
    if cs:
        return mint.DenominationKey(denom.CS, age_mask, cs_priv=key_seed)
    return mint.DenominationKey(denom.RSA, age_mask, rsa_priv=rsa_key(key_seed, bits))
