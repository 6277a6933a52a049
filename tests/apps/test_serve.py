"""3ddx serve: the JSON API (FastAPI's test client), its limits, and the upload page in a real browser."""
import io
import threading
import time
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from threeddx.cli import main
from threeddx.geometry import ISOCENTER_SD_MM
from threeddx.apps.demo import BONES, example_path
from threeddx.errors import InputError
from threeddx.inference.predictor import Predictor
from threeddx.apps.serve import JOB_ID, ServeSettings, create_app, sniff_image

TOKEN = "a-token-of-twenty-chars"


@pytest.fixture(scope="module")
def predictor():
    return Predictor("dualface")


@pytest.fixture(scope="module")
def example_files(tmp_path_factory):
    """The bundled example as a user has it: a 16-bit PNG and its geometry JSON."""
    folder = tmp_path_factory.mktemp("upload")
    with np.load(example_path()) as z:
        Image.fromarray((np.clip(z["image"], 0, 1) * 65535).astype(np.uint16)).save(folder / "hip.png")
        (folder / "hip.json").write_text(str(z["geometry"]))
    return folder / "hip.png", folder / "hip.json"


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _client(predictor, tmp_path, **settings):
    return TestClient(create_app(predictor, ServeSettings(**settings), root=tmp_path / "jobs"))


def _wait(client, job_id, headers=None, timeout=60.0) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        job = client.get(f"/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_a_radiograph_in_meshes_out(predictor, example_files, tmp_path):
    image, geometry = example_files
    with _client(predictor, tmp_path) as client:
        assert client.get("/health").json()["bones"] == list(BONES)
        r = client.post("/predict", files={"image": ("../../etc/passwd", image.read_bytes()),
                                           "geometry": ("g.json", geometry.read_bytes())})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert JOB_ID.fullmatch(job_id)
        job = _wait(client, job_id)
        assert job["status"] == "done", job
        assert set(job["summary"]["bones"]) == set(BONES) and job["summary"]["geometry_from"] == "--geometry"
        # the client's file name reaches no path: the upload is stored by its sniffed type under the job's id
        stored = sorted(p.name for p in (tmp_path / "jobs" / job_id).iterdir())
        assert stored == ["geometry.json", "input.png", "result"]
        z = zipfile.ZipFile(io.BytesIO(client.get(f"/jobs/{job_id}/meshes.zip").content))
        names = set(z.namelist())
        assert {f"{b}.{ext}" for b in BONES for ext in ("stl", "ply")} <= names and "bones.glb" in names
        view = client.get(f"/jobs/{job_id}/view.html")
        assert view.status_code == 200 and "Plotly" in view.text and view.headers["content-type"].startswith("text/html")
        assert client.get(f"/jobs/{job_id}/report.png").content[:4] == b"\x89PNG"


def test_the_app_gives_the_same_meshes_as_predict(predictor, example_files, tmp_path):
    image, geometry = example_files
    assert main(["predict", str(image), "--geometry", str(geometry), "--out", str(tmp_path / "cli")]) == 0
    import json

    cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    with _client(predictor, tmp_path) as client:
        job_id = client.post("/predict", files={"image": ("x.png", image.read_bytes()),
                                                "geometry": ("g.json", geometry.read_bytes())}).json()["id"]
        job = _wait(client, job_id)
    for bone in BONES:
        for key in ("vertices", "faces", "volume_cm3", "mask_px"):
            assert job["summary"]["bones"][bone][key] == cli["bones"][bone][key]
    assert job["summary"]["measurements"] == cli["measurements"] and "femur_left" in cli["measurements"]


@pytest.mark.parametrize("case, status, message", [
    ("not-an-image", 415, "not an image"),
    ("over-the-upload-limit", 413, "over the limit"),
    ("over-the-pixel-limit", 413, "megapixels"),
    ("bad-geometry", 422, "source_to_detector_mm"),
    ("deeply-nested-geometry", 422, "levels deep"),
    ("png-header-claims-100000-squared", 413, "over the limit"),
])
def test_bad_uploads_are_refused_at_once_and_leave_nothing(case, status, message, predictor, example_files, tmp_path,
                                                         monkeypatch):
    import threeddx.apps.radiograph as radiograph

    monkeypatch.setattr(radiograph, "MAX_PIXELS", 100 * 100)
    files = {"image": ("x.png", _png(np.zeros((64, 64), np.uint8)))}
    settings = {}
    if case == "not-an-image":
        files["image"] = ("x.png", b"%PDF-1.4 not a radiograph")
    elif case == "over-the-upload-limit":
        settings["max_upload_mb"] = 0.01
        files["image"] = ("x.png", _png((np.random.default_rng(0).random((256, 256)) * 255).astype(np.uint8)))
    elif case == "over-the-pixel-limit":
        files["image"] = ("x.png", _png(np.zeros((120, 110), np.uint8)))
    elif case == "png-header-claims-100000-squared":  # a 100-byte file: refused from its header, not queued
        import struct
        import zlib

        def chunk(kind, data):
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        files["image"] = ("x.png", b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0,
                                                                                         0, 0, 0))
                          + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))
    elif case == "deeply-nested-geometry":  # a RecursionError in the JSON parser before, answered 500
        files["geometry"] = ("g.json", b'{"a": ' + b"[" * 10_000 + b"]" * 10_000 + b"}")
    else:
        import json

        geo = json.loads(example_files[1].read_text())
        geo["source_to_detector_mm"] = 20000  # 20 m: no radiograph is taken so
        files["geometry"] = ("g.json", json.dumps(geo).encode())
    with _client(predictor, tmp_path, **settings) as client:
        r = client.post("/predict", files=files)
        assert r.status_code == status and message in r.json()["error"], r.text
        assert str(tmp_path) not in r.json()["error"]  # no server path in a message
    assert not any((tmp_path / "jobs").iterdir())


def test_a_non_hip_image_gets_predicts_refusal(predictor, tmp_path):
    noise = (np.random.default_rng(1).random((256, 256)) * 255).astype(np.uint8)
    with _client(predictor, tmp_path) as client:
        job = _wait(client, client.post("/predict", files={"image": ("n.png", _png(noise))}).json()["id"])
    assert job["status"] == "failed" and job["error"].startswith("no hip anatomy found in upload.png")
    assert "files" not in job


@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "RG3_UNCR.dcm"], ids=["chest-PA", "lower-leg-AP"])
def test_a_real_non_hip_dicom_is_refused_as_predict_refuses_it(name, predictor, tmp_path):
    """pydicom-data's real radiographs (their spacing tags are 0, so a geometry is declared): read, then refused."""
    from test_predict import _nominal_geometry_for, _pydicom_data

    path = _pydicom_data(name)
    with _client(predictor, tmp_path) as client:
        r = client.post("/predict", files={"image": ("x", path.read_bytes()),
                                           "geometry": ("g", _nominal_geometry_for(path, tmp_path).read_bytes())})
        assert r.status_code == 202, r.text
        job = _wait(client, r.json()["id"])
    assert job["status"] == "failed" and job["error"].startswith("no hip anatomy found in upload.dcm"), job


@pytest.mark.parametrize("headers, query, status", [
    ({}, "", 401),
    ({"Authorization": "Bearer wrong-token-wrong-token"}, "", 401),
    ({"Authorization": f"Bearer {TOKEN}"}, "", 200),
    ({}, f"?token={TOKEN}", 200),
])
def test_a_token_guards_the_api_when_set(headers, query, status, predictor, tmp_path):
    with _client(predictor, tmp_path, token=TOKEN) as client:
        assert client.get(f"/health{query}", headers=headers).status_code == status
        assert client.get("/").status_code == 200  # the page itself holds nothing; its calls carry the token


@pytest.mark.parametrize("path", ["/jobs/nope", "/jobs/" + "A" * 32, "/jobs/..%2F..%2Fetc%2Fpasswd",
                                  "/jobs/" + "A" * 32 + "/meshes.zip"])
def test_unknown_jobs_are_404(path, predictor, tmp_path):
    with _client(predictor, tmp_path) as client:
        assert client.get(path).status_code == 404


def test_only_named_files_of_a_job_are_served(predictor, example_files, tmp_path):
    image, geometry = example_files
    with _client(predictor, tmp_path) as client:
        job_id = client.post("/predict", files={"image": ("x.png", image.read_bytes()),
                                                "geometry": ("g.json", geometry.read_bytes())}).json()["id"]
        _wait(client, job_id)
        for name in ("input.png", "maps.npz", "..", "pelvis.stl"):
            assert client.get(f"/jobs/{job_id}/{name}").status_code == 404


class _Blocking:
    """A predictor whose inference waits for a signal (or a while): to fill the queue, or to overrun."""

    def __init__(self, real, release: threading.Event, seconds: float = 30.0):
        self._real, self._release, self._seconds = real, release, seconds

    def infer(self, *args, **kwargs):
        self._release.wait(self._seconds)
        return self._real.infer(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_a_full_queue_answers_503_with_retry_after_and_loses_nothing(predictor, example_files, tmp_path):
    image, geometry = example_files
    release = threading.Event()
    files = {"image": ("x.png", image.read_bytes()), "geometry": ("g.json", geometry.read_bytes())}
    with _client(_Blocking(predictor, release), tmp_path, workers=1, queue_size=2) as client:
        accepted = [client.post("/predict", files=files)]
        end = time.time() + 10
        while client.get(accepted[0].json()["url"]).json()["status"] != "running" and time.time() < end:
            time.sleep(0.05)  # the worker has taken the first job; two more fit the queue
        accepted += [client.post("/predict", files=files) for _ in range(2)]
        refused = client.post("/predict", files=files)
        assert [r.status_code for r in accepted] == [202] * 3
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
        release.set()
        jobs = [_wait(client, r.json()["id"]) for r in accepted]
    assert [j["status"] for j in jobs] == ["done"] * 3


def test_a_job_over_its_time_is_failed_and_kept_nowhere(predictor, example_files, tmp_path):
    image, geometry = example_files
    release = threading.Event()
    with _client(_Blocking(predictor, release, seconds=2.0), tmp_path, timeout_s=0.5) as client:
        job_id = client.post("/predict", files={"image": ("x.png", image.read_bytes()),
                                                "geometry": ("g.json", geometry.read_bytes())}).json()["id"]
        job = _wait(client, job_id)
        assert job["status"] == "failed" and "timed out after 0.5 s" in job["error"]
        time.sleep(2.5)  # the overrunning step ends; its result is not kept
        assert client.get(f"/jobs/{job_id}").json()["status"] == "failed"
        assert not (tmp_path / "jobs" / job_id / "result").exists()
        assert client.get(f"/jobs/{job_id}/meshes.zip").status_code == 409


@pytest.mark.parametrize("settings, message", [
    ({"host": "0.0.0.0"}, "give --token"),
    ({"host": "0.0.0.0", "token": "short"}, "at least 16"),
    ({"workers": 0}, "--workers"),
    ({"port": 70000}, "--port"),
])
def test_unsafe_or_impossible_settings_are_refused(settings, message):
    with pytest.raises(InputError, match=message):
        ServeSettings(**settings).check()


def test_serve_on_a_public_address_without_a_token_is_one_line(capsys, monkeypatch):
    monkeypatch.delenv("THREEDDX_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--token" in err and len(err.splitlines()) == 1


def test_serve_on_a_port_in_use_is_one_line(capsys):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"cannot listen on 127.0.0.1:{port}" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("head, suffix", [
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 124, ".png"), (b"II*\x00" + b"\0" * 128, ".tif"),
    (b"\xff\xd8\xff\xe0" + b"\0" * 128, ".jpg"), (b"\0" * 128 + b"DICM", ".dcm"),
    (b"II*\x00" + b"\0" * 124 + b"DICM", ".dcm"),  # a TIFF header in the DICOM preamble: DICOM
    (b"GIF89a" + b"\0" * 126, None)])
def test_uploads_are_known_by_their_bytes(head, suffix):
    assert sniff_image(head) == suffix


# --------------------------------------------------------------- the page, in a real browser
@pytest.fixture
def live_server(predictor, tmp_path):
    """The app on a free localhost port, in a thread (uvicorn), for the browser."""
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(predictor, ServeSettings(port=port), root=tmp_path / "jobs"),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.time() + 20
    while not server.started and time.time() < end:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


def test_the_upload_page_end_to_end(browser, live_server, example_files):
    image, geometry = example_files
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(live_server)
    page.set_input_files("#image", str(image))
    page.set_input_files("#geometry", str(geometry))
    page.click("#send")
    page.wait_for_selector("#viewer:not([hidden])", timeout=60_000)
    assert page.inner_text("#status").startswith("done: pelvis, femur_left, femur_right")
    frame = page.frame_locator("#viewer")
    frame.locator("body[data-ready='1']").wait_for(timeout=60_000)
    zip_url = page.get_attribute("#zip", "href")
    response = page.request.get(live_server.rstrip("/") + zip_url)
    assert response.ok and zipfile.ZipFile(io.BytesIO(response.body())).namelist()
    page.close()
    assert problems == []


def test_a_killed_servers_jobs_are_gone_after_a_restart(predictor, example_files, tmp_path):
    """SIGKILL a real server while it holds a job; the next server in the same --jobs-dir removes its folder
    (and leaves a live server's alone)."""
    import signal
    import socket
    import subprocess
    import sys

    from threeddx.apps.serve import JobQueue

    jobs = tmp_path / "jobs"
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "threeddx.cli", "serve", "--port", str(port), "--jobs-dir",
                             str(jobs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (jobs.is_dir() and any(jobs.iterdir())) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        (killed,) = list(jobs.iterdir())
        (killed / "a-job").mkdir()  # what a job leaves
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert killed.is_dir()  # SIGKILL: nothing could clean up
    live = JobQueue(predictor, ServeSettings(jobs_dir=str(jobs)))
    try:
        assert not killed.exists() and live.root.parent == jobs and live.root.is_dir()
        again = JobQueue(predictor, ServeSettings(jobs_dir=str(jobs)))  # a second server: the first is alive
        assert live.root.is_dir() and again.root.is_dir()
        again.close()
    finally:
        live.close()
    assert not any(jobs.iterdir())  # each server removes its own folder at shut-down


def test_the_servers_disk_stays_under_its_bounds(predictor, example_files, tmp_path):
    """More jobs than it keeps: by count, and by bytes (the newest finished job is always kept)."""
    image, geometry = example_files
    files = {"image": ("x.png", image.read_bytes()), "geometry": ("g.json", geometry.read_bytes())}

    def run(client, n):
        for _ in range(n):
            _wait(client, client.post("/predict", files=files).json()["id"])

    def sizes(root):
        return [sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) for d in root.iterdir()]

    with _client(predictor, tmp_path / "count", keep_jobs=2) as client:
        run(client, 4)
        assert len(sizes(tmp_path / "count" / "jobs")) == 2
    with _client(predictor, tmp_path / "bytes", keep_gb=1e-9) as client:  # 1 byte: only the newest job stays
        run(client, 3)
        assert len(sizes(tmp_path / "bytes" / "jobs")) == 1


def test_a_declared_calibration_ball_places_the_bones_as_predict_does(predictor, tmp_path):
    """The form's marker_mm (and marker_offset_mm) is predict's --marker-mm: the same ball, the same move; a
    diameter no ball has, or an offset without a ball, is refused at once (422) and leaves nothing."""
    import json

    from phantoms import example_with_marker

    npz = example_with_marker(tmp_path, 800.0)
    with np.load(npz) as z:
        img, geometry = z["image"], str(z["geometry"])
    png = tmp_path / "ball.png"
    Image.fromarray((np.clip(img / img.max(), 0, 1) * 65535).astype(np.uint16)).save(png)
    (tmp_path / "ball.json").write_text(geometry)
    assert main(["predict", str(png), "--geometry", str(tmp_path / "ball.json"), "--marker-mm", "25",
                 "--marker-offset-mm", "10", "--no-measure", "--out", str(tmp_path / "cli")]) == 0
    cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    files = {"image": ("b.png", png.read_bytes()), "geometry": ("g.json", geometry.encode())}
    with _client(predictor, tmp_path) as client:
        job = _wait(client, client.post("/predict", files=files,
                                        data={"marker_mm": "25", "marker_offset_mm": "10"}).json()["id"])
        assert job["status"] == "done", job
        assert job["summary"]["marker"] == cli["marker"] and job["summary"]["marker"]["applied"]
        assert job["summary"]["isocenter_from"] == "--marker-mm"
        assert job["summary"]["isocenter_sd_mm"] == ISOCENTER_SD_MM["marker"]
        for data, message in (({"marker_mm": "500"}, "diameter must be between 5 and 60 mm"),
                              ({"marker_offset_mm": "10"}, "marker_offset_mm needs marker_mm")):
            r = client.post("/predict", files=files, data=data)
            assert r.status_code == 422 and message in r.json()["error"], r.text
    assert len(list((tmp_path / "jobs").iterdir())) == 1
