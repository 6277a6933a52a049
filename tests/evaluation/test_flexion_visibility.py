"""benchmarks/flexion_visibility.py's geometry against a sphere's exact projection (issue 31: how much of a femur's
flexion an AP image shows)."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def fv():
    path = Path(__file__).parents[2] / "benchmarks" / "flexion_visibility.py"
    spec = importlib.util.spec_from_file_location("flexion_visibility", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_outline_residual_similarity_and_stretch(fv):
    """A similarity's move leaves nothing; a circle stretched by k along x leaves k R cos(2 phi) / 2 across it,
    RMS k R / (2 sqrt 2): the analytic remainder once the best uniform scale (k / 2) is taken out."""
    phi = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    radius, k = 40.0, 0.02
    normal = np.stack([np.cos(phi), np.sin(phi)], 1)
    points = np.array([100.0, 60.0]) + radius * normal
    s, a = 1.03, math.radians(2.0)
    moved = (points - [100.0, 60.0]) @ (s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])).T
    moved += np.array([100.0, 60.0]) + [0.7, -1.2]
    change = ((moved - points) * normal).sum(1)
    assert np.abs(fv.outline_residual(points, change, normal)).max() < 1e-9
    stretch = k * radius * np.cos(phi) ** 2  # x -> (1 + k) x about the centre, across the outline
    res = fv.outline_residual(points, stretch, normal)
    np.testing.assert_allclose(np.sqrt(np.mean(res**2)), k * radius / (2 * math.sqrt(2)), rtol=1e-6)
    # a free field that is the stretch itself takes it all
    assert fv.outline_residual(points, stretch, normal, stretch[:, None]).max() < 1e-9


def test_sphere_outline_moves_as_its_cone(fv):
    """A sphere of radius R on the central ray at D from the source projects to a circle of radius
    SDD R / sqrt(D^2 - R^2): the contour points' moves for 1 mm along the beam and for a 1 % larger sphere are
    that radius's derivatives, the outline's length its circumference, turning the sphere about its centre moves
    nothing across its outline, and none of these is more than a similarity."""
    import trimesh

    from threeddx.geometry import standard_ap_geometry

    geometry = standard_ap_geometry((0.0, 0.0, 0.0), size=2048)
    radius, distance, sdd, px = 25.0, 820.0, geometry.sdd, geometry.pixel_spacing[0]
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    out = fv.femur_changes(sphere, np.zeros(3), geometry, 0.0, 1.0, np.zeros((len(sphere.vertices), 3, 1)))
    cone = distance**2 - radius**2
    image_radius = sdd * radius / math.sqrt(cone) / px
    assert out["outline_px"] == pytest.approx(2 * math.pi * image_radius, rel=2e-3)
    beam = sdd * radius * distance / cone**1.5 / px  # d(radius)/dD: the circle shrinks 1 mm farther away
    size = sdd * distance**2 / cone**1.5 * 0.01 * radius / px
    assert out["beam"]["raw_rms"] == pytest.approx(beam, rel=5e-3)
    assert out["size"]["raw_rms"] == pytest.approx(size, rel=5e-3)
    assert out["beam"]["depth_mm"] == pytest.approx(1.0, abs=1e-3)
    for name in ("flexion", "rotation", "adduction"):
        assert out[name]["raw_rms"] < 0.02 * size, name  # the mesh's facets only
        assert abs(out[name]["depth_mm"]) < 1e-9
    for name in ("size", "beam"):
        assert out[name]["res_rms"] < 1e-3 * out[name]["raw_rms"], name



def _ellipsoid_femur():
    """A femur-like ellipsoid (semi-axes 20, 15 and 60 mm; world mm) hanging 40 mm below a 'hip' at the
    standard preset's iso-centre, and the hip."""
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    vertices = np.asarray(mesh.vertices) * [20.0, 15.0, 60.0] + [0.0, 0.0, -60.0]
    return trimesh.Trimesh(vertices, mesh.faces, process=False), np.array([0.0, 0.0, 0.0])


def test_unseen_bias_of_a_shape_the_model_holds_is_zero(fv):
    """A bone the shape model makes exactly (its mean less half a mode) is read with no turn at all, with the
    modes free; its modes held to their prior, the fit pays the mode's prior and the error follows from it."""
    from threeddx.geometry import standard_ap_geometry

    geometry = standard_ap_geometry((0.0, 0.0, 0.0), size=256)
    mesh, hip = _ellipsoid_femur()
    v = np.asarray(mesh.vertices)
    bulge = np.zeros_like(v)
    bulge[:, 0] = 0.1 * v[:, 0] * np.clip(v[:, 2] + 60, 0, None) / 60  # a wider upper half, mm per SD
    mesh_posed, _, centre, turns, _ = fv.posed("femur", mesh, hip, bulge[:, :, None], 0.0)
    out = fv.unseen_bias(mesh_posed, centre, geometry, turns, v - 0.5 * bulge, bulge[:, :, None], 0.3)
    assert out["shape_rms_mm"] < 1e-6 and out["outline_rms_px"] < 1e-6
    assert "adduction" not in out  # in the image plane: the similarity's rotation
    for name in ("flexion", "rotation"):
        assert abs(out[name]["free"]) < 1e-6, name
        assert np.isfinite(out[name]["map"]) and out[name]["map_sd"] > 0, name


def test_unseen_bias_noise_sd_is_the_cramer_rao_floor(fv):
    """With no shape modes to confuse, the MAP fit's SD from the edge noise is the Cramer-Rao floor: the noise
    over the norm of what of the turn's outline field the similarity and the other turn leave (the projection
    :func:`outline_residual` makes, another route than the posterior covariance)."""
    from threeddx.geometry import standard_ap_geometry

    geometry = standard_ap_geometry((0.0, 0.0, 0.0), size=256)
    mesh, hip = _ellipsoid_femur()
    none = np.zeros((len(mesh.vertices), 3, 1))
    mesh_posed, _, centre, turns, _ = fv.posed("femur", mesh, hip, none, 8.0)
    out = fv.unseen_bias(mesh_posed, centre, geometry, turns, np.asarray(mesh.vertices), none, 0.3)
    frame = fv.outline_frame(mesh_posed, geometry)
    fields = fv.unit_fields(frame, {n: turns[n] for n in ("flexion", "rotation")}, centre)
    for name, other in (("flexion", "rotation"), ("rotation", "flexion")):
        left = fv.outline_residual(frame.points, fields[name], frame.normal, fields[other][:, None], frame.weights)
        floor = 0.3 / math.sqrt(np.sum(frame.weights * left**2))
        assert out[name]["map_sd"] == pytest.approx(floor, rel=1e-4), name


def test_femur_placement_summary_splits_the_error():
    """benchmarks/femur_placement.py: two images whose joints are off by (c + h, c - h) and whose femurs slope by b
    per mm: the common part's SD, the half-difference's RMS and what a perfect ball leaves, h +- b s, by hand."""
    path = Path(__file__).parents[2] / "benchmarks" / "femur_placement.py"
    spec = importlib.util.spec_from_file_location("femur_placement", path)
    fp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fp)
    rows = []
    for sample, c, h, b in (("a", 4.0, 3.0, 0.1), ("b", -2.0, -1.0, -0.05)):
        for bone, sign in (("femur_left", 1), ("femur_right", -1)):
            rows.append({"sample": sample, "bone": bone, "at_joint": c + sign * h, "slope": b, "s_mean": 50.0,
                         "mean": c + sign * h + 50.0 * b, "residual": 1.0, "anchor_shift": sign * 1.0})
    s = fp.summarise(rows)
    assert s["femurs"] == 4 and s["images"] == 2
    assert s["common_sd"] == pytest.approx(np.std([4.0, -2.0]))
    assert s["half_rms"] == pytest.approx(math.sqrt((9 + 1) / 2))
    assert s["half_own_rms"] == pytest.approx(math.sqrt((2**2 + 2**2) / 2))  # h - 1 before the anchoring
    leaves = [3 + 5.0, -3 + 5.0, -1 - 2.5, 1 - 2.5]
    assert s["ball_leaves_rms"] == pytest.approx(math.sqrt(np.mean(np.square(leaves))))
    assert s["slope_share_rms"] == pytest.approx(math.sqrt((25 + 25 + 6.25 + 6.25) / 4))
