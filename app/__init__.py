"""FaceAlign Studio's PySide6 GUI: widgets, the VisPy mesh view and plots; the ML lives in engine/."""
import engine  # noqa: F401  (engine/__init__ pins BLAS threads; it must run before the app loads numpy)
