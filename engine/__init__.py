"""FaceAlign Studio's engine: the library under the app and the headless commands (never imports Qt)."""
import os

# The per-face linear algebra is tiny (68 x 68 solves, 3 x 3 SVDs): BLAS threads only fight ONNX Runtime's and
# the capture thread for the cores (3DSTN measured 8.2 ms/face at 2 threads against 4.9 at 1 before this).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def _keep_freed_buffers() -> None:
    """Let glibc keep freed multi-MB blocks for reuse instead of unmapping them on every free.

    A batch's tail allocates (B, 536, 68) float64 temporaries (TPS kernel, distances): several MB each, every
    frame. By default glibc hands such blocks back to the OS and the next frame page-faults them in again, which
    cost more than the arithmetic (16 faces: 3DSTN's TPS warp 4.3 -> 1.9 ms, a line profile of its decode). Blocks up to
    32 MB now come from the heap, which is trimmed only beyond 64 MB free. No effect off glibc.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 64 * 1024 * 1024)
    except (OSError, AttributeError):  # not glibc (musl, ...): keep its defaults
        pass


_keep_freed_buffers()


def __getattr__(name: str):
    """``from engine import FaceAligner`` without making ``import engine`` (main.py's first line) load OpenCV,
    ONNX Runtime and MediaPipe."""
    if name in ("FaceAligner", "Face"):
        from engine import aligner

        return getattr(aligner, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
