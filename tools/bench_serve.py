"""`faceverify serve` under load: concurrent clients identifying LFW images over HTTP, against the same images
through the Python API in one process and through the CLI one call per image, in one run.

    python tools/bench_serve.py [--lfw LFW] [--requests 2000] [--clients 16] [--identities 200] [--cli-images 100]

A gallery of ``--identities`` LFW DevTest people (first image each) is enrolled through the API; the probes are
the first ``--requests`` images of the DevTest people, in name order (250x250 JPEGs). A real `faceverify serve`
process answers ``--clients`` threads that share the probes (one request per image, one keep-alive connection
per client), then one client at a time (low load) for ``--low-load`` requests; ``FaceVerifier.identify`` runs in
this process over the same probes before and after the service (the machine may be shared: the mean of the two
is the reference); then ``faceverify identify IMAGE --json`` once per image for the first
``--cli-images`` probes (a whole process per image: about half a second each, so a subset).

Errors are requests that got neither a 200 nor the CLI's own refusal of that image (a 400 "no face found"); the
service's answers are checked to name the same people as the in-process API. Every peer is checked to have
really run (each answered every image it was given) or the benchmark stops.
"""

from __future__ import annotations

import argparse
import json
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from faceverify.api import FaceVerifier
from faceverify.eval.pairs import lfw_image_dir, read_lfw_people
from tools.common import PeerFailed, lfw_root


def probes_and_gallery(root: Path, n: int, identities: int) -> tuple[list[Path], dict[str, Path]]:
    images = lfw_image_dir(root)
    people = sorted(read_lfw_people(root / "peopleDevTest.txt"))
    probes = [images / name / f"{name}_{i:04d}.jpg" for name, count in people for i in range(1, count + 1)][:n]
    enrol = {name: images / name / f"{name}_0001.jpg" for name, count in people[:identities]}
    return probes, enrol


def percentiles(latencies: list[float]) -> dict:
    ms = np.asarray(latencies) * 1000
    return dict(p50_ms=round(float(np.percentile(ms, 50)), 1), p99_ms=round(float(np.percentile(ms, 99)), 1),
                mean_ms=round(float(ms.mean()), 1))


def start_server(gallery: Path, port: int, threads: int, log: Path) -> subprocess.Popen:
    import httpx

    cmd = [sys.executable, "-m", "faceverify.cli", "serve", "--gallery", str(gallery), "--port", str(port),
           "--threads", str(threads), "--log-level", "warning", "--queue", "256"]
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PeerFailed("faceverify serve", f"exited with {proc.returncode}: {log.read_text()[-500:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise PeerFailed("faceverify serve", "did not answer /v1/health within 120 s")


def load(url: str, probes: list[Path], clients: int) -> dict:
    """Send every probe once, from ``clients`` threads; answers by image, latencies, errors, wall time."""
    import httpx

    work: queue.Queue[int] = queue.Queue()
    for i in range(len(probes)):
        work.put(i)
    answers: dict[int, dict] = {}
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    payloads = [p.read_bytes() for p in probes]

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            while True:
                try:
                    i = work.get_nowait()
                except queue.Empty:
                    return
                t0 = time.perf_counter()
                try:
                    r = c.post("/v1/identify", files=[("image", (probes[i].name, payloads[i], "image/jpeg"))])
                    body = r.json()
                except Exception as exc:  # noqa: BLE001 - counted, reported
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    if r.status_code == 200 or (r.status_code == 400 and body.get("error", "").endswith("no face found")):
                        answers[i] = body
                    else:
                        errors.append(f"{r.status_code}: {body.get('error')}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return dict(answers=answers, latencies=latencies, errors=errors, wall=wall)


def run_api(fv: FaceVerifier, gallery: Path, probes: list[Path]) -> tuple[list, float]:
    """``FaceVerifier.identify`` over every probe in this process: (results, seconds)."""
    t0 = time.perf_counter()
    with fv.open_gallery(gallery) as g:
        results = list(fv.identify(g, probes))
    wall = time.perf_counter() - t0
    if len(results) != len(probes):
        raise PeerFailed("Python API", f"{len(results)} results for {len(probes)} images")
    return results, wall


def names_of(body: dict) -> list:
    return [f["name"] for f in body.get("faces", [])] if "faces" in body else ["error"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lfw", type=Path)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--identities", type=int, default=200)
    ap.add_argument("--low-load", type=int, default=200)
    ap.add_argument("--cli-images", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1, help="the model's CPU threads, in every peer")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    root = lfw_root(args.lfw)
    probes, enrol = probes_and_gallery(root, args.requests, args.identities)
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    gallery = work / "gallery.sqlite"
    fv = FaceVerifier(device="cpu", threads=args.threads)
    with fv.open_gallery(gallery) as g:
        for name, path in enrol.items():
            for failure in fv.enroll(g, name, [path], skip_bad=True).failures:
                print(f"not enrolled: {failure}", file=sys.stderr)
        enrolled = len(g)
    out: dict = dict(requests=len(probes), clients=args.clients, identities=enrolled, threads=args.threads)

    api_runs = [run_api(fv, gallery, probes)]
    server = start_server(gallery, args.port, args.threads, work / "serve.log")
    url = f"http://127.0.0.1:{args.port}"
    try:
        import httpx

        if httpx.get(url + "/v1/health").json()["identities"] != enrolled:
            raise PeerFailed("faceverify serve", "its gallery does not hold the enrolled identities")
        load(url, probes[:32], 4)  # warm-up
        busy = load(url, probes, args.clients)
        low = load(url, probes[: args.low_load], 1)
    finally:
        server.terminate()
        server.wait(30)
    if len(busy["answers"]) + len(busy["errors"]) != len(probes):
        raise PeerFailed("faceverify serve", f"{len(busy['answers'])} answers for {len(probes)} requests")
    out["service"] = dict(errors=len(busy["errors"]), first_errors=busy["errors"][:3],
                          throughput=round(len(probes) / busy["wall"], 1), seconds=round(busy["wall"], 2),
                          **percentiles(busy["latencies"]))
    out["service_low_load"] = dict(requests=len(low["latencies"]), errors=len(low["errors"]),
                                   throughput=round(len(low["latencies"]) / low["wall"], 1),
                                   **percentiles(low["latencies"]))

    api_runs.append(run_api(fv, gallery, probes))
    api = api_runs[-1][0]
    rates = [len(probes) / wall for _, wall in api_runs]
    out["api"] = dict(throughput=round(float(np.mean(rates)), 1), runs=[round(r, 1) for r in rates],
                      no_face=sum(r.error is not None for r in api))
    agree = sum(names_of(busy["answers"].get(i, {})) == ([f.name for f in r.faces] if r.error is None else ["error"])
                for i, r in enumerate(api))
    out["service_agrees_with_api"] = f"{agree}/{len(probes)}"

    cli_lat = []
    subset = probes[: args.cli_images]
    for p in subset:
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "faceverify.cli", "identify", str(p), "--gallery", str(gallery),
                            "--json", "--threads", str(args.threads)], capture_output=True, text=True)
        cli_lat.append(time.perf_counter() - t0)
        lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        if r.returncode not in (0, 2) or len(lines) != 1 or lines[0].get("image") != str(p):
            raise PeerFailed("faceverify identify", f"{p}: exit {r.returncode}, output {r.stdout[:200]!r} {r.stderr[:200]!r}")
    out["cli"] = dict(images=len(subset), throughput=round(len(subset) / sum(cli_lat), 2), **percentiles(cli_lat))
    out["service_vs_api"] = round(out["service"]["throughput"] / out["api"]["throughput"], 3)
    if args.json:
        print(json.dumps(out))
    else:
        s, lo = out["service"], out["service_low_load"]
        print(f"{len(probes)} identify requests, {args.clients} clients, gallery of {enrolled} identities, "
              f"{args.threads} model thread(s)")
        print(f"service: {s['throughput']} images/s, p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, {s['errors']} errors")
        print(f"service, one client: {lo['throughput']} images/s, p50 {lo['p50_ms']} ms, p99 {lo['p99_ms']} ms")
        print(f"Python API, one process: {out['api']['throughput']} images/s (runs before and after: "
              f"{out['api']['runs']}) "
              f"(service = {out['service_vs_api']:.0%} of it; same names for {out['service_agrees_with_api']})")
        print(f"CLI, one process per image ({len(subset)} images): {out['cli']['throughput']} images/s, "
              f"p50 {out['cli']['p50_ms']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
