"""Write the held-out fixture set for the Swift side into Tests/Fixtures/demo/.

    python tools/demo/heldout.py [--scenes 40] [--numbers open] [--caption-order reading]

For each held-out scene: the PNG, and for each prompt one JSONL line with the prompt, the
expected target (captions/VQA/OCR exact; detect: boxes in pixels; segment: box + mask PNG), and
transformers' greedy output (float32 compute from the shipped bf16 weights, eager attention,
token_type_ids passed): generated token ids (including the final <eos>) and the decoded text.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import evaluate as ev  # noqa: E402
import scenes  # noqa: E402
from vae import load_decoder_npz  # noqa: E402

SEED = 950_000_000  # distinct from evaluate.py's held-out seed and from training seeds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "Models", "demo"))
    ap.add_argument("--out", default=os.path.join(ROOT, "Tests", "Fixtures", "demo"))
    ap.add_argument("--scenes", type=int, default=40)
    scenes.add_data_args(ap)  # as the model was trained
    args = ap.parse_args()
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    model, proc = ev.load(args.model)
    emb, dec = load_decoder_npz(os.path.join(args.model, "vae-oid.npz"))
    items = ev.heldout_items(args.scenes, SEED, numbers=scenes.numbers_arg(args),
                             caption_order=args.caption_order)
    lines = []
    saved = set()
    for it in items:
        sc = it["sc"]
        name = f"scene{it['scene']:03d}.png"
        if name not in saved:
            sc.image.save(os.path.join(args.out, name), optimize=True)
            saved.add(name)
        ids, text = ev.generate(model, proc, sc.image, it["prompt"])
        s = ev.score(it, text, emb, dec)
        rec = {"image": name, "width": sc.size, "height": sc.size, "task": it["task"],
               "prompt": it["prompt"], "expected": it["target"],
               "output_ids": ids, "output_text": text}
        if it["task"] == "detect":
            rec["boxes"] = it["meta"]["boxes"]  # [x0, y0, x1, y1] pixels, x1/y1 exclusive
            rec["labels"] = it["meta"]["labels"]
            rec["iou"] = s["ious"]
        elif it["task"] == "segment":
            o = it["meta"]["obj"]
            mname = f"scene{it['scene']:03d}_{o.kind}_mask.png"
            Image.fromarray(o.mask).convert("1").save(os.path.join(args.out, mname), optimize=True)
            rec["boxes"] = [list(o.box)]
            rec["labels"] = [o.kind]
            rec["mask"] = mname
            rec["mask_iou"] = s["miou"]
        else:
            rec["correct"] = bool(s["exact"])
        lines.append(rec)
    with open(os.path.join(args.out, "heldout.jsonl"), "w") as f:
        for r in lines:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    recs = [{"task": it["task"], "lang": it["lang"], "score": ev.score(it, r["output_text"], emb, dec)}
            for it, r in zip(items, lines)]
    summ = ev.summarize(recs)
    json.dump({k: {"value": v, "n": n} for k, (v, n) in summ.items()},
              open(os.path.join(args.out, "summary.json"), "w"), indent=1)
    print(f"{len(lines)} prompts, {len(saved)} images")
    for k, (v, n) in summ.items():
        print(f"{k}: {v:.3f} (n={n})")


if __name__ == "__main__":
    main()
