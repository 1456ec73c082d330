# Copy to config.py on the board (mpremote cp config.py :config.py) and fill in.
# Secrets live only on the device; give the display its own broker account (see README ACL).

WIFI_SSID = "my-wifi"
WIFI_PASSWORD = "..."

MQTT_HOST = "192.168.1.10"
MQTT_PORT = 8883
MQTT_TLS = True
MQTT_CA_FILE = "ca.crt"  # PEM or DER of the CA that signed the broker's certificate
MQTT_USER = "display-pi-01"
MQTT_PASSWORD = "..."

TOPIC_PREFIX = "edgetoken"
DEVICE_ID = "pi-01"  # the agent's deviceId

I2C_ID = 0
I2C_SDA = 21
I2C_SCL = 22
OLED_ADDR = 0x3C

SHOW_QR = True  # needs uQR.py on the board; falls back to text when absent or the URL is too long
PAIR_PIN = None  # GPIO of a push button (to GND) that asks the agent for a new sign-in, or None
