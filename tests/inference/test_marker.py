"""The calibration sphere's fit (threeddx.inference.marker) against analytic projections of spheres.

Images are rendered exactly: each pixel the mean transmission of 8 x 8 sub-rays through a sphere whose chord
is analytic (ray-sphere intersection), so the outline off the central ray is the true ellipse.
"""
import re

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


@pytest.mark.parametrize("hidden_share", [0.3, 0.45])
def test_a_ball_partly_under_the_collimator_is_refused_with_where(hidden_share):
    """A ball whose left part lies under a collimator's blade (shown as bright as the ball, as an unexposed strip
    is on a bone-bright film): its outline shows as an arc only, and the refusal says so and where, in one line
    (validation films 0 and 12 of the 256 px evaluation); the same ball fully exposed is measured."""
    geo = standard_ap_geometry(size=128)
    c = [0.0, 0.0, 820.0]
    row, col, diameter = _truth(geo, c)
    img = _render(geo, [c])
    assert find_marker(img, geo, 25.0) is not None
    blade = int(round(col - diameter / 2 + hidden_share * diameter))
    img[:, :blade] = 1.0
    with pytest.raises(InputError, match=r"shows only in part \(row \d+ col \d+") as e:
        find_marker(img, geo, 25.0)
    at = re.search(r"row (\d+) col (\d+)", str(e.value))
    assert abs(int(at[1]) - row) <= 2 and abs(int(at[2]) - col) <= 2 * diameter / 3  # the arc's candidate
    assert "\n" not in str(e.value)
    strip = np.zeros_like(img)
    strip[:, :blade] = 1.0  # the strip alone: its corners on the border are no balls (they were: the zeros beyond
    with pytest.raises(InputError, match="no 25 mm marker found"):  # the border darkened their rings)
        find_marker(strip, geo, 25.0)


def test_a_ball_joins_a_sample_as_a_pixel_share_of_steel():
    """with_marker adds the ball (steel along each pixel's covered part, and that part's share), nothing else; a
    pixel on the outline then lets through, at every energy, what its sub-rays let through on average (within
    2 % of the open field), where one mean chord per pixel passes far too little there."""
    from threeddx.simulator.physics import BALL, BALL_SHARE, RHO_IRON, transmission

    geo = standard_ap_geometry(size=64)
    soft = np.full((64, 64), 20.0, np.float32)  # 20 cm of water
    centre = np.array([0.0, 0.0, 820.0])
    out = with_marker({"soft": soft}, geo, centre, 25.0)
    assert out["soft"] is soft and set(out) == {"soft", BALL, BALL_SHARE}
    share = out[BALL_SHARE]
    assert share.max() == 1.0 and ((share > 0) & (share < 1)).any()
    sub = sphere_chord_mm(geo.resample(64 * 4), centre, 12.5, supersample=1)  # the same 4 x 4 sub-rays, one by one
    fine = transmission({"soft": np.full(sub.shape, 20.0, np.float32), "metal": RHO_IRON * sub / 10.0}, 80.0)
    truth = fine.reshape(64, 4, 64, 4).mean(axis=(1, 3))
    got = transmission({"soft": soft}, 80.0, ball=(out[BALL], share))
    water = transmission({"soft": soft}, 80.0)[0, 0]
    edge = (share > 0) & (share < 1)
    assert np.abs(got - truth)[edge].max() < 0.02 * water
    assert np.abs(got - truth)[~edge].max() < 1e-4
    mean_chord = transmission({"soft": soft, "metal": RHO_IRON * sphere_chord_mm(geo, centre, 12.5) / 10.0}, 80.0)
    # one mean chord per pixel (the ball before the ninth session) passes far too little on the outline
    assert np.abs(mean_chord - truth)[edge].max() > 0.1 * water
    with pytest.raises(ValueError, match="one calibration ball"):
        with_marker(out, geo, centre, 25.0)


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


def test_a_grey_ball_sloping_with_its_background_is_found():
    """A processed film's large unsharp mask leaves the ball flat in the signal but sloping with the background
    across it, and only a few hundredths of the image's range brighter than its ring (validation film 1 of the
    256 px evaluation): flatness is judged about the plane fitted inside, the contrast from 0.025 of the
    range; under another gain and offset, and mirrored, the same (mirrored) ball. The same slope without a ball is
    not a ball."""
    geo = standard_ap_geometry(size=256)
    c = [-40.0, 30.0, 820.0]
    row, col, _ = _truth(geo, c)
    yy, xx = np.mgrid[:256, :256]
    # 2/255 of the range per pixel across the ball: its spread there about twice its contrast (0.03), which the
    # plane takes out (judged by the spread itself, as before, it was not a candidate)
    ramp = np.clip(2 * (xx - col) / 255.0 + 0.6 * (yy - row) / 255.0 + 0.5, 0.0, 1.0)
    ball = 0.03 * _render(geo, [c])
    m = find_marker(ramp + ball, geo, 25.0)
    assert abs(m.row - row) < 0.1 and abs(m.col - col) < 0.1
    k = find_marker(40.0 * (ramp + ball) + 900.0, geo, 25.0)  # another display's gain and offset: the same ball
    assert (k.row, k.col) == pytest.approx((m.row, m.col), abs=0.01)
    k = find_marker((ramp + ball)[:, ::-1].copy(), geo, 25.0)  # the mirrored film (a central principal point)
    assert (k.row, 255 - k.col) == pytest.approx((m.row, m.col), abs=0.01)
    with pytest.raises(InputError, match="no 25 mm marker found"):
        find_marker(ramp, geo, 25.0)


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


def _blurred_ball_film(size=512, ss=4):
    """A 25 mm opaque ball off the central ray on a tilted background: the detector signal (background x
    transmission + scatter, blurred with sigma 1.5 px) and its film (the log, a window, an S-shaped curve)."""
    from scipy import ndimage

    geo = standard_ap_geometry(size=size)
    c = np.array([60.0, -40.0, 800.0])
    transmission = 1.0 - _render(geo, [c], ss=ss)
    h, w = geo.detector_shape
    rr, cc = np.mgrid[:h, :w] / size
    signal = ndimage.gaussian_filter((0.25 + 0.3 * cc + 0.1 * rr) * transmission + 0.01, 1.5)
    lo, hi = np.percentile(-np.log(signal), [1, 99.9])
    x = np.clip((-np.log(signal) - lo) / (hi - lo) * 1.1, 0, 1)
    a = 1 / (1 + np.exp(3.0))
    film = (1 / (1 + np.exp(-6 * (x - 0.5))) - a) / (1 - 2 * a)
    return geo, c, signal, film


def test_a_blurred_ball_is_measured_on_the_detector_signal_not_the_film():
    """The display's logarithm and curve move a blurred ball's visible edge: read on the film it is pixels small
    (tens of mm too far); measured on the detector signal (a "for processing" file) within 0.1 px and 2 mm, and
    any affine change of the signal (gain, offset, the sign -1 of a LIN file) gives the same cone (0.01 px); the
    mirrored film and signal give the mirrored ball."""
    geo, c, signal, film = _blurred_ball_film()
    _, _, diameter = _truth(geo, c)
    on_film = find_marker(film, geo, 25.0)
    assert on_film.read_on == "display" and on_film.apparent_diameter_px - diameter < -1.0
    m = find_marker(film, geo, 25.0, signal=signal)
    assert m.read_on == "detector signal" and m.to_dict()["read_on"] == "detector signal"
    assert abs(m.apparent_diameter_px - diameter) < 0.1 and abs(m.depth_mm - c[2]) < 2.0
    for changed in (3.0 * signal + 7.0, 65535.0 - 40000.0 * signal):
        k = find_marker(film, geo, 25.0, signal=changed)
        assert (k.row, k.col, k.apparent_diameter_px) == pytest.approx((m.row, m.col, m.apparent_diameter_px), abs=0.01)
    w = film.shape[1]
    k = find_marker(film[:, ::-1].copy(), geo, 25.0, signal=signal[:, ::-1].copy())  # the principal point is central
    assert (k.row, w - 1 - k.col, k.apparent_diameter_px) == pytest.approx((m.row, m.col, m.apparent_diameter_px),
                                                                          abs=0.01)


def test_a_signal_that_cannot_be_measured_leaves_the_film_s_reading():
    """A flat signal (nothing to fit) leaves the film's reading as it was, and says so; a signal of another
    shape than the film is a one-line error."""
    from threeddx.inference.marker import measure_on_signal

    geo = standard_ap_geometry(size=128)
    film = _render(geo, [CENTRES["central"]])
    m = find_marker(film, geo, 25.0)
    assert measure_on_signal(np.ones_like(film), geo, m) == m and m.read_on == "display"
    with pytest.raises(InputError, match="detector signal is 64x64 px but the image is 128x128"):
        find_marker(film, geo, 25.0, signal=np.ones((64, 64)))


@pytest.mark.parametrize("radius_px, band", [(4.0, 2.5), (10.0, 5.0), (37.0, 9.0), (70.0, 9.0)])
def test_the_refined_band_grows_with_the_ball_to_cover_a_blurred_edge(radius_px, band):
    from threeddx.inference.marker import refine_band_px

    assert refine_band_px(radius_px) == band


def test_a_steel_ball_s_soft_edge_follows_its_physics():
    """The signal a 25 mm steel ball lets through inside its outline (SteelEdge.inset_mm) grows with the tube
    voltage (a harder beam) and shrinks with the ball (more steel at the same depth), and lies between the
    monochromatic figures ``1 / (4 mu^2 R)`` at the spectrum's effective energies (45 and 70 keV at 80 kVp)."""
    from threeddx.inference.marker import SteelEdge
    from threeddx.simulator.physics import RHO_IRON, tables

    insets = [SteelEdge(25.0, kvp).inset_mm for kvp in (60.0, 80.0, 100.0)]
    assert insets[0] < insets[1] < insets[2]
    assert SteelEdge(30.0, 80.0).inset_mm < insets[1] < SteelEdge(20.0, 80.0).inset_mm
    t = tables()
    mu = np.interp([45.0, 70.0], t.energies_kev, t.mu_rho["iron"]) * RHO_IRON / 10.0  # per mm
    lo, hi = 1.0 / (4.0 * mu**2 * 12.5)
    assert lo < insets[1] < hi, (lo, insets[1], hi)
    assert SteelEdge(25.0, 80.0).taken_mm(np.array([-1.0, 0.0]))[1] == 0.0


def _exact_ball(size, kvp, centre=(-110.0, 30.0, 820.0), tissue=10.0):
    """A window of a ``size`` px detector about a 25 mm steel ball drawn exactly (with_marker's ``exact``) behind
    ``tissue`` g/cm^2 of soft tissue at ``kvp``: its geometry, the ball's centre and the transmission."""
    from threeddx.inference.marker import _crop_geometry, sphere_marker
    from threeddx.simulator.physics import BALL_EXACT, transmission

    g = standard_ap_geometry(size=size)
    c = np.array(centre)
    m = sphere_marker(g, c, 25.0)
    half = int(m.apparent_diameter_px)
    geo = _crop_geometry(g, int(m.row) - half, int(m.col) - half, 2 * half, 2 * half)
    mats = with_marker({"soft": np.full(geo.detector_shape, tissue, np.float32)}, geo, c, 25.0, exact=True)
    return geo, c, transmission({"soft": mats["soft"]}, kvp, 3.0, ball=mats[BALL_EXACT])


def test_a_ball_drawn_exactly_matches_fine_sub_rays():
    """with_marker's ``exact`` drawing: each pixel's transmission at an energy within 0.005 of the mean over
    64 x 64 sub-rays of exp(-mu chord) on the outline (where the steel thins out within a sub-ray), where the
    mean-chord maps of training are off by over 0.03."""
    from threeddx.inference.marker import _crop_geometry, _source_rays, sphere_cover, sphere_marker, \
        sphere_transmission
    from threeddx.simulator.physics import RHO_IRON, tables

    g = standard_ap_geometry(size=1024)
    c = np.array([-110.0, 30.0, 820.0])
    m = sphere_marker(g, c, 25.0)
    half = int(m.apparent_diameter_px)
    geo = _crop_geometry(g, int(m.row) - half, int(m.col) - half, 2 * half, 2 * half)
    exact = sphere_transmission(geo, c, 12.5)
    k = int(np.argmin(np.abs(tables().energies_kev - 70.0)))
    mu = tables().mu_rho["iron"][k] * RHO_IRON / 10.0
    h, w = geo.detector_shape
    drawn = np.ones(h * w)
    drawn[exact.pixels] = exact.t[:, k]
    drawn = drawn.reshape(h, w)
    _, share, inside = sphere_cover(geo, c, 12.5)
    maps = 1.0 - share + share * np.exp(-mu * inside)
    edge = np.argwhere((drawn > 0.05) & (drawn < 0.95))[::7]
    off = (np.arange(64) + 0.5) / 64 - 0.5
    worst = worst_maps = 0.0
    for i, j in edge:
        rr, cc = np.meshgrid(i + off, j + off, indexing="ij")
        t = _source_rays(geo, rr.ravel(), cc.ravel()) @ c
        truth = np.exp(-mu * 2 * np.sqrt(np.maximum(12.5**2 - (c @ c - t**2), 0.0))).mean()
        worst, worst_maps = max(worst, abs(drawn[i, j] - truth)), max(worst_maps, abs(maps[i, j] - truth))
    assert len(edge) > 20 and worst < 0.005 and worst_maps > 0.03, (len(edge), worst, worst_maps)


@pytest.mark.parametrize("size, tol_mm", [(2048, 0.1), (1024, 0.15)])
@pytest.mark.parametrize("kvp", [60.0, 100.0])
def test_a_steel_ball_is_measured_on_its_signal_at_its_tube_voltage(kvp, size, tol_mm):
    """A 25 mm steel ball drawn exactly at a detector's 2048 px (and the same exposure read out at 1024 px),
    blurred by 1 px, on a tilted background with scatter: measured on its detector signal at the stated tube
    voltage its depth is right within 0.1 mm (0.15 at 1024 px); read as an
    opaque disc (the ninth session's fit) it comes out too far, by more at the harder beam (the steel's
    soft edge); at 80 kVp assumed it is off by under 1 mm."""
    from scipy import ndimage

    from threeddx.inference.marker import measure_on_signal, sphere_marker

    geo, c, t = _exact_ball(size, kvp)
    rr, cc = np.mgrid[: t.shape[0], : t.shape[1]] / t.shape[0]
    signal = ndimage.gaussian_filter((1.0 + 0.2 * rr - 0.1 * cc) * t + 0.3, 1.0)
    start = sphere_marker(geo, c * 1.004, 25.0)  # as found on the film: 3 mm off
    m = measure_on_signal(signal, geo, start, kvp=kvp)
    assert m.read_on == "detector signal" and m.edge_kvp == kvp
    assert abs(m.depth_mm - c[2]) < tol_mm, m.depth_mm - c[2]
    opaque = measure_on_signal(signal, geo, start, kvp=kvp, opaque=True).depth_mm - c[2]
    assert opaque > (1.0 if kvp == 100.0 else 0.2), opaque
    assert abs(measure_on_signal(signal, geo, start).depth_mm - c[2]) < 1.0
