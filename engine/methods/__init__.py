"""Built-in methods register themselves on import."""
from engine.methods import baseline, mediapipe_ref, prnet, stn3d  # noqa: F401
