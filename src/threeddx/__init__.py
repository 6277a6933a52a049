"""3DDX: bone surface reconstruction from a single standard-geometry radiograph.

Data flow, one module per stage: :mod:`threeddx.geometry` (cone-beam geometry,
the only place its formulas live) -> :mod:`threeddx.io` (CT, labels, safe
writes) -> :mod:`threeddx.simulator.render` (DRR and dual-face depth maps) ->
:mod:`threeddx.apps.viz` (pictures) -> :mod:`threeddx.cli` (the ``3ddx`` command).
"""

__version__ = "0.1.0"
