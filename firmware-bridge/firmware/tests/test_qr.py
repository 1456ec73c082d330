import unittest

from edgedisplay import qr


class FakeFb:
    def __init__(self, w, h):
        self.w, self.h = w, h
        self.px = [[0] * w for _ in range(h)]

    def fill_rect(self, x, y, w, h, c):
        for yy in range(y, y + h):
            for xx in range(x, x + w):
                self.px[yy][xx] = c


def checker(n):
    return [[(r + c) % 2 == 0 for c in range(n)] for r in range(n)]


class Placement(unittest.TestCase):
    def test_version3_fits_at_scale_2_with_one_module_quiet_zone(self):
        self.assertEqual(qr.placement(29, 64, 64), (3, 3, 2))

    def test_too_big_returns_none(self):
        self.assertIsNone(qr.placement(70, 64, 64))
        matrix = checker(70)
        self.assertIsNone(qr.ops(matrix, 0, 0, 64, 64))


class Rects(unittest.TestCase):
    def test_runs_are_merged(self):
        m = [[True, True, False, True], [False, False, False, False], [True, True, True, True], [False] * 4]
        self.assertEqual(qr.rects(m, 10, 20, 2), [(10, 20, 4, 2), (16, 20, 2, 2), (10, 24, 8, 2)])

    def test_drawn_pixels_match_the_matrix(self):
        m = checker(21)
        ops = qr.ops(m, 0, 0, 64, 64)
        fb = FakeFb(64, 64)
        qr.draw(fb, ops)
        x, y, scale = qr.placement(21, 64, 64)
        self.assertGreaterEqual(scale, 2)
        for r in range(21):
            for c in range(21):
                for dy in range(scale):
                    for dx in range(scale):
                        want = 0 if m[r][c] else 1  # dark module = unlit pixel on a lit box
                        self.assertEqual(fb.px[y + r * scale + dy][x + c * scale + dx], want)
        self.assertEqual(fb.px[0][0], 1)  # quiet zone lit


class Encoder(unittest.TestCase):
    def test_injected_encoder(self):
        seen = []

        def enc(text):
            seen.append(text)
            return checker(25)

        self.assertEqual(len(qr.make_matrix("https://example.com/device", enc)), 25)
        self.assertEqual(seen, ["https://example.com/device"])

    def test_missing_library_or_failure_gives_none(self):
        self.assertIsNone(qr.make_matrix("x"))  # uQR is not installed on the host

        def broken(_text):
            raise ValueError("data too long")

        self.assertIsNone(qr.make_matrix("x", broken))
        self.assertIsNone(qr.make_matrix("x", lambda _t: [[True, False]]))


if __name__ == "__main__":
    unittest.main()
