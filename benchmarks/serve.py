"""3ddx serve under load: 20 concurrent requests from localhost, every answer checked.

    .venv/bin/python benchmarks/serve.py [--requests 20] [--configs 1x8 2x8 1x4]

For each server configuration (``WORKERSxQUEUE``) a fresh ``3ddx serve``
process is started on a free localhost port with the released dual-face model,
and ``--requests`` clients start at once, each in its own thread: four in five
upload the bundled example as a 16-bit PNG with its geometry JSON, one in five
uploads uniform noise. A client that gets 503 waits the ``Retry-After`` it was
given and asks again (at most 60 s in all); then it polls its job until it is
done or failed (at most 300 s) and, for a hip, downloads the meshes.

Correct means: every hip job is done, with the same bones, vertex and face
counts and volumes as an in-process ``reconstruct_image`` of the same files,
and its zip holds every bone's STL; every noise job failed with predict's
refusal ("no hip anatomy found"). The table gives, per configuration, the
answers that were correct, the 503s met (and that none was lost), the latency
from the first upload to the finished job (median, 95th percentile, max), the
throughput, and the server's peak resident memory (VmHWM of its process).
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def inputs(folder: Path) -> tuple[bytes, bytes, bytes]:
    """(example PNG, its geometry JSON, a noise PNG)."""
    from PIL import Image

    from threeddx.apps.demo import example_path

    with np.load(example_path()) as z:
        Image.fromarray((np.clip(z["image"], 0, 1) * 65535).astype(np.uint16)).save(folder / "hip.png")
        (folder / "hip.json").write_text(str(z["geometry"]))
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((512, 512)) * 255).astype(np.uint8)).save(buf, format="PNG")
    return (folder / "hip.png").read_bytes(), (folder / "hip.json").read_bytes(), buf.getvalue()


def reference(folder: Path) -> dict:
    """The bones of an in-process reconstruction of the example (what every hip job must give)."""
    from threeddx.inference.predictor import Predictor
    from threeddx.apps.predict import reconstruct_image

    rec = reconstruct_image(folder / "hip.png", Predictor("dualface"), folder / "hip.json")
    return {b: {k: v[k] for k in ("vertices", "faces", "volume_cm3")} for b, v in rec.summary["bones"].items()}


def client(base: str, files: dict, hip: bool, expected: dict, out: dict) -> None:
    """One user: upload (waiting out 503s), poll, check the answer; results into ``out``."""
    import httpx2 as httpx

    t0 = time.perf_counter()
    busy = 0
    with httpx.Client(base_url=base, timeout=60) as http:
        while True:
            r = http.post("/predict", files=files)
            if r.status_code != 503:
                break
            busy += 1
            if time.perf_counter() - t0 > 60:
                out.update(ok=False, why="still 503 after 60 s", busy=busy)
                return
            time.sleep(float(r.headers["Retry-After"]))
        if r.status_code != 202:
            out.update(ok=False, why=f"HTTP {r.status_code}: {r.text[:100]}", busy=busy)
            return
        url = r.json()["url"]
        while True:
            job = http.get(url).json()
            if job["status"] in ("done", "failed"):
                break
            if time.perf_counter() - t0 > 300:
                out.update(ok=False, why=f"job not finished after 300 s: {job}", busy=busy)
                return
            time.sleep(0.05)
        latency = time.perf_counter() - t0
        if hip:
            ok = job["status"] == "done" and {b: {k: v[k] for k in ("vertices", "faces", "volume_cm3")}
                                              for b, v in job["summary"]["bones"].items()} == expected
            if ok:
                names = zipfile.ZipFile(io.BytesIO(http.get(job["files"]["meshes"]).content)).namelist()
                ok = all(f"{b}.stl" in names for b in expected)
        else:
            ok = job["status"] == "failed" and job["error"].startswith("no hip anatomy found")
    out.update(ok=ok, why="" if ok else json.dumps(job)[:200], busy=busy, latency=latency)


def run_config(workers: int, queue: int, n: int, payload: tuple[bytes, bytes, bytes], expected: dict) -> dict:
    hip, geo, noise = payload
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "threeddx.cli", "serve", "--port", str(port), "--workers",
                               str(workers), "--queue", str(queue)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx2 as httpx

        end = time.time() + 60
        while True:
            try:
                if httpx.get(base + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > end or server.poll() is not None:
                raise RuntimeError(f"server did not start: {server.stderr.read().decode()[-500:]}")
            time.sleep(0.2)
        results = [dict() for _ in range(n)]
        threads = []
        for k in range(n):
            is_hip = k % 5 != 4
            files = {"image": ("hip.png", hip), "geometry": ("hip.json", geo)} if is_hip else {"image": ("n.png", noise)}
            threads.append(threading.Thread(target=client, args=(base, files, is_hip, expected, results[k])))
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        peak = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    lat = sorted(r["latency"] for r in results if "latency" in r)
    bad = [r["why"] for r in results if not r.get("ok")]
    return {"config": f"{workers} worker(s), queue {queue}", "correct": n - len(bad), "n": n,
            "busy": sum(r.get("busy", 0) for r in results), "p50": statistics.median(lat),
            "p95": float(np.percentile(lat, 95)), "max": lat[-1], "rate": n / wall, "peak_mb": peak, "bad": bad}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--configs", nargs="+", default=["1x8", "2x8", "1x4"], help="WORKERSxQUEUE")
    args = ap.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        payload = inputs(Path(tmp))
        expected = reference(Path(tmp))
        rows = [run_config(*(int(v) for v in c.split("x")), args.requests, payload, expected) for c in args.configs]
    print(f"# 3ddx serve, {args.requests} concurrent requests from localhost (4 in 5 hips, 1 in 5 noise)\n")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"python {platform.python_version()}, torch {torch.__version__}\n")
    print("| server | correct answers | 503s met (all retried) | latency p50 (s) | p95 (s) | max (s) | "
          "jobs/s | server peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['correct']}/{r['n']} | {r['busy']} | {r['p50']:.2f} | {r['p95']:.2f} | "
              f"{r['max']:.2f} | {r['rate']:.2f} | {r['peak_mb']:.0f} |")
    for r in rows:
        for why in r["bad"]:
            print(f"WRONG ({r['config']}): {why}")
    if any(r["bad"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
