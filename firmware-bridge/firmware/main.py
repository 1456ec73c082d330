"""edgetoken companion display: ESP32 + SSD1306 128x64 OLED, MicroPython >= 1.23.

Subscribes to <TOPIC_PREFIX>/<DEVICE_ID>/login and shows the sign-in code, the URL (and a QR code
when uQR is installed), the time left, then the end state. Optional button: ask for a new sign-in.
All parsing and layout is in edgedisplay/ (pure, tested on the host); this file is only hardware.

Files on the board: main.py, config.py, edgedisplay/*.py, ssd1306.py, umqtt/simple.py, and
optionally uQR.py and the CA certificate.
"""

import os
import time

import framebuf
import machine
import network
import ssd1306
from umqtt.simple import MQTTClient

import config
from edgedisplay import layout, pair, parse, qr

# MicroPython ports with a 2000 epoch (ESP32) need the offset to compare with Unix expiry times.
UNIX_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0
KEEPALIVE_S = 60
QR_BOX = 64


def unix_now():
    return time.time() + UNIX_OFFSET


def clock_is_set():
    return time.gmtime()[0] >= 2024


def connect_wifi():
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if wlan.isconnected():
        return
    wlan.connect(config.WIFI_SSID, config.WIFI_PASSWORD)
    deadline = time.ticks_add(time.ticks_ms(), 30000)
    while not wlan.isconnected():
        if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
            raise OSError("wifi timeout")
        time.sleep_ms(200)


def sync_clock():
    # Without NTP the time left is wrong, but the code and URL still show: never fatal.
    try:
        import ntptime

        ntptime.settime()
    except Exception:  # noqa: BLE001
        pass


def make_client():
    kwargs = {}
    if getattr(config, "MQTT_TLS", False):
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=config.MQTT_CA_FILE)
        kwargs["ssl"] = ctx
    client_id = "edgedisplay-" + "".join("%02x" % b for b in machine.unique_id())
    return MQTTClient(
        client_id,
        config.MQTT_HOST,
        port=config.MQTT_PORT,
        user=config.MQTT_USER,
        password=config.MQTT_PASSWORD,
        keepalive=KEEPALIVE_S,
        **kwargs,
    )


class Display:
    def __init__(self):
        i2c = machine.I2C(config.I2C_ID, sda=machine.Pin(config.I2C_SDA), scl=machine.Pin(config.I2C_SCL))
        self.oled = ssd1306.SSD1306_I2C(layout.WIDTH, layout.HEIGHT, i2c, addr=config.OLED_ADDR)
        self.qr_for = None  # the Pending the cached matrix belongs to
        self.qr_matrix = None

    def text(self, x, y, s, scale):
        if scale == 1:
            self.oled.text(s, x, y, 1)
            return
        # framebuf has one 8x8 font: draw into a small buffer, then scale up pixel by pixel.
        w = layout.CHAR * len(s)
        small = framebuf.FrameBuffer(bytearray(w), w, layout.CHAR, framebuf.MONO_HLSB)
        small.text(s, 0, 0, 1)
        for py in range(layout.CHAR):
            for px in range(w):
                if small.pixel(px, py):
                    self.oled.fill_rect(x + px * scale, y + py * scale, scale, scale, 1)

    def matrix_for(self, pending):
        if self.qr_for is not pending:
            self.qr_for = pending
            url = pending.verification_uri_complete or pending.verification_uri
            self.qr_matrix = qr.make_matrix(url)  # slow on an ESP32: once per flow
        return self.qr_matrix

    def render(self, screen, now):
        self.oled.fill(0)
        state = screen.state
        pixel_ops = None
        if state is not None and state.kind == "pending" and getattr(config, "SHOW_QR", False):
            matrix = self.matrix_for(state)
            if matrix is not None:
                pixel_ops = qr.ops(matrix, 0, 0, QR_BOX, QR_BOX)
        if pixel_ops is not None:
            qr.draw(self.oled, pixel_ops)
            ops = layout.pending_qr_screen(state, now, QR_BOX)
        else:
            ops = screen.ops(now)
        for x, y, s, scale in ops:
            self.text(x, y, s, scale)
        self.oled.show()

    def message(self, line1, line2=""):
        self.oled.fill(0)
        self.oled.text(line1, layout.centre_x(line1), 3 * layout.CHAR, 1)
        if line2:
            self.oled.text(line2, layout.centre_x(line2), 4 * layout.CHAR, 1)
        self.oled.show()


def main():
    display = Display()
    display.message("edgetoken", "starting")
    screen = layout.Screen()
    topic = config.TOPIC_PREFIX + "/" + config.DEVICE_ID + "/"
    button = None
    if getattr(config, "PAIR_PIN", None) is not None:
        button = machine.Pin(config.PAIR_PIN, machine.Pin.IN, machine.Pin.PULL_UP)

    dirty = [True]  # a list: the callback cannot rebind an enclosing name without nonlocal

    def on_message(_topic, msg):
        if screen.apply(parse.parse_login(msg), unix_now()):
            dirty[0] = True

    backoff_s = 1
    clock_synced = False
    while True:
        client = None
        try:
            connect_wifi()
            if not clock_synced:
                sync_clock()
                clock_synced = clock_is_set()
            client = make_client()
            client.set_callback(on_message)
            client.connect()
            client.subscribe((topic + "login").encode(), qos=1)
            backoff_s = 1
            last_ping = time.ticks_ms()
            last_second = -1
            pressed = False
            while True:
                client.check_msg()
                now = unix_now()
                # Redraw on news, and every second for the time left.
                if screen.tick(now) or dirty[0] or now != last_second:
                    dirty[0] = False
                    last_second = now
                    display.render(screen, now)
                if time.ticks_diff(time.ticks_ms(), last_ping) > KEEPALIVE_S * 500:
                    client.ping()
                    last_ping = time.ticks_ms()
                if button is not None:
                    down = button.value() == 0
                    if down and not pressed and clock_is_set():
                        payload = pair.pair_request(os.urandom(12), time.gmtime())
                        client.publish((topic + "pair").encode(), payload, qos=1)
                        display.message("Sign-in", "requested")
                    pressed = down
                time.sleep_ms(100)
        except OSError:
            display.message("No connection", "retry in " + str(backoff_s) + "s")
            if client is not None:
                try:
                    client.disconnect()
                except OSError:
                    pass
            time.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 60)


main()
