"""Pure, hardware-free logic of the edgetoken companion display (parse, layout, QR)."""
