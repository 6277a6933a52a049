import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(min(2, torch.get_num_threads()))

import pytest


@pytest.fixture(scope="session")
def small_sim(tmp_path_factory):
    """A small simulated dataset: LLP26 subject 0 (train) and 2 (val), 4 poses, 64 px, 2 mm voxels."""
    from threeddx.simulator.simulate import SimSettings, simulate

    out = tmp_path_factory.mktemp("small_sim")
    simulate(SimSettings(subjects=[0, 2], poses=4, size=64, seed=0, voxel_mm=2.0,
                         bones=["pelvis", "femur_left", "femur_right"]), out, progress=False)
    return out


@pytest.fixture(scope="session")
def four_face_sim(tmp_path_factory):
    """LLP26 subject 0 simulated with 2 and with 4 faces, otherwise the same (1 pose, 32 px, 2 mm voxels): {K: folder}."""
    from threeddx.simulator.simulate import SimSettings, simulate

    outs = {}
    for k in (2, 4):
        outs[k] = tmp_path_factory.mktemp(f"faces{k}")
        simulate(SimSettings(subjects=[0], poses=1, size=32, seed=2, voxel_mm=2.0, faces=k,
                             bones=["pelvis", "femur_left", "femur_right"]), outs[k], workers=1, progress=False)
    return outs


@pytest.fixture(scope="session")
def tiny_ckpt(small_sim, tmp_path_factory):
    """An untrained network saved through the checkpoint module, no training: its mask logits are
    biased to +4 (every pixel bone, confidence 0.98), so predict and evaluate have masks to mesh."""
    import numpy as np
    import torch

    from threeddx.network.checkpoint import Checkpoint, save_checkpoint
    from threeddx.training.dataset import read_manifest
    from threeddx.network.model import DualFaceNet, ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(width=8, levels=2)
    net = DualFaceNet(cfg)
    with torch.no_grad():
        net.head[-1].bias[: len(cfg.bones)] = 4.0
    with np.load(small_sim / read_manifest(small_sim)[0]["render"]) as z:
        geometry = str(z["geometry"])
    path = tmp_path_factory.mktemp("untrained") / "untrained.pt"
    save_checkpoint(Checkpoint(model=net.state_dict(), model_config=cfg.to_dict(), bones=list(cfg.bones),
                               geometry=geometry, config={}).to_dict(), path)
    return path


@pytest.fixture(scope="session")
def demo_out(tmp_path_factory):
    """``3ddx demo --view`` once for the session: both released models on the bundled example."""
    from threeddx.cli import main

    out = tmp_path_factory.mktemp("demo") / "demo"
    assert main(["demo", "--out", str(out), "--view"]) == 0
    return out


#: Chromium's switches for a headless run on a machine with no network and no GPU (WebGL through
#: SwiftShader); without the background-networking ones Chromium keeps calling Google's hosts.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (the distribution's, /usr/bin/chromium or $THREEDDX_CHROMIUM) driven by Playwright.

    Skipped where Chromium or Playwright is missing, unless $THREEDDX_REQUIRE_BROWSER is set (CI sets it,
    after installing Chromium), where that is a failure.
    """
    import os
    import shutil

    exe = os.environ.get("THREEDDX_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    required = bool(os.environ.get("THREEDDX_REQUIRE_BROWSER"))
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if exe is None or sync_playwright is None:
        why = "Chromium is not installed (apt-get install chromium)" if exe is None else "playwright is not installed"
        if required:
            pytest.fail(f"browser tests required but {why}")
        pytest.skip(why)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()
