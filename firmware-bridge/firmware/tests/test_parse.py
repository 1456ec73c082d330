import json
import os
import unittest

from edgedisplay import parse

HERE = os.path.dirname(__file__)


def load(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return json.load(f)


class LoginPayloadFixtures(unittest.TestCase):
    """parse_login agrees with schema/login.schema.json on the shared fixtures."""

    def test_valid_payloads_parse(self):
        for case in load("login_payloads.json")["valid"]:
            with self.subTest(case["name"]):
                self.assertIsNotNone(parse.parse_login(case["payload"].encode("utf-8")))

    def test_invalid_payloads_are_rejected(self):
        for case in load("login_payloads.json")["invalid"]:
            with self.subTest(case["name"]):
                self.assertIsNone(parse.parse_login(case["payload"].encode("utf-8")))

    def test_schema_examples_parse(self):
        schema_path = os.path.join(HERE, "..", "..", "schema", "login.schema.json")
        with open(schema_path, encoding="utf-8") as f:
            examples = json.load(f)["examples"]
        for example in examples:
            self.assertIsNotNone(parse.parse_login(json.dumps(example).encode()))


class ParseLogin(unittest.TestCase):
    def test_pending_fields(self):
        raw = (
            b'{"state":"pending","user_code":"WDJB-MJHT","verification_uri":"https://example.com/device",'
            b'"verification_uri_complete":"https://example.com/device?user_code=WDJB-MJHT",'
            b'"expires_at":"2026-11-25T10:15:00Z","message":"hello"}'
        )
        p = parse.parse_login(raw)
        self.assertEqual(p.kind, "pending")
        self.assertEqual(p.user_code, "WDJB-MJHT")
        self.assertEqual(p.verification_uri, "https://example.com/device")
        self.assertEqual(p.verification_uri_complete, "https://example.com/device?user_code=WDJB-MJHT")
        self.assertEqual(p.expires_at, "2026-11-25T10:15:00Z")
        self.assertEqual(p.expires_epoch, 1795601700)
        self.assertEqual(p.message, "hello")

    def test_optional_fields_absent(self):
        p = parse.parse_login(
            '{"state":"pending","user_code":"X","verification_uri":"https://a.example","expires_at":"2026-01-01T00:00:00Z"}'
        )
        self.assertIsNone(p.verification_uri_complete)
        self.assertIsNone(p.message)

    def test_end_states(self):
        for state in ("approved", "denied", "expired", "cancelled"):
            e = parse.parse_login(('{"state":"%s"}' % state).encode())
            self.assertEqual((e.kind, e.state), ("ended", state))

    def test_signin_required(self):
        s = parse.parse_login(b'{"state":"signin_required","since":"2026-11-25T09:30:05Z","pair":true}')
        self.assertEqual(s.kind, "signin_required")
        self.assertEqual(s.since, "2026-11-25T09:30:05Z")
        self.assertEqual(s.since_epoch, 1795600000 - 995)
        self.assertIs(s.pair, True)
        s = parse.parse_login('{"pair":false,"since":"2026-11-25T09:30:05Z","state":"signin_required"}')
        self.assertIs(s.pair, False)

    def test_zero_length_is_cleared(self):
        self.assertIs(parse.parse_login(b""), parse.CLEARED)
        self.assertEqual(parse.parse_login(b"").kind, "cleared")

    def test_oversized_payload_rejected_before_json(self):
        big = b'{"state":"approved","pad":"' + b"x" * 3000 + b'"}'
        self.assertIsNone(parse.parse_login(big))

    def test_invalid_utf8_rejected(self):
        self.assertIsNone(parse.parse_login(b'{"state":"\xff"}'))

    def test_none_rejected(self):
        self.assertIsNone(parse.parse_login(None))


class Helpers(unittest.TestCase):
    def test_parse_utc_matches_known_epochs(self):
        self.assertEqual(parse.parse_utc("1970-01-01T00:00:00Z"), 0)
        self.assertEqual(parse.parse_utc("2000-01-01T00:00:00Z"), 946684800)
        self.assertEqual(parse.parse_utc("2024-02-29T12:34:56.789Z"), 1709210096)
        self.assertIsNone(parse.parse_utc("2023-02-29T00:00:00Z"))
        self.assertIsNone(parse.parse_utc("2026-11-25T24:00:00Z"))
        self.assertIsNone(parse.parse_utc("2026-11-25T10:15:00.Z"))
        self.assertIsNone(parse.parse_utc("2026-11-25 10:15:00Z"))

    def test_display_url(self):
        self.assertTrue(parse.is_display_url("https://example.com"))
        self.assertTrue(parse.is_display_url("http://localhost/device"))
        self.assertFalse(parse.is_display_url("http://localhost.evil.test/device"))
        self.assertFalse(parse.is_display_url("https://example.com:99999999/x"))
        self.assertFalse(parse.is_display_url("https://exa_mple.com/x"))
        self.assertFalse(parse.is_display_url(None))


if __name__ == "__main__":
    unittest.main()
