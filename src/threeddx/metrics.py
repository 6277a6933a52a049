"""Surface and depth-map metrics, in mm.

Surface distances are computed on points sampled uniformly (area-weighted,
seeded) over each surface, ``density`` points per mm² (default 0.5, i.e. one
point per 2 mm², so ~30,000 points on a hemipelvis), each point's distance
being the exact distance to the *other* mesh's surface (closest point on its
triangles, not to its vertices). With A -> B the distances of A's points to B
and B -> A the reverse, pooled into one set D:

* **ASSD** = mean of D (the average symmetric surface distance);
* **HD95** = 95th percentile of D (the paper's "95th percentile of the
  symmetric surface distances");
* **Chamfer** = mean(A -> B) + mean(B -> A);
* **within_1/2/5mm** = percentage of D within 1, 2, 5 mm.

What is compared must be fair: the detector sees only part of a long bone (the
proximal femur), so :func:`visible_part` keeps the part of a ground-truth
surface whose projection falls inside the detector, and the same rule is applied
to every method's surface.
"""
from __future__ import annotations

import numpy as np

from .errors import InputError
from .geometry import XrayGeometry

DEFAULT_DENSITY = 0.5  # points per mm²
MIN_POINTS = 2000
MAX_POINTS = 100_000


def sample_surface(mesh, density: float = DEFAULT_DENSITY, seed: int = 0) -> np.ndarray:
    """Uniform, seeded surface samples: (N, 3), N = area * density (clipped to a sane range)."""
    area = float(mesh.area)
    if not area > 0:
        raise InputError("mesh has no surface area")
    n = int(np.clip(area * density, MIN_POINTS, MAX_POINTS))
    rng = np.random.default_rng(seed)
    tri = mesh.triangles
    w = mesh.area_faces / area
    idx = rng.choice(len(tri), size=n, p=w)
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    a, b, c = tri[idx, 0], tri[idx, 1], tri[idx, 2]
    return (1 - s)[:, None] * a + (s * (1 - r2))[:, None] * b + (s * r2)[:, None] * c


def point_to_surface(points: np.ndarray, mesh) -> np.ndarray:
    """Exact distance (mm) of each point to the mesh's surface."""
    import trimesh

    _, d, _ = trimesh.proximity.closest_point(mesh, np.asarray(points, np.float64))
    return d


def surface_distances(pred, gt, density: float = DEFAULT_DENSITY, seed: int = 0) -> dict[str, float]:
    """ASSD, HD95, Chamfer and % within 1/2/5 mm between two meshes (module doc)."""
    pa = sample_surface(pred, density, seed)
    pb = sample_surface(gt, density, seed + 1)
    ab = point_to_surface(pa, gt)
    ba = point_to_surface(pb, pred)
    d = np.concatenate([ab, ba])
    return {
        "assd": float(d.mean()),
        "hd95": float(np.percentile(d, 95)),
        "chamfer": float(ab.mean() + ba.mean()),
        "within_1mm": float(100 * np.mean(d <= 1.0)),
        "within_2mm": float(100 * np.mean(d <= 2.0)),
        "within_5mm": float(100 * np.mean(d <= 5.0)),
        "pred_to_gt": float(ab.mean()),
        "gt_to_pred": float(ba.mean()),
    }


def visible_part(mesh, geometry: XrayGeometry, margin_px: float = 0.0, max_edge_mm: float = 5.0):
    """The faces of ``mesh`` whose three vertices project inside the detector (world mm in, mesh out).

    Faces longer than ``max_edge_mm`` are subdivided first, so the cut follows
    the detector's edge to within a few mm whatever the mesh's resolution.
    """
    import trimesh

    if mesh.edges_unique_length.max() > max_edge_mm:
        v, f = trimesh.remesh.subdivide_to_size(mesh.vertices, mesh.faces, max_edge=max_edge_mm, max_iter=20)
        mesh = trimesh.Trimesh(v, f, process=False)
    row, col, _ = geometry.project(mesh.vertices)
    rows, cols = geometry.detector_shape
    inside = (row >= -0.5 + margin_px) & (row <= rows - 0.5 - margin_px) & (col >= -0.5 + margin_px) & (col <= cols - 0.5 - margin_px)
    keep = inside[mesh.faces].all(axis=1)
    if not keep.any():
        raise InputError("no part of the surface projects inside the detector")
    part = mesh.submesh([np.nonzero(keep)[0]], append=True)
    return part


def depth_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """AbsRel and RMSE (mm) of depth maps inside ``mask`` (and target > 0)."""
    v = (np.asarray(mask) > 0.5) & (target > 0)
    if not v.any():
        return {"absrel": float("nan"), "rmse_mm": float("nan")}
    e = pred[v] - target[v]
    return {"absrel": float(np.mean(np.abs(e) / target[v])), "rmse_mm": float(np.sqrt(np.mean(e**2)))}


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    a, b = np.asarray(pred) > 0.5, np.asarray(target) > 0.5
    s = a.sum() + b.sum()
    return float(2 * (a & b).sum() / s) if s else 1.0
