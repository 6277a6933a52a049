"""The import rule (issue 29): predicting does not load the simulator or the trainer.

A fresh interpreter runs ``3ddx predict`` on the bundled example with the default meshing (the shape-model
pelvis fit included) and writes its result; afterwards no module of the simulator's room (scene, physics,
bodies, shapes, simulation, collections, negatives) and none of training's is loaded. The shape model it fits comes
from the shipped model file, not from the module that builds shape models from LLP26.
"""
import json
import subprocess
import sys

#: The rooms inference must not need: the simulator and training (docs/architecture.md).
FORBIDDEN = ("threeddx.simulator", "threeddx.training")


def test_predicting_loads_neither_the_simulator_nor_the_trainer(tmp_path):
    code = (
        "import json, sys\n"
        "from threeddx.cli import main\n"
        "from threeddx.apps.demo import example_path\n"
        f"rc = main(['predict', str(example_path()), '--out', {str(tmp_path / 'out')!r}])\n"
        "print(json.dumps([rc, sorted(m for m in sys.modules if m.startswith('threeddx.'))]))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    rc, loaded = json.loads(run.stdout.strip().splitlines()[-1])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert rc == 0 and summary["bones"]["pelvis"]["mesh_method"] == "ssm"
    assert not [m for m in loaded if m.startswith(FORBIDDEN)], [m for m in loaded if m.startswith(FORBIDDEN)]
    assert "threeddx.network.preprocess" in loaded and "threeddx.inference.predictor" in loaded
