#!/usr/bin/env python3
"""Time the ways a worker can feed one manifest to the engine, per image, on this machine.

  batch      one `paligemma generate --input` over the whole manifest (the baseline)
  serve      one `paligemma serve` on loopback, requests sent one after another (in flight 1)
             and two at a time (in flight 2), as paligemma_ray.py's actors send them
  per-batch  one `paligemma generate --input` process per batch of --batch-size rows, the
             way to use batch mode from a worker that gets rows a batch at a time (batch mode
             reads its whole input before it starts, so one long-lived process cannot be fed)

Every figure is wall time over the whole manifest divided by its rows, the better of --repeat
runs; `serve` is timed from the first request (its start-up is reported apart). Image paths in
the manifest are taken from the current directory.

Example:
  python3 tools/ray/bench_paths.py --paligemma .build/release/paligemma --model Models/demo \\
      --input manifest.jsonl --threads 1
"""

import argparse
import base64
import http.client
import json
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def timed(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paligemma", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True, type=Path, help="JSON-lines manifest")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.input.read_text().splitlines() if line.strip()]
    engine = [args.paligemma]
    model = ["--model", args.model, "--threads", str(args.threads)]
    scratch = Path(tempfile.mkdtemp(prefix="bench-paths-"))

    def batch(lines, name):
        manifest = scratch / f"{name}.jsonl"
        manifest.write_text("".join(json.dumps(r) + "\n" for r in lines))
        results = scratch / f"{name}.out"
        results.unlink(missing_ok=True)
        subprocess.run(engine + ["generate", "--input", str(manifest), "--results", str(results)] + model,
                       check=True, stderr=subprocess.DEVNULL)

    figures = {"batch": timed(lambda: batch(rows, "all"), args.repeat)}
    chunks = [rows[i:i + args.batch_size] for i in range(0, len(rows), args.batch_size)]
    figures[f"per-batch ({args.batch_size} rows)"] = timed(lambda: [batch(c, f"c{i}") for i, c in enumerate(chunks)], args.repeat)

    started = time.perf_counter()
    server = subprocess.Popen(engine + ["serve", "--host", "127.0.0.1", "--port", "0", "--max-waiting", "4"] + model,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        port = int(line.split("http://", 1)[1].split("/")[0].rsplit(":", 1)[1])
        startup = time.perf_counter() - started
        # Drain the request log so the server never blocks on a full pipe.
        ThreadPoolExecutor(1).submit(lambda: [None for _ in server.stdout])
        local = threading.local()

        def post(row):
            with open(row["image"], "rb") as f:
                body = json.dumps({"image": base64.b64encode(f.read()).decode(), "prompt": row["prompt"]})
            if getattr(local, "connection", None) is None:  # kept alive, as the actors keep theirs
                local.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            local.connection.request("POST", "/v1/generate", body=body, headers={"Content-Type": "application/json"})
            response = local.connection.getresponse()
            response.read()
            assert response.status == 200, response.status

        for in_flight in (1, 2):
            with ThreadPoolExecutor(in_flight) as pool:
                figures[f"serve, in flight {in_flight}"] = timed(lambda: list(pool.map(post, rows)), args.repeat)
    finally:
        server.kill()
        server.wait()
    print(f"{len(rows)} requests, {args.threads} thread(s); serve start-up {startup * 1000:.0f} ms (once per actor)")
    for name, seconds in figures.items():
        print(f"{name:28s} {seconds * 1000 / len(rows):8.1f} ms per image  ({len(rows) / seconds:.1f} images/s)")


if __name__ == "__main__":
    main()
