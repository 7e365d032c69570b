"""FaceAlign Studio's engine: the library under the app and the headless commands (never imports Qt)."""
import os

# The per-face linear algebra is tiny (68 x 68 solves, 3 x 3 SVDs): BLAS threads only fight ONNX Runtime's and
# the capture thread for the cores (3DSTN measured 8.2 ms/face at 2 threads against 4.9 at 1 before this).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
