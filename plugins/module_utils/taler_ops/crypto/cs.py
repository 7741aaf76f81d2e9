"""Clause-Schnorr blind signatures (GNUnet ``crypto_cs.c``) on libsodium.

The group is Ed25519's prime-order subgroup (order L); scalars are 32-byte
little-endian; points are libsodium's 32-byte encodings, combined with the
``*_noclamp`` multiplications and ``crypto_core_ed25519_add`` that GNUnet
itself calls, so invalid points are refused exactly where GNUnet's libsodium
refuses them.  Where GNUnet asserts (aborts the process) on such input, we
answer "invalid" instead: an auditor must survive adversarial rows.
"""

from nacl import bindings as _sodium
from nacl.exceptions import CryptoError

from .hashes import sha512
from .kdf import kdf, kdf_mod

L = 2**252 + 27742317777372353535851937790883648493
FDH_LABEL = b"Curve25519FDH"
_ERRORS = (CryptoError, ValueError, TypeError)


def scalar(data: bytes) -> int:
    return int.from_bytes(data, "little")


def scalar_bytes(k: int) -> bytes:
    return (k % L).to_bytes(32, "little")


def clamp(data: bytes) -> bytes:
    """The X25519-style clamping GNUnet applies to every derived secret."""
    b = bytearray(data)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


def base_mul(k: bytes) -> bytes:
    return _sodium.crypto_scalarmult_ed25519_base_noclamp(k)


def point_mul(k: bytes, point: bytes) -> bytes:
    return _sodium.crypto_scalarmult_ed25519_noclamp(k, point)


def point_add(p: bytes, q: bytes) -> bytes:
    return _sodium.crypto_core_ed25519_add(p, q)


def fdh(r_point: bytes, msg: bytes, pub: bytes) -> int:
    """``cs_full_domain_hash``: kdf_mod(L, pub, H(R ‖ msg), "Curve25519FDH")."""
    return kdf_mod(L, bytes(pub), sha512(bytes(r_point) + bytes(msg)), FDH_LABEL)


# --- keys ---------------------------------------------------------------------

def keypair(seed: bytes) -> tuple[bytes, bytes]:
    """(private scalar x, public point A = x·G) from 32 seed bytes (clamped)."""
    x = clamp(seed)
    return x, base_mul(x)


# --- verification -------------------------------------------------------------

def verify(pub: bytes, msg: bytes, s: bytes, r_point: bytes) -> bool:
    """An unblinded signature (s, R) on ``msg``: s·G == R + FDH(R, msg)·A."""
    if len(pub) != 32 or len(s) != 32 or len(r_point) != 32:
        return False
    try:
        lhs = base_mul(bytes(s))
        rhs = point_add(bytes(r_point), point_mul(scalar_bytes(fdh(r_point, msg, pub)), bytes(pub)))
    except _ERRORS:
        return False
    return lhs == rhs


def verify_blinded(pub: bytes, c: tuple[bytes, bytes], r_pub: tuple[bytes, bytes],
                   b: int, s_b: bytes) -> bool:
    """The exchange's blind signature (b, s_b) on the blinded challenges c0, c1
    with its public nonces R0, R1 (``ewv``): s_b·G == R_b + c_b·A."""
    if b not in (0, 1) or len(s_b) != 32:
        return False
    try:
        lhs = base_mul(bytes(s_b))
        rhs = point_add(bytes(r_pub[b]), point_mul(bytes(c[b]), bytes(pub)))
    except _ERRORS:
        return False
    return lhs == rhs


# --- signing (the generator) --------------------------------------------------

def sign_unblinded(x: bytes, pub: bytes, msg: bytes, r_seed: bytes) -> tuple[bytes, bytes]:
    """(s, R) directly, without the blind protocol: R = r·G, s = r + FDH(R, msg)·x."""
    r = clamp(r_seed)
    r_point = base_mul(r)
    s = scalar(r) + fdh(r_point, msg, pub) * scalar(x)
    return scalar_bytes(s), r_point


def r_derive(x: bytes, session_nonce: bytes, melt: bool) -> tuple[bytes, bytes]:
    """The exchange's two secret nonces r0, r1 for one session (clamped)."""
    raw = kdf(64, b"rm" if melt else b"rw", bytes(x), bytes(session_nonce))
    return clamp(raw[:32]), clamp(raw[32:])


def r_public(r_secrets: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    """R0, R1 (what ``ewv`` stores after its 8-byte header)."""
    return base_mul(r_secrets[0]), base_mul(r_secrets[1])


def blinding_secrets(bks: bytes) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
    """((α0, β0), (α1, β1)) from the wallet's blinding seed (recoup.coin_blind)."""
    raw = kdf(128, b"alphabeta", bytes(bks))
    a0, b0, a1, b1 = (clamp(raw[i:i + 32]) for i in range(0, 128, 32))
    return (a0, b0), (a1, b1)


def blind(pub: bytes, msg: bytes, bks: bytes, r_pub: tuple[bytes, bytes],
          ) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
    """Wallet side: blinded challenges (c0, c1) and the blinded nonces (R'0, R'1)."""
    cs, rs = [], []
    for (alpha, beta), r_i in zip(blinding_secrets(bks), r_pub):
        r_blind = point_add(point_add(r_i, base_mul(alpha)), point_mul(beta, bytes(pub)))
        c_i = fdh(r_blind, msg, pub) + scalar(beta)
        cs.append(scalar_bytes(c_i))
        rs.append(r_blind)
    return (cs[0], cs[1]), (rs[0], rs[1])


def choose_b(x: bytes, session_nonce: bytes) -> int:
    """The exchange's choice of clause: lowest bit of a native (little-endian
    on deployed hardware) u32 from the KDF."""
    return int.from_bytes(kdf(4, b"b", bytes(x), bytes(session_nonce)), "little") % 2


def sign_blinded(x: bytes, r_secrets: tuple[bytes, bytes], c: tuple[bytes, bytes],
                 session_nonce: bytes) -> tuple[int, bytes]:
    """Exchange side: (b, s_b = r_b + c_b·x mod L)."""
    b = choose_b(x, session_nonce)
    return b, scalar_bytes(scalar(r_secrets[b]) + scalar(c[b]) * scalar(x))


def unblind(s_b: bytes, b: int, bks: bytes) -> bytes:
    alpha = blinding_secrets(bks)[b][0]
    return scalar_bytes(scalar(s_b) + scalar(alpha))
