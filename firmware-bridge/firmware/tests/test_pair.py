import json
import unittest

from edgedisplay import pair


class PairRequest(unittest.TestCase):
    def test_payload_matches_the_schema_rules(self):
        raw = pair.pair_request(bytes(range(12)), (2026, 11, 25, 9, 5, 7, 2, 329))
        self.assertLessEqual(len(raw), 1024)
        obj = json.loads(raw)
        self.assertEqual(set(obj), {"request", "nonce", "at"})
        self.assertEqual(obj["request"], "signin")
        self.assertEqual(obj["nonce"], "000102030405060708090a0b")
        self.assertEqual(obj["at"], "2026-11-25T09:05:07Z")

    def test_nonce_bounds(self):
        self.assertEqual(len(pair.nonce_from(b"\xff" * 4)), 8)
        self.assertEqual(len(pair.nonce_from(b"\x00" * 32)), 64)
        with self.assertRaises(ValueError):
            pair.nonce_from(b"abc")
        with self.assertRaises(ValueError):
            pair.nonce_from(b"a" * 33)


if __name__ == "__main__":
    unittest.main()
