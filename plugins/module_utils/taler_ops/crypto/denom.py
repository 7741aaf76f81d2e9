"""Denomination keys and signatures in their PostgreSQL BYTEA layouts.

Layouts (taler-real-schema.md §2.1; every 4-byte field big-endian):

- ``denominations.denom_pub``: u32 cipher ‖ u32 age_mask ‖ key
  (RSA: ``RsaPublicKey.encode()``; CS: 32-byte point)
- unblinded signature (``known_coins.denom_sig``): u32 cipher ‖ u32 0 ‖ sig
  (RSA: integer; CS: s(32) ‖ R(32))
- blinded signature (``reserves_out.denom_sig``, ``refresh_revealed_coins.ev_sig``):
  u32 cipher ‖ u32 1 ‖ sig (RSA: integer; CS: u32 b in host order ‖ s_b(32))
- blinded planchet (``coin_ev``): u32 cipher ‖ u32 0x100 ‖ payload
  (RSA: integer; CS: c0 ‖ c1 ‖ session nonce, 32 bytes each)
- blinding input values (``ewv``): u32 cipher ‖ u32 0x10000 ‖ (CS: R0 ‖ R1)

The cipher is read from these bytes, never from ``denominations.denom_type``,
which stays 1 for CS denominations too.
"""

from dataclasses import dataclass

from . import cs, rsa
from .encoding import u32
from .hashes import coin_ev_hash, coin_hash, denom_pub_hash

RSA = 1
CS = 2
UNBLINDED, BLINDED, PLANCHET, INPUT_VALUES = 0, 1, 0x100, 0x10000


def _split(data: bytes, marker: int | None = None) -> tuple[int, int, bytes]:
    data = bytes(data)
    if len(data) < 8:
        raise ValueError("denomination BYTEA shorter than its 8-byte header")
    first, second = int.from_bytes(data[0:4], "big"), int.from_bytes(data[4:8], "big")
    if first not in (RSA, CS):
        raise ValueError(f"unknown cipher {first}")
    if marker is not None and second != marker:
        raise ValueError(f"marker {second:#x}, expected {marker:#x}")
    return first, second, data[8:]


@dataclass(frozen=True)
class DenomPub:
    cipher: int
    age_mask: int
    key: bytes

    @classmethod
    def parse(cls, data: bytes) -> "DenomPub":
        cipher, age_mask, key = _split(data)
        if cipher == CS and len(key) != 32:
            raise ValueError("CS public key must be 32 bytes")
        if cipher == RSA:
            rsa.RsaPublicKey.decode(key)
        return cls(cipher, age_mask, key)

    def encode(self) -> bytes:
        return u32(self.cipher) + u32(self.age_mask) + self.key

    def hash(self) -> bytes:
        """``denom_pub_hash``; for RSA over the canonical re-encoding of the
        key, as Taler (which hashes what it decoded) does."""
        key = self.rsa_key().encode() if self.cipher == RSA else self.key
        return denom_pub_hash(self.cipher, self.age_mask, key)

    def rsa_key(self) -> rsa.RsaPublicKey:
        return rsa.RsaPublicKey.decode(self.key)

    @classmethod
    def from_rsa(cls, pub: rsa.RsaPublicKey, age_mask: int = 0) -> "DenomPub":
        return cls(RSA, age_mask, pub.encode())

    @classmethod
    def from_cs(cls, point: bytes, age_mask: int = 0) -> "DenomPub":
        return cls(CS, age_mask, bytes(point))


# --- encoders (the generator) -------------------------------------------------

def encode_rsa_sig(sig: int, blinded: bool = False) -> bytes:
    return u32(RSA) + u32(BLINDED if blinded else UNBLINDED) + rsa.int_bytes(sig)


def encode_cs_sig(s: bytes, r_point: bytes) -> bytes:
    return u32(CS) + u32(UNBLINDED) + bytes(s) + bytes(r_point)


def encode_cs_blind_sig(b: int, s_b: bytes) -> bytes:
    # b is a C "unsigned int" copied in host order: little-endian on x86/ARM.
    return u32(CS) + u32(BLINDED) + b.to_bytes(4, "little") + bytes(s_b)


def encode_rsa_planchet(blinded_msg: int) -> bytes:
    return u32(RSA) + u32(PLANCHET) + rsa.int_bytes(blinded_msg)


def encode_cs_planchet(c: tuple[bytes, bytes], session_nonce: bytes) -> bytes:
    return u32(CS) + u32(PLANCHET) + bytes(c[0]) + bytes(c[1]) + bytes(session_nonce)


def encode_ewv(cipher: int, r_pub: tuple[bytes, bytes] | None = None) -> bytes:
    if cipher == RSA:
        body = b""
    elif r_pub is None:
        raise ValueError("the blinding input values of a CS coin are its nonces R0, R1")
    else:
        body = bytes(r_pub[0]) + bytes(r_pub[1])
    return u32(cipher) + u32(INPUT_VALUES) + body


def planchet_hash(h_denom_pub: bytes, coin_ev: bytes) -> bytes:
    """The exchange's ``h_coin_ev`` of a stored planchet (not Taler's sync's
    ``H(coin_ev)``): H(denom_pub_hash ‖ cipher ‖ payload)."""
    cipher, _marker, payload = _split(coin_ev, PLANCHET)
    return coin_ev_hash(h_denom_pub, cipher, payload)


# --- verification ---------------------------------------------------------------

def verify_coin(denom_pub: bytes, denom_sig: bytes, coin_pub: bytes,
                age_commitment_hash: bytes | None = None) -> bool:
    """``known_coins.denom_sig``: the denomination's signature on the coin
    (``TALER_denom_pub_verify`` on c_hash).  Malformed input is invalid."""
    try:
        dp = DenomPub.parse(denom_pub)
        cipher, _marker, sig = _split(denom_sig, UNBLINDED)
    except ValueError:
        return False
    if cipher != dp.cipher:
        return False
    msg = coin_hash(coin_pub, age_commitment_hash)
    if cipher == RSA:
        return bool(sig) and rsa.verify(dp.rsa_key(), msg, int.from_bytes(sig, "big"))
    return len(sig) == 64 and cs.verify(dp.key, msg, sig[:32], sig[32:])


def verify_blind_sig(denom_pub: bytes, coin_ev: bytes, ewv: bytes, ev_sig: bytes) -> bool:
    """``refresh_revealed_coins.ev_sig`` against the stored planchet (and, for
    CS, the stored ``ewv``): the exchange really signed this blinded coin."""
    try:
        dp = DenomPub.parse(denom_pub)
        c_ev, _m1, planchet = _split(coin_ev, PLANCHET)
        c_sig, _m2, sig = _split(ev_sig, BLINDED)
        c_w, _m3, values = _split(ewv, INPUT_VALUES)
    except ValueError:
        return False
    if not dp.cipher == c_ev == c_sig == c_w:
        return False
    if dp.cipher == RSA:
        return bool(sig) and bool(planchet) and not values and rsa.verify_blinded(
            dp.rsa_key(), int.from_bytes(planchet, "big"), int.from_bytes(sig, "big"))
    if len(planchet) != 96 or len(values) != 64 or len(sig) != 36:
        return False
    b = int.from_bytes(sig[:4], "little")
    return cs.verify_blinded(dp.key, (planchet[:32], planchet[32:64]),
                             (values[:32], values[32:]), b, sig[4:])


def check_blind_sig_form(denom_pub: bytes, blind_sig: bytes) -> bool:
    """``reserves_out.denom_sig``: only its form can be checked (the blinded
    message it signs is not stored): cipher of the denomination, blinded
    marker, RSA residue in (0, n), or CS b ∈ {0, 1} with a 32-byte scalar."""
    try:
        dp = DenomPub.parse(denom_pub)
        cipher, _marker, sig = _split(blind_sig, BLINDED)
    except ValueError:
        return False
    if cipher != dp.cipher:
        return False
    if cipher == RSA:
        return 0 < int.from_bytes(sig, "big") < dp.rsa_key().n
    return len(sig) == 36 and int.from_bytes(sig[:4], "little") in (0, 1)
