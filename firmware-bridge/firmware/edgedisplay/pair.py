"""Build a pairing request for <prefix>/<device>/pair (schema/pair.schema.json). Pure code."""

NONCE_CHARS = "0123456789abcdef"


def nonce_from(random_bytes):
    """Hex nonce from 4-32 random bytes (8-64 characters, within the schema's [A-Za-z0-9_-])."""
    if not (4 <= len(random_bytes) <= 32):
        raise ValueError("nonce needs 4-32 random bytes")
    return "".join(NONCE_CHARS[b >> 4] + NONCE_CHARS[b & 15] for b in random_bytes)


def _two(n):
    return ("0" + str(n)) if n < 10 else str(n)


def format_utc(tm):
    """ISO 8601 UTC from a (year, month, day, hour, minute, second, ...) tuple, e.g. time.gmtime()."""
    y, mo, d, h, mi, s = tm[0], tm[1], tm[2], tm[3], tm[4], tm[5]
    return str(y) + "-" + _two(mo) + "-" + _two(d) + "T" + _two(h) + ":" + _two(mi) + ":" + _two(s) + "Z"


def pair_request(random_bytes, tm):
    """The JSON payload (bytes) asking the agent for a new sign-in."""
    return (
        '{"request":"signin","nonce":"' + nonce_from(random_bytes) + '","at":"' + format_utc(tm) + '"}'
    ).encode()
