"""Turn a QR matrix into pixel operations for a monochrome framebuffer.

The matrix itself comes from a QR encoder on the device; the reference firmware uses uQR
(https://github.com/JASchilz/uQR, copy uQR.py to the board). The encoder is injected, so this
module stays pure and testable on the host: encoder(text) -> list of rows of truthy/falsy modules.

Modules are drawn dark (0) on a lit (1) box, the polarity scanners expect; the lit box doubles as
the quiet zone.
"""

DEFAULT_QUIET = 1  # modules; 4 is the spec, but a lit border on an unlit screen scans fine with 1


def uqr_encoder(text):
    """Encode with uQR when it is installed on the board (border added by placement())."""
    from uQR import QRCode  # imported lazily: absent on the host and optional on the device

    qr = QRCode(border=0)
    qr.add_data(text)
    return qr.get_matrix()


def make_matrix(text, encoder=None):
    """The QR matrix for text, or None when no encoder is available or it fails."""
    enc = encoder or uqr_encoder
    try:
        matrix = enc(text)
    except Exception:  # noqa: BLE001 - ImportError, data too long: show the text screen instead
        return None
    if not matrix or len(matrix) != len(matrix[0]):
        return None
    return matrix


def placement(size, box_w, box_h, quiet=DEFAULT_QUIET):
    """(x, y, scale) of the matrix's top-left module, centred in a box; None if it cannot fit."""
    total = size + 2 * quiet
    scale = min(box_w, box_h) // total
    if scale < 1:
        return None
    x = (box_w - size * scale) // 2
    y = (box_h - size * scale) // 2
    return (x, y, scale)


def rects(matrix, x0, y0, scale):
    """Dark modules as (x, y, w, h) rectangles, horizontal runs merged (fewer fill_rect calls)."""
    out = []
    for r, row in enumerate(matrix):
        c = 0
        n = len(row)
        while c < n:
            if row[c]:
                start = c
                while c < n and row[c]:
                    c += 1
                out.append((x0 + start * scale, y0 + r * scale, (c - start) * scale, scale))
            else:
                c += 1
    return out


def ops(matrix, box_x, box_y, box_w, box_h, quiet=DEFAULT_QUIET):
    """Pixel ops for the whole QR box: ('fill', x, y, w, h, colour) tuples, or None if it does not fit.

    First op lights the box (quiet zone and light modules), the rest darken the dark modules.
    """
    where = placement(len(matrix), box_w, box_h, quiet)
    if where is None:
        return None
    x, y, scale = where
    result = [("fill", box_x, box_y, box_w, box_h, 1)]
    for rx, ry, rw, rh in rects(matrix, box_x + x, box_y + y, scale):
        result.append(("fill", rx, ry, rw, rh, 0))
    return result


def draw(fb, pixel_ops):
    """Apply ops() output to a framebuf.FrameBuffer-like object (fill_rect(x, y, w, h, c))."""
    for op in pixel_ops:
        _, x, y, w, h, colour = op
        fb.fill_rect(x, y, w, h, colour)
