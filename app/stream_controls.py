"""The toolbar's live-stream controls: an "OSC" toggle, host, port and "VMC", kept in the app's settings.

The GUI thread only swaps the bridge's streamer object; the worker thread sends every processed frame of the
primary method (engine/stream/, docs/library-and-stream.md). The host name is looked up by the worker on its
first frame, so an unknown or slow host never freezes the window; the counters below the toggle say how many
frames went out and how many messages were refused or dropped (a receiver that is not there).
"""
from __future__ import annotations

from app.qt import QtCore, QtWidgets
from engine.stream.osc import DEFAULT_PORT, OscStreamer, parse_target


class StreamControls(QtWidgets.QWidget):
    def __init__(self, bridge, settings: QtCore.QSettings, parent=None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.settings = settings
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(4, 0, 4, 0)
        self.enabled = QtWidgets.QCheckBox("OSC stream")
        self.enabled.setToolTip("send landmarks, visibility and pose of every processed frame over OSC (UDP)")
        self.host = QtWidgets.QLineEdit(str(settings.value("stream/host", "127.0.0.1")))
        self.host.setFixedWidth(120)
        self.host.setToolTip("receiver's host name or address")
        self.port = QtWidgets.QSpinBox()
        self.port.setRange(1, 65535)
        try:
            self.port.setValue(int(settings.value("stream/port", DEFAULT_PORT)))
        except (TypeError, ValueError):  # a hand-edited settings file
            self.port.setValue(DEFAULT_PORT)
        self.port.setToolTip("receiver's UDP port")
        self.port.setFixedWidth(80)
        self.vmc = QtWidgets.QCheckBox("VMC")
        self.vmc.setToolTip("also send the VMC protocol's head bone and blink / mouth blend values (first face)")
        self.vmc.setChecked(_true(settings.value("stream/vmc", "false")))
        self.state = QtWidgets.QLabel()
        for w in (self.host, self.port, self.enabled, self.vmc):
            w.setFocusPolicy(QtCore.Qt.ClickFocus)  # never the window's initial focus: keys stay shortcuts
        for w in (self.enabled, self.host, QtWidgets.QLabel(":"), self.port, self.vmc, self.state):
            lay.addWidget(w)
        lay.addStretch(1)
        self.setSizePolicy(QtWidgets.QSizePolicy.Maximum, QtWidgets.QSizePolicy.Preferred)
        self.enabled.setChecked(_true(settings.value("stream/enabled", "false")))
        self.enabled.toggled.connect(self.apply)
        self.vmc.toggled.connect(self.apply)
        self.host.editingFinished.connect(self.apply)
        self.port.valueChanged.connect(self.apply)
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self.show_state)
        self.timer.start(500)
        self.apply()

    def apply(self) -> None:
        """Start, retarget or stop the stream from the controls, and keep them in the settings."""
        for key, value in (("enabled", self.enabled.isChecked()), ("host", self.host.text().strip()),
                           ("port", self.port.value()), ("vmc", self.vmc.isChecked())):
            self.settings.setValue(f"stream/{key}", value)
        new = None
        current = self.bridge.stream
        if current is not None and self.enabled.isChecked() and (current.host, current.port, current.vmc) == \
                (self.host.text().strip(), self.port.value(), self.vmc.isChecked()):
            return  # nothing changed (editingFinished fires on every focus change): keep its counters
        if self.enabled.isChecked():
            try:
                host, port = parse_target(f"{self.host.text().strip()}:{self.port.value()}")
                new = OscStreamer(host, port, vmc=self.vmc.isChecked())
            except ValueError as e:
                self.state.setText("no host")
                self.state.setToolTip(str(e))
        old, self.bridge.stream = self.bridge.stream, new
        if old is not None:
            old.close()
        self.show_state()

    def show_state(self) -> None:
        st = self.bridge.stream
        if st is None:
            if not self.enabled.isChecked():
                self.state.setText("")
            return
        self.state.setText(f"{st.frames} frames" + (f", {st.dropped} dropped" if st.dropped else ""))
        self.state.setToolTip(f"to {st.target}" + (f"; last problem: {st.last_error}" if st.last_error else ""))

    def close_stream(self) -> None:
        old, self.bridge.stream = self.bridge.stream, None
        if old is not None:
            old.close()


def _true(value) -> bool:
    return str(value).lower() == "true"
