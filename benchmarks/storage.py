"""What a simulated dataset costs on disk and to read: per array its compressed size, and a sample's load time.

    .venv/bin/python benchmarks/storage.py --data data/sim256-10x [--n 20]

Over the first ``--n`` samples of the folder: the mean compressed bytes of each array in a sample's npz, the
folder's total, and the median time of reading a whole sample (every array) with numpy.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
import zipfile
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--n", type=int, default=20)
    a = ap.parse_args()
    files = sorted(a.data.glob("samples/*/*.npz"))
    sizes: dict[str, list[int]] = {}
    times = []
    for f in files[: a.n]:
        with zipfile.ZipFile(f) as zf:
            for info in zf.infolist():
                sizes.setdefault(info.filename[:-4], []).append(info.compress_size)
        t0 = time.perf_counter()
        with np.load(f) as z:
            {k: z[k] for k in z.files}
        times.append(time.perf_counter() - t0)
    total = sum(f.stat().st_size for f in files)
    print(f"# {datetime.date.today()} {platform.machine()}; {a.data}: {len(files)} samples, {total / 1e9:.2f} GB, "
          f"{total / max(len(files), 1) / 1e6:.2f} MB per sample; reading one: {1e3 * statistics.median(times):.1f} ms "
          f"(median of {len(times)})")
    print("| array | mean compressed kB | share |")
    print("|---|---|---|")
    whole = sum(statistics.mean(v) for v in sizes.values())
    for name, v in sorted(sizes.items(), key=lambda kv: -statistics.mean(kv[1])):
        print(f"| {name} | {statistics.mean(v) / 1e3:.1f} | {100 * statistics.mean(v) / whole:.0f} % |")


if __name__ == "__main__":
    main()
