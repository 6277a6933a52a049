"""threeddx.cluster: where tasks run (the Dask paths of simulate and evaluate are tested beside them)."""
import os

from threeddx.cluster import map_tasks


def test_a_local_dask_cluster_leaves_the_environment_as_it_was(monkeypatch):
    """Dask's nannies set OMP_NUM_THREADS=1 and kin in the parent's environment for their workers: undone after.
    Its MALLOC_TRIM_THRESHOLD_ never reaches the workers (module doc: it made the simulator 1.5x slower)."""
    for key in ("OMP_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(key, raising=False)
    before = dict(os.environ)
    seen = list(map_tasks(os.getenv, [("MALLOC_TRIM_THRESHOLD_",), ("OMP_NUM_THREADS",)], workers=2, progress=False))
    assert sorted(seen, key=str) == ["1", None]  # the workers' own: one OpenMP thread, no trim threshold
    assert dict(os.environ) == before


def test_ctrl_c_during_a_dask_run_is_one_line(tmp_path):
    """Ctrl-C while local Dask workers simulate: '3ddx: interrupted', exit 130, and none of Dask's notices
    about the tasks it cancels."""
    import signal
    import subprocess
    import sys
    import time

    from processes import terminal_signals

    out = tmp_path / "sim"
    proc = subprocess.Popen([sys.executable, "-m", "threeddx.cli", "simulate", "--out", str(out), "--subjects", "0-9",
                             "--poses", "1", "--size", "64", "--voxel-mm", "2", "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=terminal_signals)
    deadline = time.time() + 120
    while not list(out.glob("samples/*/pose_00.npz")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)  # the first subject done: the workers are running the next ones
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines() == ["3ddx: interrupted"], err[-2000:]
