"""Simulator throughput: samples per second for 1, 2 and 4 workers, and peak memory; before and after.

    .venv/bin/python benchmarks/simulate.py [--subjects 0-3] [--poses 4] [--size 256] [--workers 1 2 4]
                                            [--before REV] [--steady] [--trim-row] [--repeat N]

With ``--before REV`` the same runs are first made with the code of git
revision REV (checked out in a temporary worktree, run through its own CLI),
so a change to the simulator is measured before and after on the same machine
in one run. ``--workers`` > 1 is a local Dask cluster today (a process pool
before the Dask backend).

Each row runs ``3ddx simulate`` in a fresh process into a fresh folder, with
the LLP26 shape cache already built (building it is a one-off: ~30 s for the
first subject of a process, ~7 s for each next one), so the rows measure the
per-dataset work: synthetic CT, rendering, writing. "peak MB / process" is
the largest resident memory of any one process of the run (each worker holds
one subject's CT at a time). The last table times loading cached subjects.

A row's wall time includes the run's fixed cost: starting Python and
importing torch, the Dask cluster and its worker processes, each worker's
first imports. With ``--steady`` each row is also run on the first half of
the subjects, and "steady samples/s" is the difference of the two runs'
samples over the difference of their wall times: the rate at which a long
run (a study of hundreds of CTs) makes samples once it is going. With
``--repeat N`` every run is made N times (full and half runs alternating) and
each cell is the median over the N (the steady rate: the median of the N
pairs' rates), since one pair's difference is as noisy as the machine.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


_MEASURE = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def run(subjects: str, poses: int, size: int, workers: int, src: Path | None = None,
        voxel_mm: float = 1.0, extra_env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall time (s) and the peak RSS (MB) of the largest process of one simulate run (``src``: another
    checkout's; ``extra_env``: variables set for the run, which its Dask workers inherit)."""
    import os

    env = dict(os.environ) | (extra_env or {})
    if src is not None:
        env["PYTHONPATH"] = str(src)
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "threeddx.cli", "simulate", "--out", str(Path(d) / "out"), "--subjects",
               subjects, "--poses", str(poses), "--size", str(size), "--workers", str(workers), "--voxel-mm",
               str(voxel_mm)]
        t = time.perf_counter()
        # a wrapper process, so that RUSAGE_CHILDREN covers this run only
        out = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], check=True, capture_output=True, text=True,
                             env=env)
        wall = time.perf_counter() - t
    return wall, int(out.stdout.strip().splitlines()[-1]) / 1024


def worktree(rev: str, where: Path) -> Path:
    """A checkout of ``rev`` (its ``src`` folder)."""
    repo = Path(__file__).resolve().parents[1]
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(where), rev], check=True,
                   capture_output=True)
    return where / "src"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", default="0-3")
    ap.add_argument("--poses", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--before", help="also run the code of this git revision, first")
    ap.add_argument("--before-workers", type=int, nargs="+",
                    help="worker counts for --before (default: --workers; the old code's memory may not allow 4)")
    ap.add_argument("--voxel-mm", type=float, default=1.0, help="synthetic CT voxel size (default 1 mm)")
    ap.add_argument("--trim-row", action="store_true",
                    help="also run this checkout's 2 workers with MALLOC_TRIM_THRESHOLD_=65536, what a Dask nanny "
                         "gives its workers by default (threeddx.cluster's module doc)")
    ap.add_argument("--steady", action="store_true",
                    help="also run the first half of the subjects: the steady-state rate, without the fixed cost")
    ap.add_argument("--repeat", type=int, default=1, help="runs per row; cells are medians (default 1)")
    args = ap.parse_args()

    from threeddx.simulator.anatomy import load_shape, parse_subject_range

    ids = parse_subject_range(args.subjects)
    for k in ids:  # warm the shape cache (not timed)
        load_shape(k)
    n = len(ids) * args.poses
    print(f"# simulate benchmark: subjects {args.subjects} x {args.poses} poses = {n} samples at {args.size} px, "
          f"{args.voxel_mm:g} mm voxels, medians of {args.repeat} run(s), "
          f"{platform.machine()}, Python {sys.version.split()[0]}")
    print()
    half = ids[:len(ids) // 2]
    if args.steady and not half:
        raise SystemExit("--steady needs at least 2 subjects")
    steady = ["steady samples/s"] if args.steady else []
    print("| " + " | ".join(["code", "workers", "wall s", "samples/s", "s/subject", *steady, "peak MB / process"]) + " |")
    print("|---" * (6 + len(steady)) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        codes = [(f"before ({args.before})", worktree(args.before, Path(tmp) / "before"),
                  args.before_workers or args.workers, None)] if args.before else []
        codes.append(("this checkout", None, args.workers, None))
        if args.trim_row:
            codes.append(("this checkout, Dask's MALLOC_TRIM_THRESHOLD_=65536", None, [2],
                          {"MALLOC_TRIM_THRESHOLD_": "65536"}))
        for label, src, counts, env in codes:
            for w in counts:
                walls, peaks, rates = [], [], []
                for _ in range(args.repeat):
                    wall, peak = run(args.subjects, args.poses, args.size, w, src, args.voxel_mm, env)
                    walls.append(wall)
                    peaks.append(peak)
                    if args.steady:
                        wall_half, _ = run(",".join(map(str, half)), args.poses, args.size, w, src, args.voxel_mm, env)
                        extra = (len(ids) - len(half)) * args.poses
                        rates.append(extra / (wall - wall_half) if wall > wall_half else float("nan"))
                wall = statistics.median(walls)
                cells = [label, str(w), f"{wall:.1f}", f"{n / wall:.2f}", f"{wall / len(ids):.1f}"]
                if args.steady:
                    cells.append(f"{statistics.median(rates):.2f}")
                print("| " + " | ".join(cells + [f"{max(peaks):.0f}"]) + " |", flush=True)
        if args.before:
            subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[1]), "worktree", "remove", "--force",
                            str(Path(tmp) / "before")], capture_output=True)
    print()
    times = []
    for _ in range(3):
        for k in ids:
            t = time.perf_counter()
            load_shape(k)
            times.append((time.perf_counter() - t) * 1000)
    print(f"loading a cached subject: median {statistics.median(times):.1f} ms (max {max(times):.1f} ms, "
          f"{len(times)} loads)")


if __name__ == "__main__":
    main()
