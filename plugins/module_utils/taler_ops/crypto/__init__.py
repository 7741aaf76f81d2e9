"""GNU Taler's cryptography, as the auditor needs it (see docs/signatures.md).

Small modules, each one layer:

- ``crockford``  Crockford base32 (keys in configuration files)
- ``encoding``   big-endian integers, timestamps, ``TALER_AmountNBO``, purpose blocks
- ``hashes``     SHA-512, C-string and payto hashes, coin and denomination hashes
- ``kdf``        GNUnet's KDF and ``kdf_mod``
- ``eddsa``      Ed25519 as GNUnet uses it (32-byte seeds, purpose check), on libsodium
- ``rsa``        RSA-FDH blind signatures (Chaum blinding, raw RSA)
- ``cs``         Clause-Schnorr blind signatures on the Ed25519 group, on libsodium
- ``denom``      the BYTEA layouts of denomination keys and signatures; coin checks
- ``blocks``     the signed block of every purpose stored in the exchange database
- ``signature_column``  what a signature column is: its query, verdict and signing
- ``catalog``    one entry per signature column of the 44 replicated tables
- ``batch``      verification of many rows over every core

The curve and hash primitives come from libsodium (PyNaCl) and the standard
library; only Taler's and GNUnet's own layers are written here.
"""
