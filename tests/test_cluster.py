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
