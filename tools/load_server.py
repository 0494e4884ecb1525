#!/usr/bin/env python3
"""Concurrent load on `paligemma serve`, on loopback only: what continuous batching buys.

Starts the server (or uses --url), then runs, each on images of its own so that no scenario
profits from an earlier one's caches:

  alone      one streamed caption request, for reference
  together   N identical requests sent at once (the same image and prompt: they share the image
             encoding and the prefill, then every decode step)
  distinct   N requests on N different images at once (each prefills; decode steps shared)
  arrival    (--arrival N) N streams decoding when one more request arrives: how long the
             running streams wait between tokens while the newcomer's image is encoded and its
             prompt prefilled, and the newcomer's time to first token

and reports, per scenario, when each request finished, the time to first token, and the
aggregate decode rate (tokens generated after each stream's first token, over the time from the
earliest first token to the last finish). Every greedy answer is checked against the same request
run alone. Bounded: at most 16 requests at once, a timeout per request, loopback addresses only.

    paligemma bench 3b-224 --weights q4 --only model     # writes the random checkpoint once
    python3 tools/load_server.py --paligemma .build/release/paligemma --pad-tokenizer \\
        --model ~/.cache/paligemma/bench/3b-224-q4-v3-random --tokens 32 --streams 4,8 \\
        --images Tests/Fixtures/image/inputs/*.jpg Tests/Fixtures/image/inputs/*.png
"""
import argparse
import base64
import json
import pathlib
import re
import subprocess
import sys
import threading
import time
import urllib.request


def write_padded_tokenizer(model_dir):
    """Random-weight checkpoints (`paligemma bench` presets) have no tokenizer: this writes the demo
    model's tokenizer with its vocabulary padded by never-produced pieces to the checkpoint's size
    and `<image>` moved to its image_token_index, which is enough to serve captions of random
    text at full-size shapes."""
    model_dir = pathlib.Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    image_id = config["image_token_index"]
    demo = pathlib.Path(__file__).resolve().parent.parent / "Models" / "demo" / "tokenizer.json"
    tok = json.loads(demo.read_text())
    vocab = tok["model"]["vocab"]
    old = vocab.pop("<image>", None)
    if old is not None:
        vocab[f"<unused_image_{old}>"] = old
    used = set(vocab.values())
    for i in range(max(used) + 1, image_id):
        vocab[f"<unused{i}>"] = i
    vocab["<image>"] = image_id
    for a in tok["added_tokens"]:
        if a["content"] == "<image>":
            a["id"] = image_id
    (model_dir / "tokenizer.json").write_text(json.dumps(tok))


def post_stream(url, image, prompt, tokens, timeout, on_token=None):
    """One streamed request; returns (start, first_token_time, finish_time, token_ids, token_times).
    `on_token(count)` is called as each token arrives."""
    body = json.dumps({"image": base64.b64encode(image).decode(), "prompt": prompt, "max_new_tokens": tokens,
                       "temperature": 0}).encode()
    request = urllib.request.Request(url + "/v1/generate?stream=true", data=body,
                                     headers={"Content-Type": "application/json"})
    start = time.monotonic()
    first, done = None, None
    event = None
    times = []
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        for raw in reply:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                if event == "token":
                    times.append(time.monotonic())
                    if first is None:
                        first = times[0]
                    if on_token:
                        on_token(len(times))
                elif event == "done":
                    done = json.loads(line[6:])
                elif event == "error":
                    raise RuntimeError(line[6:])
    finish = time.monotonic()
    if done is None:
        raise RuntimeError("the stream ended without a done event")
    return start, first or finish, finish, done["token_ids"], times


def run_together(url, jobs, tokens, timeout):
    """Sends every (image, prompt) of `jobs` at once; returns the start time and their results."""
    results = [None] * len(jobs)

    def one(i):
        try:
            results[i] = post_stream(url, jobs[i][0], jobs[i][1], tokens, timeout)
        except Exception as e:  # reported below, the run goes on
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(jobs))]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return t0, results


def summarise(name, t0, results, reference):
    bad = [r for r in results if isinstance(r, Exception)]
    if bad:
        print(f"{name}: {len(bad)} failed: {bad[0]}")
        return None
    finishes = [r[2] - t0 for r in results]
    first = min(r[1] for r in results)
    last = max(r[2] for r in results)
    decoded = sum(len(r[3]) - 1 for r in results)
    rate = decoded / (last - first) if last > first else float("nan")
    same = all(r[3] == ref for r, ref in zip(results, reference))
    ttft = [r[1] - t0 for r in results]
    # While every stream decodes (after the last first token, before the first finish): the
    # rate of the shared steps alone, without the prefills that interrupt them.
    w0, w1 = max(r[1] for r in results), min(r[2] for r in results)
    inside = sum(1 for r in results for t in r[4] if w0 < t <= w1)
    steady = inside / (w1 - w0) if w1 - w0 > 0.2 else float("nan")
    print(f"{name}: finished after {', '.join(f'{f:.2f}' for f in sorted(finishes))} s; "
          f"first token {min(ttft):.2f}–{max(ttft):.2f} s; aggregate decode {rate:.2f} tok/s overall, "
          f"{steady:.2f} tok/s while all {len(results)} decode; answers identical to alone: {'yes' if same else 'NO'}")
    return max(finishes), rate, same, steady


def run_arrival(url, running_images, newcomer, prompt, tokens, timeout):
    """Starts one stream per image of `running_images`; once each has 4 tokens, sends `newcomer`.
    Returns the running streams' results, the newcomer's, and when the newcomer was sent."""
    n = len(running_images)
    results = [None] * n
    counts = [0] * n
    ready = threading.Event()
    lock = threading.Lock()

    def progress(i, count):
        with lock:
            counts[i] = count
            if min(counts) >= 4:
                ready.set()

    def one(i):
        try:
            results[i] = post_stream(url, running_images[i], prompt, tokens, timeout,
                                     on_token=lambda c: progress(i, c))
        except Exception as e:  # reported below, the run goes on
            results[i] = e
            ready.set()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    ready.wait(timeout)
    sent = time.monotonic()
    late = post_stream(url, newcomer, prompt, 8, timeout)
    for t in threads:
        t.join()
    return results, late, sent


def summarise_arrival(n, results, late, sent, alone_gap, alone_ttft):
    bad = [r for r in results if isinstance(r, Exception)]
    if bad:
        print(f"arrival ×{n}: {len(bad)} failed: {bad[0]}")
        return
    arrived = late[1]
    # Each running stream's gaps between consecutive tokens that touch the newcomer's wait.
    gaps = [b - a for r in results for a, b in zip(r[4], r[4][1:]) if b > sent and a < arrived]
    during = sum(1 for r in results for t in r[4] if sent < t <= arrived)
    finished_early = sum(1 for r in results if r[2] < arrived)
    print(f"arrival ×{n}: newcomer's first token after {arrived - sent:.2f} s ({(arrived - sent) / alone_ttft:.2f}× alone); "
          f"running streams meanwhile: {during} tokens, longest gap {max(gaps) if gaps else float('nan'):.2f} s "
          f"({(max(gaps) if gaps else float('nan')) / alone_gap:.1f}× a step alone)"
          + (f"; {finished_early} had finished before" if finished_early else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paligemma", help="the paligemma binary (starts `serve` on 127.0.0.1, a free port)")
    parser.add_argument("--model", help="model for the started server")
    parser.add_argument("--url", help="an already running server on loopback, e.g. http://127.0.0.1:8080")
    parser.add_argument("--images", nargs="+", required=True,
                        help="image files; each scenario takes images of its own (needs 2 + max(streams) + ...)")
    parser.add_argument("--prompt", default="caption en")
    parser.add_argument("--tokens", type=int, default=32, help="max_new_tokens per request (default 32)")
    parser.add_argument("--streams", default="4,8", help="concurrent requests per scenario, comma-separated (≤ 16; empty: none)")
    parser.add_argument("--max-sequences", type=int, default=8, help="the started server's --max-sequences")
    parser.add_argument("--threads", type=int, help="the started server's --threads")
    parser.add_argument("--decode-share", type=float, help="the started server's --decode-share")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per request")
    parser.add_argument("--arrival", type=int, default=0,
                        help="streams running when one more request arrives (0: skip the arrival scenario)")
    parser.add_argument("--arrival-tokens", type=int, default=128,
                        help="max_new_tokens of the running streams in the arrival scenario (default 128)")
    parser.add_argument("--pad-tokenizer", action="store_true",
                        help="first write a tokenizer.json into --model (a random-weight checkpoint has none)")
    args = parser.parse_args()
    if args.pad_tokenizer:
        if not args.model:
            sys.exit("--pad-tokenizer needs --model")
        write_padded_tokenizer(args.model)
    streams = [int(s) for s in args.streams.split(",") if s]
    if any(s < 1 or s > 16 for s in streams):
        sys.exit("--streams: 1…16 each")
    if not 0 <= args.arrival <= 15:
        sys.exit("--arrival: 0…15")

    server = None
    url = args.url
    if url:
        if not re.match(r"^http://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?/?$", url):
            sys.exit("--url must be a loopback address")
        url = url.rstrip("/")
    else:
        if not (args.paligemma and args.model):
            sys.exit("give --url, or --paligemma and --model")
        command = [args.paligemma, "serve", "--model", args.model, "--host", "127.0.0.1", "--port", "0",
                   "--max-sequences", str(args.max_sequences), "--max-waiting", "32"]
        if args.threads:
            command += ["--threads", str(args.threads)]
        if args.decode_share is not None:
            command += ["--decode-share", str(args.decode_share)]
        server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + 300
        for line in server.stdout:
            m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            if m:
                url = f"http://127.0.0.1:{m.group(1)}"
                break
            if time.monotonic() > deadline:
                break
        if not url:
            server.kill()
            sys.exit("the server did not start")
    try:
        images = [pathlib.Path(p).read_bytes() for p in args.images]
        needed = 1 + sum(1 + s for s in streams) + (args.arrival + 1 if args.arrival else 0)
        if len(images) < needed:
            sys.exit(f"give at least {needed} images for --streams {args.streams}")
        pool = iter(images)

        def alone(image):
            return post_stream(url, image, args.prompt, args.tokens, args.timeout)

        a = alone(next(pool))
        one_time = a[2] - a[0]
        one_rate = (len(a[3]) - 1) / (a[2] - a[1])
        print(f"alone: finished after {one_time:.2f} s; first token {a[1] - a[0]:.2f} s; decode {one_rate:.2f} tok/s")
        if args.arrival:
            running = [next(pool) for _ in range(args.arrival)]
            results, late, sent = run_arrival(url, running, next(pool), args.prompt, args.arrival_tokens, args.timeout)
            summarise_arrival(args.arrival, results, late, sent, 1 / one_rate, a[1] - a[0])
        for n in streams:
            # The answers alone are taken afterwards, so that the scenario starts with cold caches.
            image = next(pool)
            t0, results = run_together(url, [(image, args.prompt)] * n, args.tokens, args.timeout)
            reference = alone(image)[3]
            s = summarise(f"together ×{n} (one image)", t0, results, [reference] * n)
            if s:
                print(f"  → slowest {s[0] / one_time:.2f}× one alone; aggregate decode {s[1] / one_rate:.2f}× one stream "
                      f"overall, {s[3] / one_rate:.2f}× while all decode")
            distinct = [next(pool) for _ in range(n)]
            t0, results = run_together(url, [(img, args.prompt) for img in distinct], args.tokens, args.timeout)
            references = [alone(img)[3] for img in distinct]
            s = summarise(f"distinct ×{n} (one image each)", t0, results, references)
            if s:
                print(f"  → slowest {s[0] / one_time:.2f}× one alone; aggregate decode {s[1] / one_rate:.2f}× one stream "
                      f"overall, {s[3] / one_rate:.2f}× while all decode")
    finally:
        if server:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
