"""The ablation benchmark (docs/results.md): data, one training run per row, evaluation, the table.

    python benchmarks/ablation.py [--size 128] [--rows single dependent independent casi dependent-k4] [--ssm]

A row is a loss (``single``, ``dependent``, ``independent``, ``casi``),
optionally with ``-kK``: K depth faces per bone (``dependent-k4``: first entry,
first exit, last entry, last exit; ``3ddx train --faces 4``). Every row uses the
same data, network, epochs and seed; only the loss and the faces differ.

Every step is one ``3ddx`` command (printed before it runs) and is skipped when
its output exists, so an interrupted run continues where it stopped:

1. ``3ddx simulate`` the benchmark recipe (the config's header, with
   ``--faces 4``: a two-face row reads the same files as before) unless present;
2. per row: ``3ddx train --config configs/ablation-SIZE.yaml --loss LOSS [--faces K] --out runs/ablation-SIZE/ROW``;
3. per row: ``3ddx evaluate --chain random`` (the images through random imaging
   chains, seeded: the training distribution) on the val split (to pick the
   best row) and on the test split with ``--seen`` (both protocols of
   docs/results.md); the oracle rows (ground-truth depths through the same
   meshing: two faces ``dual``, ``front`` and ``intervals``, four faces ``intervals``); with
   ``--ssm`` the shape-model completion of the best row;
4. the tables of test ASSD / HD95 (the literature's), mean (std), then the pooled
   HD95, protocol (b) and the beam-aligned figures, printed and written to ``runs/ablation-SIZE/table.md``,
   with the training time of each row;
5. with a K > 2 row: ``benchmarks/faces.py --learned`` for it and the rows of its
   loss (the test surface by region: the acetabulum and the ring's inner walls
   against the rest; the learned maps' depth errors and gap Dice), appended.
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
    128: "--subjects 0-21 --random-subjects 48 --poses 6 --size 128 --voxel-mm 1.5 --workers 2 --faces 4",
    256: "--subjects 0-21 --random-subjects 200 --poses 8 --size 256 --workers 8 --faces 4",
}
#: (row, folder under runs/ablation-SIZE, evaluate's options): the ground-truth depths through each mesher.
#: The folders are benchmarks/faces.py's, so that its regions step (5.) finds them done.
ORACLES = (("oracle, dual", "oracle-k2-dual", ["--mesh", "dual"]), ("oracle, front", "oracle-front", ["--mesh", "front"]),
           ("oracle, intervals", "oracle-k2-intervals", ["--mesh", "intervals"]),
           ("oracle K=4, intervals", "oracle-k4-intervals", ["--faces", "4", "--mesh", "intervals"]))
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


def parse_row(row: str) -> tuple[str, int]:
    """``dependent-k4`` -> ("dependent", 4); ``casi`` -> ("casi", 2)."""
    loss, _, k = row.partition("-k")
    return loss, int(k) if k else 2


def train_args(row: str) -> list[str]:
    loss, faces = parse_row(row)
    return ["--loss", loss] + (["--faces", str(faces)] if faces != 2 else [])


def cell(summary: dict, bone: str, what: str) -> str:
    """mean (std), or the mean alone where the summary keeps no std (pooled HD95, protocol (b))."""
    b = summary["bones"].get(bone)
    if not b or b.get(f"{what}_mean") is None:
        return "n/a"
    std = b.get(f"{what}_std")
    return f"{b[f'{what}_mean']:.2f}" + ("" if std is None else f" ({std:.2f})")


Row = tuple[str, dict, "float | None", str]  # name, results.json summary, training seconds, command


def tables(table: list[Row], val: dict[str, float]) -> str:
    """The markdown of the benchmark: protocol (a) per bone, then the pooled HD95 and protocol (b), per subject."""
    head = "| row | " + " | ".join(f"{c} ASSD | {c} HD95" for c in COLS) + " | train time |"
    lines = ["(a) against the whole ground-truth surface in the field of view; HD95 the literature's "
             "(the larger directed 95th percentile).\n", head, "|---|" + "---|---|" * len(COLS) + "---|"]
    for name, s, secs, _ in table:
        cells = [cell(s, c, w) for c in COLS for w in ("assd", "hd95")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'' if secs is None else f'{secs / 60:.1f} min'} |")
    n = table[0][1]
    lines.append(f"\nmm, mean (std) over {n['images']} test images of {n['subjects']} subjects; 'femur' pools left and right.")
    lines.append("\nThe pooled HD95 (the 95th percentile of both directions together; this table's figure before "
                 "2026-12-01), protocol (b) (against the ground truth that the row's faces see) and protocol (a) "
                 "after the best shift of the reconstruction along the beam (its shape without its depth offset), "
                 "means:\n")
    extra = {"hd95_pooled": "HD95 pooled", "assd_seen": "ASSD (b)", "hd95_seen": "HD95 (b)",
             "assd_beam_aligned": "ASSD beam-aligned", "hd95_beam_aligned": "HD95 beam-aligned"}
    lines.append("| row | " + " | ".join(f"{c} {w}" for c in ("pelvis", "femur") for w in extra.values()) + " |")
    lines.append("|---|" + "---|" * 2 * len(extra))
    for name, s, _, _ in table:
        lines.append(f"| {name} | " + " | ".join(cell(s, c, w) for c in ("pelvis", "femur") for w in extra) + " |")
    lines.append("\nValidation ASSD (mean of pelvis and femur) per row: " + ", ".join(f"{k} {v:.2f}" for k, v in val.items()))
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
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128, choices=sorted(RECIPES))
    ap.add_argument("--rows", nargs="+", default=["single", "dependent", "independent", "casi", "dependent-k4"])
    ap.add_argument("--ssm", action="store_true", help="also the shape-model completion rows")
    a = ap.parse_args()
    data = ROOT / f"data/sim{a.size}"
    base = ROOT / f"runs/ablation-{a.size}"
    config = f"configs/ablation-{a.size}.yaml"
    if not (data / "manifest.csv").exists():
        run(["simulate", "--out", str(data)] + RECIPES[a.size].split())
    table: list[Row] = []
    val: dict[str, float] = {}
    for row in a.rows:
        rd = base / row
        if not (rd / "done.json").exists():
            cmd = ["train", "--config", config, *train_args(row), "--out", str(rd)]
            if (rd / "last.pt").exists():
                cmd += ["--resume", str(rd / "last.pt")]
            elif rd.exists() and any(rd.iterdir()):  # a start killed before its first checkpoint: begin again
                cmd += ["--overwrite"]
            run(cmd)
            (rd / "done.json").write_text("{}\n")
        ck = ["--checkpoint", str(rd / "best.pt"), "--chain", "random"]
        v = evaluate(rd / "eval-val", data, "val", ck)
        val[row] = (v["bones"]["pelvis"]["assd_mean"] + v["bones"]["femur"]["assd_mean"]) / 2
        table.append((row, evaluate(rd / "eval-test", data, "test", ck + ["--seen"]), train_seconds(rd),
                      f"3ddx train --config {config} {' '.join(train_args(row))} --out runs/ablation-{a.size}/{row}"))
    for name, folder, extra in ORACLES:
        table.append((name, evaluate(base / folder, data, "test", ["--oracle", "--seen", *extra]), None,
                      f"3ddx evaluate --data data/sim{a.size} --oracle --seen {' '.join(extra)}"))
    dual_rows = [r for r in val if parse_row(r)[0] != "single"]
    if a.ssm and dual_rows:
        best = min(dual_rows, key=val.get)
        ck = ["--checkpoint", str(base / best / "best.pt"), "--chain", "random"]
        table.append((f"{best} + ssm", evaluate(base / best / "eval-test-ssm", data, "test", ck + ["--mesh", "ssm"]), None,
                      f"3ddx evaluate --checkpoint runs/ablation-{a.size}/{best}/best.pt --mesh ssm"))
        table.append(("oracle, ssm", evaluate(base / "oracle-ssm", data, "test", ["--oracle", "--mesh", "ssm"]), None,
                      f"3ddx evaluate --data data/sim{a.size} --oracle --mesh ssm"))
    text = tables(table, val)
    # 5. where K faces help: benchmarks/faces.py's regions for each K > 2 row and the rows of its loss
    k_losses = {parse_row(r)[0] for r in a.rows if parse_row(r)[1] > 2}
    learned = [r for r in a.rows if parse_row(r)[0] in k_losses]
    if learned:
        regions = base / "faces.md"
        if not regions.exists():
            cmd = [sys.executable, str(ROOT / "benchmarks" / "faces.py"), "--data", str(data), "--out", str(base),
                   "--learned", *(f"learned {r}={base / r / 'best.pt'}" for r in learned)]
            print("$ " + " ".join(shlex.quote(c) for c in cmd[1:]), flush=True)
            subprocess.run(cmd, cwd=ROOT, check=True)
        text += "\nWhere the faces help (`benchmarks/faces.py`):\n\n## Regions" + regions.read_text().split("## Regions", 1)[1]
    base.mkdir(parents=True, exist_ok=True)
    (base / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
