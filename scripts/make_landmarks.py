"""Generate src/threeddx/data/llp26_landmarks.json: the hip's anatomical landmarks as LLP26 vertex indices.

    .venv/bin/python scripts/make_landmarks.py

Every LLP26 shape (a CT subject, a shape-model variant, a fitted shape model) has the same triangulation,
so a landmark defined once as vertex indices is found on every bone the project makes, truth and prediction
alike (:mod:`threeddx.meshing.landmarks` reads the file; :mod:`threeddx.inference.measure` uses it). Two kinds:

* **gias3's own landmarks** (``gias3.musculoskeletal.fw_model_landmarks``: nodes of the LLP26 fieldwork
  meshes): the anterior superior iliac spines (hemi-pelvis nodes 464 / 466), the pubic symphysis (90 / 92),
  the pubic tubercles (102 / 103); on each femur the greater (172 / 174) and lesser (276) trochanters, the
  epicondyles, and gias3's sub-trochanteric and mid-shaft node rings (the shaft axis). Each node's position
  on subject 0 is matched to the nearest vertex of the triangulated bone (the pelvis's nodes are vertices,
  0 mm; the femur's lie 1-2 mm from one, printed); the same index is checked on a second subject.
* **defined here on the training split's mean shapes** (the shape models of :mod:`threeddx.meshing.ssm`;
  gias3 lacks them): the femoral head's surface (vertices within 1 mm of the head's sphere, away from the
  neck), the neck's narrowest cross-section (a ring of vertices whose centroid is the neck centre), the
  posterior condyles (the most posterior vertex of each condyle), and each acetabulum's rim (an ordered
  ring: per 10 degrees of azimuth about the socket's axis, the socket vertex furthest from its pole, the
  axis re-fitted to the rim three times).

Run it again only if the LLP26 package or its triangulation changes; it prints the measures of the 16
training subjects as a check of the definitions.
"""
from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "threeddx" / "data" / "llp26_landmarks.json"

# gias3's node numbers (fw_model_landmarks: HEMI_PELVIS_*_NODE, FEMUR_*_NODE, FEMUR_*_NODES)
PELVIS_NODES = {"hemipelvis-left": {"asis_left": 464, "pubis_left": 90, "pubic_tubercle_left": 102},
                "hemipelvis-right": {"asis_right": 466, "pubis_right": 92, "pubic_tubercle_right": 103}}
FEMUR_NODES = {"femur-l": {"greater_trochanter": 172, "lesser_trochanter": 276, "epicondyle_medial": 630,
                           "epicondyle_lateral": 550},
               "femur-r": {"greater_trochanter": 174, "lesser_trochanter": 276, "epicondyle_medial": 628,
                           "epicondyle_lateral": 550}}
SHAFT_RINGS = {"shaft_proximal": [259, 260, 261, 262, 263, 291, 292, 293, 294, 307, 308, 309],
               "shaft_distal": [319, 320, 321, 322, 323, 334, 335, 336, 337, 346, 347, 348]}
FEMUR_PART = {"femur_left": "femur-l", "femur_right": "femur-r"}


def gias_vertices(k: int) -> dict[str, dict[str, list[int]]]:
    """Subject k's gias3 node landmarks as vertex indices of the triangulated bones, with the match distances."""
    from scipy.spatial import cKDTree

    from threeddx.simulator.anatomy import _atlas, bone_meshes, load_shape

    ll, z = _atlas()
    ll.update_all_models(z[:25, k], list(range(25)), [0.0] * 6, [0.0] * 3, [0.0] * 3, [0.0], [0.0])
    gfd = ll.model_gf_dict()
    origin = np.array([ll.ll_l.models["pelvis"].landmarks["pelvis-LHJC"],
                       ll.ll_r.models["pelvis"].landmarks["pelvis-RHJC"]]).mean(0)
    meshes = bone_meshes(load_shape(k), ["pelvis", "femur_left", "femur_right"])
    out: dict[str, dict[str, list[int]]] = {"pelvis": {}, "femur_left": {}, "femur_right": {}}
    tree = cKDTree(np.asarray(meshes["pelvis"].vertices))
    for part, names in PELVIS_NODES.items():
        nodes = gfd[part].field_parameters[:, :, 0].T - origin
        for name, i in names.items():
            d, j = tree.query(nodes[i])
            out["pelvis"][name] = [int(j)]
            print(f"  subject {k} pelvis {name}: node {i} -> vertex {j} ({d:.2f} mm)")
    for bone, part in FEMUR_PART.items():
        tree = cKDTree(np.asarray(meshes[bone].vertices))
        nodes = gfd[part].field_parameters[:, :, 0].T - origin
        for name, i in FEMUR_NODES[part].items():
            d, j = tree.query(nodes[i])
            out[bone][name] = [int(j)]
            print(f"  subject {k} {bone} {name}: node {i} -> vertex {j} ({d:.2f} mm)")
        for name, ring in SHAFT_RINGS.items():
            d, j = tree.query(nodes[ring])
            out[bone][name] = sorted({int(x) for x in j})
            print(f"  subject {k} {bone} {name}: {len(ring)} nodes -> vertices (largest gap {d.max():.2f} mm)")
    return out


def _unit(v):
    return v / np.linalg.norm(v)


def femur_surface_landmarks(v: np.ndarray, hc: np.ndarray, gt: int, lt: int, mec: int, lec: int) -> dict:
    """The head's surface, the neck's ring and the posterior condyles on one femur's mean vertices (module doc)."""
    from threeddx.inference.measure import fit_sphere

    u = _unit(hc - (v[gt] + v[lt]) / 2)  # from the trochanters towards the head: the neck's direction
    rel = v - hc
    d = np.linalg.norm(rel, axis=1)
    away = (rel @ u) / np.maximum(d, 1e-9) > -0.3
    r = float(np.median(d[(d < 30) & away]))
    for _ in range(3):
        head = np.flatnonzero((np.abs(d - r) < 1.0) & away)
        c, r = fit_sphere(v[head])
        rel = v - c
        d = np.linalg.norm(rel, axis=1)
        away = (rel @ u) / np.maximum(d, 1e-9) > -0.3
    head = np.flatnonzero((np.abs(d - r) < 1.0) & away)
    not_head = np.ones(len(v), bool)
    not_head[head] = False

    def slab(t: float, axis: np.ndarray) -> np.ndarray:
        """The non-head vertices (1.5 mm either side of) ``t`` mm from the head centre along ``-axis``."""
        along = -(rel @ axis)
        radial = np.linalg.norm(rel + along[:, None] * axis, axis=1)
        return np.flatnonzero((np.abs(along - t) < 1.5) & (radial < 1.3 * r) & not_head)

    for _ in range(4):  # the neck's axis: through the head centre and the centroids of the neck's sections
        centroids = np.array([v[slab(t, u)].mean(0) for t in np.arange(r + 2.0, r + 16.0, 2.0)])
        u = _unit(c - centroids.mean(0))
    best = None
    for t in np.arange(r + 2.0, r + 12.5, 1.0):  # its narrowest section, just beyond the head
        ring = slab(t, u)
        flat = (v[ring] - v[ring].mean(0)) - np.outer((v[ring] - v[ring].mean(0)) @ u, u)
        size = float(np.median(np.linalg.norm(flat, axis=1)))
        if len(ring) >= 12 and (best is None or size < best[0]):
            best = (size, ring, t)
    distal = v[:, 2] < v[:, 2].min() + 35.0
    mid = (v[mec] + v[lec]) / 2
    medial = (v - mid) @ _unit(v[mec] - v[lec]) > 0
    post_med = int(np.flatnonzero(distal & medial)[np.argmax(v[distal & medial, 1])])
    post_lat = int(np.flatnonzero(distal & ~medial)[np.argmax(v[distal & ~medial, 1])])
    print(f"    head: {len(head)} vertices, diameter {2 * r:.1f} mm; neck ring: {len(best[1])} vertices "
          f"{best[2]:.0f} mm from the head centre, radius {best[0]:.1f} mm")
    return {"head": head.tolist(), "neck": best[1].tolist(), "condyle_medial": [post_med],
            "condyle_lateral": [post_lat]}


def acetabular_rim(v: np.ndarray, faces: np.ndarray, hjc: np.ndarray, bins: int = 36) -> list[int]:
    """One acetabulum's rim on the mean pelvis (module doc): ordered vertex indices."""
    from threeddx.meshing.ssm import _vertex_normals

    n = _vertex_normals(v, faces)
    rel = v - hjc
    d = np.linalg.norm(rel, axis=1)
    inward = np.einsum("ij,ij->i", n, -rel / np.maximum(d, 1e-9)[:, None])
    socket = np.flatnonzero((d < 32.0) & (inward > 0.7))
    out = _unit(hjc - v[socket].mean(0))
    for _ in range(4):
        into = -out
        e1 = _unit(np.cross(into, [0.0, 0.0, 1.0]))
        e2 = np.cross(into, e1)
        p = rel[socket] / d[socket, None]
        theta = np.arccos(np.clip(p @ into, -1, 1))
        phi = np.arctan2(p @ e2, p @ e1)
        k = np.floor((phi + np.pi) / (2 * np.pi) * bins).astype(int) % bins
        rim = [int(socket[k == b][np.argmax(theta[k == b])]) for b in range(bins) if np.any(k == b)]
        c = v[rim].mean(0)
        normal = np.linalg.svd(v[rim] - c)[2][2]
        out = normal if normal @ out > 0 else -normal
    print(f"    rim: {len(rim)} vertices of {len(socket)} socket vertices")
    return rim


def main() -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from importlib.metadata import version

    from threeddx.meshing.ssm import shipped_pelvis_model, training_ssm
    from threeddx.simulator.anatomy import subject_split

    lm = gias_vertices(0)
    check = gias_vertices(1)
    for bone in lm:
        for name in lm[bone]:
            if lm[bone][name] != check[bone][name]:
                print(f"  note: {bone} {name} matches other vertices on subject 1: {check[bone][name]}")
    pelvis = shipped_pelvis_model()
    marks = pelvis.landmarks()
    for side in ("left", "right"):
        print(f"  acetabulum_{side}")
        lm["pelvis"][f"rim_{side}"] = acetabular_rim(pelvis.mean, pelvis.faces["pelvis"], marks[f"hjc_{side}"])
    for bone in FEMUR_PART:
        model = training_ssm([bone])
        print(f"  {bone}")
        f = lm[bone]
        lm[bone].update(femur_surface_landmarks(model.mean, model.landmarks()[f"head_{bone.split('_')[1]}"],
                                                f["greater_trochanter"][0], f["lesser_trochanter"][0],
                                                f["epicondyle_medial"][0], f["epicondyle_lateral"][0]))
    train = sorted(k for k, s in subject_split().items() if s == "train")
    counts = {"pelvis": len(pelvis.mean), **{b: len(training_ssm([b]).mean) for b in FEMUR_PART}}
    doc = {"version": 1,
           "provenance": {"what": "hip landmarks as vertex indices of the LLP26 triangulation (per bone, as "
                                  "threeddx.simulator.anatomy.bone_meshes orders its vertices)",
                          "source": f"musculoskeletal-models {version('musculoskeletal-models')} (LLP26) via gias3; "
                                    f"mean shapes of training subjects {train}",
                          "made_by": "scripts/make_landmarks.py", "date": date.today().isoformat()},
           "vertex_counts": counts,
           "bones": lm}
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.1f} kB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
