"""What goes where on a 128x64 monochrome screen with the 8x8 framebuf font (16 columns x 8 rows).

Pure code (MicroPython and CPython). A screen is a list of text ops (x, y, text, scale): pixel
position of the top-left corner, the text, and an integer scale (2 = each font pixel drawn 2x2).
The Node display simulator (simulators/layout.ts) implements the same rules; both are checked
against tests/layout_cases.json.

Pending screen, code of at most 8 characters (fits at scale 2):
    row 0   Sign in at:
    row 1-2 the URL without https://, wrapped at 16 columns
    row 3   Enter code:
    row 4-5 the code, scale 2, centred
    row 7   Expires in MM:SS
Longer codes (9-16 characters, e.g. WDJB-MJHT) take rows 2-5 as two scale-2 lines, split after a
dash when there is one; the labels go. Codes longer than 16 characters are shown at scale 1.

Sign-in required screen (the agent's refresh token is dead):
    row 1   Sign-in required
    row 3-4 Press PAIR / to get a code     (pair true: the agent accepts a pair request)
            Run on gateway: / edgetoken login   (pair false)
    row 7   Since HH:MM UTC (Since YYYY-MM-DD after a day)
"""

WIDTH = 128
HEIGHT = 64
CHAR = 8
COLS = WIDTH // CHAR
ROWS = HEIGHT // CHAR
BIG = 2
BIG_COLS = COLS // BIG
END_HOLD_SECONDS = 10

END_TEXT = {
    "approved": ("Signed in", "Device is ready"),
    "denied": ("Sign-in denied", ""),
    "expired": ("Code expired", "Try again"),
    "cancelled": ("Sign-in", "cancelled"),
}


def centre_x(text, scale=1):
    """x of text centred on the screen (0 when it does not fit)."""
    return max(0, (WIDTH - len(text) * CHAR * scale) // 2)


def fit(text, width):
    """text cut to width characters, a trailing '~' marking the cut."""
    return text if len(text) <= width else text[: width - 1] + "~"


def wrap(text, width, max_lines):
    """Hard-wrap text into at most max_lines lines of width characters; '~' marks a cut."""
    lines = []
    i = 0
    while i < len(text) and len(lines) < max_lines:
        lines.append(text[i : i + width])
        i += width
    if i < len(text):
        lines[-1] = fit(lines[-1] + text[i:], width)
    return lines


def short_url(url):
    """The URL as a person types it: https:// (browsers' default) and a trailing slash dropped."""
    if url.startswith("https://"):
        url = url[8:]
    if url.endswith("/") and url.count("/") == 1:
        url = url[:-1]
    return url


def two(n):
    return ("0" + str(n)) if n < 10 else str(n)


def time_left(seconds):
    """'Expires in MM:SS' ('... 2h05m' past 99:59, '... 10h+', 'Expired' at zero); at most 16 characters."""
    if seconds <= 0:
        return "Expired"
    seconds = int(seconds)
    if seconds < 6000:
        return "Expires in " + two(seconds // 60) + ":" + two(seconds % 60)
    if seconds < 36000:
        return "Expires in " + str(seconds // 3600) + "h" + two((seconds % 3600) // 60) + "m"
    return "Expires in 10h+"


def split_code(code, width):
    """Split a user code into at most two lines of width: after a dash if that works, else in halves."""
    if len(code) <= width:
        return [code]
    dash = code.find("-")
    if 0 < dash < width and len(code) - dash - 1 <= width:
        return [code[: dash + 1], code[dash + 1 :]]
    half = (len(code) + 1) // 2
    return [code[:half], code[half:]]


def text(x, y, s, scale=1):
    return (x, y, s, scale)


def pending_screen(p, now):
    """Text ops for a Pending state at Unix time now."""
    ops = []
    url = wrap(short_url(p.verification_uri), COLS, 2)
    left = time_left(p.expires_epoch - now)
    code = p.user_code
    if len(code) <= BIG_COLS:
        ops.append(text(0, 0, "Sign in at:"))
        for i, line in enumerate(url):
            ops.append(text(0, (1 + i) * CHAR, line))
        ops.append(text(0, 3 * CHAR, "Enter code:"))
        ops.append(text(centre_x(code, BIG), 4 * CHAR, code, BIG))
    elif len(code) <= 2 * BIG_COLS:
        for i, line in enumerate(url):
            ops.append(text(0, i * CHAR, line))
        for i, part in enumerate(split_code(code, BIG_COLS)):
            ops.append(text(centre_x(part, BIG), (2 + 2 * i) * CHAR, part, BIG))
    else:
        ops.append(text(0, 0, "Sign in at:"))
        for i, line in enumerate(url):
            ops.append(text(0, (1 + i) * CHAR, line))
        ops.append(text(0, 3 * CHAR, "Enter code:"))
        for i, line in enumerate(wrap(code, COLS, 2)):
            ops.append(text(centre_x(line), (4 + i) * CHAR, line))
    ops.append(text(centre_x(left), 7 * CHAR, left))
    return ops


def pending_qr_screen(p, now, qr_box=64):
    """Text ops for the right-hand side when a QR code fills the left qr_box x qr_box pixels."""
    cols = (WIDTH - qr_box) // CHAR
    x0 = qr_box
    ops = [text(x0, 0, fit("Scan or", cols)), text(x0, CHAR, fit("enter:", cols))]
    for i, part in enumerate(split_code(p.user_code, cols)[:2]):
        part = fit(part, cols)
        ops.append(text(x0 + (cols - len(part)) * CHAR // 2, (3 + i) * CHAR, part))
    seconds = p.expires_epoch - now
    if seconds <= 0:
        left = "Expired"
    elif seconds < 6000:
        left = two(int(seconds) // 60) + ":" + two(int(seconds) % 60)
    else:
        left = ">1h"
    ops.append(text(x0 + (cols - len(left)) * CHAR // 2, 7 * CHAR, left))
    return ops


SIGNIN_TITLE = "Sign-in required"
SIGNIN_PAIR = ("Press PAIR", "to get a code")
SIGNIN_NO_PAIR = ("Run on gateway:", "edgetoken login")


def since_text(s, now):
    """'Since HH:MM UTC' for the first day, then 'Since YYYY-MM-DD'; at most 16 characters.

    Sliced from the validated ISO string: no date arithmetic on the board.
    """
    if now - s.since_epoch < 86400:
        return "Since " + s.since[11:16] + " UTC"
    return "Since " + s.since[0:10]


def signin_screen(s, now):
    """Text ops for a SigninRequired state at Unix time now."""
    ops = [text(centre_x(SIGNIN_TITLE), CHAR, SIGNIN_TITLE)]
    for i, line in enumerate(SIGNIN_PAIR if s.pair else SIGNIN_NO_PAIR):
        ops.append(text(centre_x(line), (3 + i) * CHAR, line))
    since = since_text(s, now)
    ops.append(text(centre_x(since), 7 * CHAR, since))
    return ops


def end_screen(e):
    """Text ops for an Ended state."""
    title, sub = END_TEXT.get(e.state, ("Sign-in ended", ""))
    ops = [text(centre_x(title), 3 * CHAR, title)]
    if sub:
        ops.append(text(centre_x(sub), 4 * CHAR, sub))
    return ops


def cleared_screen():
    """Nothing: the screen is blank."""
    return []


def screen_for(state, now):
    """Text ops for any parsed state (Pending, Ended, SigninRequired, Cleared or None = blank)."""
    if state is None or state.kind == "cleared":
        return cleared_screen()
    if state.kind == "ended":
        return end_screen(state)
    if state.kind == "signin_required":
        return signin_screen(state, now)
    return pending_screen(state, now)


class Screen:
    """What to show now, given the messages so far.

    The agent publishes the end state and clears the retained message right after it; the end
    screen stays END_HOLD_SECONDS so a person can read it, unless a new flow starts. What arrives
    during the hold (the clear, or a sign-in required notice when the flow failed) is shown after it.
    """

    def __init__(self, hold_seconds=END_HOLD_SECONDS):
        self.hold_seconds = hold_seconds
        self.state = None
        self.ended_at = None
        self.after = None  # what the screen shows once a held end screen expires

    def apply(self, parsed, now):
        """Take a parse_login() result; invalid payloads (None) change nothing. Returns True if changed."""
        if parsed is None:
            return False
        if parsed.kind == "ended":
            self.state = parsed
            self.ended_at = now
            self.after = None
            return True
        held = self.state is not None and self.state.kind == "ended"
        if parsed.kind == "cleared":
            if held:
                self.after = None
                return False  # tick() clears it after the hold
            changed = self.state is not None
            self.state = None
            return changed
        if parsed.kind == "signin_required" and held:
            self.after = parsed  # tick() shows it after the hold
            return False
        self.state = parsed
        self.ended_at = None
        self.after = None
        return True

    def tick(self, now):
        """Expire a held end screen. Returns True if the screen changed."""
        if self.ended_at is not None and now - self.ended_at >= self.hold_seconds:
            self.state = self.after
            self.ended_at = None
            self.after = None
            return True
        return False

    def ops(self, now):
        return screen_for(self.state, now)


def frame(ops):
    """The screen as ROWS strings of COLS characters (for tests and terminal simulators).

    Scale-2 text puts each character on every other column of its first row.
    """
    grid = [[" "] * COLS for _ in range(ROWS)]
    for x, y, s, scale in ops:
        row = y // CHAR
        col = x // CHAR
        for i, ch in enumerate(s):
            c = col + i * scale
            if 0 <= row < ROWS and 0 <= c < COLS:
                grid[row][c] = ch
    return ["".join(r) for r in grid]
