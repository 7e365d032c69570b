"""Built-in methods register themselves on import."""
from engine.methods import baseline, mediapipe_ref, prnet  # noqa: F401
