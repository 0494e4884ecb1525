"""Render Models/demo/example.png (the README's first-command image) and show the model on it.

    python tools/demo/example.py [--seed N]
"""
import argparse, os, sys
import numpy as np
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import scenes

EXAMPLE_SEED = 777_000_000  # outside training/held-out ranges


def find_scene(start, numbers=scenes.CLOSED_NUMBERS):
    """First scene from `start` on with 3 shapes, a word (not a number) and a plain or gradient background
    (the same scene for either `numbers`: only scenes showing a number differ)."""
    s = start
    while True:
        sc = scenes.sample_scene(s, 256, numbers=numbers)
        if len(sc.objs) == 3 and sc.word and not sc.word.isdigit():
            bg = np.asarray(sc.image, dtype=np.float32)
            if bg[:4, :4].std() < 3:  # no noise in a corner
                return s, sc
        s += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=EXAMPLE_SEED)
    ap.add_argument("--model", default=os.path.join(ROOT, "Models", "demo"))
    ap.add_argument("--save", action="store_true")
    scenes.add_data_args(ap)  # as the model was trained
    args = ap.parse_args()
    seed, sc = find_scene(args.seed, scenes.numbers_arg(args))
    print("seed", seed, "word", sc.word, [(o.color, o.kind, o.box) for o in sc.objs])
    if args.save:
        sc.image.save(os.path.join(args.model, "example.png"), optimize=True)
    if os.path.exists(os.path.join(args.model, "model.safetensors")):
        import evaluate as ev
        model, proc = ev.load(args.model)
        kinds = [o.kind for o in sc.ordered(args.caption_order)]
        prompts = ["caption en", "caption de", "caption fr", "ocr", "answer en how many shapes are there?",
                   f"answer en what color is the {kinds[0]}?", f"answer en where is the {kinds[1]}?",
                   "detect " + " ; ".join(kinds), f"segment {kinds[0]}"]
        for p in prompts:
            ids, text = ev.generate(model, proc, sc.image, p)
            print(f"{p!r:45} -> {text}")
        print("expected caption:", sc.caption("en", args.caption_order))
        for o in sc.ordered(args.caption_order):
            print("expected", o.kind, scenes.loc_tokens(o.box, sc.size))


if __name__ == "__main__":
    main()
