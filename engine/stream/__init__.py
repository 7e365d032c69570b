"""Live output over OSC (Open Sound Control, UDP): FaceAlign's own address space and the VMC protocol.

``messages`` turns a processed frame into OSC messages (pure functions, no I/O); ``vmc`` holds the VMC head bone
and blend values; ``osc.OscStreamer`` sends them without ever blocking the caller. The address space is in
docs/library-and-stream.md. Never imports Qt: the app and ``python main.py stream`` share it.
"""
from engine.stream.osc import OscStreamer, parse_target

__all__ = ["OscStreamer", "parse_target"]
