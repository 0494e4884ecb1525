"""Train the bundled PaliGemma 2 demo model end to end on synthetic scenes.

    python tools/demo/train.py                 # VAE (if missing) + tokenizer (if missing) + model
    python tools/demo/train.py --minutes 57    # time budget for the model training (the default)

The defaults are the shipped model's run. Training-only losses (heads not exported) teach the
model to look, read and point within the hour: per-patch probes on the SigLIP output (what covers
the patch, its colour, sub-cell occupancy, box, the character under it), per-patch word targets
on the decoder's image positions (kind, colour and box <loc> tokens, the OCR piece, through the
tied embedding), and grounding targets (each prompt word naming a shape asks for that shape's
box <loc> tokens). See Models/demo/README.md.

Writes Models/demo/: model.safetensors (bf16), config.json, generation_config.json,
preprocessor_config.json, tokenizer files, vae-oid.npz. Logs in tools/demo/logs/.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import scenes  # noqa: E402

RES = 128
PATCH = 16
N_IMG = (RES // PATCH) ** 2
TASK_WEIGHTS = {"caption en": 0.06, "caption de": 0.06, "caption fr": 0.06, "answer": 0.42,
                "detect": 0.16, "ocr": 0.10, "segment": 0.14}


def model_config(vocab_size, image_token_id, args):
    from transformers import PaliGemmaConfig
    th = args.text_hidden
    cfg = PaliGemmaConfig(
        vision_config=dict(
            model_type="siglip_vision_model", hidden_size=args.vision_hidden,
            intermediate_size=args.vision_hidden * 4, num_hidden_layers=args.vision_layers,
            num_attention_heads=args.vision_hidden // 64, image_size=RES, patch_size=PATCH,
            num_channels=3, vision_use_head=False, layer_norm_eps=1e-6,
            hidden_act="gelu_pytorch_tanh", projection_dim=th),
        text_config=dict(
            model_type="gemma2", hidden_size=th, intermediate_size=args.text_mlp,
            num_hidden_layers=args.text_layers, num_attention_heads=4, num_key_value_heads=2,
            head_dim=64, query_pre_attn_scalar=64, vocab_size=vocab_size, sliding_window=64,
            attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
            max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=10000.0,
            hidden_activation="gelu_pytorch_tanh", pad_token_id=0, eos_token_id=1, bos_token_id=2,
            tie_word_embeddings=True),
        image_token_index=image_token_id, vocab_size=vocab_size, projection_dim=th,
        pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=True)
    return cfg


# --- data ------------------------------------------------------------------------------

def render(seed, numbers, sizes=(128, 128, 128, 128, 160, 192, 256)):
    rng = np.random.default_rng(seed + 7)
    size = int(sizes[int(rng.integers(len(sizes)))])
    sc = scenes.sample_scene(seed, size, numbers=numbers)
    img = sc.image
    if size != RES:
        img = img.resize((RES, RES), Image.BICUBIC)  # what the processor does
    return sc, np.asarray(img, dtype=np.uint8)


GRID = RES // PATCH  # patches per side
SUB = 4  # occupancy sub-cells per patch side for the auxiliary head
N_KIND = len(scenes.SHAPES) + 2  # background, shapes..., text
N_COLOR = len(scenes.COLORS) + 1  # none, colours...


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


def rank_targets(data, order):
    """Per-patch caption-order targets (training only): 1 + the covering shape's index in the order
    captions name shapes in (`order`, see scenes.Scene.ordered; reading order: top row first, left to
    right), 0 where no shape covers the patch. (N, GRID*GRID), from the cached scenes and their aux_kind."""
    kinds = data["aux_kind"]
    rank = torch.zeros_like(kinds)
    for i, sc in enumerate(data["scenes"]):
        lookup = torch.zeros(N_KIND, dtype=torch.long)
        for r, o in enumerate(sc.ordered(order)):
            lookup[1 + scenes.SHAPES.index(o.kind)] = r + 1
        rank[i] = lookup[kinds[i]]
    return rank


N_RANK = 5  # none, 1st..4th (scenes have 1-4 shapes)


CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
N_CHAR = len(CHARS) + 1  # none, characters...
N_PLACE = 1 + max(len(w) for w in scenes.WORDS + scenes.CLOSED_NUMBERS + ["999"])  # none, 1st..5th character


def word_layout(sc, tok, font):
    """The rendered word's tokenizer pieces and where they sit: (piece ids, the piece index of each
    character, each character's right edge in font units, each piece's pixel box x0, y0, x1, y1).
    Character spans are proportional to the default font's advance widths across the text box.
    None when the scene has no word or its pieces do not spell it character for character."""
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
    x0, y0, x1, y1 = sc.text_box
    at = lambda e: x0 + e / ends[-1] * (x1 - x0)  # noqa: E731
    boxes = []
    for k in range(len(pieces)):
        first, last = owner.index(k), len(owner) - 1 - owner[::-1].index(k)
        boxes.append((at(ends[first - 1] if first else 0.0), y0, at(ends[last]), y1))
    return tok.convert_tokens_to_ids(pieces), owner, ends, boxes


def reading_targets(data, tok, loc0):
    """Per-patch reading targets (training only), from the cached scenes' word and text box:
    for each patch the text covers (aux_kind == text), the character under the patch's centre,
    the tokenizer piece of the OCR answer that holds that character, that character's place in
    the word (1 for the first: which digit of a number the patch shows), and the four <loc> ids
    of that piece's box. (N, GRID*GRID) each, 0 / -1 / 0 where none; boxes (N, GRID*GRID, 4), -1.
    Also, per scene, the word's piece ids and each piece's four <loc> ids (None without a word),
    for the reading-pointer targets."""
    from PIL import ImageFont
    font = ImageFont.load_default(size=64)
    n = len(data["scenes"])
    char = torch.zeros((n, GRID * GRID), dtype=torch.long)
    piece = torch.full((n, GRID * GRID), -1, dtype=torch.long)
    place = torch.zeros((n, GRID * GRID), dtype=torch.long)
    piece_box = torch.full((n, GRID * GRID, 4), -1, dtype=torch.long)
    word_pieces = [None] * n
    kinds = data["aux_kind"]
    for i, sc in enumerate(data["scenes"]):
        layout = word_layout(sc, tok, font)
        if layout is None:
            continue
        ids, owner, ends, boxes = layout
        locs = [[loc0 + v for v in scenes.loc_bins(box, sc.size)] for box in boxes]
        word_pieces[i] = (ids, locs)
        locs_t = torch.tensor(locs)
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
                place[i, r * GRID + c] = 1 + j
                piece_box[i, r * GRID + c] = locs_t[owner[j]]
    return char, piece, place, piece_box, word_pieces


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


PHRASE_TASKS = ("caption", "detect")  # answers the phrase-count probe can count separators in


class Example(NamedTuple):
    """One training sequence: prefix and suffix token ids, and its training-only targets as
    (position in the sequence, *values) tuples: grounding (four <loc> ids), plan (box fractions,
    head), phrase (phrase index) and spelling (four <loc> ids: the box of the word's piece written next)."""
    pre: list
    suf: list
    grounding: list
    plan: list
    phrases: list
    spelling: list


def add_targets(aux, prefix, examples, field, names):
    """Gather one kind of position targets from a batch's examples into aux tensors:
    `prefix_row` (batch row), `prefix_pos` (sequence position) and `prefix_<name>` per value."""
    entries = [(b, *t) for b, ex in enumerate(examples) for t in getattr(ex, field)]
    if entries:
        for j, name in enumerate(("row", "pos") + names):
            aux[f"{prefix}_{name}"] = torch.tensor([e[j] for e in entries])


class Batcher:
    def __init__(self, tok, data, seed, image_token_id, number_weight=1.0, plan_targets=False, phrase_tasks=(),
                 spelling_targets=False, caption_order="kind"):
        self.tok = tok
        self.data = data
        self.caption_order = caption_order  # scenes.Scene.ordered: the order captions name shapes in
        self.rng = np.random.default_rng(seed)
        self.cache = {}
        self.img_id = image_token_id
        self.loc0 = tok.convert_tokens_to_ids("<loc0000>")
        # every single-piece shape noun (en/de/fr, with and without the word-start mark) -> kind: the
        # prompt's nouns for the grounding targets (prompts are English: "▁circle"), the answer's for the
        # plan targets; and the caption separators that precede the next object's phrase
        nouns = {}
        for k in scenes.SHAPES:
            for word in (k, scenes.DE_NOUN[k][0], scenes.FR_NOUN[k][0]):
                for piece in (word, "\u2581" + word):
                    i = tok.convert_tokens_to_ids(piece)
                    if i is not None and i != tok.unk_token_id:
                        nouns[i] = k
        self.noun_kind = nouns
        self.plan_targets = plan_targets
        assert set(phrase_tasks) <= set(PHRASE_TASKS), phrase_tasks  # main() validates --phrase-tasks
        self.phrase_tasks = tuple(phrase_tasks)  # task names whose answers get phrase-count targets
        self.quote = tok.convert_tokens_to_ids("\u2581\"")  # opens the caption's `with the word "…"`
        self.separators = {tok.convert_tokens_to_ids(p) for p in (",", "\u2581and", "\u2581und", "\u2581et")}
        self.detect_separator = tok.convert_tokens_to_ids("\u2581;")  # joins a detection's objects
        self.spelling_targets = spelling_targets
        # scenes showing a number are drawn `number_weight` times as often; None: uniform, the shipped
        # run's draw (the same batches as before this option)
        self.scene_cdf = None
        if number_weight != 1.0:
            w = np.array([number_weight if (sc.word or "").isdigit() else 1.0 for sc in data["scenes"]])
            self.scene_cdf = np.cumsum(w / w.sum())
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
        return Example(pre, suf, self.grounding(sc, pre), self.plan(sc, task, pre, suf) if self.plan_targets else [],
                       self.phrases(task, pre, suf), self.spelling(i, task, pre, suf) if self.spelling_targets else [])

    def spelling(self, i, task, pre, suf):
        """(position, four <loc> ids) for the training-only reading-pointer targets: at each position
        whose next token is a piece of the OCR answer or of a caption's quoted word, the box of that
        piece in the image. A number is written one digit per piece and misread by repeating or
        skipping digits ('622' -> '333'): the decoder loses which digit it is on. This asks it to
        say where the next one is, as the grounding targets make a prompt word say where its shape is."""
        kind = task.split()[0]
        if kind == "ocr":
            start = len(pre) - 1  # the prompt's last position writes the first piece
        elif kind == "caption" and self.quote in suf:
            start = len(pre) + suf.index(self.quote)
        else:
            return []
        word = self.data["word_pieces"][i]  # reading_targets' pieces and their boxes
        if word is None:
            return []
        ids, locs = word
        if suf[start - len(pre) + 1:][:len(ids)] != ids:  # the answer spells the word with other pieces
            return []
        return [(start + k, box) for k, box in enumerate(locs)]

    def phrases(self, task, pre, suf):
        """(position, phrase index) for the training-only phrase-count targets of a caption (and,
        with `detect` in phrase_tasks, of a detection): at the prompt's end and at every answer
        token up to a caption's quoted word, how many separators (`,`, `and`, `und`, `et`; a
        detection's ` ;`) the answer has written so far, i.e. which of its shape phrases or asked
        objects (0-3) is being written or comes next. A caption that names a shape twice, or a
        detection that answers one query twice, loses this count."""
        kind = task.split()[0]
        if kind not in self.phrase_tasks:
            return []
        separators = self.separators if kind == "caption" else {self.detect_separator}
        out = [(len(pre) - 1, 0)]
        k = 0
        for j, t in enumerate(suf):
            if kind == "caption" and t == self.quote:
                break
            k += t in separators
            out.append((len(pre) + j, min(k, N_RANK - 2)))
        return out

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

    def plan(self, sc, task, pre, suf):
        """(position, box fractions, head) for the training-only plan targets in the answer:
        head 0 ("bind") at every noun naming a shape of the scene, whose middle-layer state should
        hold that shape's box; head 1 ("next") at a caption's prompt end and at each separator
        before the next object's phrase, whose last-layer state should hold the box of the object
        the caption names next (reading order), the choice a caption that names a shape twice or
        swaps two gets wrong."""
        out = []
        S = float(sc.size)
        frac = lambda o: [v / S for v in o.box]  # noqa: E731
        for j, t in enumerate(suf):
            if task == "ocr" or t == self.quote:
                break  # the rendered word ("star") is text, not the shape
            kind = self.noun_kind.get(t)
            o = sc.find(kind) if kind else None
            if o is not None:
                out.append((len(pre) + j, frac(o), 0))
        if task.startswith("caption"):
            objs = sc.ordered(self.caption_order)
            starts = [len(pre) - 1] + [len(pre) + j for j, t in enumerate(suf) if t in self.separators]
            for pos, o in zip(starts, objs):  # the first n-1 separators join the n phrases
                out.append((pos, frac(o), 1))
        return out

    def batch(self, bs):
        if self.scene_cdf is None:
            idx = self.rng.integers(len(self.data["images"]), size=bs)
        else:
            idx = np.minimum(np.searchsorted(self.scene_cdf, self.rng.random(bs)), len(self.scene_cdf) - 1)
        tasks = self.rng.choice(len(self.tasks), size=bs, p=self.p)
        exs = [self.example(int(i), self.tasks[t]) for i, t in zip(idx, tasks)]
        self.last_tasks = [self.tasks[t].split()[0] for t in tasks]  # for per-task loss logging
        L = max(len(ex.pre) + len(ex.suf) for ex in exs)
        ids = torch.zeros((bs, L), dtype=torch.long)
        tt = torch.zeros((bs, L), dtype=torch.long)
        am = torch.zeros((bs, L), dtype=torch.long)
        lab = torch.full((bs, L), -100, dtype=torch.long)
        for b, (p, s, *_) in enumerate(exs):
            ids[b, :len(p) + len(s)] = torch.tensor(p + s)
            tt[b, len(p):len(p) + len(s)] = 1
            am[b, :len(p) + len(s)] = 1
            lab[b, len(p):len(p) + len(s)] = torch.tensor(s)
        px = self.data["images"][torch.from_numpy(idx)].permute(0, 3, 1, 2).float()
        px = (px / 255.0 - 0.5) / 0.5
        ti = torch.from_numpy(idx)
        aux_keys = ("aux_kind", "aux_color", "aux_occ", "aux_box", "aux_char", "aux_piece", "aux_rank", "aux_place",
                    "aux_piece_box")
        aux = {k: self.data[k][ti] for k in aux_keys if k in self.data}
        add_targets(aux, "ground", exs, "grounding", ("locs",))
        add_targets(aux, "plan", exs, "plan", ("box", "head"))  # box: float32, torch's default for floats
        add_targets(aux, "phrase", exs, "phrases", ("idx",))
        add_targets(aux, "spell", exs, "spelling", ("locs",))
        return dict(input_ids=ids, token_type_ids=tt, attention_mask=am, labels=lab, pixel_values=px), aux


def patch_word_targets(tok, aux, loc0):
    """Per image position, the tokens the decoder's output there should predict (training only):
    the covering shape's kind and colour words (the `▁word` pieces used in prompts and captions)
    and its four box `<loc>` tokens; on text, the OCR answer's piece under the patch (and, with the
    reading-pointer targets, that piece's four box `<loc>` tokens in the shape's box columns).
    Shape (B, GRID*GRID, 7); -1 where nothing applies."""
    kind_ids = torch.tensor([-1] + [tok.convert_tokens_to_ids("▁" + k) for k in scenes.SHAPES] + [-1])
    color_ids = torch.tensor([-1] + [tok.convert_tokens_to_ids("▁" + c) for c in scenes.COLORS])
    box = aux["aux_box"].float()  # x0, y0, x1, y1 fractions
    locs = loc0 + (box[..., [1, 0, 3, 2]] * 1023).round().long().clamp(0, 1023)
    t = torch.cat([kind_ids[aux["aux_kind"]][..., None], color_ids[aux["aux_color"]][..., None], locs], -1)
    t[aux["aux_color"] == 0] = -1
    if "aux_piece_box" in aux:
        text = aux["aux_piece_box"][..., 0] >= 0
        t[..., 2:6][text] = aux["aux_piece_box"][text]
    return torch.cat([t, aux["aux_piece"][..., None]], -1) if "aux_piece" in aux else t


def decoder_aux_loss(logits, targets):
    """Mean negative log-likelihood of each patch's targets at the image positions' outputs."""
    lp = torch.log_softmax(logits[:, :targets.shape[1]].float(), -1)
    valid = targets >= 0
    got = lp.gather(-1, targets.clamp(min=0))
    return -(got * valid).sum() / valid.sum().clamp(min=1)


def grounding_loss(logits, aux):
    """Mean negative log-likelihood of the named shape's four box <loc> tokens at the output of
    each prompt token that names a shape in the scene (`detect triangle`, `where is the star?`):
    binds the query word to its shape's patches in the prefix, where every position sees all."""
    if "ground_pos" not in aux:
        return torch.zeros(())
    rows = logits[aux["ground_row"], aux["ground_pos"]].float()  # (n, vocab)
    lp = torch.log_softmax(rows, -1)
    return -lp.gather(-1, aux["ground_locs"]).mean()


def reading_pointer_loss(state, aux, embedding, loc0):
    """Mean negative log-likelihood of the next piece's four box <loc> tokens (Batcher.spelling) in
    the decoder state `state` (--spell-layer's output) at each position writing the OCR answer or a quoted word,
    read through the tied embedding's <loc> rows (normalised as the final norm would, without its
    weight): the state should hold where to read next in the code the text patches' outputs use."""
    if "spell_pos" not in aux:
        return torch.zeros(())
    x = rms_normalize(state[aux["spell_row"], aux["spell_pos"]].float())  # (n, width)
    lp = torch.log_softmax(x @ embedding[loc0:loc0 + 1024].float().T, -1)  # (n, 1024)
    return -lp.gather(-1, aux["spell_locs"] - loc0).mean()


def rms_normalize(x):
    """Scale each state to unit RMS (what the decoder's next norm does, without its weight), so a
    probe on a residual-stream state sees the features the next layer sees."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class PlanHeads(torch.nn.Module):
    """Training-only linear probes on the decoder's states at the plan targets' positions (not
    exported): "bind" reads a shape's box from the middle layer's output at a noun naming it, so
    the layers above can look back at which shapes the answer has named; "next" reads, from the
    last layer's output at a caption separator, the box of the object the caption names next."""

    def __init__(self, width):
        super().__init__()
        self.bind = torch.nn.Linear(width, 4)
        self.next = torch.nn.Linear(width, 4)

    def loss(self, mid, last, aux):
        if "plan_pos" not in aux:
            return torch.zeros(())
        rows, pos = aux["plan_row"], aux["plan_pos"]
        bind = torch.sigmoid(self.bind(rms_normalize(mid[rows, pos].float())))
        nxt = torch.sigmoid(self.next(rms_normalize(last[rows, pos].float())))
        pred = torch.where(aux["plan_head"][:, None] == 0, bind, nxt)
        return 5 * (pred - aux["plan_box"]).abs().mean()  # same scale as AuxHeads' box term


class CountProbe(torch.nn.Module):
    """Training-only linear probe (not exported) on the middle decoder layer's output at the
    positions of one kind of count target, `aux["<key>_row"]`, `["<key>_pos"]`, `["<key>_idx"]`:
    "phrase", which shape phrase (0-3) a caption is writing (with --phrase-tasks caption,detect also
    which query a detection is answering). With the vision tower's matching probe (--rank-weight)
    the layers above can pick the next shape by matching the count to a patch's place instead of
    recalling what was written."""

    def __init__(self, width, classes, key):
        super().__init__()
        self.idx = torch.nn.Linear(width, classes)
        self.key = key

    def loss(self, mid, aux):
        if f"{self.key}_pos" not in aux:
            return torch.zeros(())
        x = rms_normalize(mid[aux[f"{self.key}_row"], aux[f"{self.key}_pos"]].float())
        return torch.nn.functional.cross_entropy(self.idx(x), aux[f"{self.key}_idx"])


class AuxHeads(torch.nn.Module):
    """Training-only linear probes on the vision tower's patch outputs (not exported)."""

    def __init__(self, width, read_weight=0.0, rank_weight=0.0, place_weight=0.0):
        super().__init__()
        self.read_weight = read_weight
        self.rank_weight = rank_weight
        self.place_weight = place_weight
        self.kind = torch.nn.Linear(width, N_KIND)
        self.color = torch.nn.Linear(width, N_COLOR)
        self.occ = torch.nn.Linear(width, SUB * SUB)
        self.box = torch.nn.Linear(width, 4)
        if read_weight > 0:
            self.char = torch.nn.Linear(width, N_CHAR)
        if rank_weight > 0:
            self.rank = torch.nn.Linear(width, N_RANK)
        if place_weight > 0:  # created last: without it the other heads' initial weights are unchanged
            self.place = torch.nn.Linear(width, N_PLACE)

    def loss(self, feats, aux):
        f = feats.float()  # (B, GRID*GRID, width)
        l_kind = torch.nn.functional.cross_entropy(self.kind(f).flatten(0, 1), aux["aux_kind"].flatten())
        l_color = torch.nn.functional.cross_entropy(self.color(f).flatten(0, 1), aux["aux_color"].flatten())
        l_occ = torch.nn.functional.binary_cross_entropy_with_logits(self.occ(f), aux["aux_occ"])
        has = (aux["aux_color"] > 0).float()[..., None]
        l_box = ((torch.sigmoid(self.box(f)) - aux["aux_box"]).abs() * has).sum() / has.sum().clamp(min=1) / 4
        total = l_kind + l_color + l_occ + 5 * l_box
        if self.read_weight > 0:
            total = total + self.read_weight * text_patch_loss(self.char, f, aux["aux_char"])
        if self.rank_weight > 0:
            l_rank = torch.nn.functional.cross_entropy(self.rank(f).flatten(0, 1), aux["aux_rank"].flatten())
            total = total + self.rank_weight * l_rank
        if self.place_weight > 0:
            total = total + self.place_weight * text_patch_loss(self.place, f, aux["aux_place"])
        return total


def text_patch_loss(head, feats, target):
    """Cross-entropy of a probe over the patches that show text (target > 0; 0 marks the others),
    zero when a batch has none."""
    text = target > 0
    return torch.nn.functional.cross_entropy(head(feats[text]), target[text]) if text.any() else torch.zeros(())


def init_loc_embeddings(model, loc0, std=0.02):
    """Smooth (sinusoidal) init for <locXXXX> rows so neighbouring bins start out similar."""
    emb = model.get_input_embeddings().weight
    d = emb.shape[1]
    k = torch.arange(1024, dtype=torch.float32)[:, None] / 1023.0
    freqs = torch.exp(torch.linspace(math.log(0.5), math.log(300.0), d // 2))[None]
    feats = torch.cat([torch.sin(2 * math.pi * k * freqs), torch.cos(2 * math.pi * k * freqs)], 1)
    feats = feats / feats.std() * std
    with torch.no_grad():
        emb[loc0:loc0 + 1024] = feats + torch.randn_like(feats) * std * 0.3


def init_projector(model, gain):
    """Text rows enter the decoder as embed_tokens[id] * sqrt(hidden); image rows are the
    projector's output, unscaled. Start the image rows at `gain` times the text rows' RMS
    (the vision tower's post-layernorm output has unit variance per feature)."""
    lin = model.model.multi_modal_projector.linear
    th = model.config.text_config.hidden_size
    target = gain * model.config.text_config.initializer_range * th ** 0.5
    with torch.no_grad():
        lin.weight.normal_(0.0, target / lin.in_features ** 0.5)
        lin.bias.zero_()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "Models", "demo"))
    ap.add_argument("--minutes", type=float, default=57.0, help="time budget for model training")
    ap.add_argument("--max-steps", type=int, default=100000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--n-train", type=int, default=30000)
    ap.add_argument("--vision-hidden", type=int, default=192)
    ap.add_argument("--vision-layers", type=int, default=4)
    ap.add_argument("--text-hidden", type=int, default=320)
    ap.add_argument("--text-layers", type=int, default=4)
    ap.add_argument("--text-mlp", type=int, default=1024)
    ap.add_argument("--bf16", type=int, default=0,
                    help="bf16 autocast for matmuls (off: on CPUs whose bf16 dot products run at half the "
                         "FMA rate, such as this Xeon, float32 steps are 1.5x faster: 0.42 vs 0.63 s)")
    ap.add_argument("--threads", type=int, default=2)
    scenes.add_data_args(ap)  # --numbers, --caption-order: evaluate with the same
    ap.add_argument("--cache", default=None,
                    help="rendered scenes + targets (built on first use, about 2 minutes; delete it after changing scenes.py)")
    ap.add_argument("--ckpt", default="/tmp/demo_model_ckpt")
    ap.add_argument("--resume", action="store_true", help="continue from --ckpt (fresh optimizer)")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--decay-frac", type=float, default=0.5,
                    help="cosine decay over the last fraction of the budget (constant before)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--aux-weight", type=float, default=0.5,
                    help="weight of the training-only per-patch vision losses (0 turns them off)")
    ap.add_argument("--dec-aux-weight", type=float, default=0.3,
                    help="weight of the training-only loss asking each image position's decoder output "
                         "to name its shape, colour and box tokens (0 turns it off)")
    ap.add_argument("--ground-weight", type=float, default=0.5,
                    help="weight of the training-only loss asking each prompt word that names a shape in the "
                         "scene for that shape's four box <loc> tokens (0 turns it off)")
    ap.add_argument("--plan-weight", type=float, default=0.0,
                    help="weight of the training-only plan targets: each answer noun naming a shape gives its box "
                         "from the middle layer, each caption separator the box of the object named next (0: off; a "
                         "one-hour run at 0.5 with --number-weight 2 scored lower on every task)")
    ap.add_argument("--number-weight", type=float, default=1.0,
                    help="draw scenes that show a number this many times as often as the others (numbers are "
                         "read digit by digit, words almost as wholes; 1: uniform; a one-hour run at 2 read fewer numbers, "
                         "and its captions fell to 43-47 percent)")
    ap.add_argument("--read-weight", type=float, default=0.2,
                    help="weight of the reading targets: a per-patch character probe on SigLIP's output, and the "
                         "OCR answer's piece as a decoder target on text patches (0 turns them off)")
    ap.add_argument("--phrase-weight", type=float, default=0.0,
                    help="weight of the training-only phrase-count probe on the middle decoder layer at caption "
                         "positions: which shape phrase the caption is writing (0: off, the shipped run)")
    ap.add_argument("--phrase-tasks", default="caption",
                    help="with --phrase-weight: the answers that get phrase-count targets, 'caption' or "
                         "'caption,detect' (a detection's count is the ` ;` written so far: which query it answers)")
    ap.add_argument("--rank-weight", type=float, default=0.0,
                    help="weight (within the vision targets) of a per-patch probe for the covering shape's place in "
                         "reading order, the order captions name shapes in (0: off, the shipped run)")
    ap.add_argument("--place-weight", type=float, default=0.0,
                    help="with --read-weight: weight (within the vision targets) of a per-patch probe for the place "
                         "in the word of the character under a text patch (1st-5th: which digit of a number, as numbers "
                         "are read one piece per digit and misreadings repeat digits, '622' -> '333'; 0: off, the "
                         "shipped run; at 1 a one-hour run lost shapes and colours, see the model card)")
    ap.add_argument("--spell-weight", type=float, default=0.0,
                    help="with --read-weight: weight of the training-only reading-pointer targets: where the OCR "
                         "answer or a caption's quoted word is written, the --spell-layer output, read "
                         "through the tied embedding, should give the four <loc> tokens of the box of the piece "
                         "written next, and each text patch's decoder output its piece's box (as shape patches "
                         "give their shape's), so the layers above fetch the next digit by place the way the "
                         "grounding targets fetch a named shape (0: off, the shipped run; at 1 their loss stayed near "
                         "uniform, 6.6 of 6.93, and every score fell, see the model card)")
    ap.add_argument("--spell-layer", type=int, default=-2,
                    help="decoder layer whose output --spell-weight's targets read (Python index: -2, the one "
                         "before last; at the middle layer, 1, the targets' loss fell from 7.1 to only 6.5 in "
                         "1,600 steps, against 5.6 for the grounding targets on the last layer)")
    ap.add_argument("--ema", type=float, default=0.0,
                    help="also keep an exponential moving average of the weights over the decay phase, with this "
                         "decay per step (e.g. 0.998), and export it to OUT-ema (0: off)")
    ap.add_argument("--read-pieces", type=int, default=1,
                    help="with --read-weight: also ask each text patch's decoder output for the OCR answer's "
                         "piece under it (0: only the vision-side character probe)")
    ap.add_argument("--mix", default="",
                    help="task mix overrides, e.g. 'answer=0.36,detect=0.2' (renormalised; default: TASK_WEIGHTS)")
    ap.add_argument("--compile", type=int, default=1,
                    help="torch.compile the two towers' forward passes: 0.36 against 0.42 s per step here, so about "
                         "1.15x the steps in the same minutes (0: eager)")
    ap.add_argument("--proj-gain", type=float, default=1.0,
                    help="initial image-row scale relative to text rows")
    args = ap.parse_args()
    for item in filter(None, args.mix.split(",")):
        name, _, value = item.partition("=")
        keys = [k for k in TASK_WEIGHTS if k == name.strip() or k.startswith(name.strip() + " ")]
        try:
            weight = float(value)
        except ValueError:
            keys = []
        if not keys:
            ap.error(f"--mix: '{item}' is not TASK=WEIGHT with TASK one of {', '.join(TASK_WEIGHTS)}")
        for key in keys:  # "caption=0.1" sets all three languages
            TASK_WEIGHTS[key] = weight
    phrase_tasks = args.phrase_tasks.split(",")
    bad = set(phrase_tasks) - set(PHRASE_TASKS)
    if bad:
        ap.error(f"--phrase-tasks: {', '.join(sorted(bad))} not supported; use 'caption' or 'caption,detect'")
    if args.place_weight > 0 and args.read_weight <= 0:
        ap.error("--place-weight needs the reading targets it is computed with; give --read-weight > 0 too")
    if args.spell_weight > 0 and args.read_weight <= 0:
        ap.error("--spell-weight needs the reading targets' text boxes; give --read-weight > 0 too")
    if not -args.text_layers <= args.spell_layer < args.text_layers:
        ap.error(f"--spell-layer {args.spell_layer}: the decoder has {args.text_layers} layers "
                 f"(0...{args.text_layers - 1}, or -1...-{args.text_layers} from the end)")
    print("task mix: " + ", ".join(f"{k} {v:.2f}" for k, v in TASK_WEIGHTS.items()), flush=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.time()

    # 1. mask VQ-VAE
    vae_npz = os.path.join(args.out, "vae-oid.npz")
    vae_pt = "/tmp/demo_vae.pt"
    if not (os.path.exists(vae_npz) and os.path.exists(vae_pt)):
        import train_vae
        sys.argv = [sys.argv[0], "--out", vae_npz, "--ckpt", vae_pt]
        train_vae.main()
    from vae import VQVAE
    vae = VQVAE(np.load(vae_npz)["_vq_vae._embedding"].shape[1])
    vae.load_state_dict(torch.load(vae_pt))
    vae.eval()

    # 2. tokenizer
    if not os.path.exists(os.path.join(args.out, "tokenizer.json")):
        import tok as tokmod
        tokmod.build(args.out)
    from transformers import AutoTokenizer, PaliGemmaForConditionalGeneration
    tok = AutoTokenizer.from_pretrained(args.out)
    image_id = tok.convert_tokens_to_ids("<image>")
    loc0 = tok.convert_tokens_to_ids("<loc0000>")
    vocab = int(math.ceil(len(tok) / 64) * 64)
    print(f"tokenizer: {len(tok)} pieces, <image>={image_id}, <loc0000>={loc0}, vocab {vocab}", flush=True)

    # 3. data cache
    if args.cache is None:
        args.cache = "/tmp/demo_train_cache_v5.pt" if args.numbers == "closed" else "/tmp/demo_train_cache_v4.pt"
    data = build_cache(args.n_train, 0, vae.encode, args.cache, scenes.numbers_arg(args))
    if args.read_weight > 0:
        data["aux_char"], data["aux_piece"], place, piece_box, word_pieces = reading_targets(data, tok, loc0)
        if not args.read_pieces:
            del data["aux_piece"]
        if args.place_weight > 0:
            data["aux_place"] = place
        if args.spell_weight > 0:
            data["aux_piece_box"] = piece_box
            data["word_pieces"] = word_pieces
        print(f"reading targets: {int((data['aux_char'] > 0).sum())} text patches", flush=True)
    if args.rank_weight > 0:
        data["aux_rank"] = rank_targets(data, args.caption_order)
    print(f"data ready ({time.time() - t_start:.0f}s)", flush=True)

    # 4. model
    cfg = model_config(vocab, image_id, args)
    cfg.text_config._attn_implementation = "eager"
    cfg.vision_config._attn_implementation = "eager"
    cfg._attn_implementation = "eager"
    if args.resume and os.path.exists(args.ckpt):
        model = PaliGemmaForConditionalGeneration.from_pretrained(args.ckpt, attn_implementation="eager",
                                                                  dtype=torch.float32)
    else:
        model = PaliGemmaForConditionalGeneration(cfg)
        init_loc_embeddings(model, loc0)
        init_projector(model, args.proj_gain)
    model.train()
    nparam = sum(p.numel() for p in model.parameters())
    print(f"model: {nparam / 1e6:.2f}M parameters", flush=True)
    heads = AuxHeads(cfg.vision_config.hidden_size, args.read_weight, args.rank_weight, args.place_weight)
    captured = {}
    if args.compile:
        # compile the two towers' forward methods in place: parameters, hooks and checkpoint keys unchanged
        lm, vt = model.model.language_model, model.model.vision_tower
        lm.forward = torch.compile(lm.forward, dynamic=True)
        vt.forward = torch.compile(vt.forward)

    def capture(module, key):
        """Keep `module`'s output (a decoder layer's hidden states, the vision tower's patch
        features) in captured[key] on every forward, for the training-only losses."""
        def hook(m, i, o):
            captured[key] = o.last_hidden_state if hasattr(o, "last_hidden_state") else o[0] if isinstance(o, tuple) else o
        module.register_forward_hook(hook)

    lm_layers = model.model.language_model.layers
    capture(model.model.vision_tower, "feats")
    plan_heads = PlanHeads(cfg.text_config.hidden_size) if args.plan_weight > 0 else None
    phrase_head = CountProbe(cfg.text_config.hidden_size, N_RANK - 1, "phrase") if args.phrase_weight > 0 else None
    if plan_heads or phrase_head:  # the middle decoder state, for the plan and count probes
        capture(lm_layers[len(lm_layers) // 2 - 1], "mid")
    if args.spell_weight > 0:  # the state the reading-pointer targets read
        capture(lm_layers[args.spell_layer], "pointer")
    if plan_heads:  # and the last one
        capture(model.model.language_model.norm, "last")
    params = (list(model.named_parameters()) + [("aux." + n, p) for n, p in heads.named_parameters()]
              + [("plan." + n, p) for n, p in (plan_heads.named_parameters() if plan_heads else [])]
              + [("phrase." + n, p) for n, p in (phrase_head.named_parameters() if phrase_head else [])])
    decay = [p for n, p in params if p.ndim >= 2]
    nodecay = [p for n, p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": nodecay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))
    batcher = Batcher(tok, data, args.seed, image_id, args.number_weight, plan_targets=args.plan_weight > 0,
                      phrase_tasks=phrase_tasks if args.phrase_weight > 0 else (),
                      spelling_targets=args.spell_weight > 0, caption_order=args.caption_order)
    budget = args.minutes * 60
    t0 = time.time()
    step = 0
    ema = None
    task_ema = {}
    grad_ema = None  # gradient norm before clipping to 1.0 (EMA): above 1, every update is scaled down
    warm = args.warmup
    ema_weights = None  # name -> float32 tensor, from the first step of the decay phase
    while step < args.max_steps:
        el = time.time() - t0
        if el > budget:
            break
        frac = el / budget
        d = max(0.0, (frac - (1 - args.decay_frac)) / args.decay_frac)
        lr = args.lr * min(1.0, (step + 1) / warm) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * d)))
        for g in opt.param_groups:
            g["lr"] = lr
        b, aux = batcher.batch(args.batch)
        labels = b.pop("labels")[:, 1:]  # token t's logits predict token t + 1
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(args.bf16)):
            out = model(**b)
            aux_loss = heads.loss(captured.pop("feats"), aux) if args.aux_weight > 0 else torch.zeros(())
            dec_loss = (decoder_aux_loss(out.logits, patch_word_targets(tok, aux, loc0))
                        if args.dec_aux_weight > 0 else torch.zeros(()))
        # Per-token NLL once: its mean is transformers' loss (labels −100 ignored), and its
        # per-example means feed the per-task log.
        nll = torch.nn.functional.cross_entropy(out.logits[:, :-1].float().transpose(1, 2), labels,
                                                ignore_index=-100, reduction="none")
        counts = (labels != -100).sum(1)
        lm_loss = nll.sum() / counts.sum()
        ground = grounding_loss(out.logits, aux) if args.ground_weight > 0 else torch.zeros(())
        mid = captured.pop("mid", None)
        plan = plan_heads.loss(mid, captured.pop("last"), aux) if plan_heads else torch.zeros(())
        phrase = phrase_head.loss(mid, aux) if phrase_head else torch.zeros(())
        spell = (reading_pointer_loss(captured.pop("pointer"), aux, model.get_input_embeddings().weight, loc0)
                 if args.spell_weight > 0 else torch.zeros(()))
        loss = (lm_loss + args.aux_weight * aux_loss + args.dec_aux_weight * dec_loss + args.ground_weight * ground
                + args.plan_weight * plan + args.phrase_weight * phrase + args.spell_weight * spell)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0))
        grad_ema = grad_norm if grad_ema is None else 0.98 * grad_ema + 0.02 * grad_norm
        opt.step()
        if args.ema > 0 and d > 0:
            with torch.no_grad():
                if ema_weights is None:
                    ema_weights = {n: p.detach().clone() for n, p in model.named_parameters()}
                else:
                    for n, p in model.named_parameters():
                        ema_weights[n].lerp_(p.detach(), 1 - args.ema)
        ema = lm_loss.item() if ema is None else 0.98 * ema + 0.02 * lm_loss.item()
        per = (nll.detach().sum(1) / counts.clamp(min=1)).tolist()  # per-task loss (EMA): which skill lags
        for t, v in zip(batcher.last_tasks, per):
            task_ema[t] = v if t not in task_ema else 0.97 * task_ema[t] + 0.03 * v
        step += 1
        if step % 25 == 0:
            print(f"step {step} loss {lm_loss.item():.4f} aux {aux_loss.item():.3f} dec {dec_loss.item():.3f} ground {ground.item():.3f} plan {plan.item():.3f} phrase {phrase.item():.3f} spell {spell.item():.3f} ema {ema:.4f} lr {lr:.2e} "
                  f"{(time.time() - t0) / step:.2f}s/step elapsed {(time.time() - t0) / 60:.1f}m", flush=True)
        if step % 250 == 0:
            print("  per task: " + " ".join(f"{k} {v:.3f}" for k, v in sorted(task_ema.items()))
                  + f"  grad norm {grad_ema:.2f}", flush=True)
            model.save_pretrained(args.ckpt)
    print(f"trained {step} steps, {step * args.batch} examples in {(time.time() - t0) / 60:.1f} min", flush=True)
    model.save_pretrained(args.ckpt)
    export(model, tok, args.out)
    if ema_weights is not None:  # export rounds to bfloat16 in place; the average is rounded the same way
        import shutil
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(ema_weights[n])
        ema_out = args.out.rstrip("/") + "-ema"
        os.makedirs(ema_out, exist_ok=True)
        for f in os.listdir(args.out):  # tokenizer files and the mask VAE
            if f.startswith("tokenizer") or f in ("special_tokens_map.json", "vae-oid.npz"):
                shutil.copy(os.path.join(args.out, f), ema_out)
        export(model, tok, ema_out)
        print(f"weight average (decay {args.ema}) exported to {ema_out}", flush=True)
    print(f"total {(time.time() - t_start) / 60:.1f} min", flush=True)


def export(model, tok, out):
    from transformers import GenerationConfig
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=2, eos_token_id=1, pad_token_id=0,
                                               do_sample=False, max_new_tokens=64)
    model.save_pretrained(out)
    pre = {"image_processor_type": "SiglipImageProcessor", "processor_class": "PaliGemmaProcessor",
           "do_resize": True, "size": {"height": RES, "width": RES}, "resample": 3,
           "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
           "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True,
           "image_seq_length": N_IMG}
    json.dump(pre, open(os.path.join(out, "preprocessor_config.json"), "w"), indent=2)
    json.dump({"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
               "additional_special_tokens": ["<image>"]},
              open(os.path.join(out, "special_tokens_map.json"), "w"), indent=2)


if __name__ == "__main__":
    main()
