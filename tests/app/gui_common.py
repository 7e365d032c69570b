"""What every GUI driver script shares (each runs the real window in its own process, started by a test)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import engine  # noqa: E402,F401  (pins BLAS threads before numpy loads, as main.py does)
from app.qt import QtCore, QtWidgets  # noqa: E402


def wait_until(app, cond, timeout: float, poll: float = 0.01) -> bool:
    """Process events until ``cond()`` holds or ``timeout`` seconds pass; whether it held."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        app.processEvents(QtCore.QEventLoop.AllEvents, 50)
        if cond():
            return True
        time.sleep(poll)
    return False


def start_app():
    """(QApplication, MainWindow class) with VisPy on the same Qt binding, as main.py starts the GUI."""
    app = QtWidgets.QApplication(sys.argv[:1])
    from vispy import app as vispy_app

    vispy_app.use_app("pyside6")
    from app.main_window import MainWindow

    return app, MainWindow
