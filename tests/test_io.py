import numpy as np
import pytest
import SimpleITK as sitk

from phantoms import make_volume
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
