"""The `edt` package (seung-lab, PyPI) on the inputs of tests/geometry_perf.rs::edt_side_by_side.

pip install edt numpy; python3 docs/edt_side_by_side.py [threads]
Prints the same checksum as the Rust test (sum of distances) and the best of 5 wall times.
"""
import sys
import time

import edt
import numpy as np

n = 256
threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
c = (n - 1) / 2.0
i = np.arange(n, dtype=np.float64) - c
d2 = i[:, None, None] ** 2 + i[None, :, None] ** 2 + i[None, None, :] ** 2
for name, frac in [("dense ball r=0.4n", 0.4), ("sparse ball r=0.1n", 0.1)]:
    m = np.ascontiguousarray(d2 <= (frac * n) ** 2)
    d = edt.edt(m, anisotropy=(1.0, 0.8, 1.2), parallel=threads)
    print(f"{name}: checksum {d.astype(np.float64).sum():.1f}")
    best, best_cpu = float("inf"), float("inf")
    for _ in range(5):
        t0, c0 = time.perf_counter(), time.process_time()
        edt.edt(m, anisotropy=(1.0, 0.8, 1.2), parallel=threads)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    print(f"edt package {name} 256^3 ({threads} threads): best wall {best * 1e3:.1f} ms, "
          f"best CPU {best_cpu * 1e3:.1f} ms")
