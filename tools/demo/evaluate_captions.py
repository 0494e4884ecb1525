"""Caption exact match per language (es, en, de, fr) of the demo model, optionally with a LoRA adapter.

    python tools/demo/evaluate_captions.py [--model Models/demo] [--adapter DIR] [--data DIR/test.jsonl] \\
        [--scenes 40] [--json FILE]

With `--data`, the lines of a JSONL file as finetune_data.py writes them (`{"image", "prefix": "caption
LANG", "suffix"}`, images relative to the file); without it, finetune_data.py's test scenes (seeds
600,020,000+, `--scenes` of them, rendered as evaluate.py renders held-out scenes) each captioned in the four
languages. Decoding is evaluate.py's: transformers greedy, float32 compute, eager attention, at most 64
new tokens, ids 0 and 1 dropped, exact match after `strip()`. `--adapter` is a PEFT adapter directory
(`PeftModel.from_pretrained`, as finetune_peft.py saves it, or as `paligemma finetune` writes it).

Prints JSON `{"es": 0.8, "en": 0.95, "de": ..., "fr": ..., "n": {...}}` on the last line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import evaluate as ev  # noqa: E402
import finetune_data as fd  # noqa: E402
import scenes  # noqa: E402

LANGS = ("es", "en", "de", "fr")


def load(model_dir, adapter=None):
    """evaluate.py's model (float32, eager) and processor, with the adapter applied when given."""
    model, proc = ev.load(model_dir)
    if adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, adapter).eval()
    return model, proc


def items_from_jsonl(path):
    base = os.path.dirname(os.path.abspath(path))
    items = []
    with open(path, encoding="utf-8") as f:
        for ln in f:
            if not ln.strip():
                continue
            r = json.loads(ln)
            if not r["prefix"].startswith("caption "):
                continue
            items.append({"image": os.path.join(base, r["image"]), "prompt": r["prefix"],
                          "target": r["suffix"], "lang": r["prefix"].split()[1]})
    return items


def items_generated(n, numbers, order):
    items = []
    for k in range(n):
        sc = fd.render("test", k, numbers)
        for lang in LANGS:
            items.append({"image": sc.image, "prompt": f"caption {lang}", "target": sc.caption(lang, order),
                          "lang": lang})
    return items


def evaluate(model, proc, items, show_misses=0):
    """{lang: exact-match fraction} plus "n": {lang: count}; prints up to `show_misses` misses."""
    hits, counts, cache, misses = {}, {}, {}, []
    for it in items:
        img = it["image"]
        if isinstance(img, str):
            if img not in cache:
                cache[img] = Image.open(img).convert("RGB")
            img = cache[img]
        _, text = ev.generate(model, proc, img, it["prompt"])
        ok = text.strip() == it["target"]
        lang = it["lang"]
        hits[lang] = hits.get(lang, 0) + int(ok)
        counts[lang] = counts.get(lang, 0) + 1
        if not ok:
            misses.append((it["prompt"], it["target"], text))
    for p, want, got in misses[:show_misses]:
        print(f"MISS {p} | want: {want} | got: {got}", file=sys.stderr)
    order = [l for l in LANGS if l in counts] + sorted(l for l in counts if l not in LANGS)
    res = {l: hits[l] / counts[l] for l in order}
    res["n"] = {l: counts[l] for l in order}
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "Models", "demo"))
    ap.add_argument("--adapter", default=None, help="a PEFT LoRA adapter directory")
    ap.add_argument("--data", default=None, help="a JSONL file of caption lines (finetune_data.py's test.jsonl)")
    ap.add_argument("--scenes", type=int, default=40, help="without --data: finetune_data.py's test scenes to use")
    ap.add_argument("--json", default=None, help="also write the result here")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--misses", type=int, default=10, help="print this many misses (to stderr)")
    scenes.add_data_args(ap)  # without --data: as the model was trained
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import transformers
    transformers.utils.logging.set_verbosity_error()  # not the processor's note on every prompt
    model, proc = load(args.model, args.adapter)
    items = (items_from_jsonl(args.data) if args.data else
             items_generated(args.scenes, scenes.numbers_arg(args), args.caption_order))
    t0 = time.time()
    res = evaluate(model, proc, items, args.misses)
    print(f"{len(items)} prompts in {time.time() - t0:.0f}s", file=sys.stderr)
    print(json.dumps(res, ensure_ascii=False))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
