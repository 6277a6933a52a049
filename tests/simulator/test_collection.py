"""threeddx.simulator.collection: simulate from the user's CTs (NIfTI, DICOM series), problems, splits, Dask."""
import csv
import filecmp
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import trimesh

from threeddx.cli import main
from threeddx.simulator.collection import Case, assign_splits, collection_settings, find_cases, label_mesh, read_table
from threeddx.errors import InputError
from threeddx.geometry import XrayGeometry
from threeddx.metrics import point_to_surface

SPACING = 3.0
N = 64  # voxels per side: a 192 mm cube


def _phantom(shift=(0.0, 0.0, 0.0)) -> tuple[sitk.Image, sitk.Image]:
    """A water body with two 'bones': an ellipsoid (label 1) and a sphere (label 2), world LPS mm."""
    idx = (np.arange(N) - (N - 1) / 2) * SPACING
    z, y, x = np.meshgrid(idx, idx, idx, indexing="ij")
    x, y, z = x - shift[0], y - shift[1], z - shift[2]
    body = (x / 90) ** 2 + (y / 70) ** 2 <= 1
    a = ((x + 30) / 40) ** 2 + (y / 25) ** 2 + ((z - 15) / 30) ** 2 <= 1
    b = (x - 40) ** 2 + y ** 2 + (z + 25) ** 2 <= 22 ** 2
    hu = np.where(body, 0, -1000).astype(np.int16)
    hu[a | b] = 900
    labels = np.zeros(hu.shape, np.uint8)
    labels[a], labels[b] = 1, 2
    imgs = []
    for arr in (hu, labels):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((SPACING,) * 3)
        img.SetOrigin(tuple(float(idx[0]) for _ in range(3)))
        imgs.append(img)
    return imgs[0], imgs[1]


def _write_dicom_series(img: sitk.Image, folder: Path) -> None:
    """A CT as a DICOM series (one file per slice, position and orientation tags), through SimpleITK."""
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = "1.2.826.0.1.3680043.2.1125.1.42"
    for k in range(img.GetDepth()):
        s = img[:, :, k]
        for tag, value in (("0008|0060", "CT"), ("0020|000d", series + ".1"), ("0020|000e", series + ".2"),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0020|0013", str(k + 1)),
                           ("0020|0032", "\\".join(f"{v:.4f}" for v in img.TransformIndexToPhysicalPoint((0, 0, k)))),
                           ("0018|0050", f"{SPACING}"), ("0028|0030", f"{SPACING}\\{SPACING}")):
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(s)


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """Three usable cases (NIfTI folder, DICOM series, flat NIfTI pair) and one broken one (labels off grid)."""
    root = tmp_path_factory.mktemp("cts")
    ct, labels = _phantom()
    (root / "nifti").mkdir()
    sitk.WriteImage(ct, str(root / "nifti" / "ct.nii.gz"))
    sitk.WriteImage(labels, str(root / "nifti" / "labels.nii.gz"))
    ct2, labels2 = _phantom(shift=(6.0, -3.0, 9.0))
    _write_dicom_series(ct2, root / "dicom" / "ct")
    sitk.WriteImage(labels2, str(root / "dicom" / "segmentations.nii.gz"))
    ct3, labels3 = _phantom(shift=(-9.0, 0.0, -6.0))
    sitk.WriteImage(ct3, str(root / "flat_ct.nrrd"))
    sitk.WriteImage(labels3, str(root / "flat_labels.nii.gz"))
    (root / "broken").mkdir()
    sitk.WriteImage(ct, str(root / "broken" / "ct.nii.gz"))
    off = sitk.Image(labels)
    off.SetOrigin((0.0, 0.0, 0.0))
    sitk.WriteImage(off, str(root / "broken" / "labels.nii.gz"))
    return root


def test_the_naming_rule_finds_every_case(collection):
    cases = {c.case_id: c for c in find_cases(collection)}
    assert sorted(cases) == ["broken", "dicom", "flat", "nifti"]
    assert cases["dicom"].ct.endswith("dicom/ct") and cases["dicom"].labels.endswith("segmentations.nii.gz")
    assert cases["flat"].ct.endswith("flat_ct.nrrd")


@pytest.mark.parametrize("text, message", [
    ("id,ct,labels\na,x,y\n", "columns case_id, ct, labels"),
    ("case_id,ct,labels\na,x,y\na,x,y\n", "appears twice"),
    ("case_id,ct,labels,split\na,x,y,holdout\n", "train, val or test"),
    ("case_id,ct,labels\n../a,x,y\n", "without '/'"),
])
def test_a_bad_table_is_one_line_naming_the_row(text, message, tmp_path):
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(InputError, match=message):
        read_table(tmp_path / "t.csv")


def test_splits_are_by_case_seeded_and_keep_the_given_ones():
    cases = [Case(f"c{k:02d}", "ct", "lab", "test" if k == 0 else None) for k in range(20)]
    a, b = assign_splits(cases, 0), assign_splits(cases, 0)
    assert a == b and a[0].split == "test"
    counts = {s: sum(c.split == s for c in a[1:]) for s in ("train", "val", "test")}
    assert counts == {"train": 13, "val": 3, "test": 3}
    assert assign_splits(cases, 1) != a


def test_a_label_mesh_is_watertight_and_where_the_sphere_is():
    idx = np.arange(40) - 19.5
    z, y, x = np.meshgrid(idx, idx, idx, indexing="ij")
    mask = x ** 2 + y ** 2 + z ** 2 <= 12 ** 2
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    mesh = label_mesh(mask, affine)
    assert mesh.is_watertight and mesh.euler_number == 2 and mesh.volume > 0
    r = np.linalg.norm(mesh.vertices - 19.5 * 1.5, axis=1)
    assert abs(np.median(r) - 12 * 1.5) < 0.5  # within a third of a voxel of the true radius


def _depth_errors(out: Path, case: str) -> np.ndarray:
    errors = []
    for sample in sorted((out / "samples" / case).glob("pose_*.npz")):
        with np.load(sample) as z:
            g = XrayGeometry.from_json(str(z["geometry"]))
            dirs, src = g.ray_directions_world(), g.source_position_world
            for c, bone in enumerate(z["bones"]):
                mesh = trimesh.load(out / "meshes" / case / f"{bone}.ply")
                assert mesh.is_watertight
                sel = z["masks"][c] > 0
                for key in ("depth_front", "depth_back"):
                    errors.append(point_to_surface(src + dirs[sel] * z[key][c][sel][:, None], mesh))
    return np.concatenate(errors)


@pytest.fixture(scope="module")
def simulated(collection, tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "out"
    code = main(["simulate", "--ct-dir", str(collection), "--bones", "blob=1", "ball=2", "--size", "64", "--poses",
                 "3", "--out", str(out)])
    assert code == 0
    return out


def test_a_collection_is_simulated_with_its_broken_case_recorded(simulated, capsys):
    problems = list(csv.DictReader(open(simulated / "problems.csv")))
    assert [p["case_id"] for p in problems] == ["broken"] and "not on the CT's grid" in problems[0]["problem"]
    rows = list(csv.DictReader(open(simulated / "manifest.csv")))
    assert sorted({r["subject_id"] for r in rows}) == ["dicom", "flat", "nifti"] and len(rows) == 9
    by_case = {}
    for r in rows:
        by_case.setdefault(r["subject_id"], set()).add(r["split"])
        with np.load(simulated / r["render"]) as z:
            assert {"materials", "material_names", "depth_front", "depth_back", "geometry"} <= set(z.files)
            assert str(z["subject"]) == r["subject_id"] and str(z["split"]) == r["split"]
    assert all(len(s) == 1 for s in by_case.values())  # every pose of a case in one split


@pytest.mark.parametrize("case", ["nifti", "dicom", "flat"])
def test_depths_lie_on_the_label_meshes(simulated, case):
    assert np.median(_depth_errors(simulated, case)) < 0.3


def test_a_rerun_writes_nothing_new(simulated, collection):
    before = {p: p.stat().st_mtime_ns for p in simulated.rglob("*.npz")}
    assert main(["simulate", "--ct-dir", str(collection), "--bones", "blob=1", "ball=2", "--size", "64", "--poses",
                 "3", "--out", str(simulated)]) == 0
    assert {p: p.stat().st_mtime_ns for p in simulated.rglob("*.npz")} == before


def test_other_settings_into_the_same_folder_are_refused(simulated, collection, capsys):
    assert main(["simulate", "--ct-dir", str(collection), "--bones", "blob=1", "--size", "64", "--poses", "3",
                 "--out", str(simulated)]) == 2
    assert "other settings" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--bones", "nothing_like_this"], "unknown bone"),
    (["--random-subjects", "3"], "only for synthetic bodies"),
])
def test_collection_mistakes_are_one_line(args, message, collection, tmp_path, capsys):
    assert main(["simulate", "--ct-dir", str(collection), *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_the_bundled_chest_ct_is_a_collection_and_trains(tmp_path):
    """The real chest CT (spine, scapulae) through --cts; depths on the label meshes; configs/tiny trains."""
    from threeddx.io import bundled_chest_ct
    from threeddx.training.train import load_config, train

    ct, labels = bundled_chest_ct()
    (tmp_path / "cts.csv").write_text(f"case_id,ct,labels,split\nchest,{ct},{labels},train\n")
    out = tmp_path / "chest"
    bones = ["spine", "scapula_left", "scapula_right"]
    assert main(["simulate", "--cts", str(tmp_path / "cts.csv"), "--bones", *bones, "--size", "64", "--poses", "2",
                 "--out", str(out)]) == 0
    assert np.median(_depth_errors(out, "chest")) < 0.3
    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(repo / "configs" / "tiny.yaml", {"data": {"root": str(out), "bones": bones, "val_split": None},
                                                       "optim": {"epochs": 1}, "out": str(tmp_path / "run")})
    train(cfg, progress=False)
    assert (tmp_path / "run" / "last.pt").exists()


# --------------------------------------------------------------- Dask
def test_a_killed_dask_worker_changes_no_byte(collection, simulated, tmp_path, monkeypatch):
    """A scheduler and two worker processes on localhost; one worker is killed while it runs a case.
    Dask reruns the case elsewhere and the dataset equals the one-process run byte for byte."""
    pytest.importorskip("dask.distributed")
    from dask.distributed import Client, LocalCluster

    from threeddx.simulator.collection import simulate_collection

    settings = collection_settings(None, collection, bones=["blob=1", "ball=2"], size=64, poses=3)
    out = tmp_path / "dask"
    killed = []
    for key, value in os.environ.items():  # the nannies set OMP_NUM_THREADS=1 and kin here: undone after the test
        monkeypatch.setenv(key, value)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_"):
        if key not in os.environ:
            monkeypatch.setenv(key, "")
            monkeypatch.delenv(key)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = client.run(os.getpid)

        def kill_one_busy_worker():
            """SIGKILL a worker as soon as it runs a case (a case takes ~0.3 s; this looks every 10 ms)."""
            end = time.time() + 60
            while time.time() < end and not killed:
                busy = [w for w, keys in client.processing().items() if keys]
                if busy:
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed.append(busy[0])
                time.sleep(0.01)

        watcher = threading.Thread(target=kill_one_busy_worker)
        watcher.start()
        simulate_collection(settings, out, scheduler=cluster.scheduler_address, progress=False)
        watcher.join()
        log = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.transition_log))
    assert killed, "no worker was killed"
    started = {}
    for entry in log:
        if entry[2] == "processing":
            started[entry[0]] = started.get(entry[0], 0) + 1
    assert max(started.values()) >= 2, "the killed worker's task was not run again"
    files = sorted(p.relative_to(simulated) for p in simulated.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    different = [f for f in files if not filecmp.cmp(simulated / f, out / f, shallow=False)]
    assert different == []
