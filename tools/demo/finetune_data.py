"""Write a fine-tuning dataset for the demo model: Spanish captions (`caption es`), a task it has never seen.

    python tools/demo/finetune_data.py --out DIR [--train 2000] [--val 40] [--test 40] [--mix 0.5]

DIR gets `images/NNNNNN.png` (scenes rendered exactly as evaluate.py and heldout.py render their held-out
scenes: scene k at 128, 160, 192, 224 or 256 px in turn, `SIZES[k % 5]`, saved at that size; the processor
resizes to 128 itself) and three JSONL files whose lines are
`{"image": "images/000123.png", "prefix": "caption es", "suffix": "un círculo rojo y ..."}` (image paths
relative to the JSONL file, the format of `paligemma finetune --data/--val`):

- `train.jsonl`: `--train` scenes, each with its Spanish caption, then round(`--mix` x `--train`) lines
  captioning the first of those scenes again in en, de and fr in turn (so that the old languages are
  rehearsed; `--mix 0` leaves them out), the whole file shuffled (seeded);
- `val.jsonl`: `--val` other scenes, Spanish only (the validation loss of the new task);
- `test.jsonl`: `--test` other scenes, each captioned in es, en, de and fr (four lines a scene), what
  `evaluate_captions.py --data` scores per language.

Seeds: train scenes SEED_BASE + i, val SEED_BASE + VAL_OFFSET + i, test SEED_BASE + TEST_OFFSET + i, with
SEED_BASE = 600,000,000: disjoint from the demo model's training scenes (0...29,999), example.py's
777,000,000+, evaluate.py's HELDOUT_SEED range (900,000,000+) and heldout.py's (950,000,000+).

Scenes use scenes.py's default data options (`--numbers closed --caption-order kind`), the data the
shipped model was trained on; pass others only for a model trained on them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import scenes  # noqa: E402

SEED_BASE = 600_000_000
VAL_OFFSET = 10_000_000
TEST_OFFSET = 20_000_000
SIZES = (128, 160, 192, 224, 256)  # evaluate.py's SIZES: scene k is rendered at SIZES[k % 5]
OLD_LANGS = ("en", "de", "fr")
ALL_LANGS = ("es",) + OLD_LANGS


def split_seed(split: str, k: int) -> int:
    """The seed of scene k of a split ('train', 'val' or 'test')."""
    return SEED_BASE + {"train": 0, "val": VAL_OFFSET, "test": TEST_OFFSET}[split] + k


def render(split: str, k: int, numbers=scenes.CLOSED_NUMBERS) -> scenes.Scene:
    """Scene k of a split, rendered as evaluate.heldout_items renders held-out scene k."""
    return scenes.sample_scene(split_seed(split, k), int(SIZES[k % len(SIZES)]), numbers=numbers)


def line(image: str, lang: str, sc: scenes.Scene, order: str) -> dict:
    return {"image": image, "prefix": f"caption {lang}", "suffix": sc.caption(lang, order)}


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="dataset directory (created)")
    ap.add_argument("--train", type=int, default=2000, help="training scenes (one Spanish line each)")
    ap.add_argument("--val", type=int, default=40, help="validation scenes (Spanish lines)")
    ap.add_argument("--test", type=int, default=40, help="test scenes (es, en, de and fr lines each)")
    ap.add_argument("--mix", type=float, default=0.5,
                    help="extra en/de/fr caption lines in train.jsonl, as a fraction of --train (0.5: 1000 extra "
                         "lines for 2000 scenes, a third of the file; 0.25 kept too little of English)")
    ap.add_argument("--shuffle-seed", type=int, default=0, help="the order of train.jsonl's lines")
    scenes.add_data_args(ap)  # as the shipped model was trained: keep the defaults
    args = ap.parse_args()
    numbers = scenes.numbers_arg(args)
    img_dir = os.path.join(args.out, "images")
    os.makedirs(img_dir, exist_ok=True)

    counter = [0]

    def save(sc):
        name = f"images/{counter[0]:06d}.png"
        counter[0] += 1
        sc.image.save(os.path.join(args.out, name), optimize=True)
        return name

    train, first = [], []
    for k in range(args.train):
        sc = render("train", k, numbers)
        name = save(sc)
        train.append(line(name, "es", sc, args.caption_order))
        first.append((name, sc))
    n_mix = int(round(args.mix * args.train))
    for j in range(n_mix):
        name, sc = first[j % len(first)]
        lang = OLD_LANGS[j % len(OLD_LANGS)]
        if j >= len(first):  # a mix above 1 goes round the scenes again, in the next language
            lang = OLD_LANGS[(j + j // len(first)) % len(OLD_LANGS)]
        train.append(line(name, lang, sc, args.caption_order))
    order = np.random.default_rng(args.shuffle_seed).permutation(len(train))
    train = [train[i] for i in order]

    val = []
    for k in range(args.val):
        sc = render("val", k, numbers)
        val.append(line(save(sc), "es", sc, args.caption_order))

    test = []
    for k in range(args.test):
        sc = render("test", k, numbers)
        name = save(sc)
        test.extend(line(name, lang, sc, args.caption_order) for lang in ALL_LANGS)

    write_jsonl(os.path.join(args.out, "train.jsonl"), train)
    write_jsonl(os.path.join(args.out, "val.jsonl"), val)
    write_jsonl(os.path.join(args.out, "test.jsonl"), test)
    langs = {lang: sum(r["prefix"] == f"caption {lang}" for r in train) for lang in ALL_LANGS}
    print(f"{args.out}: {counter[0]} images; train.jsonl {len(train)} lines ({langs}), "
          f"val.jsonl {len(val)}, test.jsonl {len(test)} ({args.test} scenes x {len(ALL_LANGS)} languages)")


if __name__ == "__main__":
    main()
