"""The hashes Taler puts into signed blocks."""

import hashlib

from .encoding import ZERO32, u32
from .kdf import kdf


def sha512(data: bytes) -> bytes:
    """``GNUNET_CRYPTO_hash``: plain SHA-512, 64 bytes."""
    return hashlib.sha512(data).digest()


def hash_str(text: str) -> bytes:
    """SHA-512 of a C string: Taler always hashes strings with their NUL."""
    return sha512(text.encode("utf-8") + b"\0")


def payto_hash(payto_uri: str) -> bytes:
    """Full payto hash (``TALER_full_payto_hash``): first 32 bytes of hash_str,
    over the URI exactly as stored."""
    return hash_str(payto_uri)[:32]


def denom_pub_hash(cipher: int, age_mask: int, key: bytes) -> bytes:
    """``TALER_denom_pub_hash``: age mask first, then the cipher (the stored
    ``denom_pub`` BYTEA has them the other way round)."""
    return sha512(u32(age_mask) + u32(cipher) + key)


def coin_hash(coin_pub: bytes, age_commitment_hash: bytes | None = None) -> bytes:
    """The message a denomination key signs (``TALER_coin_pub_hash``):
    H(coin_pub), or H(coin_pub ‖ age hash) for an age-restricted coin.
    An all-zero age hash means "no age commitment"."""
    if not age_commitment_hash or bytes(age_commitment_hash) == ZERO32:
        return sha512(bytes(coin_pub))
    return sha512(bytes(coin_pub) + bytes(age_commitment_hash))


def coin_ev_hash(denom_pub_hash_: bytes, cipher: int, payload: bytes) -> bytes:
    """``TALER_coin_ev_hash`` (reserves_out.h_blind_ev, the exchange's h_coin_ev):
    H(denom_pub_hash ‖ u32 cipher ‖ blinded payload)."""
    return sha512(bytes(denom_pub_hash_) + u32(cipher) + bytes(payload))


def merchant_wire_hash(payto_uri: str, wire_salt: bytes) -> bytes:
    """``h_wire`` of a deposit: salted KDF over the merchant's payto string."""
    if len(wire_salt) != 16:
        raise ValueError("wire_salt must be 16 bytes")
    return kdf(64, bytes(wire_salt), payto_uri.encode("utf-8") + b"\0", b"merchant-wire-signature")
