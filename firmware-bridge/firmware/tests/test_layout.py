import json
import os
import unittest

from edgedisplay import layout, parse

HERE = os.path.dirname(__file__)
T = 1795600000


def pending(code="WDJB-MJHT", uri="https://example.com/device", expires=T + 600):
    return parse.Pending(code, uri, None, "", expires, None)


def fits(ops):
    """Every op lies fully inside the 128x64 screen."""
    for x, y, s, scale in ops:
        if x < 0 or y < 0 or x + len(s) * layout.CHAR * scale > layout.WIDTH:
            return False
        if y + layout.CHAR * scale > layout.HEIGHT:
            return False
    return True


class SharedFixtures(unittest.TestCase):
    """The same cases the Node display simulator is checked against."""

    def test_layout_cases(self):
        with open(os.path.join(HERE, "layout_cases.json"), encoding="utf-8") as f:
            cases = json.load(f)["cases"]
        self.assertGreaterEqual(len(cases), 8)
        for case in cases:
            with self.subTest(case["name"]):
                state = parse.parse_login(case["payload"].encode("utf-8"))
                ops = layout.screen_for(state, case["now"])
                self.assertTrue(fits(ops))
                self.assertEqual(layout.frame(ops), case["frame"])


class PendingScreen(unittest.TestCase):
    def test_short_code_is_large_and_centred(self):
        ops = layout.pending_screen(pending(code="BCDFGHJK"), T)
        big = [op for op in ops if op[3] == 2]
        self.assertEqual(big, [(0, 32, "BCDFGHJK", 2)])

    def test_nine_char_code_splits_after_dash_into_two_large_lines(self):
        ops = layout.pending_screen(pending(code="WDJB-MJHT"), T)
        big = [op[2] for op in ops if op[3] == 2]
        self.assertEqual(big, ["WDJB-", "MJHT"])

    def test_code_over_16_chars_is_small_and_complete(self):
        code = "A" * 20
        ops = layout.pending_screen(pending(code=code), T)
        self.assertTrue(all(op[3] == 1 for op in ops))
        self.assertIn(code, "".join(op[2] for op in ops))

    def test_every_code_length_fits_the_screen(self):
        for n in range(1, 33):
            with self.subTest(n):
                self.assertTrue(fits(layout.pending_screen(pending(code="C" * n), T)))

    def test_url_wraps_and_marks_a_cut(self):
        ops = layout.pending_screen(pending(code="ABCD", uri="https://" + "a" * 40 + ".example"), T)
        lines = [op[2] for op in ops if op[1] in (8, 16)]
        self.assertEqual(len(lines), 2)
        self.assertTrue(lines[1].endswith("~"))

    def test_scheme_is_dropped_only_for_https(self):
        self.assertEqual(layout.short_url("https://example.com/"), "example.com")
        self.assertEqual(layout.short_url("https://example.com/device"), "example.com/device")
        self.assertEqual(layout.short_url("http://127.0.0.1:4000/device"), "http://127.0.0.1:4000/device")

    def test_time_left(self):
        self.assertEqual(layout.time_left(899), "Expires in 14:59")
        self.assertEqual(layout.time_left(59.9), "Expires in 00:59")
        self.assertEqual(layout.time_left(5999), "Expires in 99:59")
        self.assertEqual(layout.time_left(7500), "Expires in 2h05m")
        self.assertEqual(layout.time_left(36000), "Expires in 10h+")
        self.assertEqual(layout.time_left(0), "Expired")
        self.assertEqual(layout.time_left(-3), "Expired")
        for s in (0, 1, 599, 5999, 6000, 86399):
            self.assertLessEqual(len(layout.time_left(s)), layout.COLS)

    def test_qr_side_screen_stays_right_of_the_box(self):
        ops = layout.pending_qr_screen(pending(code="WDJB-MJHT"), T, 64)
        self.assertTrue(fits(ops))
        self.assertTrue(all(op[0] >= 64 for op in ops))
        self.assertEqual([op[2] for op in ops if op[1] in (24, 32)], ["WDJB-", "MJHT"])
        self.assertEqual(ops[-1][2], "10:00")


class EndAndClear(unittest.TestCase):
    def test_end_screens_name_the_outcome(self):
        texts = {s: " ".join(op[2] for op in layout.end_screen(parse.Ended(s))) for s in parse.END_STATES}
        self.assertIn("Signed in", texts["approved"])
        self.assertIn("denied", texts["denied"])
        self.assertIn("expired", texts["expired"])
        self.assertIn("cancelled", texts["cancelled"])
        for s in parse.END_STATES:
            self.assertTrue(fits(layout.end_screen(parse.Ended(s))))

    def test_cleared_is_blank(self):
        self.assertEqual(layout.screen_for(parse.CLEARED, T), [])
        self.assertEqual(layout.frame([]), [" " * 16] * 8)


def signin(pair=True, since="2026-11-25T09:30:05Z"):
    return parse.SigninRequired(since, parse.parse_utc(since), pair)


class SigninRequiredScreen(unittest.TestCase):
    def test_pair_true_asks_for_the_button(self):
        frame = layout.frame(layout.screen_for(signin(pair=True), T))
        self.assertEqual(frame[1], "Sign-in required")
        self.assertIn("Press PAIR", frame[3])
        self.assertNotIn("edgetoken login", "".join(frame))
        self.assertEqual(frame[7].strip(), "Since 09:30 UTC")

    def test_pair_false_points_at_the_gateway(self):
        frame = layout.frame(layout.screen_for(signin(pair=False), T))
        self.assertEqual(frame[1], "Sign-in required")
        self.assertNotIn("PAIR", "".join(frame))
        self.assertIn("edgetoken login", frame[4])

    def test_since_switches_to_the_date_after_a_day(self):
        s = signin()
        self.assertEqual(layout.since_text(s, s.since_epoch + 86399), "Since 09:30 UTC")
        self.assertEqual(layout.since_text(s, s.since_epoch + 86400), "Since 2026-11-25")
        self.assertEqual(layout.since_text(s, s.since_epoch - 3600), "Since 09:30 UTC")  # clock behind

    def test_fits_the_screen(self):
        for pair in (True, False):
            for now in (T, T + 10 * 86400):
                ops = layout.signin_screen(signin(pair=pair), now)
                self.assertTrue(fits(ops))
                self.assertTrue(all(len(op[2]) <= layout.COLS for op in ops))


class ScreenStateMachine(unittest.TestCase):
    def test_end_screen_is_held_then_cleared(self):
        s = layout.Screen(hold_seconds=10)
        self.assertTrue(s.apply(pending(), T))
        self.assertEqual(s.state.kind, "pending")
        self.assertTrue(s.apply(parse.Ended("approved"), T + 1))
        self.assertFalse(s.apply(parse.CLEARED, T + 1))  # the agent's clear right after the end state
        self.assertEqual(s.state.kind, "ended")
        self.assertFalse(s.tick(T + 10))
        self.assertTrue(s.tick(T + 11))
        self.assertIsNone(s.state)
        self.assertEqual(s.ops(T + 11), [])

    def test_new_flow_replaces_a_held_end_screen(self):
        s = layout.Screen()
        s.apply(parse.Ended("denied"), T)
        s.apply(pending(), T + 1)
        self.assertEqual(s.state.kind, "pending")
        self.assertFalse(s.tick(T + 100))

    def test_clear_without_end_state_blanks_at_once(self):
        s = layout.Screen()
        s.apply(pending(), T)
        self.assertTrue(s.apply(parse.CLEARED, T))
        self.assertIsNone(s.state)

    def test_pending_replaces_signin_required_and_clear_blanks(self):
        s = layout.Screen()
        self.assertTrue(s.apply(signin(), T))
        self.assertEqual(s.state.kind, "signin_required")
        self.assertTrue(s.apply(pending(), T + 1))
        self.assertEqual(s.state.kind, "pending")
        s = layout.Screen()
        s.apply(signin(), T)
        self.assertTrue(s.apply(parse.CLEARED, T + 1))  # signed in again
        self.assertIsNone(s.state)

    def test_failed_flow_shows_signin_required_after_the_end_screen(self):
        # A pair flow was denied: end state, the clear, then the agent's notice again.
        s = layout.Screen(hold_seconds=10)
        s.apply(pending(), T)
        s.apply(parse.Ended("denied"), T + 1)
        self.assertFalse(s.apply(parse.CLEARED, T + 1))
        self.assertFalse(s.apply(signin(), T + 1))
        self.assertEqual(s.state.kind, "ended")
        self.assertTrue(s.tick(T + 11))
        self.assertEqual(s.state.kind, "signin_required")
        self.assertFalse(s.tick(T + 100))

    def test_clear_during_the_hold_drops_a_queued_notice(self):
        s = layout.Screen(hold_seconds=10)
        s.apply(parse.Ended("approved"), T)
        s.apply(signin(), T)
        s.apply(parse.CLEARED, T + 1)  # signed in after all
        self.assertTrue(s.tick(T + 10))
        self.assertIsNone(s.state)

    def test_invalid_payload_changes_nothing(self):
        s = layout.Screen()
        s.apply(pending(), T)
        self.assertFalse(s.apply(None, T))
        self.assertEqual(s.state.kind, "pending")


if __name__ == "__main__":
    unittest.main()
