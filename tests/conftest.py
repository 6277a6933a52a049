import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(min(2, torch.get_num_threads()))

import pytest


@pytest.fixture(scope="session")
def small_sim(tmp_path_factory):
    """A small simulated dataset: LLP26 subject 0 (train) and 2 (val), 4 poses, 64 px, 2 mm voxels."""
    from threeddx.simulate import SimSettings, simulate

    out = tmp_path_factory.mktemp("small_sim")
    simulate(SimSettings(subjects=[0, 2], poses=4, size=64, seed=0, voxel_mm=2.0,
                         bones=["pelvis", "femur_left", "femur_right"]), out, progress=False)
    return out
