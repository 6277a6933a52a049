"""The import rule (issue 29): predicting does not load the simulator or the trainer.

A fresh interpreter runs ``3ddx predict`` on the bundled example with the default meshing (the shape-model
pelvis fit included) and writes its result; afterwards no simulator module (scene, physics, bodies, shapes,
simulation, collections, negatives, cluster) and no trainer module is loaded. The shape model it fits comes
from the shipped model file, not from the module that builds shape models from LLP26.
"""
import json
import subprocess
import sys

#: Modules of the simulator and the trainer, which inference must not need.
SIMULATOR = ("render", "physics", "phantom", "anatomy", "simulate", "collection", "negatives", "cluster")
TRAINER = ("dataset", "train", "losses")


def test_predicting_loads_neither_the_simulator_nor_the_trainer(tmp_path):
    code = (
        "import json, sys\n"
        "from threeddx.cli import main\n"
        "from threeddx.demo import example_path\n"
        f"rc = main(['predict', str(example_path()), '--out', {str(tmp_path / 'out')!r}])\n"
        "print(json.dumps([rc, sorted(m for m in sys.modules if m.startswith('threeddx.'))]))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    rc, loaded = json.loads(run.stdout.strip().splitlines()[-1])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert rc == 0 and summary["bones"]["pelvis"]["mesh_method"] == "ssm"
    names = {m.split(".")[1] for m in loaded}
    assert not names & set(SIMULATOR), sorted(names & set(SIMULATOR))
    assert not names & set(TRAINER), sorted(names & set(TRAINER))
    assert "preprocess" in names and "inference" in names
