"""Import PySide6 safely: cv2 (contrib build) points QT_QPA_PLATFORM_PLUGIN_PATH at its own Qt plugins on import,
which breaks PySide6, so cv2 is imported first and the variable cleared before Qt loads."""
import os

import cv2  # noqa: F401  (must precede PySide6)

os.environ.pop("QT_QPA_PLATFORM_PLUGIN_PATH", None)

from PySide6 import QtCore, QtGui, QtWidgets  # noqa: E402

__all__ = ["QtCore", "QtGui", "QtWidgets"]
