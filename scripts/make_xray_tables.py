"""Generate src/threeddx/data/xray_tables.npz: tube spectra (SpekPy) and attenuation (xraydb).

    python -m venv /tmp/xr && /tmp/xr/bin/pip install spekpy==2.5.4 xraydb==4.5.8 numpy
    /tmp/xr/bin/python scripts/make_xray_tables.py

Run once; the compact table (about 0.2 MB) is committed, so neither library is
a run-time dependency: SpekPy's wheel is 164 MB, far more than a user of the
model needs. :mod:`threeddx.simulator.physics` reads the table and says where it came
from (``provenance``, stored in the file).

Contents (energies: 1 keV bins centred at 10.5 ... 149.5 keV):

* ``spectra`` (kVp, anode angle, x, E): photons per keV per mm^2 per mAs at
  1 m, tungsten anode, no added filtration (filters are applied at run time
  from the attenuation table), SpekPy's default physics. ``x`` is the position
  across the detector along the anode-cathode axis (cm at 100 cm), so the heel
  effect comes from SpekPy's own angular model, not from a formula of ours.
* ``mu_rho`` (material, E): mass attenuation coefficients (cm^2/g, total with
  coherent scattering) from xraydb's Elam tables, for ICRU-44 cortical bone and
  soft tissue (mass fractions below), aluminium, copper, iron (steel) and the
  caesium iodide of an indirect flat-panel detector.
"""
from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "threeddx" / "data" / "xray_tables.npz"

ENERGIES_KEV = np.arange(10, 150) + 0.5
KVPS = np.arange(50.0, 125.0, 5.0)  # 50 ... 120 kVp
ANODE_ANGLES = np.array([10.0, 12.0, 14.0, 16.0])  # degrees
POSITIONS_CM = np.array([-21.5, -15.0, -10.0, -5.0, 0.0, 5.0, 10.0, 15.0, 21.5])  # along the anode-cathode axis

#: ICRU Report 44 compositions (mass fractions) and densities (g/cm^3).
COMPOSITIONS = {
    "bone": ({"H": 0.034, "C": 0.155, "N": 0.042, "O": 0.435, "Na": 0.001, "Mg": 0.002, "P": 0.103, "S": 0.003,
              "Ca": 0.225}, 1.92),
    "soft": ({"H": 0.102, "C": 0.143, "N": 0.034, "O": 0.708, "Na": 0.002, "P": 0.003, "S": 0.003, "Cl": 0.002,
              "K": 0.003}, 1.06),
    "aluminium": ({"Al": 1.0}, 2.699),
    "copper": ({"Cu": 1.0}, 8.96),
    "iron": ({"Fe": 1.0}, 7.874),
    "csi": ({"Cs": 0.5115, "I": 0.4885}, 4.51),
}


def mass_attenuation(fractions: dict[str, float], energies_kev: np.ndarray) -> np.ndarray:
    import xraydb

    e_ev = energies_kev * 1000.0
    total = sum(fractions.values())
    return sum(w / total * np.asarray(xraydb.mu_elam(el, e_ev, kind="total")) for el, w in fractions.items())


def spectrum(kvp: float, angle: float, x_cm: float) -> np.ndarray:
    import spekpy

    s = spekpy.Spek(kvp=float(kvp), th=float(angle), dk=1.0, x=float(x_cm), z=100.0, mas=1.0)
    k, f = s.get_spectrum()  # photons / keV / cm^2 / mAs at z = 100 cm, bins centred at k
    out = np.zeros(len(ENERGIES_KEV))
    idx = np.round(k - ENERGIES_KEV[0]).astype(int)
    ok = (idx >= 0) & (idx < len(out))
    out[idx[ok]] = f[ok] / 100.0  # per cm^2 -> per mm^2
    return out


def main() -> int:
    import spekpy
    import xraydb

    spectra = np.zeros((len(KVPS), len(ANODE_ANGLES), len(POSITIONS_CM), len(ENERGIES_KEV)), np.float32)
    for a, kvp in enumerate(KVPS):
        for b, th in enumerate(ANODE_ANGLES):
            for c, x in enumerate(POSITIONS_CM):
                spectra[a, b, c] = spectrum(kvp, th, x)
        print(f"{kvp:.0f} kVp done", flush=True)
    names = list(COMPOSITIONS)
    mu_rho = np.stack([mass_attenuation(COMPOSITIONS[m][0], ENERGIES_KEV) for m in names]).astype(np.float32)
    provenance = {
        "script": "scripts/make_xray_tables.py",
        "date": date.today().isoformat(),
        "spekpy": getattr(spekpy, "__version__", "?"),
        "xraydb": xraydb.__version__,
        "spectra": "SpekPy Spek(kvp, th, dk=1, x, z=100 cm, mas=1), tungsten, no filtration; photons/keV/mm^2/mAs",
        "mu_rho": "xraydb mu_elam(kind='total') mixed by ICRU-44 mass fractions; cm^2/g",
        "compositions": {k: {"fractions": v[0], "density_g_cm3": v[1]} for k, v in COMPOSITIONS.items()},
    }
    np.savez_compressed(
        OUT, energies_kev=ENERGIES_KEV.astype(np.float32), kvps=KVPS.astype(np.float32),
        anode_angles_deg=ANODE_ANGLES.astype(np.float32), positions_cm=POSITIONS_CM.astype(np.float32),
        spectra=spectra, materials=np.array(names), mu_rho=mu_rho,
        densities=np.array([COMPOSITIONS[m][1] for m in names], np.float32),
        provenance=np.array(json.dumps(provenance)),
    )
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
