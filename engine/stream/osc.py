"""Sending a frame's OSC messages over UDP without ever blocking or failing the pipeline that calls it.

The socket is non-blocking and connected to the target: a send that would block (the send buffer is full) is
dropped and counted, and a receiver that is not there (on the loopback, Linux reports the ICMP "port unreachable"
as ConnectionRefusedError on a later send) is counted too; the pipeline never waits and never sees an exception.
"""
from __future__ import annotations

import socket
import threading

from pythonosc.osc_message_builder import OscMessageBuilder

from engine.pipeline import FrameResult
from engine.stream.messages import Message, frame_messages
from engine.stream.vmc import vmc_messages

DEFAULT_PORT = 9000      # FaceAlign's own messages
VMC_PORT = 39539         # the port VMC receivers (VSeeFace, ...) listen on by default


def parse_target(text: str) -> tuple[str, int]:
    """"HOST:PORT" (or "[v6-address]:PORT") -> (host, port); a ValueError that shows the expected form."""
    host, sep, port = str(text).strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"--osc wants HOST:PORT with a port from 1 to 65535 (e.g. 127.0.0.1:{DEFAULT_PORT}), "
                         f"got {text!r}")
    return host, int(port)


def encode(address: str, args: list) -> bytes:
    """One OSC message datagram: ints as int32, floats as float32, strings as OSC strings."""
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


class OscStreamer:
    """Streams each processed frame of one method to ``host:port``: FaceAlign's messages, and with ``vmc`` the
    VMC head bone and blend values of the first face. ``send_frame`` may be called from any one thread (the
    pipeline's worker); counters are for display and tests."""

    def __init__(self, host: str, port: int, vmc: bool = False) -> None:
        parse_target(f"{host}:{port}")  # the same checks and message as the command line's
        self.host, self.port, self.vmc = host, int(port), vmc
        self.frames = 0          # frames handed to send_frame
        self.sent = 0            # datagrams the OS accepted
        self.dropped = 0         # datagrams not sent (would block, refused, unreachable)
        self.last_error = ""
        self._sock: socket.socket | None = None
        self._closed = False   # closed for good: a frame still in flight in the worker must not reopen it
        self._lock = threading.Lock()

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def open(self) -> None:
        """Resolve the host and make the socket; an OSError that names the target when the host is unknown. Done
        on the first frame if not called before (a name lookup can take seconds: never on a GUI thread)."""
        with self._lock:
            if self._closed:
                raise OSError(f"the stream to {self.target} is closed")
            if self._sock is not None:
                return
            try:
                family, kind, proto, _, addr = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
                sock = socket.socket(family, kind, proto)
                sock.setblocking(False)
                sock.connect(addr)
            except OSError as e:
                raise OSError(f"cannot stream to {self.target}: {e.strerror or e}") from e
            self._sock = sock

    def send_messages(self, messages: list[Message]) -> None:
        if self._sock is None:
            try:
                self.open()
            except OSError as e:
                self.dropped += len(messages)
                self.last_error = str(e)
                return
        sock = self._sock
        for address, args in messages:
            try:
                sock.send(encode(address, args))
                self.sent += 1
            except OSError as e:  # BlockingIOError, ConnectionRefusedError, a closed socket: drop, never raise
                self.dropped += 1
                self.last_error = f"{type(e).__name__}: {e.strerror or e}"

    def send_frame(self, res: FrameResult, method: str) -> None:
        """Every message of one processed frame for ``method``'s results."""
        self.frames += 1
        messages = frame_messages(res, method)
        if self.vmc:
            first = next((f.results[method] for f in res.faces if method in f.results), None)
            if first is not None:
                h, w = res.image.shape[:2]
                messages += vmc_messages(first, (w, h))
        self.send_messages(messages)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._sock is not None:
                self._sock.close()
                self._sock = None
