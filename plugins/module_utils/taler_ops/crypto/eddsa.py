"""EdDSA as GNUnet does it (``GNUNET_CRYPTO_eddsa_sign_`` / ``_verify_``), on libsodium.

- A private key is a 32-byte Ed25519 seed; the public key the standard 32 bytes.
- The signature (64 bytes, R ‖ S) is pure Ed25519 over the whole block,
  purpose header included.
- Verification first compares the header's purpose with the expected one.

libsodium (through PyNaCl) and not OpenSSL: GNUnet and so Taler's own auditor
verify with libsodium, which refuses small-order and non-canonical public keys
and R values.  OpenSSL accepts, for example, public key = the identity point
with signature (identity, 0) for *any* message; an exchange could then invent
coins whose "signatures" every OpenSSL verifier accepts.  Using libsodium keeps
our verdicts identical to Taler's on adversarial rows, not only on honest ones.
"""

import functools

from nacl import bindings as _sodium
from nacl.exceptions import BadSignatureError

from .encoding import header

SEED_LEN = PUBLIC_LEN = 32
SIG_LEN = 64


@functools.lru_cache(maxsize=4096)
def _keypair(seed: bytes) -> tuple[bytes, bytes]:
    # The generator signs many blocks with few keys: derive each key once.
    if len(seed) != SEED_LEN:
        raise ValueError("an EdDSA private key is a 32-byte seed")
    return _sodium.crypto_sign_seed_keypair(seed)


def public_key(seed: bytes) -> bytes:
    return _keypair(bytes(seed))[0]


def sign(seed: bytes, blk: bytes) -> bytes:
    """Sign a purpose block (header included) with a 32-byte seed."""
    size, _purpose = header(blk)
    if size != len(blk):
        raise ValueError("block size field does not match its length")
    return _sodium.crypto_sign(bytes(blk), _keypair(bytes(seed))[1])[:SIG_LEN]


def verify(public: bytes | None, blk: bytes, signature: bytes | None, purpose: int) -> bool:
    """True iff ``signature`` is ``public``'s signature over ``blk`` and the
    block carries ``purpose`` and its own size.  Malformed input is False."""
    if public is None or signature is None:
        return False
    public, signature = bytes(public), bytes(signature)
    if len(public) != PUBLIC_LEN or len(signature) != SIG_LEN:
        return False
    try:
        size, got_purpose = header(blk)
    except ValueError:
        return False
    if got_purpose != purpose or size != len(blk):
        return False
    try:
        _sodium.crypto_sign_open(signature + bytes(blk), public)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True
