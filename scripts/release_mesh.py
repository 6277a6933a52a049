"""Choose a released model's meshing per bone on the validation split, and record it in the checkpoint.

    python scripts/release_mesh.py --model dualface \\
        --candidate dual=runs/pelvis-ssm/val-dual --candidate ssm=runs/pelvis-ssm/val-ssm

Each candidate is a mesher (threeddx.meshing.reconstruct.MESHERS) and the folder of a
``3ddx evaluate --split val --mesh MESHER`` of that model (its results.json).
The rule, fixed before any test figure is looked at: per bone, the mesher with
the lowest mean validation ASSD (the primary figure; ties go to the first
candidate). The choice is written into the released checkpoint's ``mesh``
field ({bone: mesher}, bones meshed ``dual`` left out), which predict, evaluate,
the demo and the server use unless ``--mesh`` says otherwise
(:attr:`threeddx.inference.predictor.Predictor.mesh_method`), and the evidence (each
candidate's validation ASSD and HD95 per bone, the folders) goes under
``release["mesh_choice"]``. The weights are not touched.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BONES = ("pelvis", "femur_left", "femur_right")


def choose(candidates: dict[str, dict]) -> tuple[dict[str, str], dict]:
    """{mesher: results.json} -> ({bone: mesher} for the bones not meshed dual, the evidence per bone)."""
    evidence: dict = {}
    chosen: dict = {}
    for bone in BONES:
        rows = {m: r["bones"][bone] for m, r in candidates.items() if r["bones"].get(bone, {}).get("assd_mean") is not None}
        if not rows:
            continue
        best = min(rows, key=lambda m: rows[m]["assd_mean"])  # min keeps the first of equal ones
        evidence[bone] = {m: {"assd": round(v["assd_mean"], 3), "hd95": round(v["hd95_mean"], 3)} for m, v in rows.items()}
        evidence[bone]["chosen"] = best
        if best != "dual":
            chosen[bone] = best
    return chosen, evidence


def main() -> int:
    from threeddx.network.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
    from threeddx.meshing.reconstruct import MESHERS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="dualface", help="a released model's name, or a checkpoint path")
    ap.add_argument("--candidate", action="append", required=True, metavar="MESHER=EVAL_DIR",
                    help="a mesher and its validation evaluation folder (repeat)")
    a = ap.parse_args()
    candidates: dict[str, dict] = {}
    folders: dict[str, str] = {}
    for item in a.candidate:
        mesher, _, folder = item.partition("=")
        if mesher not in MESHERS or not folder:
            sys.exit(f"release_mesh: --candidate {item!r}: expected MESHER=EVAL_DIR with MESHER one of {', '.join(MESHERS)}")
        results = json.loads((Path(folder) / "results.json").read_text())
        if results.get("split") != "val":
            sys.exit(f"release_mesh: {folder} is an evaluation of split {results.get('split')!r}; the choice is made on val")
        candidates[mesher], folders[mesher] = results, folder
    chosen, evidence = choose(candidates)
    path = resolve_checkpoint(a.model)
    ck = load_checkpoint(path)
    ck["mesh"] = chosen or None
    ck.setdefault("release", {})["mesh_choice"] = {
        "rule": "per bone, the mesher with the lowest mean validation ASSD (scripts/release_mesh.py)",
        "validation": evidence, "evaluations": folders, "date": datetime.date.today().isoformat(),
    }
    save_checkpoint(ck, path)
    print(f"{path}: mesh {chosen or 'dual for every bone'}")
    for bone, ev in evidence.items():
        print(f"  {bone}: " + ", ".join(f"{m} ASSD {v['assd']:.2f} HD95 {v['hd95']:.2f}" for m, v in ev.items()
                                        if m != "chosen") + f" -> {ev['chosen']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
