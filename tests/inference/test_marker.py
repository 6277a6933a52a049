"""The calibration sphere's fit (threeddx.inference.marker) against analytic projections of spheres.

Images are rendered exactly: each pixel the mean transmission of 8 x 8 sub-rays through a sphere whose chord
is analytic (ray-sphere intersection), so the outline off the central ray is the true ellipse.
"""
import numpy as np
import pytest

from threeddx.errors import InputError
from threeddx.geometry import standard_ap_geometry
from threeddx.inference.marker import find_marker, sphere_chord_mm, with_marker


def _render(geo, centres, radius_mm=12.5, mu_per_mm=20.0, ss=8):
    fine = geo.resample(geo.detector_shape[0] * ss)
    chord = sum(sphere_chord_mm(fine, np.asarray(c, float), radius_mm, supersample=1) for c in centres)
    h, w = geo.detector_shape
    return 1.0 - np.exp(-mu_per_mm * chord).reshape(h, ss, w, ss).mean(axis=(1, 3))


def _truth(geo, c, radius_mm=12.5):
    c = np.asarray(c, float)
    sr, sc = geo.pixel_spacing
    u0, v0 = geo.principal_point
    row, col = c[1] * geo.sdd / c[2] / sr + v0 - 0.5, c[0] * geo.sdd / c[2] / sc + u0 - 0.5
    diameter_px = 2 * geo.sdd * np.tan(np.arcsin(radius_mm / np.linalg.norm(c))) / sr
    return row, col, diameter_px


#: sphere centres (source frame, mm): on the central ray, off it (an ellipse), near the source
CENTRES = {"central": [0, 0, 820], "off-axis": [150, -120, 760], "near the source": [40, 30, 500],
           "far off-axis": [-170, 60, 900]}


@pytest.mark.parametrize("size", [128, 256])
@pytest.mark.parametrize("where", list(CENTRES))
def test_the_sphere_is_measured_to_a_hundredth_of_a_pixel(where, size):
    """An opaque ball: centre and diameter within 0.02 px of the analytic projection, distance within 1 mm."""
    geo = standard_ap_geometry(size=size)
    c = CENTRES[where]
    m = find_marker(_render(geo, [c]), geo, 25.0)
    row, col, diameter = _truth(geo, c)
    assert abs(m.row - row) < 0.02 and abs(m.col - col) < 0.02
    assert abs(m.apparent_diameter_px - diameter) < 0.02
    assert m.distance_mm == pytest.approx(np.linalg.norm(c), abs=1.0)


@pytest.mark.parametrize("where", list(CENTRES))
def test_a_perfect_reading_is_the_analytic_projection(where):
    """A sphere's Marker (what fits end in; evaluate's perfectly read ball, ``MarkerTrial(read="truth")``) is
    its analytic projection."""
    from threeddx.inference.marker import sphere_marker

    geo = standard_ap_geometry(size=256)
    m = sphere_marker(geo, np.asarray(CENTRES[where], float), 25.0)
    row, col, diameter = _truth(geo, CENTRES[where])
    assert (m.row, m.col, m.apparent_diameter_px) == pytest.approx((row, col, diameter), abs=1e-6)
    assert m.distance_mm == pytest.approx(np.linalg.norm(CENTRES[where])) and m.depth_mm == CENTRES[where][2]


def test_a_steel_ball_s_soft_edge_costs_a_little():
    """Steel at ~1/mm is not opaque at its very edge: the outline reads ~0.02 px small, the distance ~1.5 mm
    long at 820 mm (still within 0.1 px)."""
    geo = standard_ap_geometry(size=128)
    m = find_marker(_render(geo, [CENTRES["central"]], mu_per_mm=1.0), geo, 25.0)
    _, _, diameter = _truth(geo, CENTRES["central"])
    assert abs(m.apparent_diameter_px - diameter) < 0.1
    assert 0 < m.distance_mm - 820.0 < 3.0


@pytest.mark.parametrize("centres, match", [
    ([], "no 25 mm marker found"),
    ([[0, 0, 820], [120, 100, 820]], "2 candidates"),
    ([[-172, 0, 820]], "no whole 25 mm marker found: the round candidates .* touch the image's border"),
])
def test_no_marker_two_markers_or_one_at_the_edge_are_one_line_errors(centres, match):
    geo = standard_ap_geometry(size=128)
    img = _render(geo, centres) if centres else np.random.default_rng(0).random((128, 128)) * 0.1
    with pytest.raises(InputError, match=match) as e:
        find_marker(img, geo, 25.0)
    assert "\n" not in str(e.value)


def test_a_ball_joins_a_sample_as_metal():
    """with_marker adds the ball's chord (cm) times steel's density to the metal line integral, nothing else."""
    geo = standard_ap_geometry(size=64)
    mats = {"bone": np.ones((64, 64), np.float32), "soft": np.ones((64, 64), np.float32)}
    out = with_marker(mats, geo, np.array([0.0, 0.0, 820.0]), 25.0)
    assert out["bone"] is mats["bone"] and "metal" not in mats
    chord_mm = sphere_chord_mm(geo, np.array([0.0, 0.0, 820.0]), 12.5)
    np.testing.assert_allclose(out["metal"], 7.874 * chord_mm / 10.0, rtol=1e-6)
    assert 0.8 * 25.0 < chord_mm.max() <= 25.0  # a pixel's mean chord, at most the diameter


def test_a_ball_on_a_tilted_background_beside_a_bright_bar_is_found_alone():
    """Anatomy behind a ball is brighter on one side, and other bright things are not round: a ramp under the
    ball and a bright bar beside it leave the fit within 0.05 px and find one marker only."""
    geo = standard_ap_geometry(size=256)
    c = [-60.0, 40.0, 820.0]
    ramp = np.linspace(0.0, 0.3, 256)[None, :] * np.ones((256, 1))
    img = 0.6 * _render(geo, [c]) + ramp
    img[40:60, 150:230] += 0.6  # a bright bar (a side marker's letter, a shield's edge)
    m = find_marker(img, geo, 25.0)
    row, col, diameter = _truth(geo, c)
    assert abs(m.row - row) < 0.05 and abs(m.col - col) < 0.05
    assert abs(m.apparent_diameter_px - diameter) < 0.05


@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_an_inverted_display_gives_the_same_ball_when_it_is_known(scale):
    """A film displayed bone dark (an inverted display, a decreasing change of intensity) shows the ball as a dark
    disc: told so (``bone_dark``), the reading is the upright one's; not told, no bright disc is there."""
    geo = standard_ap_geometry(size=256)
    img = _render(geo, [CENTRES["off-axis"]])
    upright = find_marker(img, geo, 25.0)
    dark = find_marker(scale * (1.0 - img), geo, 25.0, bone_dark=True)
    assert (dark.row, dark.col, dark.apparent_diameter_px) == pytest.approx(
        (upright.row, upright.col, upright.apparent_diameter_px), abs=1e-6)
    with pytest.raises(InputError, match="uniformly bright disc"):
        find_marker(scale * (1.0 - img), geo, 25.0)


def test_a_ball_on_a_larger_bright_region_is_not_hidden_by_it():
    """A ball over bone that a hard window saturates: a larger bright plateau holds it. Each place and size is
    its own candidate (the plateau's disc, larger and stronger, used to hide the ball inside it)."""
    geo = standard_ap_geometry(size=256)
    c = [-40.0, 30.0, 820.0]
    row, col, diameter = _truth(geo, c)
    yy, xx = np.mgrid[:256, :256]
    plateau = 0.6 * (np.hypot(yy - row - 6, xx - col + 8) < 1.6 * diameter)
    img = np.maximum(0.1 + plateau, _render(geo, [c]))
    m = find_marker(img, geo, 25.0)
    assert abs(m.row - row) < 0.05 and abs(m.col - col) < 0.05


@pytest.mark.parametrize("inverted, masks_on, expected", [
    (False, True, False), (True, True, True), (True, False, False)])
def test_the_display_s_polarity_is_the_bones_against_the_body_around_them(inverted, masks_on, expected):
    """shows_bone_dark: bone brighter than the band of body around it is the usual display; darker, inverted;
    with no bone found, the usual display is assumed."""
    from threeddx.inference.marker import shows_bone_dark

    yy, xx = np.mgrid[:64, :64]
    bone = (np.hypot(yy - 32, xx - 24) < 10) | ((abs(yy - 32) < 4) & (xx > 30) & (xx < 56))
    img = 0.2 + 0.3 * (np.hypot(yy - 32, xx - 32) < 30) + 0.4 * bone  # air, body, bone
    img = 1.0 - img if inverted else img
    masks = np.stack([bone & (xx < 34), bone & (xx >= 34)]) & masks_on
    assert shows_bone_dark(img, masks) is expected
