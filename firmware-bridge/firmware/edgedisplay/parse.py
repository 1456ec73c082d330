"""Validate a message from <prefix>/<device>/login the way schema/login.schema.json does.

Pure code: runs under MicroPython and CPython (host tests). No regex (MicroPython's `re` lacks
counted repetition), no typing/dataclasses. Anything that is not exactly a contract message gives
None, so a broken or hostile publisher can only blank the screen, never put arbitrary text on it.
"""

try:
    import ujson as json  # MicroPython
except ImportError:  # CPython (host tests)
    import json

MAX_PAYLOAD_BYTES = 2048
MAX_USER_CODE = 32
MAX_URL = 512
MIN_URL = 10
MAX_MESSAGE = 512
END_STATES = ("approved", "denied", "expired", "cancelled")
PENDING_KEYS = ("state", "user_code", "verification_uri", "verification_uri_complete", "expires_at", "message")
SIGNIN_KEYS = ("state", "since", "pair")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
HOST_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-"


class Pending:
    """A device flow waiting for the user: what the screen shows."""

    kind = "pending"

    def __init__(self, user_code, verification_uri, verification_uri_complete, expires_at, expires_epoch, message):
        self.user_code = user_code
        self.verification_uri = verification_uri
        self.verification_uri_complete = verification_uri_complete  # or None
        self.expires_at = expires_at  # the ISO string as sent
        self.expires_epoch = expires_epoch  # Unix seconds (UTC)
        self.message = message  # or None


class Ended:
    """How the flow ended: one of END_STATES."""

    kind = "ended"

    def __init__(self, state):
        self.state = state


class SigninRequired:
    """The agent cannot renew its tokens and waits for a new sign-in (retained until it has one)."""

    kind = "signin_required"

    def __init__(self, since, since_epoch, pair):
        self.since = since  # the ISO string as sent
        self.since_epoch = since_epoch  # Unix seconds (UTC)
        self.pair = pair  # True: the agent starts a sign-in on a pair request


class Cleared:
    """The zero-length retained publish: nothing to show."""

    kind = "cleared"


CLEARED = Cleared()


def is_printable_ascii(s, allow_space=False):
    """True when every character is printable ASCII (0x21-0x7E, plus 0x20 if allow_space)."""
    low = 0x20 if allow_space else 0x21
    for ch in s:
        o = ord(ch)
        if o < low or o > 0x7E:
            return False
    return True


def has_control(s):
    """True when s holds a C0 control character or DEL (what the schema's message pattern forbids)."""
    for ch in s:
        o = ord(ch)
        if o < 0x20 or o == 0x7F:
            return True
    return False


def _digits(s):
    if not s:
        return False
    for ch in s:
        if ch < "0" or ch > "9":
            return False
    return True


def is_display_url(url):
    """The schema's displayUrl: https with a DNS-ish host, or http to a loopback host; no user info."""
    if not isinstance(url, str) or len(url) < MIN_URL or len(url) > MAX_URL or not is_printable_ascii(url):
        return False
    if url.startswith("https://"):
        rest = url[8:]
        loopback_only = False
    elif url.startswith("http://"):
        rest = url[7:]
        loopback_only = True
    else:
        return False
    end = len(rest)
    for sep in "/?#":
        i = rest.find(sep)
        if 0 <= i < end:
            end = i
    authority = rest[:end]
    if authority.startswith("[::1]"):
        host, port = "[::1]", authority[5:]
    else:
        i = authority.find(":")
        host, port = (authority, "") if i < 0 else (authority[:i], authority[i:])
    if port and (port[0] != ":" or not _digits(port[1:]) or len(port) > 6):
        return False
    if loopback_only:
        return host in LOOPBACK_HOSTS
    if not host:
        return False
    for ch in host:
        if ch not in HOST_CHARS:
            return False
    return True


def _days_from_civil(y, m, d):
    # Howard Hinnant's algorithm: days since 1970-01-01 without any date library.
    y -= 1 if m <= 2 else 0
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _days_in_month(y, m):
    if m == 2:
        leap = (y % 4 == 0 and y % 100 != 0) or y % 400 == 0
        return 29 if leap else 28
    return 30 if m in (4, 6, 9, 11) else 31


def parse_utc(s):
    """Parse 'YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z' into Unix seconds (int), or None."""
    if not isinstance(s, str) or len(s) < 20 or len(s) > 35 or s[-1] != "Z":
        return None
    if s[4] != "-" or s[7] != "-" or s[10] != "T" or s[13] != ":" or s[16] != ":":
        return None
    parts = (s[0:4], s[5:7], s[8:10], s[11:13], s[14:16], s[17:19])
    for p in parts:
        if not _digits(p):
            return None
    frac = s[19:-1]
    if frac and (frac[0] != "." or not _digits(frac[1:]) or len(frac) > 10):
        return None
    y, mo, d, h, mi, sec = [int(p) for p in parts]
    if not (1 <= mo <= 12 and 1 <= d <= _days_in_month(y, mo) and h <= 23 and mi <= 59 and sec <= 60):
        return None
    return _days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + min(sec, 59)


def parse_login(payload):
    """Validate one login-topic payload (bytes or str).

    Returns Pending, Ended, SigninRequired or CLEARED; None when the payload is not a contract message.
    """
    if payload is None:
        return None
    if len(payload) == 0:
        return CLEARED
    if len(payload) > MAX_PAYLOAD_BYTES:
        return None
    try:
        text = payload.decode("utf-8") if isinstance(payload, (bytes, bytearray)) else payload
        obj = json.loads(text)
    except (ValueError, UnicodeError):
        return None
    if not isinstance(obj, dict):
        return None
    state = obj.get("state")
    if state in END_STATES:
        return Ended(state) if len(obj) == 1 else None
    if state == "signin_required":
        return _parse_signin(obj)
    if state != "pending":
        return None
    for key in obj:
        if key not in PENDING_KEYS:
            return None  # additionalProperties: false, e.g. a device_code must never be shown
    code = obj.get("user_code")
    if not isinstance(code, str) or not (1 <= len(code) <= MAX_USER_CODE) or not is_printable_ascii(code):
        return None
    uri = obj.get("verification_uri")
    if not is_display_url(uri):
        return None
    complete = obj.get("verification_uri_complete")
    if complete is not None and not is_display_url(complete):
        return None
    if "verification_uri_complete" in obj and complete is None:
        return None
    expires_at = obj.get("expires_at")
    expires_epoch = parse_utc(expires_at)
    if expires_epoch is None:
        return None
    message = obj.get("message")
    if "message" in obj:
        if not isinstance(message, str) or not (1 <= len(message) <= MAX_MESSAGE) or has_control(message):
            return None
    return Pending(code, uri, complete, expires_at, expires_epoch, message)


def _parse_signin(obj):
    if len(obj) != len(SIGNIN_KEYS):
        return None
    for key in obj:
        if key not in SIGNIN_KEYS:
            return None
    pair = obj.get("pair")
    if pair is not True and pair is not False:
        return None  # a boolean, not 0/1
    since_epoch = parse_utc(obj.get("since"))
    if since_epoch is None:
        return None
    return SigninRequired(obj["since"], since_epoch, pair)
