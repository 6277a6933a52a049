"""Interactive views: one self-contained ``view.html`` per reconstruction, and a gallery for evaluate.

A view shows, side by side, the radiograph as the network saw it with every
bone's mask (a toggle), and the bones' meshes in 3D (rotate, zoom, a toggle per
bone, the colours of ``report.png``). When the ground truth is known (demo,
evaluate, or a folder with ``truth/``) it is overlaid, translucent, and the
prediction can be coloured by each vertex's distance to the true surface, with
a colour bar in mm. The X-ray source and the detector are drawn as context (a
toggle; off at first, because at 1 m they dwarf the bones). Below, the numbers
of ``summary.json``.

**Coordinates** are those of the meshes written beside the page: world LPS mm
(``--frame world``, default) or the source frame (``--frame source``); the
axis titles say which. The first camera looks at the bones as an AP radiograph
is read (the patient's right on the left, superior up).

**Why plotly.** Its Python package ships plotly.js (MIT, 4.8 MB) inside the
wheel, so a page is made with no network access and no JavaScript build step,
and it brings what the view needs (shaded meshes with per-vertex colours, a
colour bar, an orbit camera, restyling from a checkbox) tested by a large user
base. three.js would give smaller files but leave the camera controls, lighting,
colour bar and legend to us, in JavaScript we would have to build, vendor and
maintain. The cost is size: a page carries 4.8 MB of script, so
:func:`write_gallery`'s case pages share one ``plotly.min.js`` beside them.

Pages never load anything from the network: the script is inline (or a file in
the same folder), pictures are ``data:`` URLs, and the mesh arrays are embedded
as base64 typed arrays.
"""
from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from threeddx.errors import InputError
from threeddx.geometry import XrayGeometry
from threeddx.io import WRITE_ERRNOS, atomic_path, check_names, remove_dead_temporaries
from threeddx.bones import colour

#: The page a view is written to, in a predict result folder.
VIEW_FILE = "view.html"
#: Ground-truth meshes of a result, when known: ``truth/BONE.ply`` in the result's frame.
TRUTH_DIR = "truth"
#: The colour bar's upper end is at least this (mm), so a good reconstruction looks good.
MIN_COLOUR_RANGE_MM = 5.0
#: Opacity of a mask over the radiograph (as in report.png).
MASK_ALPHA = 0.45


@dataclass
class ViewData:
    """Everything one view shows.

    ``image``: the radiograph as the network saw it, (H, W) in [0, 1];
    ``masks``: (C, H, W) bool, one per name of ``bones``; ``meshes``: bone ->
    trimesh in ``frame`` (``world``: LPS mm, ``source``: source frame mm);
    ``geometry``: the camera of the masks (for the source and the detector);
    ``summary``: what summary.json holds; ``truth``: bone -> true mesh in the
    same frame, or None.
    """

    title: str
    image: np.ndarray
    masks: np.ndarray
    bones: list[str]
    meshes: dict
    geometry: XrayGeometry
    frame: str = "world"
    summary: dict = field(default_factory=dict)
    truth: dict | None = None


# ------------------------------------------------------------------ pictures
def bone_colour(name: str, index: int) -> str:
    """The bone's colour in report.png (threeddx.bones.colour; ``index``: its position, for an unregistered bone),
    as CSS ``#rrggbb``."""
    r, g, b = (int(round(255 * v)) for v in colour(name, index))
    return f"#{r:02x}{g:02x}{b:02x}"


def png_data_url(pixels: np.ndarray) -> str:
    """(H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA uint8 -> ``data:image/png;base64,...``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def mask_layers(image: np.ndarray, masks: np.ndarray, bones: list[str]) -> tuple[str, list[str]]:
    """The grey radiograph and one transparent RGBA overlay per mask, as PNG data URLs."""
    grey = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    layers = []
    for c, m in enumerate(masks):
        rgba = np.zeros((*m.shape, 4), np.uint8)
        rgba[..., :3] = (colour(bones[c], c) * 255).round().astype(np.uint8)
        rgba[..., 3] = np.where(m.astype(bool), int(round(255 * MASK_ALPHA)), 0)
        layers.append(png_data_url(rgba))
    return png_data_url(grey), layers


def overlay_thumbnail(image: np.ndarray, masks: np.ndarray, bones: list[str] | None = None) -> str:
    """The radiograph with its masks blended in (as report.png), a PNG data URL."""
    from threeddx.apps.viz import mask_overlay

    return png_data_url((mask_overlay(image, masks, bones=bones) * 255).round().astype(np.uint8))


# ------------------------------------------------------------------ 3D scene
def vertex_distances(mesh, truth) -> np.ndarray:
    """Each vertex's distance (mm) to the true surface (:func:`threeddx.metrics.point_to_surface`)."""
    from threeddx.metrics import point_to_surface

    return point_to_surface(np.asarray(mesh.vertices), truth).astype(np.float32)


def _mesh_trace(mesh, name: str, colour: str, role: str, bone: str, frame: str, **extra) -> dict:
    import plotly.graph_objects as go

    v = np.asarray(mesh.vertices, np.float32)
    f = np.asarray(mesh.faces, np.int32)
    trace = go.Mesh3d(
        x=v[:, 0], y=v[:, 1], z=v[:, 2], i=f[:, 0], j=f[:, 1], k=f[:, 2],
        name=name, color=colour, flatshading=False, showlegend=False, hoverinfo="name",
        lighting={"ambient": 0.45, "diffuse": 0.8, "specular": 0.15, "roughness": 0.6},
        lightposition=_light(frame), meta={"bone": bone, "role": role}, **extra,
    )
    return trace


def _geometry_traces(geometry: XrayGeometry, frame: str) -> list:
    """The focal spot, the detector's outline and the beam's four edge rays, in ``frame``."""
    import plotly.graph_objects as go

    corners = geometry.detector_corners_source()
    source = np.zeros((1, 3))
    if frame == "world":
        corners, source = geometry.to_world(corners), geometry.to_world(source)
    outline = np.concatenate([corners, corners[:1]])
    edges = np.concatenate([np.concatenate([source, c[None], np.full((1, 3), np.nan)]) for c in corners])
    style = {"showlegend": False, "visible": False, "hoverinfo": "name"}
    return [
        go.Scatter3d(x=source[:, 0], y=source[:, 1], z=source[:, 2], mode="markers", name="X-ray source",
                     marker={"size": 5, "color": "#ffd23f"}, meta={"role": "geometry"}, **style),
        go.Scatter3d(x=outline[:, 0], y=outline[:, 1], z=outline[:, 2], mode="lines", name="detector",
                     line={"color": "#bbbbbb", "width": 4}, meta={"role": "geometry"}, **style),
        go.Scatter3d(x=edges[:, 0], y=edges[:, 1], z=edges[:, 2], mode="lines", name="beam edges",
                     line={"color": "#777777", "width": 1}, meta={"role": "geometry"}, **style),
    ]


def _measurement_traces(measurements: dict, geometry: XrayGeometry, frame: str) -> list:
    """summary.json's measures drawn in 3D (``frame``): each femoral head's sphere, its neck and shaft axes,
    each acetabular rim, the anterior pelvic plane's triangle (spines and symphysis)."""
    import plotly.graph_objects as go

    pts = measurements.get("points_mm", {})

    def here(p):
        p = np.atleast_2d(np.asarray(p, np.float64))
        return geometry.to_source(p) if frame == "source" else p

    def line(p, name, colour, width=5):
        p = here(p)
        return go.Scatter3d(x=p[:, 0], y=p[:, 1], z=p[:, 2], mode="lines", name=name, showlegend=False,
                            hoverinfo="name", line={"color": colour, "width": width}, meta={"role": "measurements"})

    traces = []
    for side in ("left", "right"):
        f, values = pts.get(f"femur_{side}"), measurements.get(f"femur_{side}", {})
        if f and "head_diameter_mm" in values:
            c, r = np.asarray(f["head_centre"]), values["head_diameter_mm"] / 2
            u, v = np.mgrid[0:np.pi:13j, 0:2 * np.pi:25j]
            sphere = here(c + r * np.stack([np.sin(u) * np.cos(v), np.sin(u) * np.sin(v), np.cos(u)], -1).reshape(-1, 3))
            traces.append(go.Mesh3d(x=sphere[:, 0], y=sphere[:, 1], z=sphere[:, 2], alphahull=0, opacity=0.35,
                                    color="#ffd23f", name=f"femur {side}: head, {2 * r:.1f} mm", hoverinfo="name",
                                    showlegend=False, meta={"role": "measurements"}))
            neck, prox, dist = (np.asarray(f[k]) for k in ("neck", "shaft_proximal", "shaft_distal"))
            traces.append(line([c, c + 1.8 * (neck - c)], f"femur {side}: neck axis (CCD "
                               f"{values.get('neck_shaft_angle_deg', float('nan')):.1f}°)", "#17becf"))
            traces.append(line([prox + 0.8 * (prox - dist), dist], f"femur {side}: shaft axis", "#17becf"))
            traces.append(line([f["condyle_lateral"], f["condyle_medial"]], f"femur {side}: posterior condylar axis "
                               f"(version {values.get('version_deg', float('nan')):.1f}°)", "#17becf"))
        rim = pts.get(f"acetabulum_{side}", {}).get("rim")
        if rim:
            a = measurements.get(f"acetabulum_{side}", {})
            traces.append(line(rim + rim[:1], f"acetabulum {side}: rim (inclination "
                               f"{a.get('acetabular_inclination_deg', float('nan')):.1f}°, version "
                               f"{a.get('acetabular_version_deg', float('nan')):.1f}°)", "#e377c2"))
    p = pts.get("pelvis")
    if p:
        traces.append(line([p["asis_right"], p["asis_left"], p["pubis"], p["asis_right"]], "anterior pelvic plane "
                           f"(tilt {measurements.get('pelvis', {}).get('tilt_deg', float('nan')):.1f}°)", "#ffffff", 3))
    return traces


def _camera(frame: str) -> dict:
    """AP view: from anterior (world -y), superior up; in the source frame, from the source, row 0 up."""
    if frame == "source":
        return {"eye": {"x": 0, "y": 0, "z": -2.3}, "up": {"x": 0, "y": -1, "z": 0}}
    return {"eye": {"x": 0, "y": -2.3, "z": 0.2}, "up": {"x": 0, "y": 0, "z": 1}}


def _light(frame: str) -> dict:
    """A light from the viewer's side of the first camera, a little above."""
    if frame == "source":
        return {"x": 0, "y": -3e4, "z": -1e5}
    return {"x": 3e4, "y": -1e5, "z": 5e4}


def scene_figure(data: ViewData) -> tuple[dict, dict]:
    """The plotly figure (as JSON-ready dict) and the colouring options the page's script switches between."""
    import plotly.graph_objects as go

    traces, colouring = [], {}
    dists = {}
    if data.truth:
        dists = {b: vertex_distances(m, data.truth[b]) for b, m in data.meshes.items() if b in data.truth}
    top = max([MIN_COLOUR_RANGE_MM] + [float(np.percentile(d, 95)) for d in dists.values() if d.size])
    first_bar = True
    for c, bone in enumerate(data.bones):
        colour = bone_colour(bone, c)
        if bone in data.meshes:
            extra = {}
            if bone in dists:
                extra = dict(intensity=dists[bone], intensitymode="vertex", colorscale="Turbo", cmin=0.0, cmax=top,
                             showscale=first_bar, hovertemplate=f"{bone}<br>%{{intensity:.1f}} mm from the truth"
                             "<extra></extra>",
                             colorbar={"title": {"text": "distance to<br>the truth (mm)"}, "len": 0.7})
                first_bar = False
            traces.append(_mesh_trace(data.meshes[bone], bone, colour, "prediction", bone, data.frame, **extra))
            colouring[bone] = {"bone": [[0, colour], [1, colour]], "distance": "Turbo"}
        if data.truth and bone in data.truth:
            traces.append(_mesh_trace(data.truth[bone], f"{bone} (truth)", "#d9d9d9", "truth", bone, data.frame,
                                      opacity=0.35))
    traces += _geometry_traces(data.geometry, data.frame)
    if data.summary.get("measurements"):
        traces += _measurement_traces(data.summary["measurements"], data.geometry, data.frame)
    axis = "world LPS" if data.frame == "world" else "source frame"
    names = ("x (patient left)", "y (posterior)", "z (superior)") if data.frame == "world" else ("x (columns)",
                                                                                                  "y (rows)", "z (beam)")
    scene = {f"{a}axis": {"title": {"text": f"{n}, mm"}, "showbackground": False, "gridcolor": "#dddddd"}
             for a, n in zip("xyz", names)}
    layout = go.Layout(template="none", margin={"l": 0, "r": 0, "t": 0, "b": 0}, uirevision="keep",
                       scene=dict(scene, aspectmode="data", camera=_camera(data.frame)),
                       meta={"frame": axis})
    fig = go.Figure(traces, layout)
    return json.loads(fig.to_json()), colouring


# ------------------------------------------------------------------ the page
def _numbers_table(data: ViewData) -> str:
    """summary.json's per-bone numbers as an HTML table (with ASSD/HD95 when the truth is known)."""
    s = data.summary
    truth = s.get("truth_metrics", {})
    head = ["bone", "found", "confidence", "vertices", "watertight", "volume (cm³)"]
    bones = s.get("bones", {})
    # the calibrated 1-SD uncertainties (README, "What one image cannot show"), when the model carries them
    sd_cols = [(k, h) for k, h in (("placement_total_sd_mm", "± along the beam (mm, 1 SD)"),
                                   ("tilt_sd_deg", "± shaft tilt (°, 1 SD)"))
               if any(k in b for b in bones.values())]
    head += [h for _, h in sd_cols]
    if truth:
        head += ["ASSD (mm)", "HD95 (mm)"]
    rows = []
    for c, bone in enumerate(data.bones):
        b = s.get("bones", {}).get(bone)
        check = s.get("checks", {}).get(bone, {})
        swatch = f'<span class="swatch" style="background:{bone_colour(bone, c)}"></span>'
        if b is None:
            cells = [swatch + html.escape(bone), "no", _fmt(check.get("confidence")), "-", "-", "-"]
            cells += ["-" for _ in sd_cols]
        else:
            cells = [swatch + html.escape(bone), "yes" if b.get("found", True) else "no (forced)",
                     _fmt(b.get("confidence")), str(b.get("vertices", "-")), "yes" if b.get("watertight") else "no",
                     _fmt(b.get("volume_cm3"), 0)]
            cells += [_fmt(b.get(k), 1) if k in b else "-" for k, _ in sd_cols]
        if truth:
            t = truth.get(bone, {})
            cells += [_fmt(t.get("assd")), _fmt(t.get("hd95"))]
        rows.append("<tr>" + "".join(f"<td>{v}</td>" for v in cells) + "</tr>")
    return ("<table class='numbers'><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows)
            + "</table>")


def _measurements_table(summary: dict) -> str:
    """summary.json's ``measurements`` as an HTML table (empty without them)."""
    from threeddx.inference.measure import MEASURES

    m = summary.get("measurements")
    if not m:
        return ""
    rows = []
    for key, values in m.items():
        if key in ("frame", "points_mm", "not_measured") or not isinstance(values, dict):
            continue
        for name in MEASURES[key.split("_")[0]]:
            if name in values:
                flag = " (inferred)" if name in values.get("inferred", []) else ""
                rows.append(f"<tr><td>{html.escape(key)}</td><td>{html.escape(name)}</td>"
                            f"<td>{_fmt(values[name], 1)}{flag}</td></tr>")
    rows += [f"<tr><td>{html.escape(b)}</td><td colspan=2>not measured: {html.escape(w)}</td></tr>"
             for b, w in m.get("not_measured", {}).items()]
    return (f"<h2>Measurements (3D, {html.escape(str(m.get('frame', '')))}; docs/measurements.md)</h2>"
            "<table class='numbers measurements'><tr><th>structure</th><th>measure</th><th>value</th></tr>"
            + "".join(rows) + "</table>")


def _fmt(v, digits: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{float(v):.{digits}f}"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:12px;color:#222;background:#fafafa}
h1{font-size:1.2em;margin:0 0 8px} .sub{color:#666;font-size:.9em}
.row{display:flex;gap:12px;flex-wrap:wrap;align-items:flex-start}
.xray{position:relative;width:420px;max-width:100%} .xray img{width:100%;image-rendering:pixelated;display:block}
.xray img.mask{position:absolute;left:0;top:0}
#scene3d{flex:1;min-width:420px;height:620px;background:#fff;border:1px solid #ddd}
.controls{margin:8px 0} .controls label{margin-right:14px;white-space:nowrap}
.swatch{display:inline-block;width:.9em;height:.9em;margin-right:4px;vertical-align:-1px;border-radius:2px}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ddd;padding:3px 8px;font-size:.9em;text-align:right}
td:first-child,th:first-child{text-align:left} pre{background:#f0f0f0;padding:8px;max-height:320px;overflow:auto}
.notes li{color:#8a5300}
"""

_SCRIPT = """
(function(){
  const view = JSON.parse(document.getElementById('view-data').textContent);
  const gd = document.getElementById('scene3d');
  const state = {truth: view.has_truth, geometry: false, measurements: true, colour: view.has_truth ? 'distance' : 'bone', bones: {}};
  view.bones.forEach(b => state.bones[b] = true);
  function visible(t){
    const m = t.meta || {};
    if (m.role === 'geometry') return state.geometry;
    if (m.role === 'measurements') return state.measurements;
    if (m.role === 'truth') return state.truth && state.bones[m.bone];
    return state.bones[m.bone];
  }
  function refresh(){
    Plotly.restyle(gd, {visible: gd.data.map(visible)});
    document.querySelectorAll('img.mask').forEach(img => {
      img.style.display = (document.getElementById('toggle-masks').checked && state.bones[img.dataset.bone]) ? '' : 'none';
    });
  }
  function recolour(){
    const idx = [], scales = [], bars = [];
    let first = true;
    gd.data.forEach((t, i) => {
      const m = t.meta || {};
      if (m.role !== 'prediction' || !view.colouring[m.bone]) return;
      idx.push(i); scales.push(view.colouring[m.bone][state.colour]);
      bars.push(state.colour === 'distance' && t.intensity !== undefined && first);
      if (t.intensity !== undefined) first = false;
    });
    if (idx.length) Plotly.restyle(gd, {colorscale: scales, showscale: bars}, idx);
  }
  Plotly.newPlot(gd, view.figure.data, view.figure.layout, {responsive: true, displaylogo: false}).then(() => {
    if (!view.has_truth) recolour();
    document.body.dataset.ready = '1';
  });
  view.bones.forEach(b => {
    const box = document.getElementById('toggle-' + b);
    if (box) box.addEventListener('change', () => { state.bones[b] = box.checked; refresh(); });
  });
  document.getElementById('toggle-masks').addEventListener('change', refresh);
  document.getElementById('toggle-geometry').addEventListener('change', e => { state.geometry = e.target.checked; refresh(); });
  const measureBox = document.getElementById('toggle-measurements');
  if (measureBox) measureBox.addEventListener('change', e => { state.measurements = e.target.checked; refresh(); });
  const truthBox = document.getElementById('toggle-truth');
  if (truthBox) truthBox.addEventListener('change', e => { state.truth = e.target.checked; refresh(); });
  const colourBox = document.getElementById('colour-by-distance');
  if (colourBox) colourBox.addEventListener('change', e => { state.colour = e.target.checked ? 'distance' : 'bone'; recolour(); });
})();
"""


def plotly_script() -> str:
    """plotly.js from the installed plotly package (no network)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def view_page(data: ViewData, plotly_src: str | None = None) -> str:
    """The HTML of one view. ``plotly_src``: a relative path to plotly.min.js; None puts the script inline."""
    from threeddx.meshing.reconstruct import describe_mesh

    figure, colouring = scene_figure(data)
    base, layers = mask_layers(data.image, data.masks, list(data.bones))
    has_truth = bool(data.truth)
    bones_found = [b for b in data.bones if b in data.meshes or (data.truth and b in data.truth)]  # a 3D toggle each
    masks_html = "".join(f'<img class="mask" data-bone="{html.escape(b)}" alt="{html.escape(b)} mask" src="{u}">'
                         for b, u in zip(data.bones, layers))
    toggles = "".join(
        f'<label><input type="checkbox" id="toggle-{html.escape(b)}" checked>'
        f'<span class="swatch" style="background:{bone_colour(b, c)}"></span>{html.escape(b)}</label>'
        for c, b in enumerate(data.bones) if b in bones_found)
    if has_truth:
        toggles += ('<label><input type="checkbox" id="toggle-truth" checked>ground truth</label>'
                    '<label><input type="checkbox" id="colour-by-distance" checked>colour by distance to the truth'
                    '</label>')
    toggles += '<label><input type="checkbox" id="toggle-geometry">X-ray source and detector</label>'
    if data.summary.get("measurements"):
        toggles += '<label><input type="checkbox" id="toggle-measurements" checked>measurements</label>'
    s = data.summary
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in s.get("notes", []))
    missing = "".join(f"<li>{html.escape(m)}: not found in the image</li>" for m in s.get("missing", []))
    payload = {"figure": figure, "colouring": colouring, "has_truth": has_truth, "bones": bones_found}
    script = (f'<script src="{html.escape(plotly_src)}"></script>' if plotly_src
              else f"<script>{plotly_script()}</script>")
    frame = "world LPS (mm)" if data.frame == "world" else "source frame (mm)"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval' 'self'; style-src 'unsafe-inline'; img-src data: blob:; worker-src blob:">
<title>3DDX view: {html.escape(data.title)}</title><style>{_STYLE}</style>{script}</head>
<body>
<h1>3DDX: {html.escape(data.title)}</h1>
<div class="sub">checkpoint {html.escape(str(s.get("checkpoint", "-")))} · meshing {html.escape(describe_mesh(s.get("mesh_method", "-")))} ·
coordinates: {frame} · drag to rotate, scroll to zoom</div>
<div class="controls"><label><input type="checkbox" id="toggle-masks" checked>masks on the X-ray</label>{toggles}</div>
<div class="row">
<div class="xray"><img id="xray" alt="radiograph" src="{base}">{masks_html}
<div class="sub">the radiograph as the network saw it ({data.image.shape[1]}×{data.image.shape[0]} px)</div></div>
<div id="scene3d"></div>
</div>
{_numbers_table(data)}
{_measurements_table(data.summary)}
<ul class="notes">{notes}{missing}</ul>
<details><summary>summary.json</summary><pre>{html.escape(json.dumps(s, indent=2))}</pre></details>
<script type="application/json" id="view-data">{_json_for_script(payload)}</script>
<script>{_SCRIPT}</script>
</body></html>
"""


def _json_for_script(obj) -> str:
    """JSON safe inside a <script> element (no '</' can close it)."""
    return json.dumps(obj, separators=(",", ":")).replace("</", "<\\/")


def write_view(path: str | Path, data: ViewData, plotly_src: str | None = None) -> Path:
    """Write :func:`view_page` to ``path`` (atomically)."""
    path = Path(path)
    try:
        remove_dead_temporaries(path, files=True)  # a killed earlier writer's half page
        with atomic_path(path) as tmp:
            tmp.write_text(view_page(data, plotly_src), encoding="utf-8")
    except OSError as e:  # a read-only or full folder: one line, the earlier page untouched
        if e.errno not in WRITE_ERRNOS:
            raise
        raise InputError(f"cannot write {path}: {e.strerror}; the earlier page is untouched") from None
    return path


def write_plotly_js(folder: str | Path) -> Path:
    """plotly.min.js into ``folder`` (for pages that share it)."""
    path = Path(folder) / "plotly.min.js"
    with atomic_path(path) as tmp:
        tmp.write_text(plotly_script(), encoding="utf-8")
    return path


# ------------------------------------------------------------------ from a folder
def load_view_data(folder: str | Path) -> ViewData:
    """The view of a predict result folder (summary.json, maps.npz, BONE.ply, optional truth/BONE.ply)."""
    import trimesh

    folder = Path(folder)
    summary_path, maps_path = folder / "summary.json", folder / "maps.npz"
    if not summary_path.is_file():
        raise InputError(f"{folder}: not a 3ddx predict result (no summary.json)")
    if not maps_path.is_file():
        raise InputError(f"{folder}: no maps.npz (a result written before 3ddx 0.1 views; run predict again)")
    try:
        summary = json.loads(summary_path.read_text())
        with np.load(maps_path) as z:
            image, masks, bones = z["image"], z["masks"].astype(bool), [str(b) for b in z["bones"]]
        check_names(bones, f"{maps_path}: bones")  # names that become file names
        geometry = XrayGeometry.from_dict(summary["model_geometry"], where=f"{summary_path}:model_geometry")
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{folder}: cannot read the result ({type(e).__name__}: {e})") from None
    meshes, truth = {}, {}
    for b in bones:
        if (folder / f"{b}.ply").is_file():
            meshes[b] = trimesh.load(folder / f"{b}.ply", process=False)
        if (folder / TRUTH_DIR / f"{b}.ply").is_file():
            truth[b] = trimesh.load(folder / TRUTH_DIR / f"{b}.ply", process=False)
    title = Path(str(summary.get("image", folder.name))).name
    return ViewData(title, image, masks, bones, meshes, geometry, summary.get("frame", "world"), summary,
                    truth or None)


def view_folder(folder: str | Path) -> list[Path]:
    """``3ddx view DIR``: (re)write the view of a predict result, or of every model of a demo result."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"not a folder: {folder}")
    if (folder / "summary.json").is_file():
        return [write_view(folder / VIEW_FILE, load_view_data(folder))]
    if (folder / "demo.json").is_file():
        models = json.loads((folder / "demo.json").read_text()).get("models", {})
        return [write_view(folder / m / VIEW_FILE, load_view_data(folder / m)) for m in models]
    if (folder / "gallery.html").is_file():
        raise InputError(f"{folder}: an evaluate result's views are written by 'evaluate --view'; open "
                         f"{folder / 'gallery.html'}")
    raise InputError(f"{folder}: not a 3ddx predict or demo result (no summary.json or demo.json)")


# ------------------------------------------------------------------ gallery
@dataclass
class GalleryCase:
    """One evaluated image: its id, subject, per-bone ASSD/HD95 (mm), a thumbnail and its view page."""

    sample_id: str
    subject_id: str
    metrics: dict
    thumbnail: str
    page: str

    @property
    def error(self) -> float:
        """Mean ASSD over the bones; a bone not reconstructed counts as infinitely wrong (listed first)."""
        values = [m.get("assd", float("nan")) for m in self.metrics.values()]
        if not values or any(not np.isfinite(v) for v in values):
            return float("inf")
        return float(np.mean(values))


def gallery_page(cases: Sequence[GalleryCase], bones: Sequence[str], title: str) -> str:
    """Every evaluated image, worst first: thumbnail, ASSD/HD95 per bone, a link to its 3D view."""
    ordered = sorted(cases, key=lambda c: (-c.error, c.sample_id))
    head = "<tr><th>#</th><th>image</th><th>sample</th><th>mean ASSD</th>" + "".join(
        f"<th>{html.escape(b)} ASSD / HD95</th>" for b in bones) + "</tr>"
    rows = []
    for k, c in enumerate(ordered, 1):
        cells = "".join(
            f"<td>{_fmt(c.metrics.get(b, {}).get('assd'))} / {_fmt(c.metrics.get(b, {}).get('hd95'))}</td>"
            for b in bones)
        err = "not found" if not np.isfinite(c.error) else f"{c.error:.2f}"
        rows.append(f'<tr class="case" data-error="{err}"><td>{k}</td>'
                    f'<td><a href="{html.escape(c.page)}"><img class="thumb" src="{c.thumbnail}" alt="{html.escape(c.sample_id)}"></a></td>'
                    f'<td style="text-align:left"><a href="{html.escape(c.page)}">{html.escape(c.sample_id)}</a><br>'
                    f'<span class="sub">subject {html.escape(str(c.subject_id))}</span></td><td>{err}</td>{cells}</tr>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>3DDX evaluation: {html.escape(title)}</title><style>{_STYLE} .thumb{{width:128px;image-rendering:pixelated}}</style></head>
<body><h1>3DDX evaluation: {html.escape(title)}</h1>
<div class="sub">{len(ordered)} images, worst first (mean ASSD over the bones, mm; a bone not found counts as worst).
Click an image for its 3D view.</div>
<table>{head}{''.join(rows)}</table></body></html>
"""


def write_gallery(path: str | Path, cases: Sequence[GalleryCase], bones: Sequence[str], title: str) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(gallery_page(cases, bones, title), encoding="utf-8")
    return path
