#!/usr/bin/env python3
"""Side-by-side speed table: transformers float32 and `paligemma bench` at every kernel level and
weight format, one configuration, all in one window (figures on a shared machine drift by up to 2×
between windows, so only rows measured together compare).

    python3 tools/bench_levels.py 3b-224 --threads 2 --decode-tokens 16 \
        --transformers-python /path/to/venv/bin/python

Runs `.build/release/paligemma` (build it first: swift build -c release --product paligemma).
transformers runs twice when a Python is given: with its default kernels and with every library it
uses capped at AVX2 (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS), the
comparison for this project's avx2 level on a CPU that has more. Prints a Markdown table, and
the raw reports as JSON with --json-out.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_json(cmd, env=None):
    started = time.strftime("%H:%M:%S")
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    report = json.loads(out.stdout[out.stdout.index("{"):])
    report["_started"] = started
    return report


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("preset", nargs="?", default="3b-224")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--decode-tokens", type=int, default=16)
    p.add_argument("--weights", default="bf16,q8,q4")
    p.add_argument("--levels", default="", help="comma-separated kernel levels (default: every level of this CPU)")
    p.add_argument("--repeat", type=int, default=2,
                   help="runs of each of ours, one after the other (a first run in a window is often slow); the table gives their range")
    p.add_argument("--transformers-python", help="a Python with torch + transformers (tools/reference/requirements.txt)")
    p.add_argument("--json-out")
    a = p.parse_args()
    binary = os.path.join(ROOT, ".build/release/paligemma")
    if not os.path.exists(binary):
        sys.exit("build first: swift build -c release --product paligemma")
    common = ["--only", "model", "--threads", str(a.threads), "--decode-tokens", str(a.decode_tokens), "--json"]
    first = run_json([binary, "bench", "--model", os.path.join(ROOT, "Models/demo"), "--only", "model",
                      "--decode-tokens", "1", "--json"])
    levels = a.levels.split(",") if a.levels else first["isaAvailable"]
    rows = []
    if a.transformers_python:
        capped = dict(os.environ, ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2", MKL_ENABLE_INSTRUCTIONS="AVX2")
        for label, env in [("transformers float32", None), ("transformers float32, capped at AVX2", capped)]:
            r = run_json([a.transformers_python, os.path.join(ROOT, "tools/bench_transformers.py"), a.preset,
                          "--dtype", "float32", "--threads", str(a.threads), "--decode-tokens", str(a.decode_tokens),
                          "--json"], env=env)
            rows.append((label, r))
            print(f"{label}: {json.dumps(r)}", file=sys.stderr)
    for weights in a.weights.split(","):
        for level in levels:
            runs = []
            for _ in range(max(1, a.repeat)):
                r = run_json([binary, "bench", a.preset, "--weights", weights, "--isa", level] + common)
                runs.append(r)
                print(f"{weights} {level}: ttft {r['timeToFirstTokenSeconds']:.2f} s, "
                      f"decode {r['decodeTokensPerSecond']:.2f} tok/s", file=sys.stderr)
            rows.append((f"ours {weights}, {level}", runs))

    def get(r, *keys):
        for k in keys:
            if k in r and r[k] is not None:
                return r[k]
        return None

    print(f"| {a.preset}, {a.threads} threads | started | image | time to first token | decode tok/s "
          f"| decode GB/s (share of the read rate probed in the run) | ceilings probed: FMA GFLOP/s / int8 GOPS / read GB/s |")
    print("|---|---|---|---|---|---|---|")

    def span(values, f):
        lo, hi = min(values), max(values)
        return (f % lo) if f % lo == f % hi else f"{f % lo}–{f % hi}"

    for label, r in rows:
        runs = r if isinstance(r, list) else [r]
        first = runs[0]
        image = [get(x, "imageEncodeSeconds", "image_encode_seconds") for x in runs]
        ttft = [get(x, "timeToFirstTokenSeconds", "time_to_first_token_seconds") for x in runs]
        tok = [get(x, "decodeTokensPerSecond", "decode_tokens_per_second") for x in runs]
        if "measuredReadGBs" in first:
            bw = f"{span([x['decodeGBs'] for x in runs], '%.1f')} ({span([100 * x['bandwidthFraction'] for x in runs], '%.0f')}%)"
            int8 = [x.get("measuredInt8GOPs") or 0 for x in runs]
            # 4-bit weights' own int8 probe, where it is not the 8-bit one (avx2's 16-bit sums)
            four = [x.get("measuredInt8FourBitGOPs") or 0 for x in runs]
            int8_text = span(int8, '%.0f') if any(int8) else '–'
            if "q4" in first.get("configuration", "") and any(four) and four != int8:
                int8_text += f" (4-bit {span(four, '%.0f')})"
            ceil = (f"{span([x['measuredFMAGFLOPs'] for x in runs], '%.0f')} / "
                    f"{int8_text} / {span([x['measuredReadGBs'] for x in runs], '%.0f')}")
        else:
            bw, ceil = "–", "–"
        print(f"| {label} | {first['_started']} | {span(image, '%.2f')} s | {span(ttft, '%.2f')} s | {span(tok, '%.2f')} "
              f"| {bw} | {ceil} |")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump([{"run": label, "reports": r if isinstance(r, list) else [r]} for label, r in rows], f, indent=1)


if __name__ == "__main__":
    main()
