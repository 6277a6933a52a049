"""A "for processing" DICOM read as the model needs it: against the chain's own displayed image, and as stored.

    .venv/bin/python benchmarks/for_processing.py --data data/v5val [--n 6]

Per sample: the standard chain's detector signal (:func:`threeddx.simulator.physics.detector_signal`) is written
as a 16-bit "for processing" DX file, linear (LIN, sign +1) and logarithmic (LOG, sign -1), and read back
through predict's reader (:func:`threeddx.apps.radiograph.read_radiograph`: the chain's processing applied).
Printed: the correlation with the chain's own displayed image, and the worst bone's mask Dice of the released
model on it against its masks on the displayed image; and the same Dice for the linear values read as stored
(what the reader did before it converted them).
"""
from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
from pathlib import Path

import numpy as np


def write_raw(path: Path, pixels: np.ndarray, geo, relation: str, sign: int) -> Path:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1.1"  # Digital X-Ray Image Storage - For Processing
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PresentationIntentType, ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = \
        "FOR PROCESSING", relation, sign
    ds.DistanceSourceToDetector, ds.ImagerPixelSpacing = geo.sdd, list(geo.pixel_spacing)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--n", type=int, default=6)
    a = ap.parse_args()
    from threeddx.apps.radiograph import read_radiograph
    from threeddx.geometry import XrayGeometry
    from threeddx.inference import Predictor
    from threeddx.simulator.physics import detector_signal, process, sample_materials

    pred = Predictor(None, hip_anchor=None)

    def worst_dice(a_masks, b_masks):
        return min(2 * (x & y).sum() / max(x.sum() + y.sum(), 1) for x, y in zip(a_masks, b_masks))

    print(f"# {datetime.date.today()} {platform.machine()}; {a.data}, the released dual-face model")
    print("| sample | LIN +1: r | LIN +1: Dice | LOG -1: r | LOG -1: Dice | LIN read as stored: Dice |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for f in sorted(a.data.glob("samples/*/*.npz"))[: a.n]:
            with np.load(f) as z:
                geo = XrayGeometry.from_json(str(z["geometry"]))
                signal = detector_signal(sample_materials(z), geo, "standard")
            shown = process(signal, geo, "standard")
            ref = pred.infer(shown, geo).masks
            s = np.maximum(signal / signal.max(), 1e-6)
            cells = []
            for rel, sign, values in (("LIN", 1, 60000 * s), ("LOG", -1, -4000 * np.log(s))):
                path = write_raw(Path(tmp) / "raw.dcm", np.clip(np.round(values), 0, 65535), geo, rel, sign)
                img, g2, _ = read_radiograph(path, None, geo)
                cells += [f"{np.corrcoef(img.ravel(), shown.ravel())[0, 1]:.4f}",
                          f"{worst_dice(pred.infer(img, g2).masks, ref):.3f}"]
            cells.append(f"{worst_dice(pred.infer(60000 * s, geo).masks, ref):.3f}")
            print(f"| {f.parent.name}/{f.stem} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
