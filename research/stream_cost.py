"""What streaming costs the pipeline's worker thread per frame: building and sending FaceAlign's messages (and
VMC's) for 1 and 4 faces, to a port where nobody listens (the sends are refused and counted) and to a bound socket
(the kernel accepts the datagrams; no reader thread competes with the sender for the interpreter). Run from the repository root: OMP_NUM_THREADS=1 python -m research.stream_cost"""
from __future__ import annotations

import socket
import time

import numpy as np


from engine.stream import OscStreamer  # noqa: E402
from tests.stream.test_stream import free_port, synthetic_frame  # noqa: E402


def main(frames: int = 300) -> None:
    print(f"{'faces':>5} {'vmc':>5} {'receiver':>9} {'median ms':>10} {'p90 ms':>7}  (per frame, {frames} frames)")
    for faces in (1, 4):
        for vmc in (False, True):
            for listening in (False, True):
                rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM) if listening else None
                if rx:
                    rx.bind(("127.0.0.1", 0))
                st = OscStreamer("127.0.0.1", rx.getsockname()[1] if rx else free_port(), vmc=vmc)
                frame = synthetic_frame(0, faces)
                st.send_frame(frame, "synthetic")  # the first send resolves and connects
                times = []
                for _ in range(frames):
                    t = time.perf_counter()
                    st.send_frame(frame, "synthetic")
                    times.append((time.perf_counter() - t) * 1e3)
                    time.sleep(0.001)  # frames arrive one at a time, as from the pipeline
                st.close()
                if rx:
                    rx.close()
                print(f"{faces:>5} {str(vmc):>5} {'bound' if listening else 'none':>9} {np.median(times):>10.3f} "
                      f"{np.percentile(times, 90):>7.3f}")


if __name__ == "__main__":
    main()
