"""The ablation benchmark (docs/results.md): data, one training run per loss, evaluation, the table.

    python benchmarks/ablation.py [--size 128] [--rows single dependent independent casi] [--ssm]

Every step is one ``3ddx`` command (printed before it runs) and is skipped when
its output exists, so an interrupted run continues where it stopped:

1. ``3ddx simulate`` the benchmark recipe (the config's header) unless present;
2. per row: ``3ddx train --config configs/ablation-SIZE.yaml --loss ROW --out runs/ablation-SIZE/ROW``
   (the same data, model, epochs and seed for every row);
3. per row: ``3ddx evaluate --chain random`` (the images through random imaging
   chains, seeded: the training distribution) on the val split (to pick the released model)
   and on the test split; the oracle rows (ground-truth depths through the
   same meshing); with ``--ssm`` the shape-model completion of the best row;
4. the table of test ASSD / HD95, mean (std), printed and written to
   ``runs/ablation-SIZE/table.md``, with the training time of each row.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXE = [sys.executable, "-m", "threeddx.cli"]
RECIPES = {
    128: "--subjects 0-21 --random-subjects 48 --poses 6 --size 128 --voxel-mm 1.5 --workers 2",
    256: "--subjects 0-21 --random-subjects 200 --poses 8 --size 256 --workers 8",
}
COLS = ("pelvis", "femur_left", "femur_right", "femur")


def run(args: list[str]) -> None:
    print("$ 3ddx " + " ".join(shlex.quote(a) for a in args), flush=True)
    subprocess.run(EXE + args, cwd=ROOT, check=True)


def evaluate(out: Path, data: Path, split: str, extra: list[str]) -> dict:
    if not (out / "results.json").exists():
        run(["evaluate", "--data", str(data), "--split", split, "--out", str(out)] + extra)
    summary = json.loads((out / "results.json").read_text())
    summary["_dir"] = str(out)
    return summary


def train_seconds(run_dir: Path) -> float | None:
    """Wall-clock training time of a run: the sum of its epochs' ``seconds`` in metrics.csv."""
    import csv

    log = run_dir / "metrics.csv"
    if not log.exists():
        return None
    return sum(float(r["seconds"]) for r in csv.DictReader(log.open()) if r.get("seconds"))


def _rows(summary: dict) -> list[dict]:
    """The per-sample rows (results.csv) beside a results.json summary."""
    import csv

    return list(csv.DictReader(open(Path(summary["_dir"]) / "results.csv")))


def cell(summary: dict, bone: str, what: str) -> str:
    b = summary["bones"].get(bone)
    if not b or b[f"{what}_mean"] is None:
        return "n/a"
    return f"{b[f'{what}_mean']:.2f} ({b[f'{what}_std']:.2f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128, choices=sorted(RECIPES))
    ap.add_argument("--rows", nargs="+", default=["single", "dependent", "independent", "casi"])
    ap.add_argument("--ssm", action="store_true", help="also the shape-model completion rows")
    a = ap.parse_args()
    data = ROOT / f"data/sim{a.size}"
    base = ROOT / f"runs/ablation-{a.size}"
    config = f"configs/ablation-{a.size}.yaml"
    if not (data / "manifest.csv").exists():
        run(["simulate", "--out", str(data)] + RECIPES[a.size].split())
    table: list[tuple[str, dict, float | None, str]] = []
    val: dict[str, float] = {}
    for row in a.rows:
        rd = base / row
        if not (rd / "done.json").exists():
            cmd = ["train", "--config", config, "--loss", row, "--out", str(rd)]
            if (rd / "last.pt").exists():
                cmd += ["--resume", str(rd / "last.pt")]
            elif rd.exists() and any(rd.iterdir()):  # a start killed before its first checkpoint: begin again
                cmd += ["--overwrite"]
            run(cmd)
            (rd / "done.json").write_text("{}\n")
        ck = ["--checkpoint", str(rd / "best.pt"), "--chain", "random"]
        v = evaluate(rd / "eval-val", data, "val", ck)
        val[row] = (v["bones"]["pelvis"]["assd_mean"] + v["bones"]["femur"]["assd_mean"]) / 2
        table.append((row, evaluate(rd / "eval-test", data, "test", ck), train_seconds(rd),
                      f"3ddx train --config {config} --loss {row} --out runs/ablation-{a.size}/{row}"))
    for mesh in ("dual", "front"):
        table.append((f"oracle, {mesh}", evaluate(base / f"oracle-{mesh}", data, "test", ["--oracle", "--mesh", mesh]), None,
                      f"3ddx evaluate --data data/sim{a.size} --oracle --mesh {mesh}"))
    dual_rows = [r for r in val if r != "single"]
    if a.ssm and dual_rows:
        best = min(dual_rows, key=val.get)
        ck = ["--checkpoint", str(base / best / "best.pt"), "--chain", "random"]
        table.append((f"{best} + ssm", evaluate(base / best / "eval-test-ssm", data, "test", ck + ["--mesh", "ssm"]), None,
                      f"3ddx evaluate --checkpoint runs/ablation-{a.size}/{best}/best.pt --mesh ssm"))
        table.append(("oracle, ssm", evaluate(base / "oracle-ssm", data, "test", ["--oracle", "--mesh", "ssm"]), None,
                      f"3ddx evaluate --data data/sim{a.size} --oracle --mesh ssm"))
    head = "| row | " + " | ".join(f"{c} ASSD | {c} HD95" for c in COLS) + " | train time |"
    lines = [head, "|---|" + "---|---|" * len(COLS) + "---|"]
    for name, s, secs, _ in table:
        cells = [cell(s, c, w) for c in COLS for w in ("assd", "hd95")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'' if secs is None else f'{secs / 60:.1f} min'} |")
    n = table[0][1]
    lines.append(f"\nmm, mean (std) over {n['images']} test images of {n['subjects']} subjects; 'femur' pools left and right.")
    lines.append("Validation ASSD (mean of pelvis and femur) per row: " + ", ".join(f"{k} {v:.2f}" for k, v in val.items()))
    lines.append("\nPer test subject (ASSD mm, pelvis / femurs pooled, mean over its poses):\n")
    subjects = sorted({r["subject_id"] for _, s, _, _ in table[:1] for r in _rows(s)})
    lines.append("| row | " + " | ".join(subjects) + " |")
    lines.append("|---|" + "---|" * len(subjects))
    for name, s, _, _ in table:
        rows = _rows(s)
        cells = []
        for subj in subjects:
            per = []
            for group in (("pelvis",), ("femur_left", "femur_right")):
                v = [float(r["assd"]) for r in rows if r["subject_id"] == subj and r["bone"] in group and r["status"] == "ok"]
                per.append(f"{sum(v) / len(v):.2f}" if v else "n/a")
            cells.append(" / ".join(per))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("\nCommands:\n" + "\n".join(f"- {name}: `{cmd}`" for name, _, _, cmd in table))
    text = "\n".join(lines) + "\n"
    base.mkdir(parents=True, exist_ok=True)
    (base / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
