"""Runs firmware/main.py on the host with fake hardware modules, to check the wiring:
MQTT message -> parse -> Screen -> OLED, reconnect after a network error, the pair button."""

import json
import os
import sys
import time as real_time
import types
import unittest

MAIN = os.path.join(os.path.dirname(__file__), "..", "main.py")
FAKES = ("machine", "network", "ssd1306", "framebuf", "umqtt", "umqtt.simple", "config", "ntptime", "time", "main")


class Stop(Exception):
    """Ends main()'s endless loop from inside a fake."""


class World:
    """Everything the fakes record, and the script they follow."""

    def __init__(self, script, button_presses=()):
        self.script = list(script)  # per check_msg(): payload bytes, None (nothing), OSError or Stop
        self.clock = 1795600000.0
        self.texts = []  # (x, y, text) drawn at scale 1
        self.big_pixels = 0
        self.shows = []  # the texts on screen at each show()
        self.fills = []
        self.connects = 0
        self.subscribed = []
        self.published = []
        self.button_presses = list(button_presses)
        self.sleeps = []


def install(world):
    saved = {name: sys.modules.get(name) for name in FAKES}

    t = types.ModuleType("time")
    t.time = lambda: int(world.clock)
    t.gmtime = lambda secs=None: real_time.gmtime(int(world.clock) if secs is None else secs)[:8]
    t.ticks_ms = lambda: int(world.clock * 1000)
    t.ticks_add = lambda a, b: a + b
    t.ticks_diff = lambda a, b: a - b

    def sleep_ms(ms):
        world.clock += ms / 1000

    def sleep(s):
        world.sleeps.append(s)
        world.clock += s

    t.sleep_ms = sleep_ms
    t.sleep = sleep

    machine = types.ModuleType("machine")

    class Pin:
        IN, PULL_UP = 1, 2

        def __init__(self, n, *args):
            self.n = n

        def value(self):
            return 0 if world.button_presses and world.button_presses.pop(0) else 1

    machine.Pin = Pin
    machine.I2C = lambda *a, **k: object()
    machine.unique_id = lambda: b"\x01\x02\x03"

    network = types.ModuleType("network")
    network.STA_IF = 0

    class WLAN:
        def __init__(self, _i):
            pass

        def active(self, _on):
            pass

        def isconnected(self):
            return True

    network.WLAN = WLAN

    framebuf = types.ModuleType("framebuf")
    framebuf.MONO_HLSB = 3

    class FrameBuffer:
        def __init__(self, buf, w, h, fmt):
            self.lit = set()

        def text(self, s, x, y, c):
            for i in range(len(s)):
                self.lit.add((x + 8 * i + 1, y + 1))  # one pixel per glyph is enough to count

        def pixel(self, x, y):
            return (x, y) in self.lit

    framebuf.FrameBuffer = FrameBuffer

    ssd1306 = types.ModuleType("ssd1306")

    class Oled:
        def __init__(self, w, h, i2c, addr=0x3C):
            self.current = []

        def fill(self, c):
            self.current = []

        def text(self, s, x, y, c):
            self.current.append(s)
            world.texts.append((x, y, s))

        def fill_rect(self, x, y, w, h, c):
            world.fills.append((x, y, w, h, c))
            if w == 2 and h == 2:
                world.big_pixels += 1

        def show(self):
            world.shows.append(list(self.current))

    ssd1306.SSD1306_I2C = Oled

    umqtt = types.ModuleType("umqtt")
    simple = types.ModuleType("umqtt.simple")

    class MQTTClient:
        def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0, ssl=None):
            self.cb = None

        def set_callback(self, cb):
            self.cb = cb

        def connect(self):
            world.connects += 1

        def subscribe(self, topic, qos=0):
            world.subscribed.append((topic, qos))

        def check_msg(self):
            step = world.script.pop(0) if world.script else Stop()
            if isinstance(step, BaseException):
                raise step
            if step is not None:
                self.cb(b"edgetoken/pi-01/login", step)

        def ping(self):
            pass

        def publish(self, topic, msg, retain=False, qos=0):
            world.published.append((topic, msg, qos))

        def disconnect(self):
            pass

    simple.MQTTClient = MQTTClient
    umqtt.simple = simple

    config = types.ModuleType("config")
    config.__dict__.update(
        WIFI_SSID="x", WIFI_PASSWORD="x", MQTT_HOST="h", MQTT_PORT=1883, MQTT_TLS=False, MQTT_CA_FILE="",
        MQTT_USER="u", MQTT_PASSWORD="p", TOPIC_PREFIX="edgetoken", DEVICE_ID="pi-01", I2C_ID=0,
        I2C_SDA=21, I2C_SCL=22, OLED_ADDR=0x3C, SHOW_QR=False, PAIR_PIN=4,
    )
    ntptime = types.ModuleType("ntptime")
    ntptime.settime = lambda: None

    for name, mod in (
        ("time", t), ("machine", machine), ("network", network), ("framebuf", framebuf),
        ("ssd1306", ssd1306), ("umqtt", umqtt), ("umqtt.simple", simple), ("config", config),
        ("ntptime", ntptime),
    ):
        sys.modules[name] = mod
    return saved


def restore(saved):
    for name, mod in saved.items():
        if mod is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = mod


def run_main(world):
    saved = install(world)
    try:
        with open(MAIN, encoding="utf-8") as f:
            code = compile(f.read(), MAIN, "exec")
        try:
            exec(code, {"__name__": "__main__"})
        except Stop:
            pass
    finally:
        restore(saved)


def pending(code="ABCD", seconds=600):
    return json.dumps(
        {
            "state": "pending",
            "user_code": code,
            "verification_uri": "https://example.com/device",
            "expires_at": real_time.strftime("%Y-%m-%dT%H:%M:%SZ", real_time.gmtime(1795600000 + seconds)),
        }
    ).encode()


class MainLoop(unittest.TestCase):
    def test_pending_then_end_state_then_blank(self):
        ticks = [None] * 12  # 100 ms each: ~1.2 s
        world = World([pending()] + ticks + [b'{"state":"approved"}', b""] + [None] * 120)
        run_main(world)
        self.assertEqual(world.subscribed, [(b"edgetoken/pi-01/login", 1)])
        screens = [s for s in world.shows if s]
        self.assertIn("Enter code:", screens[1])
        self.assertIn("Expires in 10:00", screens[1])
        self.assertTrue(any("Expires in 09:59" in s for s in screens))
        self.assertGreater(world.big_pixels, 0)  # the code is drawn at scale 2
        self.assertTrue(any("Signed in" in s for s in screens))
        self.assertEqual(world.shows[-1], [])  # blank once the end screen's hold is over
        signed = max(i for i, s in enumerate(world.shows) if "Signed in" in s)
        self.assertGreater(len(world.shows), signed + 1)

    def test_invalid_payload_is_not_shown(self):
        bad = json.loads(pending())
        bad["device_code"] = "DEVICECODE"
        world = World([json.dumps(bad).encode()] + [None] * 15)
        run_main(world)
        self.assertFalse(any("Enter code:" in s for s in world.shows))

    def test_reconnects_with_backoff_after_a_network_error(self):
        world = World([OSError("reset"), None, OSError("reset"), pending()] + [None] * 12)
        run_main(world)
        self.assertEqual(world.connects, 3)
        self.assertEqual(world.sleeps, [1, 1])  # back-off resets after a successful connect
        self.assertTrue(any(s and s[0] == "No connection" for s in world.shows))
        self.assertTrue(any("Enter code:" in s for s in world.shows))

    def test_button_publishes_one_pair_request_per_press(self):
        world = World([None] * 6, button_presses=[True, True, False, True])
        run_main(world)
        topics = [p[0] for p in world.published]
        self.assertEqual(topics, [b"edgetoken/pi-01/pair", b"edgetoken/pi-01/pair"])
        body = json.loads(world.published[0][1])
        self.assertEqual(body["request"], "signin")
        self.assertEqual(len(body["nonce"]), 24)
        self.assertEqual(world.published[0][2], 1)


if __name__ == "__main__":
    unittest.main()
