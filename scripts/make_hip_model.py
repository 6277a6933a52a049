"""Generate the shipped shape models: src/threeddx/data/hip_model.npz (the pelvis with its hip-joint centres) and
femur_left_model.npz / femur_right_model.npz (each femur with its head centre).

    .venv/bin/python scripts/make_hip_model.py

The model of :mod:`threeddx.inference.hipjoint`: a PCA of the pelvis (both hemipelves)
of the 16 LLP26 training subjects only (the fixed split of
``threeddx.simulator.anatomy.subject_split``; the validation and test subjects stay
unseen), Procrustes-aligned, with the two hip-joint centres (LLP26's
``pelvis-LHJC`` / ``pelvis-RHJC``) as landmarks on the same modes
(:class:`threeddx.meshing.ssm.BoneSSM`). Stored as float32 (1.8 MB), so that
``predict`` does not build the LLP26 shapes through gias3 on first use. Run it again
only if the split or the LLP26 package changes; it records what it was made
from in ``provenance``.
"""
from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from importlib.metadata import version

    from threeddx.simulator.anatomy import subject_split
    from threeddx.meshing.ssm import SHIPPED_MODELS, BoneSSM

    subjects = sorted(k for k, s in subject_split().items() if s == "train")
    what = {("pelvis",): "the LLP26 pelvis (both hemipelves) with the hip-joint centres as landmarks",
            ("femur_left",): "the LLP26 left femur with its head centre as a landmark",
            ("femur_right",): "the LLP26 right femur with its head centre as a landmark"}
    for bones, out in SHIPPED_MODELS.items():
        model = BoneSSM.fit(subjects, list(bones))
        provenance = {
            "what": f"PCA of {what[bones]}",
            "source": f"musculoskeletal-models {version('musculoskeletal-models')} (LLP26, Zhang et al. 2016; MPL-2.0), via gias3",
            "subjects": subjects,
            "made_by": "scripts/make_hip_model.py",
            "date": date.today().isoformat(),
        }
        model.save(out, dtype=np.float32, provenance=provenance)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {model.n_modes()} modes, "
              f"{len(model.mean)} vertices, landmarks {', '.join(model.landmark_bones)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
