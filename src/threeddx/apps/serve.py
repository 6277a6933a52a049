"""``3ddx serve``: a local web app and JSON API around the one inference path.

A lab runs it on a workstation or server; users drop a radiograph (PNG, TIFF,
JPEG or DICOM) and optionally its geometry JSON on the page at ``/``, watch the
job's progress, then turn the result in the viewer (:mod:`threeddx.apps.view`) and
download the meshes as a zip. Scripts use the API:

* ``POST /predict`` (multipart: ``image``, optional ``geometry``, optional ``marker_mm`` and
  ``marker_offset_mm``: a calibration ball in the image, as predict's ``--marker-mm``) -> 202 and
  ``{"id", "status", "url"}``; ``GET /jobs/ID`` -> the job (``queued``,
  ``running``, ``done`` or ``failed``, its stage, progress 0-1, the error or
  the summary); ``GET /jobs/ID/view.html``, ``/jobs/ID/meshes.zip``,
  ``/jobs/ID/report.png``; ``GET /health``.
* Errors: 401 (token missing or wrong), 404 (no such job), 413 (upload over
  ``max_upload_mb``, or an image over the pixel limit of predict), 415 (not a
  PNG, TIFF, JPEG or DICOM file), 422 (a geometry file predict would refuse),
  503 with ``Retry-After`` (the queue is full: nothing is lost, ask again).
  A radiograph without hip anatomy fails its job with predict's one-line
  refusal, as ``3ddx predict`` would.

How it runs (all of it :class:`JobQueue`):

* The model is loaded once, at start-up, and shared by ``workers`` threads
  (inference is under ``torch.no_grad`` and the model is never changed).
* Jobs wait in a bounded queue (``queue_size``); a full queue answers 503.
* Each job has ``timeout_s``: a job still running at its deadline is reported
  failed and nothing of it is kept. Python cannot stop a thread inside a
  NumPy or PyTorch call, so the overrunning step finishes in the background
  and its worker takes the next job then; the pixel limit and the model's fixed
  input size bound a step to seconds, so this is a last resort, not a scheduler.
* A job's files live in a folder named by its id (32 random URL-safe
  characters, :func:`secrets.token_urlsafe`), so one user cannot guess
  another's results; the upload is saved as ``input`` plus the suffix of the
  type sniffed from its bytes, never under the name the client sent.
  Every server keeps its jobs in its own folder (``HOST.PID.XXXX``) under one
  known place, ``--jobs-dir`` (default TMPDIR/3ddx-serve); a server that starts
  removes the folders of servers on this host that are gone (killed, crashed),
  and its own at shut-down. Finished jobs are deleted oldest first beyond
  ``keep_jobs`` (200), after ``keep_hours`` (24) and while they hold more than
  ``keep_gb`` (2 GB; the newest is kept for its client).
* It binds 127.0.0.1 by default. Bound anywhere else it refuses to start
  without a token; with a token every API call needs ``Authorization: Bearer
  TOKEN`` (or ``?token=TOKEN``, for the viewer's frame and links).
"""
from __future__ import annotations

import io
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response

from threeddx.errors import InputError
from threeddx.io import writer_tag

if TYPE_CHECKING:
    from threeddx.apps.predict import MarkerSpec

#: Hosts that only this machine reaches: no token needed there.
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
#: A job id: what :func:`secrets.token_urlsafe` gives for 24 bytes.
JOB_ID = re.compile(r"[A-Za-z0-9_-]{32}")
#: Files of a result that the API serves (by name; nothing from a request reaches a path).
SERVED = {"view.html": "text/html; charset=utf-8", "report.png": "image/png", "summary.json": "application/json"}
#: What goes into meshes.zip.
ZIPPED_SUFFIXES = (".stl", ".ply", ".glb", ".json")


@dataclass
class ServeSettings:
    """The app's limits (``3ddx serve --help``)."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    workers: int = 1
    queue_size: int = 8
    timeout_s: float = 120.0
    max_upload_mb: float = 64.0
    keep_jobs: int = 200
    #: finished jobs older than this (hours) are deleted
    keep_hours: float = 24.0
    #: finished jobs are deleted, oldest first, while together they hold more than this (GB); the newest
    #: finished job is kept whatever its size, so that its client can fetch it
    keep_gb: float = 2.0
    #: where every server keeps its jobs (each in its own HOST.PID.XXXX folder); default: TMPDIR/3ddx-serve
    jobs_dir: str | None = None
    retry_after_s: int = 2

    def check(self) -> None:
        """Refuse settings that would expose the app or cannot work, in one line."""
        if self.host not in LOOPBACK and not self.token:
            raise InputError(f"--host {self.host} lets other machines reach the app: give --token TOKEN "
                             "(or set THREEDDX_TOKEN); without one it binds 127.0.0.1 only")
        if self.token is not None and len(self.token) < 16:
            raise InputError("--token must be at least 16 characters (python -c 'import secrets; "
                             "print(secrets.token_urlsafe())' makes one)")
        for name in ("workers", "queue_size", "keep_jobs"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1")
        if not (self.timeout_s > 0 and self.max_upload_mb > 0 and self.keep_hours > 0 and self.keep_gb > 0):
            raise InputError("--timeout, --max-upload-mb, --keep-hours and --keep-gb must be positive")
        if not 0 < int(self.port) < 65536:
            raise InputError(f"--port must be 1-65535, got {self.port}")


class QueueFull(Exception):
    """Every queue place is taken: answer 503 with Retry-After."""


@dataclass
class Job:
    """One radiograph's way through the app. ``status``: queued, running, done or failed."""

    id: str
    folder: Path
    image: Path
    geometry: Path | None
    marker: "MarkerSpec | None" = None  # a calibration ball the uploader declared (threeddx.apps.predict.MarkerSpec)
    status: str = "queued"
    stage: str = "waiting in the queue"
    progress: float = 0.0
    error: str | None = None
    summary: dict | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    deadline: float | None = None

    def to_dict(self) -> dict:
        d = {"id": self.id, "status": self.status, "stage": self.stage, "progress": round(self.progress, 3),
             "error": self.error, "url": f"/jobs/{self.id}"}
        if self.finished is not None:
            d["seconds"] = round(self.finished - self.created, 3)
        if self.status == "done":
            d["summary"] = self.summary
            d["files"] = {"view": f"/jobs/{self.id}/view.html", "meshes": f"/jobs/{self.id}/meshes.zip",
                          "report": f"/jobs/{self.id}/report.png", "summary": f"/jobs/{self.id}/summary.json"}
        return d


def sniff_image(head: bytes) -> str | None:
    """The suffix for an upload's first bytes (PNG, TIFF, JPEG, DICOM), or None when it is none of them.

    DICOM first: its 128-byte preamble is free, and some files carry a TIFF header there.
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        return ".dcm"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return ".tif"
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    return None


class JobQueue:
    """The model, a bounded queue and its worker threads (module doc)."""

    def __init__(self, predictor, settings: ServeSettings, root: Path | None = None):
        import queue

        self.predictor = predictor
        self.settings = settings
        if root is None:
            base = jobs_dir(settings)
            remove_dead_servers(base)
            root = Path(tempfile.mkdtemp(prefix=f"{writer_tag()}.", dir=base))
            self._own_root = True
        else:
            self._own_root = False
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(maxsize=settings.queue_size)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, name=f"3ddx-worker-{k}", daemon=True)
                         for k in range(settings.workers)]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------- submitting
    def new_job(self, image: bytes, geometry: bytes | None, marker: "MarkerSpec | None" = None) -> Job:
        """Check an upload, save it under the job's id and queue it (raises InputError or QueueFull)."""
        import queue

        if marker is not None:
            marker.check()  # refused now, not in the queue

        from threeddx.geometry import XrayGeometry
        from threeddx.apps.radiograph import check_pixel_limit

        suffix = sniff_image(image[:132])
        if suffix is None:
            raise UnsupportedImage("not an image this app reads: upload a PNG, TIFF, JPEG or DICOM radiograph")
        job_id = secrets.token_urlsafe(24)
        folder = self.root / job_id
        folder.mkdir(parents=True)
        try:
            path = folder / f"input{suffix}"
            path.write_bytes(image)
            check_pixel_limit(path)
            geo_path = None
            if geometry is not None:
                geo_path = folder / "geometry.json"
                geo_path.write_bytes(geometry)
                XrayGeometry.load(geo_path)  # refused now, not in the queue
            job = Job(job_id, folder, path, geo_path, marker)
            with self._lock:
                self._queue.put_nowait(job)
                self.jobs[job_id] = job
        except queue.Full:
            shutil.rmtree(folder, ignore_errors=True)
            raise QueueFull() from None
        except InputError as e:
            shutil.rmtree(folder, ignore_errors=True)
            raise type(e)(self._public(str(e), folder)) from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._forget_old()
        return job

    def get(self, job_id: str) -> Job | None:
        if not JOB_ID.fullmatch(job_id):
            return None
        with self._lock:
            job = self.jobs.get(job_id)
        if job is not None and job.status == "running" and job.deadline and time.time() > job.deadline:
            self._fail(job, f"timed out after {self.settings.timeout_s:g} s")
        return job

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    # ------------------------------------------------------------- working
    def _work(self) -> None:
        import queue

        while not self._stop.is_set():
            try:
                job = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._run(job)
            except Exception as e:  # noqa: BLE001 - a bug must fail the job, not kill the worker
                self._fail(job, f"internal error: {type(e).__name__}: {self._public(str(e), job.folder)}")
            finally:
                self._queue.task_done()

    def _run(self, job: Job) -> None:
        from threeddx.apps.predict import reconstruct_image, write_reconstruction

        job.started = time.time()
        job.deadline = job.started + self.settings.timeout_s
        job.status, job.stage, job.progress = "running", "reading the radiograph and running the network", 0.2
        try:
            rec = reconstruct_image(job.image, self.predictor, job.geometry, marker=job.marker)
            if self._overdue(job):
                return
            job.stage, job.progress = "writing meshes and the view", 0.7
            rec.summary["image"] = "upload" + job.image.suffix
            write_reconstruction(rec, job.folder / "result", view=True)
        except InputError as e:  # predict's own message (a refusal, an unreadable file), minus its CLI advice
            self._fail(job, self._public(str(e), job.folder).split("; --force")[0])
            return
        if self._overdue(job):
            shutil.rmtree(job.folder / "result", ignore_errors=True)
            return
        summary = json.loads((job.folder / "result" / "summary.json").read_text())
        job.summary = {k: summary[k] for k in ("bones", "missing", "notes", "checks", "measurements", "marker",
                                               "mesh_method", "frame", "geometry_from", "isocenter_from",
                                               "isocenter_sd_mm", "timings_s") if k in summary}
        job.status, job.stage, job.progress, job.finished = "done", "done", 1.0, time.time()
        self._forget_old()

    def _overdue(self, job: Job) -> bool:
        if job.status == "failed":  # already reported at its deadline
            return True
        if time.time() > (job.deadline or float("inf")):
            self._fail(job, f"timed out after {self.settings.timeout_s:g} s")
            return True
        return False

    def _fail(self, job: Job, message: str) -> None:
        job.status, job.stage, job.error, job.finished = "failed", "failed", message, time.time()
        job.progress = 1.0

    @staticmethod
    def _public(message: str, folder: Path) -> str:
        """A message without the server's paths (the upload is called by its type)."""
        message = message.replace(str(folder / "input"), "upload").replace(str(folder / "geometry.json"), "geometry")
        return message.replace(str(folder), "job")

    def _forget_old(self) -> None:
        """Delete finished jobs, oldest first: beyond ``keep_jobs``, older than ``keep_hours``, and while the
        finished jobs hold more than ``keep_gb`` (the newest finished one is kept, for its client)."""
        st = self.settings
        with self._lock:
            finished = sorted((j for j in self.jobs.values() if j.status in ("done", "failed")),
                              key=lambda j: j.finished or 0.0)
            extra = max(len(self.jobs) - st.keep_jobs, 0)
            now = time.time()
            sizes = {j.id: _folder_bytes(j.folder) for j in finished}
            total = sum(sizes.values())
            for k, job in enumerate(finished):
                newest = k == len(finished) - 1
                if extra > 0 or now - (job.finished or now) > 3600 * st.keep_hours or (
                        total > st.keep_gb * 1e9 and not newest):
                    del self.jobs[job.id]
                    shutil.rmtree(job.folder, ignore_errors=True)
                    extra -= 1
                    total -= sizes[job.id]

    # ------------------------------------------------------------- results
    def result_file(self, job: Job, name: str) -> Path | None:
        """A served file of a finished job (``name`` is looked up in :data:`SERVED`, never joined raw)."""
        if job.status != "done" or name not in SERVED:
            return None
        path = job.folder / "result" / name
        return path if path.is_file() else None

    def meshes_zip(self, job: Job) -> bytes | None:
        if job.status != "done":
            return None
        buf = io.BytesIO()
        folder = job.folder / "result"
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.iterdir()):
                if path.is_file() and path.suffix in ZIPPED_SUFFIXES:
                    zf.write(path, arcname=path.name)
        return buf.getvalue()

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)


def jobs_dir(settings: ServeSettings) -> Path:
    """The one folder where servers keep their jobs: ``--jobs-dir``, else TMPDIR/3ddx-serve."""
    base = Path(settings.jobs_dir) if settings.jobs_dir else Path(tempfile.gettempdir()) / "3ddx-serve"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--jobs-dir {base}: cannot make it ({e.strerror})") from None
    if not os.access(base, os.W_OK | os.X_OK):
        raise InputError(f"--jobs-dir {base}: cannot write in it (permission denied)")
    return base


def remove_dead_servers(base: Path) -> list[Path]:
    """Remove the job folders of servers on this host that are gone (killed, crashed), named ``HOST.PID.XXXX``;
    a live server's, and another host's on a shared disk, are left alone. Returns what was removed."""
    from threeddx.io import process_alive

    host = writer_tag().rsplit(".", 1)[0]
    removed = []
    for p in base.iterdir():
        m = re.fullmatch(r"(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[^.]+", p.name)
        if m and p.is_dir() and m["host"] == host and not process_alive(int(m["pid"])):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0


class UnsupportedImage(InputError):
    """An upload that is no image type the app reads (415)."""


class TooLarge(InputError):
    """An upload over the size limit (413)."""


def create_app(predictor, settings: ServeSettings | None = None, root: Path | None = None) -> FastAPI:
    """The FastAPI app: the upload page, the API and the job queue (module doc)."""
    from contextlib import asynccontextmanager

    settings = settings or ServeSettings()
    settings.check()
    state: dict = {}

    @asynccontextmanager
    async def lifespan(app):
        state["jobs"] = JobQueue(predictor, settings, root)
        yield
        state["jobs"].close()

    app = FastAPI(title="3DDX", description="Bone surfaces from one radiograph", lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    limit = int(settings.max_upload_mb * 1e6)

    def error(status: int, message: str, **headers) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers or None)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        """The token (when one is set) and the upload size, before anything is read."""
        if settings.token and request.url.path != "/":
            given = request.headers.get("authorization", "")
            given = given[7:] if given.lower().startswith("bearer ") else request.query_params.get("token", "")
            if not secrets.compare_digest(given.encode(), settings.token.encode()):
                return error(401, "a token is required: Authorization: Bearer TOKEN (or ?token=TOKEN)")
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return error(411, "send the upload with a Content-Length")
            if int(length) > limit + 64_000:  # the multipart envelope on top of the files
                return error(413, f"upload of {int(length) / 1e6:.1f} MB, over the limit of {settings.max_upload_mb:g} MB")
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    def page():
        return HTMLResponse(UPLOAD_PAGE)

    @app.get("/health")
    def health():
        jobs = state["jobs"]
        return {"status": "ok", "checkpoint": str(predictor.checkpoint), "bones": predictor.bones,
                "workers": settings.workers, "queue_size": settings.queue_size, "waiting": jobs.waiting}

    async def read_limited(upload: UploadFile, what: str) -> bytes:
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise TooLarge(f"{what} over the limit of {settings.max_upload_mb:g} MB")
        return data

    @app.post("/predict", status_code=202)
    async def predict(image: UploadFile = File(...), geometry: UploadFile | None = File(None),
                      marker_mm: float | None = Form(None), marker_offset_mm: float = Form(0.0)):
        from starlette.concurrency import run_in_threadpool

        from threeddx.apps.predict import MarkerSpec

        try:
            if marker_mm is None and marker_offset_mm:
                raise InputError("marker_offset_mm needs marker_mm")
            marker = MarkerSpec(marker_mm, marker_offset_mm) if marker_mm is not None else None
            raw = await read_limited(image, "image")
            geo = await read_limited(geometry, "geometry") if geometry is not None else None
            job = await run_in_threadpool(state["jobs"].new_job, raw, geo, marker)
        except QueueFull:
            return error(503, f"the queue is full ({settings.queue_size} jobs waiting); try again shortly",
                         **{"Retry-After": str(settings.retry_after_s)})
        except UnsupportedImage as e:
            return error(415, str(e))
        except TooLarge as e:
            return error(413, str(e))
        except InputError as e:
            status = 413 if "over the limit" in str(e) else 422
            return error(status, str(e))
        return JSONResponse(job.to_dict(), status_code=202)

    def find(job_id: str):
        job = state["jobs"].get(job_id)
        if job is None:
            return None, error(404, "no such job (ids are case-sensitive; finished jobs are kept for a while)")
        return job, None

    @app.get("/jobs/{job_id}")
    def job_status(job_id: str):
        job, missing = find(job_id)
        return missing or job.to_dict()

    @app.get("/jobs/{job_id}/meshes.zip")
    def job_zip(job_id: str):
        job, missing = find(job_id)
        if missing:
            return missing
        data = state["jobs"].meshes_zip(job)
        if data is None:
            return error(409, f"job is {job.status}, not done")
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": 'attachment; filename="3ddx-meshes.zip"'})

    @app.get("/jobs/{job_id}/{name}")
    def job_file(job_id: str, name: str):
        job, missing = find(job_id)
        if missing:
            return missing
        if name not in SERVED:
            return error(404, f"no such file; a job serves {', '.join(sorted(SERVED))} and meshes.zip")
        path = state["jobs"].result_file(job, name)
        if path is None:
            return error(409, f"job is {job.status}, not done")
        return Response(path.read_bytes(), media_type=SERVED[name])

    app.state.jobs = lambda: state["jobs"]
    return app


def check_port(settings: ServeSettings) -> None:
    """Refuse, in one line, an address this machine cannot listen on (a port in use, a foreign address)."""
    import socket

    try:
        with socket.create_server((settings.host, settings.port)):
            pass
    except OSError as e:
        raise InputError(f"cannot listen on {settings.host}:{settings.port}: {e.strerror or e}") from None


def serve(predictor, settings: ServeSettings) -> None:
    """Run the app with uvicorn until interrupted (``3ddx serve``)."""
    import uvicorn

    settings.check()
    app = create_app(predictor, settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


UPLOAD_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>3DDX: bones from one radiograph</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:16px;color:#222;background:#fafafa}
#drop{border:2px dashed #999;border-radius:8px;padding:28px;text-align:center;background:#fff;max-width:720px}
#drop.over{border-color:#2a7ae2;background:#eef5ff}
progress{width:360px} #status{margin:10px 0} .error{color:#b00020}
iframe{width:100%;height:1000px;border:1px solid #ddd;background:#fff}
</style></head><body>
<h1>3DDX: bone surfaces from one radiograph</h1>
<p>Drop a hip radiograph (PNG, TIFF, JPEG or DICOM) and, if you have it, its geometry JSON (see the README).
Without one, a DICOM's own tags or the model's standard geometry are used. Nothing leaves this server.</p>
<div id="drop"><p>Drop files here, or choose them:</p>
<p><label>radiograph <input type="file" id="image"></label></p>
<p><label>geometry JSON (optional) <input type="file" id="geometry" accept=".json,application/json"></label></p>
<p><label>calibration ball in the image, diameter in mm (optional, typically 25)
<input type="number" id="marker_mm" min="5" max="60" step="0.1"></label>
<label>its offset: hip joints behind its centre, mm <input type="number" id="marker_offset_mm" value="0" step="1"></label></p>
<p><button id="send">Reconstruct</button></p></div>
<div id="status"></div><progress id="bar" max="1" value="0" hidden></progress>
<p id="links" hidden><a id="zip" href="#">download the meshes (zip)</a> · <a id="open" href="#" target="_blank">open the viewer in its own tab</a></p>
<iframe id="viewer" hidden title="3D view"></iframe>
<script>
(function(){
  const token = new URLSearchParams(location.search).get('token');
  const auth = token ? {'Authorization': 'Bearer ' + token} : {};
  const withToken = u => token ? u + '?token=' + encodeURIComponent(token) : u;
  const $ = id => document.getElementById(id);
  let files = {image: null, geometry: null};
  $('image').addEventListener('change', e => files.image = e.target.files[0]);
  $('geometry').addEventListener('change', e => files.geometry = e.target.files[0]);
  const drop = $('drop');
  drop.addEventListener('dragover', e => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', e => {
    e.preventDefault(); drop.classList.remove('over');
    for (const f of e.dataTransfer.files) {
      if (f.name.toLowerCase().endsWith('.json')) files.geometry = f; else files.image = f;
    }
    say('ready: ' + (files.image ? files.image.name : 'no radiograph yet') + (files.geometry ? ' + ' + files.geometry.name : ''));
  });
  function say(text, bad){ const s = $('status'); s.textContent = text; s.className = bad ? 'error' : ''; }
  async function send(){
    if (!files.image) { say('choose a radiograph first', true); return; }
    const form = new FormData();
    form.append('image', files.image);
    if (files.geometry) form.append('geometry', files.geometry);
    if ($('marker_mm').value) {
      form.append('marker_mm', $('marker_mm').value);
      form.append('marker_offset_mm', $('marker_offset_mm').value || '0');
    }
    $('viewer').hidden = true; $('links').hidden = true;
    say('uploading ...'); $('bar').hidden = false; $('bar').value = 0.05;
    const r = await fetch('predict', {method: 'POST', body: form, headers: auth});
    const body = await r.json();
    if (!r.ok) { say(body.error + (r.status === 503 ? ' (retry in ' + r.headers.get('Retry-After') + ' s)' : ''), true); $('bar').hidden = true; return; }
    poll(body.id);
  }
  async function poll(id){
    const r = await fetch('jobs/' + id, {headers: auth});
    const job = await r.json();
    if (!r.ok) { say(job.error, true); return; }
    $('bar').value = Math.max(job.progress, 0.05);
    say(job.status + ': ' + job.stage);
    if (job.status === 'failed') { say(job.error, true); $('bar').hidden = true; return; }
    if (job.status !== 'done') { setTimeout(() => poll(id), 400); return; }
    $('bar').hidden = true;
    const found = Object.keys(job.summary.bones);
    say('done: ' + (found.length ? found.join(', ') : 'no bone') + (job.summary.missing.length ? '; not found: ' + job.summary.missing.join(', ') : ''));
    $('zip').href = withToken(job.files.meshes); $('open').href = withToken(job.files.view);
    $('links').hidden = false;
    $('viewer').src = withToken(job.files.view); $('viewer').hidden = false;
  }
  $('send').addEventListener('click', () => send().catch(e => say('failed: ' + e, true)));
})();
</script></body></html>
"""
