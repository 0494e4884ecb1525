"""Evaluate the demo model on held-out generated scenes with transformers greedy decoding.

    python tools/demo/evaluate.py [--scenes 60] [--model Models/demo] [--numbers open] [--caption-order reading]

Metrics: caption exact match per language, VQA accuracy, detection recall and precision at IoU
0.5 and mean IoU (each true box matched to at most one predicted box, greedily by IoU as COCO
matches), OCR exact match, segmentation mean mask IoU (masks decoded with the shipped vae-oid.npz).
The Swift runtime's `paligemma eval` scores the same way (Sources/PaliGemma/Evaluation.swift).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import scenes  # noqa: E402
from vae import load_decoder_npz, decode_masks  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))
from fixtures_segmentation import place  # noqa: E402  (big_vision's mask placement, as the Swift tests check it)

HELDOUT_SEED = 900_000_000
SIZES = (128, 160, 192, 224, 256)
LOC_RE = re.compile(r"<loc(\d{4})><loc(\d{4})><loc(\d{4})><loc(\d{4})>((?:<seg\d{3}>)*)\s*([^;<]*)")


def load(model_dir):
    from transformers import PaliGemmaForConditionalGeneration, PaliGemmaProcessor
    model = PaliGemmaForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    proc = PaliGemmaProcessor.from_pretrained(model_dir)
    return model, proc


@torch.no_grad()
def generate(model, proc, image, prompt, max_new_tokens=64):
    inp = proc(images=image, text=prompt, return_tensors="pt")
    out = model.generate(**inp, max_new_tokens=max_new_tokens, do_sample=False)
    ids = out[0, inp["input_ids"].shape[1]:].tolist()
    text_ids = [i for i in ids if i not in (0, 1)]
    text = proc.tokenizer.decode(text_ids, skip_special_tokens=False)
    return ids, text


def parse_objects(text, W, H):
    objs = []
    for m in LOC_RE.finditer(text):
        if int(m.group(3)) <= int(m.group(1)) or int(m.group(4)) <= int(m.group(2)):
            continue  # an inverted or empty box is invalid, as big_vision's evaluator treats it
        y0, x0, y1, x1 = (min(int(m.group(i)), 1023) / 1023.0 for i in range(1, 5))
        codes = [int(c) for c in re.findall(r"<seg(\d{3})>", m.group(5))]
        objs.append({"box": [x0 * W, y0 * H, x1 * W, y1 * H], "codes": codes, "label": m.group(6).strip()})
    return objs


def box_iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


def match_boxes(truth, predicted):
    """Greedy one-to-one matching by IoU (as COCO matches detections): pairs with the same label,
    highest IoU first, each true and each predicted box used once. truth, predicted: lists of
    (box, label). Returns each true box's matched IoU (0 when unmatched)."""
    pairs = sorted(((box_iou(t, p), i, j) for i, (t, lt) in enumerate(truth)
                    for j, (p, lp) in enumerate(predicted) if lt == lp), key=lambda x: (-x[0], x[1], x[2]))
    ious, used = [0.0] * len(truth), set()
    done = set()
    for iou, i, j in pairs:
        if iou <= 0 or i in done or j in used:
            continue
        ious[i] = iou
        done.add(i)
        used.add(j)
    return ious


def paste_mask(m64, box, W, H):
    """64x64 decoder logits -> full-image bool mask, placed as big_vision's segmentation evaluator
    (and the Swift runtime's MaskPlacement) place it: box edges truncated to whole pixels (`int()`),
    then the reference fixtures' `place` (float logits resized to the box with PIL BILINEAR, `> 0`)."""
    _, binary = place(np.asarray(m64, np.float32), tuple(int(v) for v in box), W, H)
    return binary.astype(bool)


def mask_iou(a, b):
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 0.0


def heldout_items(n_scenes, seed=HELDOUT_SEED, numbers=scenes.CLOSED_NUMBERS, caption_order="kind"):
    """Deterministic held-out prompts: every scene gets all three captions, one question, one
    detection, one segmentation and (when it has a word) ocr."""
    items = []
    for k in range(n_scenes):
        rng = np.random.default_rng(seed + k)
        size = int(SIZES[k % len(SIZES)])
        sc = scenes.sample_scene(seed + k, size, numbers=numbers)
        tasks = ["caption en", "caption de", "caption fr", "answer", "detect", "segment"]
        if sc.word:
            tasks.append("ocr")
        for t in tasks:
            prompt, target, meta = scenes.make_example(sc, t, rng, seg_codes=lambda o: [0] * 16,
                                                       caption_order=caption_order)
            if t == "segment":
                target = None  # codes come from the VAE encoder; judged by mask IoU instead
            items.append({"scene": k, "task": t.split()[0], "lang": t.split()[1] if " " in t else None,
                          "prompt": prompt, "target": target, "sc": sc, "meta": meta})
    return items


def score(item, text, emb, dec):
    sc = item["sc"]
    S = sc.size
    t = item["task"]
    if t in ("caption", "answer", "ocr"):
        return {"exact": float(text.strip() == item["target"])}
    objs = parse_objects(text, S, S)
    if t == "detect":
        ious = match_boxes(list(zip(item["meta"]["boxes"], item["meta"]["labels"])),
                           [(o["box"], o["label"]) for o in objs])
        return {"ious": ious, "predicted": len(objs)}
    if t == "segment":
        o = item["meta"]["obj"]
        cand = [p for p in objs if p["label"] == o.kind and len(p["codes"]) == 16]
        if not cand:
            return {"miou": 0.0, "box_iou": 0.0}
        p = cand[0]
        m64 = decode_masks(emb, dec, [p["codes"]])[0]
        pred = paste_mask(m64, p["box"], S, S)
        return {"miou": mask_iou(pred, o.mask), "box_iou": box_iou(list(o.box), p["box"])}
    raise ValueError(t)


def summarize(records):
    res = {}
    for lang in ("en", "de", "fr"):
        r = [x["score"]["exact"] for x in records if x["task"] == "caption" and x["lang"] == lang]
        res[f"caption {lang} exact"] = (float(np.mean(r)), len(r))
    r = [x["score"]["exact"] for x in records if x["task"] == "answer"]
    res["VQA accuracy"] = (float(np.mean(r)), len(r))
    ious = [i for x in records if x["task"] == "detect" for i in x["score"]["ious"]]
    res["detect recall@0.5"] = (float(np.mean([i >= 0.5 for i in ious])), len(ious))
    res["detect mean IoU"] = (float(np.mean(ious)), len(ious))
    hits = sum(i >= 0.5 for i in ious)
    predicted = sum(x["score"]["predicted"] for x in records if x["task"] == "detect")
    res["detect precision@0.5"] = (hits / predicted if predicted else 0.0, predicted)
    r = [x["score"]["exact"] for x in records if x["task"] == "ocr"]
    res["OCR exact"] = (float(np.mean(r)), len(r))
    r = [x["score"]["miou"] for x in records if x["task"] == "segment"]
    res["segment mean mask IoU"] = (float(np.mean(r)), len(r))
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "Models", "demo"))
    ap.add_argument("--scenes", type=int, default=60)
    ap.add_argument("--json", default=None)
    ap.add_argument("--threads", type=int, default=2)
    scenes.add_data_args(ap)  # as the model was trained
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, proc = load(args.model)
    emb, dec = load_decoder_npz(os.path.join(args.model, "vae-oid.npz"))
    items = heldout_items(args.scenes, numbers=scenes.numbers_arg(args),
                          caption_order=args.caption_order)
    t0 = time.time()
    records = []
    for it in items:
        ids, text = generate(model, proc, it["sc"].image, it["prompt"])
        s = score(it, text, emb, dec)
        records.append({"task": it["task"], "lang": it["lang"], "prompt": it["prompt"],
                        "target": it["target"], "output": text, "score": s})
    dt = time.time() - t0
    res = summarize(records)
    print(f"{len(items)} prompts on {args.scenes} held-out scenes in {dt:.0f}s")
    print("| metric | value | n |\n|---|---|---|")
    for k, (v, n) in res.items():
        print(f"| {k} | {v:.3f} | {n} |")
    bad = [r for r in records if r["task"] in ("caption", "answer", "ocr") and not r["score"]["exact"]]
    for r in bad[:15]:
        print("MISS", r["prompt"], "| want:", r["target"], "| got:", r["output"])
    if args.json:
        json.dump({"summary": res, "records": records}, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
