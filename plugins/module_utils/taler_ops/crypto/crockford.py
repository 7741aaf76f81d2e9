"""Crockford base32 as GNUnet writes keys (``GNUNET_STRINGS_data_to_string``).

5 bits per character, most significant first; the last character is padded
with zero bits.  Decoding is case-insensitive and forgiving the way Crockford
specifies (O->0, I/L->1, U->V), as GNUnet's decoder is.
"""

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALUE = {ch: i for i, ch in enumerate(ALPHABET)}
_VALUE.update({"O": 0, "I": 1, "L": 1, "U": _VALUE["V"]})


def encode(data: bytes) -> str:
    acc = bits = 0
    out = []
    for byte in data:
        acc = (acc << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            out.append(ALPHABET[(acc >> bits) & 31])
    if bits:
        out.append(ALPHABET[(acc << (5 - bits)) & 31])
    return "".join(out)


def decode(text: str, length: int | None = None) -> bytes:
    """Decode ``text``; with ``length``, insist on exactly that many bytes.

    GNUnet refuses a string whose length does not match the expected binary
    size and one whose padding bits are not zero; so do we, so that a typo in
    a configured key is an error and not a different key.
    """
    text = text.strip()
    acc = bits = 0
    out = bytearray()
    for ch in text.upper():
        try:
            value = _VALUE[ch]
        except KeyError:
            raise ValueError(f"not a Crockford base32 character: {ch!r}") from None
        acc = (acc << 5) | value
        bits += 5
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    if bits >= 5 or acc & ((1 << bits) - 1):
        raise ValueError("Crockford base32: bad length or non-zero padding bits")
    if length is not None and len(out) != length:
        raise ValueError(f"Crockford base32: {len(out)} bytes, expected {length}")
    return bytes(out)
