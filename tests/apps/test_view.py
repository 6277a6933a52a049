"""threeddx.apps.view: the interactive view page, its data, the evaluate gallery; and the page in a real browser."""
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import trimesh

from threeddx.cli import main
from threeddx.apps.demo import BONES
from threeddx.geometry import standard_ap_geometry
from threeddx.apps.view import GalleryCase, ViewData, gallery_page, load_view_data, scene_figure, vertex_distances, view_page

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _payload(page: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="view-data">(.*?)</script>', page, re.S)
                      .group(1).replace("<\\/", "</"))


def _array(value) -> np.ndarray:
    """A plotly JSON array: a list, or a base64 typed array ({"dtype", "bdata"})."""
    if isinstance(value, dict):
        import base64

        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).astype(float)
    return np.asarray(value, float)


def _sphere(radius, centre=(0.0, 0.0, 0.0)):
    m = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    m.apply_translation(centre)
    return m


@pytest.mark.parametrize("inner, outer", [(10.0, 12.0), (20.0, 23.5)])
def test_vertex_distances_between_concentric_spheres_are_the_gap(inner, outer):
    d = vertex_distances(_sphere(inner), _sphere(outer))
    # the outer icosphere's flat faces lie up to r(1 - cos(edge/2r)) inside the true sphere
    assert np.allclose(d, outer - inner, atol=0.02 * outer)


def _data(truth: bool, frame: str = "world") -> ViewData:
    geo = standard_ap_geometry((0.0, 0.0, 0.0), size=32)
    masks = np.zeros((3, 32, 32), bool)
    masks[0, 4:12, 4:12] = masks[1, 16:20, 4:8] = True
    meshes = {"pelvis": _sphere(10.0), "femur_left": _sphere(5.0, (40.0, 0, -60))}
    gt = {"pelvis": _sphere(12.0), "femur_left": _sphere(5.0, (41.0, 0, -60))} if truth else None
    summary = {"bones": {b: {"vertices": len(m.vertices), "watertight": True, "volume_cm3": 1.0, "confidence": 0.9,
                             "found": True} for b, m in meshes.items()},
               "missing": ["femur_right (no mask)"], "notes": ["a note"], "checkpoint": "x.pt", "mesh_method": "dual"}
    if truth:
        summary["truth_metrics"] = {"pelvis": {"assd": 2.0, "hd95": 2.1}, "femur_left": {"assd": 1.0, "hd95": 1.5}}
    return ViewData("case <1>", np.linspace(0, 1, 32 * 32).reshape(32, 32), masks, list(BONES), meshes, geo, frame,
                    summary, gt)


@pytest.mark.parametrize("truth", [False, True])
def test_the_scene_has_a_trace_per_mesh_and_the_geometry(truth):
    fig, colouring = scene_figure(_data(truth))
    roles = [(t["meta"].get("role"), t["meta"].get("bone")) for t in fig["data"]]
    expected = [("prediction", "pelvis")] + [("truth", "pelvis")] * truth + [("prediction", "femur_left")] + \
        [("truth", "femur_left")] * truth + [("geometry", None)] * 3
    assert roles == expected
    assert set(colouring) == {"pelvis", "femur_left"}
    pelvis = fig["data"][0]
    assert ("intensity" in pelvis) == truth
    if truth:  # coloured by the distance to the truth: the spheres' 2 mm gap
        assert np.allclose(_array(pelvis["intensity"]), 2.0, atol=0.25)
    assert fig["layout"]["scene"]["aspectmode"] == "data"


def test_the_source_and_detector_are_drawn_where_the_geometry_puts_them():
    data = _data(False)
    fig, _ = scene_figure(data)
    source, outline = (t for t in fig["data"] if t["meta"]["role"] == "geometry" and t["name"] in ("X-ray source",
                                                                                                "detector"))
    xyz = lambda t: np.stack([_array(t[a]) for a in "xyz"], -1)  # noqa: E731
    np.testing.assert_allclose(xyz(source)[0], data.geometry.source_position_world, atol=1e-6)
    corners = data.geometry.to_world(data.geometry.detector_corners_source())
    np.testing.assert_allclose(xyz(outline)[:4], corners, atol=1e-3)


def test_the_page_embeds_everything_and_escapes_names():
    page = view_page(_data(True))
    assert "case &lt;1&gt;" in page and "case <1>" not in page
    assert 'id="toggle-pelvis"' in page and 'id="toggle-femur_left"' in page
    assert 'id="toggle-femur_right"' not in page  # not reconstructed: no 3D toggle
    assert 'id="toggle-truth"' in page and 'id="colour-by-distance"' in page
    assert "femur_right (no mask): not found" in page
    # numbers of summary.json: ASSD/HD95 columns when the truth is known
    assert "<th>ASSD (mm)</th>" in page and "<td>2.00</td>" in page
    assert not re.search(r'<(script|img|link)[^>]+(src|href)="https?:', page)  # nothing fetched from the web
    payload = _payload(page)
    assert payload["has_truth"] and payload["bones"] == ["pelvis", "femur_left"]


def test_the_calibrated_uncertainties_are_columns_when_the_model_has_them():
    data = _data(False)
    assert "along the beam" not in view_page(data)
    data.summary["bones"]["pelvis"]["placement_total_sd_mm"] = 4.95
    data.summary["bones"]["femur_left"].update(placement_total_sd_mm=7.73, tilt_sd_deg=3.25)
    page = view_page(data)
    assert "<th>± along the beam (mm, 1 SD)</th>" in page and "<th>± shaft tilt (°, 1 SD)</th>" in page
    pelvis_row = re.search(r"pelvis</td>(.*?)</tr>", page).group(1)
    assert "<td>5.0</td><td>-</td>" in pelvis_row  # the pelvis has no shaft
    assert "<td>7.7</td><td>3.2</td>" in re.search(r"femur_left</td>(.*?)</tr>", page).group(1)


def test_a_page_without_truth_has_no_truth_controls():
    page = view_page(_data(False))
    assert 'id="toggle-truth"' not in page and "ASSD (mm)" not in page


def test_gallery_lists_worst_first_and_a_missing_bone_first_of_all():
    cases = [GalleryCase("good", "s1", {"pelvis": {"assd": 1.0, "hd95": 2.0}}, "data:,", "views/good.html"),
             GalleryCase("bad", "s1", {"pelvis": {"assd": 5.0, "hd95": 9.0}}, "data:,", "views/bad.html"),
             GalleryCase("lost", "s2", {"pelvis": {"assd": float("nan"), "hd95": float("nan")}}, "data:,",
                         "views/lost.html")]
    page = gallery_page(cases, ["pelvis"], "t")
    order = re.findall(r'<a href="views/(\w+)\.html"><img', page)
    assert order == ["lost", "bad", "good"]


def test_view_rewrites_a_result_from_its_files(demo_out, tmp_path):
    folder = tmp_path / "dualface"
    shutil.copytree(demo_out / "dualface", folder)
    (folder / "view.html").unlink()
    assert main(["view", str(folder)]) == 0
    data = load_view_data(folder)
    assert set(data.meshes) == set(BONES) and set(data.truth) == set(BONES)
    assert _payload((folder / "view.html").read_text(encoding="utf-8"))["has_truth"]


def test_view_into_a_read_only_folder_is_one_line(demo_out, tmp_path, monkeypatch, capsys):
    """A folder one cannot write in (simulated: tests may run as root, which writes anywhere)."""
    import errno

    folder = tmp_path / "dualface"
    shutil.copytree(demo_out / "dualface", folder)
    before = (folder / "view.html").read_bytes()
    open_ = os.open

    def refuse(path, *args, **kwargs):  # the page's temporary beside it cannot be made
        if ".tmp" in os.fspath(path):
            raise PermissionError(errno.EACCES, "Permission denied")
        return open_(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    assert main(["view", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot write" in err and "Permission denied" in err and len(err.splitlines()) == 1
    assert (folder / "view.html").read_bytes() == before


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "not a 3ddx predict or demo result"),
    (lambda p: p / "missing", "not a folder"),
    (lambda p: (p / "summary.json").write_text("{}") and p, "no maps.npz"),
])
def test_view_of_a_folder_that_is_no_result_is_one_line(make, message, tmp_path, capsys):
    target = make(tmp_path)
    assert main(["view", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_evaluate_view_writes_a_gallery_of_linked_views(small_sim, tmp_path):
    out = tmp_path / "ev"
    assert main(["evaluate", "--data", str(small_sim), "--oracle", "--split", "val",
                 "--limit", "2", "--view", "--out", str(out)]) == 0
    page = (out / "gallery.html").read_text(encoding="utf-8")
    links = re.findall(r'<a href="(views/[^"]+\.html)"><img', page)
    assert len(links) == 2 and all((out / link).stat().st_size > 1000 for link in links)
    assert (out / "views" / "plotly.min.js").stat().st_size > 1e6  # shared by the case pages
    errors = [float(e) for e in re.findall(r'data-error="([\d.]+)"', page)]
    assert errors == sorted(errors, reverse=True)


def test_glb_holds_every_bone_coloured_in_the_frame_of_the_stl(demo_out):
    folder = demo_out / "dualface"
    scene = trimesh.load(folder / "bones.glb")
    assert set(scene.geometry) == set(BONES)
    from threeddx.apps.viz import BONE_COLOURS

    for k, bone in enumerate(BONES):
        glb = scene.geometry[bone]
        stl = trimesh.load(folder / f"{bone}.stl")
        assert np.allclose(glb.bounds, stl.bounds, atol=1e-3)  # same coordinates (world LPS mm), no unit change
        colour = np.asarray(glb.visual.material.baseColorFactor[:3], float) / 255
        assert np.allclose(colour, BONE_COLOURS[k], atol=1 / 255)


# --------------------------------------------------------------- in a real browser
def _canvas_pixels(page) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    return np.asarray(Image.open(BytesIO(page.locator("#scene3d").screenshot())).convert("L"), float)


def test_the_demo_view_in_a_real_browser(browser, demo_out, tmp_path):
    """Offline, no console errors, a 3D picture that is not blank and changes when a bone is hidden."""
    view = demo_out / "dualface" / "view.html"
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    problems, requests = [], []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(view.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)
    page.wait_for_timeout(500)
    shot = tmp_path / "viewer.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("THREEDDX_UPDATE_DOCS"):
        shutil.copy(shot, DOCS / "viewer.png")
    before = _canvas_pixels(page)
    assert before.std() > 10, "the 3D canvas is blank"
    page.click("#toggle-pelvis")
    page.wait_for_timeout(500)
    after = _canvas_pixels(page)
    assert np.abs(after - before).mean() > 1, "hiding the pelvis did not change the picture"
    assert page.locator("img.mask[data-bone='pelvis']").is_hidden()
    page.close()
    assert problems == []
    assert requests and all(u.startswith(("file://", "data:", "blob:")) for u in requests), requests


@pytest.mark.parametrize("frame, axis", [("world", "x (patient left), mm"), ("source", "x (columns), mm")])
def test_predict_view_is_in_the_frame_of_the_meshes(frame, axis, tmp_path):
    from threeddx.apps.demo import example_path

    out = tmp_path / "p"
    assert main(["predict", str(example_path()), "--view", "--frame", frame, "--out", str(out)]) == 0
    figure = _payload((out / "view.html").read_text(encoding="utf-8"))["figure"]
    assert figure["layout"]["scene"]["xaxis"]["title"]["text"] == axis
    pelvis = next(t for t in figure["data"] if t["meta"].get("bone") == "pelvis")
    stl = trimesh.load(out / "pelvis.stl")
    xyz = np.stack([_array(pelvis[a]) for a in "xyz"], -1)
    assert np.allclose(xyz.min(0), stl.bounds[0], atol=0.01) and np.allclose(xyz.max(0), stl.bounds[1], atol=0.01)
    # the measures drawn in the meshes' frame: each femoral head's sphere centred on summary.json's head centre
    s = json.loads((out / "summary.json").read_text())
    page = (out / "view.html").read_text(encoding="utf-8")
    assert 'id="toggle-measurements"' in page and "<th>measure</th>" in page and "neck_shaft_angle_deg" in page
    spheres = [t for t in figure["data"] if t["meta"].get("role") == "measurements" and t["type"] == "mesh3d"]
    assert len(spheres) == 2
    for t, side in zip(spheres, ("left", "right")):
        centre = np.asarray(s["measurements"][f"femur_{side}"]["head_centre_mm"])
        if frame == "source":
            from threeddx.geometry import XrayGeometry

            centre = XrayGeometry.from_dict(s["model_geometry"]).to_source(centre[None])[0]
        xyz = np.stack([_array(t[a]) for a in "xyz"], -1)
        np.testing.assert_allclose((xyz.min(0) + xyz.max(0)) / 2, centre, atol=0.05)
