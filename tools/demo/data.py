"""Training data of the demo model: rendered scenes, their training-only per-patch targets, the
scene cache, and the batches `train.py` trains on (inputs built exactly as PaliGemmaProcessor
builds them, loss on the suffix only).

Every target is a deterministic function of a scene (scenes.py); see Models/demo/README.md.
"""
from __future__ import annotations

import os
import sys
import time
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import scenes  # noqa: E402

RES = 128
PATCH = 16
GRID = RES // PATCH  # patches per side
N_IMG = GRID * GRID  # image tokens
SUB = 4  # occupancy sub-cells per patch side for the vision probes
N_KIND = len(scenes.SHAPES) + 2  # background, shapes..., text
N_COLOR = len(scenes.COLORS) + 1  # none, colours...
CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
N_CHAR = len(CHARS) + 1  # none, characters...
TASK_WEIGHTS = {"caption en": 0.06, "caption de": 0.06, "caption fr": 0.06, "answer": 0.42,
                "detect": 0.16, "ocr": 0.10, "segment": 0.14}


def render(seed, numbers, sizes=(128, 128, 128, 128, 160, 192, 256)):
    """Scene `seed` at a random size, resized to RES with PIL bicubic as the processor does."""
    rng = np.random.default_rng(seed + 7)
    size = int(sizes[int(rng.integers(len(sizes)))])
    sc = scenes.sample_scene(seed, size, numbers=numbers)
    img = sc.image
    if size != RES:
        img = img.resize((RES, RES), Image.BICUBIC)  # what the processor does
    return sc, np.asarray(img, dtype=np.uint8)


def aux_targets(sc):
    """Per-patch training-only targets that teach the vision tower to see from the first steps:
    what covers the patch (background / shape kind / text), its colour, which of the patch's
    SUB x SUB sub-cells any shape covers, and the covering shape's box (fractions of the image)."""
    S = sc.size
    fine = GRID * SUB
    cover = []
    for o in sc.objs:
        m = Image.fromarray(o.mask.astype(np.uint8) * 255).resize((fine, fine), Image.BOX)
        cover.append(np.asarray(m, np.float32) / 255.0)
    kind = np.zeros((GRID, GRID), np.int64)
    color = np.zeros((GRID, GRID), np.int64)
    box = np.zeros((GRID, GRID, 4), np.float32)
    occ = np.zeros((GRID, GRID, SUB * SUB), np.float32)
    if sc.text_box is not None:
        x0, y0, x1, y1 = (v / S * GRID for v in sc.text_box)
        for r in range(GRID):
            for c in range(GRID):
                ov = max(0.0, min(x1, c + 1) - max(x0, c)) * max(0.0, min(y1, r + 1) - max(y0, r))
                if ov >= 0.3:
                    kind[r, c] = N_KIND - 1
    if cover:
        cov = np.stack(cover)  # (n_obj, fine, fine)
        per_patch = cov.reshape(len(cover), GRID, SUB, GRID, SUB).mean(axis=(2, 4))
        best = per_patch.argmax(0)
        for r in range(GRID):
            for c in range(GRID):
                j = int(best[r, c])
                if per_patch[j, r, c] >= 0.15:
                    o = sc.objs[j]
                    kind[r, c] = 1 + scenes.SHAPES.index(o.kind)
                    color[r, c] = 1 + list(scenes.COLORS).index(o.color)
                    box[r, c] = np.array(o.box, np.float32) / S
        union = cov.max(0).reshape(GRID, SUB, GRID, SUB).transpose(0, 2, 1, 3)
        occ = (union.reshape(GRID, GRID, SUB * SUB) >= 0.5).astype(np.float32)
    return kind.reshape(-1), color.reshape(-1), occ.reshape(-1, SUB * SUB), box.reshape(-1, 4)


def word_layout(sc, tok, font):
    """The rendered word's tokenizer pieces and where its characters end: (piece ids, the piece
    index of each character, each character's right edge in font units). Character spans are
    proportional to the default font's advance widths across the text box. None when the scene
    has no word or its pieces do not spell it character for character."""
    if not sc.word or sc.text_box is None:
        return None
    word = sc.word
    ends = [font.getlength(word[:j + 1]) for j in range(len(word))]
    pieces = tok.tokenize(word)
    owner = []
    for k, pc in enumerate(pieces):
        owner += [k] * len(pc.replace("\u2581", ""))
    if len(owner) != len(word):
        return None
    return tok.convert_tokens_to_ids(pieces), owner, ends


def reading_targets(data, tok):
    """Per-patch reading targets (training only), from the cached scenes' word and text box: for
    each patch the text covers (aux_kind == text), the character under the patch's centre (the
    vision probe's target) and the tokenizer piece of the OCR answer that holds it (the decoder's
    target at that image position). (N, GRID*GRID) each, 0 / -1 where none."""
    from PIL import ImageFont
    font = ImageFont.load_default(size=64)
    n = len(data["scenes"])
    char = torch.zeros((n, GRID * GRID), dtype=torch.long)
    piece = torch.full((n, GRID * GRID), -1, dtype=torch.long)
    kinds = data["aux_kind"]
    for i, sc in enumerate(data["scenes"]):
        layout = word_layout(sc, tok, font)
        if layout is None:
            continue
        ids, owner, ends = layout
        word = sc.word
        x0, _, x1, _ = (v / sc.size * GRID for v in sc.text_box)
        for r in range(GRID):
            for c in range(GRID):
                if int(kinds[i, r * GRID + c]) != N_KIND - 1:
                    continue
                x = (c + 0.5 - x0) / max(x1 - x0, 1e-6) * ends[-1]
                j = min(len(word) - 1, max(0, next((q for q, e in enumerate(ends) if x < e), len(word) - 1)))
                ch = word[j].lower()
                char[i, r * GRID + c] = 1 + CHARS.index(ch) if ch in CHARS else 0
                piece[i, r * GRID + c] = ids[owner[j]]
    return char, piece


def build_cache(n, seed0, vae_encoder, path, numbers):
    """The rendered training scenes, their aux targets and mask codes, loaded from `path` when it
    holds at least `n` scenes drawn with the same `numbers` (caches without the key: open numbers)."""
    if os.path.exists(path):
        d = torch.load(path, weights_only=False)
        if len(d["images"]) >= n and "aux_kind" in d and d.get("numbers") == numbers:
            return d
        print(f"cache {path} does not match (scenes, or --numbers): rebuilding it", flush=True)
    t0 = time.time()
    images = np.zeros((n, RES, RES, 3), np.uint8)
    metas = []
    crops = []
    aux = [[], [], [], []]
    for i in range(n):
        sc, arr = render(seed0 + i, numbers)
        images[i] = arr
        for a, v in zip(aux, aux_targets(sc)):
            a.append(v)
        for o in sc.objs:
            crops.append(scenes.mask_crop(o))
            o.mask = None
        sc.image = None
        metas.append(sc)
    x = torch.from_numpy(np.stack(crops))[:, None] * 2 - 1
    codes = []
    with torch.no_grad():
        for j in range(0, len(x), 512):
            codes.append(vae_encoder(x[j:j + 512]))
    codes = torch.cat(codes).numpy()
    k = 0
    for sc in metas:
        for o in sc.objs:
            o.codes = [int(c) for c in codes[k]]
            k += 1
    d = {"images": torch.from_numpy(images), "scenes": metas, "numbers": numbers,
         "aux_kind": torch.from_numpy(np.stack(aux[0])), "aux_color": torch.from_numpy(np.stack(aux[1])),
         "aux_occ": torch.from_numpy(np.stack(aux[2])), "aux_box": torch.from_numpy(np.stack(aux[3]))}
    torch.save(d, path)
    print(f"cache {path}: {n} images in {time.time() - t0:.0f}s", flush=True)
    return d


class Example(NamedTuple):
    """One training sequence: prefix and suffix token ids, and its grounding targets as
    (position in the sequence, four <loc> ids) tuples."""
    pre: list
    suf: list
    grounding: list


AUX_KEYS = ("aux_kind", "aux_color", "aux_occ", "aux_box", "aux_char", "aux_piece")


class Batcher:
    """Random (scene, task) examples from the cache, batched as PaliGemmaProcessor builds them:
    `<image>`x64 `<bos>` prompt `\\n` as the prefix (token_type_ids 0), answer `<eos>` as the
    suffix (token_type_ids 1, the only labelled tokens)."""

    def __init__(self, tok, data, seed, image_token_id, caption_order):
        self.tok = tok
        self.data = data
        self.caption_order = caption_order  # scenes.Scene.ordered: the order captions name shapes in
        self.rng = np.random.default_rng(seed)
        self.cache = {}
        self.img_id = image_token_id
        self.loc0 = tok.convert_tokens_to_ids("<loc0000>")
        # every single-piece shape noun (en/de/fr, with and without the word-start mark) -> kind; the
        # grounding targets look for them in prompts (which are English: "▁circle")
        nouns = {}
        for k in scenes.SHAPES:
            for word in (k, scenes.DE_NOUN[k][0], scenes.FR_NOUN[k][0]):
                for piece in (word, "\u2581" + word):
                    i = tok.convert_tokens_to_ids(piece)
                    if i is not None and i != tok.unk_token_id:
                        nouns[i] = k
        self.noun_kind = nouns
        self.tasks = list(TASK_WEIGHTS)
        self.p = np.array([TASK_WEIGHTS[t] for t in self.tasks])
        self.p /= self.p.sum()

    def enc(self, s):
        v = self.cache.get(s)
        if v is None:
            v = self.tok.encode(s, add_special_tokens=False)
            self.cache[s] = v
        return v

    def example(self, i, task):
        sc = self.data["scenes"][i]
        if task == "ocr" and sc.word is None:
            task = "answer"
        prompt, target, _ = scenes.make_example(sc, task, self.rng, seg_codes=lambda o: o.codes,
                                               caption_order=self.caption_order)
        pre = [self.img_id] * N_IMG + [2] + self.enc(prompt + "\n")
        suf = self.enc(target) + [1]
        return Example(pre, suf, self.grounding(sc, pre))

    def grounding(self, sc, pre):
        """(position, four <loc> ids) for every prompt token naming a shape that is in the scene:
        the training-only target asking that token's output for the named shape's box."""
        out = []
        for pos in range(N_IMG + 1, len(pre)):
            kind = self.noun_kind.get(pre[pos])
            o = sc.find(kind) if kind else None
            if o is not None:
                out.append((pos, [self.loc0 + v for v in scenes.loc_bins(o.box, sc.size)]))
        return out

    def batch(self, bs):
        """(model inputs with labels, training-only targets): the per-patch targets of the batch's
        images (`aux_*`) and the grounding targets' batch rows, positions and <loc> ids."""
        idx = self.rng.integers(len(self.data["images"]), size=bs)
        tasks = self.rng.choice(len(self.tasks), size=bs, p=self.p)
        exs = [self.example(int(i), self.tasks[t]) for i, t in zip(idx, tasks)]
        self.last_tasks = [self.tasks[t].split()[0] for t in tasks]  # for per-task loss logging
        L = max(len(ex.pre) + len(ex.suf) for ex in exs)
        ids = torch.zeros((bs, L), dtype=torch.long)
        tt = torch.zeros((bs, L), dtype=torch.long)
        am = torch.zeros((bs, L), dtype=torch.long)
        lab = torch.full((bs, L), -100, dtype=torch.long)
        for b, ex in enumerate(exs):
            p, s = ex.pre, ex.suf
            ids[b, :len(p) + len(s)] = torch.tensor(p + s)
            tt[b, len(p):len(p) + len(s)] = 1
            am[b, :len(p) + len(s)] = 1
            lab[b, len(p):len(p) + len(s)] = torch.tensor(s)
        px = self.data["images"][torch.from_numpy(idx)].permute(0, 3, 1, 2).float()
        px = (px / 255.0 - 0.5) / 0.5
        ti = torch.from_numpy(idx)
        aux = {k: self.data[k][ti] for k in AUX_KEYS if k in self.data}
        ground = [(b, pos, locs) for b, ex in enumerate(exs) for pos, locs in ex.grounding]
        if ground:
            for j, name in enumerate(("row", "pos", "locs")):
                aux[f"ground_{name}"] = torch.tensor([g[j] for g in ground])
        return dict(input_ids=ids, token_type_ids=tt, attention_mask=am, labels=lab, pixel_values=px), aux
