import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from phantoms import make_volume
from processes import terminal_signals
from threeddx.errors import InputError
from threeddx.io import (
    atomic_path,
    check_bones_present,
    load_ct,
    load_label_table,
    load_labels,
    parse_bones,
)


def small_ct(direction=None):
    vol = make_volume((12, 10, 8), spacing=(0.9, 0.8, 2.0), direction=direction, fill=-1000.0)
    vol.array[4:8, 3:7, 2:6] = 700.0
    return vol


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_volume_formats_round_trip(tmp_path, suffix):
    vol = small_ct(direction=np.diag([1.0, -1.0, 1.0]))
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(vol.to_sitk(), str(path))
    got = load_ct(path)
    np.testing.assert_array_equal(got.array, vol.array)
    np.testing.assert_allclose(got.spacing, vol.spacing, rtol=1e-6)
    np.testing.assert_allclose(got.index_to_world, vol.index_to_world, atol=1e-4)


def test_dicom_series(tmp_path):
    vol = small_ct()
    img = sitk.Cast(vol.to_sitk(), sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.1"
    folder = tmp_path / "series"
    folder.mkdir()
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        pos = img.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {
            "0008|0060": "CT",
            "0020|000e": series_uid,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1.2",
            "0020|0032": "\\".join(f"{p:.6f}" for p in pos),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0013": str(k + 1),
            "0018|0050": "2.0",
            "0028|1053": "1",
            "0028|1052": "0",
        }.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{k:03d}.dcm"))
        writer.Execute(sl)
    got = load_ct(folder)
    np.testing.assert_allclose(got.array, vol.array)
    np.testing.assert_allclose(got.spacing, vol.spacing, rtol=1e-4)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_ct(tmp_path / "nope.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"this is not a nifti file at all")
    with pytest.raises(InputError, match="cannot read"):
        load_ct(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no DICOM series"):
        load_ct(empty)


def test_labels_on_another_grid_are_refused(tmp_path):
    ct = small_ct()
    lab = make_volume((12, 10, 8), spacing=(1.0, 0.8, 2.0))
    path = tmp_path / "lab.nii.gz"
    sitk.WriteImage(sitk.Cast(lab.to_sitk(), sitk.sitkUInt8), str(path))
    with pytest.raises(InputError, match=r"not on the CT's grid.*spacing"):
        load_labels(path, ct)
    lab2 = make_volume((12, 10, 9), spacing=(0.9, 0.8, 2.0))
    sitk.WriteImage(sitk.Cast(lab2.to_sitk(), sitk.sitkUInt8), str(path))
    with pytest.raises(InputError, match=r"size"):
        load_labels(path, ct)


def test_parse_bones_forms():
    table = load_label_table()
    assert table["femur_left"] == 75 and table["hip_left"] == 77 and table["hip_right"] == 78
    bones = parse_bones(["pelvis=77+78", "femur_left=75"], table)
    assert bones == {"pelvis": (77, 78), "femur_left": (75,)}
    assert parse_bones(None, table) == {"pelvis": (77, 78), "femur_left": (75,), "femur_right": (76,)}
    spine = parse_bones(["spine"], table)["spine"]
    assert len(spine) == 25 and table["vertebrae_L5"] in spine and table["sacrum"] not in spine
    with pytest.raises(InputError, match="unknown bone 'tibia'"):
        parse_bones(["tibia"], table)
    with pytest.raises(InputError, match="integers"):
        parse_bones(["pelvis=a+b"], table)
    with pytest.raises(InputError, match="twice"):
        parse_bones(["femur_left", "femur_left=3"], table)
    for bad in ("../x=77", "/tmp/x=77", "a.b=3"):  # a bone's name becomes a file name
        with pytest.raises(InputError, match="is not allowed"):
            parse_bones([bad], table)


def test_custom_label_table(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("id,name\n1,clavicle\n2,humerus\n")
    assert parse_bones(["clavicle"], load_label_table(p)) == {"clavicle": (1,)}
    p.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="columns"):
        load_label_table(p)


def test_bone_missing_from_labels():
    lab = make_volume((4, 4, 4))
    lab.array[1, 1, 1] = 75
    check_bones_present({"femur_left": (75,)}, lab)
    with pytest.raises(InputError, match="'pelvis'.*no voxel"):
        check_bones_present({"pelvis": (77, 78)}, lab)


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out" / "file.npz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("killed")
    assert list((tmp_path / "out").iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"complete")
    assert target.read_bytes() == b"complete"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["file.npz"]


# ------------------------------------------------------------ result folders
def _bad_out(kind: str, tmp_path: Path) -> tuple[Path, str]:
    if kind == "a-file":
        (tmp_path / "f").write_text("x")
        return tmp_path / "f", "is a file, not a folder"
    if kind == "under-a-file":
        (tmp_path / "f").write_text("x")
        return tmp_path / "f" / "out", "is a file, not a folder"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    return tmp_path / "mine", "holds files that are not a 3ddx result (no summary.json)"


@pytest.mark.parametrize("kind", ["a-file", "under-a-file", "foreign-folder"])
def test_an_out_folder_that_cannot_be_a_result_is_refused(kind, tmp_path):
    from threeddx.io import check_out_folder

    import re

    out, msg = _bad_out(kind, tmp_path)
    with pytest.raises(InputError, match=re.escape(msg)):
        check_out_folder(out, "summary.json")
    if kind == "foreign-folder":
        assert (out / "thesis.tex").read_text() == "precious"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_parent_is_refused(tmp_path):
    from threeddx.io import check_out_folder

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(InputError, match="permission denied"):
            check_out_folder(ro / "out", "summary.json")
    finally:
        ro.chmod(0o755)


def test_a_result_folder_replaces_the_earlier_one_whole(tmp_path):
    from threeddx.io import result_folder

    out = tmp_path / "out"
    with result_folder(out, "summary.json") as f:
        (f / "pelvis.stl").write_text("old")
        (f / "femur_left.stl").write_text("old")
        (f / "summary.json").write_text("{}")
    with result_folder(out, "summary.json") as f:
        (f / "pelvis.stl").write_text("new")
        (f / "summary.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["pelvis.stl", "summary.json"]  # no stale femur
    assert (out / "pelvis.stl").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing hidden left behind


@pytest.mark.parametrize("err", [errno.ENOSPC, None], ids=["disk-full", "bug"])
def test_a_failed_write_leaves_the_earlier_result_and_no_partial(err, tmp_path):
    from threeddx.io import result_folder

    out = tmp_path / "out"
    with result_folder(out, "summary.json") as f:
        (f / "summary.json").write_text("earlier")
    expected = InputError if err else ZeroDivisionError
    with pytest.raises(expected) as e:
        with result_folder(out, "summary.json") as f:
            (f / "pelvis.stl").write_text("half")
            if err:
                raise OSError(err, os.strerror(err))
            1 / 0
    if err:
        assert str(e.value) == f"cannot write {out}: No space left on device; nothing written"
    assert [p.name for p in out.iterdir()] == ["summary.json"] and (out / "summary.json").read_text() == "earlier"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]



def test_ctrl_c_the_moment_after_a_temporary_is_made_leaves_nothing(tmp_path, monkeypatch):
    """The signal tests' race made deterministic: KeyboardInterrupt raised right after the hidden folder (or
    file) is created, before the writer has done anything, removes it (the name is bound before it exists)."""
    import pathlib

    from threeddx.io import atomic_path, result_folder

    mkdir, open_ = pathlib.Path.mkdir, os.open

    def mkdir_then_interrupt(self, *a, **k):
        mkdir(self, *a, **k)
        if self.name.endswith(".partial"):
            raise KeyboardInterrupt

    def open_then_interrupt(path, *a, **k):
        fd = open_(path, *a, **k)
        if ".tmp" in os.fspath(path):
            os.close(fd)
            raise KeyboardInterrupt
        return fd

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir_then_interrupt)
    monkeypatch.setattr(os, "open", open_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        with result_folder(tmp_path / "out", "summary.json"):
            pass
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "view.html"):
            pass
    assert list(tmp_path.iterdir()) == []

def _run_until_partial(args: list[str], parent: Path, sig: int) -> subprocess.CompletedProcess:
    """Start ``3ddx ARGS`` and send ``sig`` the moment a hidden ``.partial`` folder appears in ``parent``."""
    proc = subprocess.Popen([sys.executable, "-m", "threeddx.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=terminal_signals)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if any(p.name.endswith(".partial") for p in parent.iterdir()):
            proc.send_signal(sig)
            break
        time.sleep(0.002)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["SIGKILL", "SIGTERM", "Ctrl-C"])
def test_a_killed_predict_leaves_no_temporaries_after_the_next_run(tmp_path, sig):
    """SIGKILL while predict writes leaves its hidden folder; the next run into that output removes it. SIGTERM
    and Ctrl-C are cleaned up at once ('3ddx: terminated', 143; '3ddx: interrupted', 130; no traceback).
    Either way the earlier result is untouched."""
    example = Path(__file__).resolve().parents[1] / "src" / "threeddx" / "data" / "example" / "llp26-10_p00.npz"
    out = tmp_path / "out"
    args = ["predict", str(example), "--out", str(out), "--mesh", "dual"]
    assert subprocess.run([sys.executable, "-m", "threeddx.cli", *args], capture_output=True).returncode == 0
    before = (out / "summary.json").read_bytes()
    r = _run_until_partial(args, tmp_path, sig)
    if sig != signal.SIGKILL:
        code, line = (143, "3ddx: terminated") if sig == signal.SIGTERM else (130, "3ddx: interrupted")
        assert r.returncode == code and r.stderr.strip().splitlines()[-1] == line, r.stderr[-500:]
        assert "Traceback" not in r.stderr
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    else:
        assert r.returncode == -signal.SIGKILL
        assert [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]  # what a killed writer leaves
    assert (out / "summary.json").read_bytes() == before
    assert subprocess.run([sys.executable, "-m", "threeddx.cli", *args], capture_output=True).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_live_writers_temporaries_are_left_alone(tmp_path):
    """Only a dead writer's temporaries are removed: a live one's (two runs into one folder) stay."""
    from threeddx.io import remove_dead_temporaries, writer_tag

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = writer_tag().rsplit(".", 1)[0]
    mine = tmp_path / f".out.{writer_tag()}.abcd1234.partial"
    gone = tmp_path / f".out.{host}.{dead.pid}.abcd1234.partial"
    elsewhere = tmp_path / f".out.otherhost.{dead.pid}.abcd1234.partial"
    other = tmp_path / f".other.{host}.{dead.pid}.abcd1234.partial"
    for p in (mine, gone, elsewhere, other):
        p.mkdir()
    assert remove_dead_temporaries(tmp_path / "out") == [gone]
    assert mine.is_dir() and elsewhere.is_dir() and other.is_dir() and not gone.exists()
    page = tmp_path / f".view.html.{host}.{dead.pid}.k1ll3d.tmp.html"  # atomic_path's leftover of a killed writer
    live = tmp_path / f".view.html.{writer_tag()}.w0rk1n.tmp.html"
    page.write_text("half"), live.write_text("half")
    assert remove_dead_temporaries(tmp_path / "view.html", files=True) == [page] and live.exists()
