"""Synthetic scenes for the PaliGemma 2 demo model.

Deterministic by seed (NumPy Generator + PIL drawing). A scene is a 3x3 grid of cells;
each shape sits inside its own cell (so shapes never overlap and "where is the X?" has one
answer), an optional word fills the top or bottom row. Shapes in one scene have distinct
kinds and distinct colours, so every question, detection and segmentation is unambiguous.

Everything (captions in en/de/fr, and in es for the fine-tuning showcase, VQA answers, detection
and segmentation targets) is a deterministic function of the scene.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SHAPES = ["circle", "square", "triangle", "star", "diamond", "cross"]
COLORS = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 20),
    "orange": (245, 130, 20),
    "purple": (140, 40, 170),
    "black": (20, 20, 20),
}
WORDS = [
    "cat", "dog", "sun", "sky", "box", "red", "map", "cup", "hat", "key",
    "tree", "fish", "bird", "star", "moon", "book", "lamp", "ship", "rain", "snow",
    "milk", "door", "frog", "kite", "ball", "home", "wind", "fire", "gold", "blue",
    "apple", "house", "river", "swift", "zebra", "lemon", "table", "paris", "music", "robot",
    "hello", "demo", "stop", "open", "exit", "taxi", "cafe", "bus", "zoo", "ice",
]
# A scene's number is one of CLOSED_NUMBERS, drawn as words are drawn (the shipped model's data, and
# every default here: `--numbers closed`), or any of 0-999 (`--numbers open`, `numbers=None`, the data
# of the models before it): a model this small, trained for an hour, reads a word as a whole but an
# open digit string barely at all.
CLOSED_NUMBERS = ["1", "2", "3", "5", "7", "8", "10", "12", "17", "21", "24", "30",
                  "42", "50", "64", "99", "100", "256", "365", "911"]
POSITIONS = [["top left", "top", "top right"],
             ["left", "center", "right"],
             ["bottom left", "bottom", "bottom right"]]

# --- languages -------------------------------------------------------------------------
DE_NOUN = {"circle": ("Kreis", "m"), "square": ("Quadrat", "n"), "triangle": ("Dreieck", "n"),
           "star": ("Stern", "m"), "diamond": ("Raute", "f"), "cross": ("Kreuz", "n")}
DE_ADJ = {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb",
          "orange": "orangefarben", "purple": "violett", "black": "schwarz"}
FR_NOUN = {"circle": ("cercle", "m"), "square": ("carré", "m"), "triangle": ("triangle", "m"),
           "star": ("étoile", "f"), "diamond": ("losange", "m"), "cross": ("croix", "f")}
FR_ADJ = {"red": ("rouge", "rouge"), "green": ("vert", "verte"), "blue": ("bleu", "bleue"),
          "yellow": ("jaune", "jaune"), "orange": ("orange", "orange"),
          "purple": ("violet", "violette"), "black": ("noir", "noire")}
# Spanish (`caption es`, no model was trained on it: the fine-tuning showcase, tools/demo/finetune_*.py)
ES_NOUN = {"circle": ("círculo", "m"), "square": ("cuadrado", "m"), "triangle": ("triángulo", "m"),
           "star": ("estrella", "f"), "diamond": ("rombo", "m"), "cross": ("cruz", "f")}
ES_ADJ = {"red": ("rojo", "roja"), "green": ("verde", "verde"), "blue": ("azul", "azul"),
          "yellow": ("amarillo", "amarilla"), "orange": ("naranja", "naranja"),
          "purple": ("morado", "morada"), "black": ("negro", "negra")}


def add_data_args(ap):
    """The two data options train.py, evaluate.py and heldout.py share; their defaults are the
    shipped model's data. A model is evaluated with the options it was trained with."""
    ap.add_argument("--numbers", choices=["closed", "open"], default="closed",
                    help="the numbers scenes show: 'closed', one of the 20 of scenes.CLOSED_NUMBERS (the shipped "
                         "model's data), or 'open', any of 0-999 (the data of models before it)")
    ap.add_argument("--caption-order", choices=["kind", "reading"], default="kind",
                    help="the order captions name shapes in: 'kind', circle, square, triangle, star, diamond, cross "
                         "(the shipped model's data), or 'reading', their cells' reading order (models before it)")


def numbers_arg(args):
    """`sample_scene`'s `numbers` for the parsed `--numbers`."""
    return CLOSED_NUMBERS if args.numbers == "closed" else None


def _join(items, conj):
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + f" {conj} " + items[-1]


@dataclass
class Obj:
    kind: str
    color: str
    cell: tuple  # (row, col)
    box: tuple = (0, 0, 0, 0)  # x0, y0, x1, y1 in pixels of the square image (x1, y1 exclusive)
    mask: np.ndarray | None = field(default=None, repr=False)  # bool (S, S)


@dataclass
class Scene:
    size: int
    objs: list
    word: str | None
    text_row: int | None
    image: Image.Image = field(repr=False, default=None)
    text_box: tuple | None = None  # x0, y0, x1, y1 of the rendered word (pixels), if any

    def ordered(self, order: str = "kind"):
        """The shapes in the order captions name them: "kind" (the shipped model's data) is the
        order of `SHAPES` (circle, square, triangle, star, diamond, cross), which a caption can
        follow from the shape it has just named and the kinds in the image, without locating
        either; "reading" (the models before it) is the reading order of their cells, top row
        first, left to right."""
        if order == "reading":
            return sorted(self.objs, key=lambda o: (o.cell[0], o.cell[1]))
        if order == "kind":
            return sorted(self.objs, key=lambda o: SHAPES.index(o.kind))
        raise ValueError(f"caption order {order!r}: use 'reading' or 'kind'")

    def caption(self, lang: str, order: str = "kind") -> str:
        objs = self.ordered(order)
        if lang == "en":
            parts = [f"{'an' if o.color[0] in 'aeiou' else 'a'} {o.color} {o.kind}" for o in objs]
            s = _join(parts, "and")
            if self.word:
                s += f' with the word "{self.word}"'
        elif lang == "de":
            parts = []
            for o in objs:
                noun, g = DE_NOUN[o.kind]
                adj = DE_ADJ[o.color]
                parts.append({"m": f"ein {adj}er {noun}", "n": f"ein {adj}es {noun}",
                              "f": f"eine {adj}e {noun}"}[g])
            s = _join(parts, "und")
            if self.word:
                s += f' mit dem Wort "{self.word}"'
        elif lang == "fr":
            parts = []
            for o in objs:
                noun, g = FR_NOUN[o.kind]
                adj = FR_ADJ[o.color][0 if g == "m" else 1]
                parts.append(f"{'un' if g == 'm' else 'une'} {noun} {adj}")
            s = _join(parts, "et")
            if self.word:
                s += f' avec le mot "{self.word}"'
        elif lang == "es":
            parts = []
            for o in objs:
                noun, g = ES_NOUN[o.kind]
                adj = ES_ADJ[o.color][0 if g == "m" else 1]
                parts.append(f"{'un' if g == 'm' else 'una'} {noun} {adj}")
            s = _join(parts, "y")
            if self.word:
                s += f' con la palabra "{self.word}"'
        else:
            raise ValueError(lang)
        return s

    def find(self, kind):
        for o in self.objs:
            if o.kind == kind:
                return o
        return None


# --- drawing ---------------------------------------------------------------------------

def _shape_polygon(kind, cx, cy, r):
    if kind == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if kind == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if kind == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if kind == "star":
        pts = []
        for i in range(10):
            a = -math.pi / 2 + i * math.pi / 5
            rr = r if i % 2 == 0 else r * 0.45
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a) + r * 0.1))
        return pts
    if kind == "cross":
        t = r * 0.36
        return [(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t),
                (cx + r, cy + t), (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r),
                (cx - t, cy + t), (cx - r, cy + t), (cx - r, cy - t), (cx - t, cy - t)]
    raise ValueError(kind)


def _draw_shape(draw, kind, cx, cy, r, fill):
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(_shape_polygon(kind, cx, cy, r), fill=fill)


def _background(rng, S):
    kind = rng.integers(3)
    base = rng.integers(150, 256, size=3).astype(np.float32)
    # keep backgrounds pale/greyish so every shape colour stays visible
    grey = base.mean()
    base = grey + (base - grey) * 0.5
    if kind == 0:  # plain
        img = np.broadcast_to(base, (S, S, 3)).copy()
    elif kind == 1:  # linear gradient
        other = rng.integers(150, 256, size=3).astype(np.float32)
        other = other.mean() + (other - other.mean()) * 0.5
        ang = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:S, 0:S] / (S - 1)
        t = (xx * math.cos(ang) + yy * math.sin(ang))
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
        img = base * (1 - t[..., None]) + other * t[..., None]
    else:  # noisy
        amp = rng.uniform(8, 25)
        img = base + rng.normal(0, amp, size=(S, S, 1)) + rng.normal(0, amp / 3, size=(S, S, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def sample_scene(seed: int, size: int = 128, p_word: float = 0.45,
                 numbers: list | None = CLOSED_NUMBERS) -> Scene:
    """Sample and render one scene at `size` x `size` pixels; a number shown is one of `numbers`, or
    any of 0-999 when it is None (word scenes are the same either way)."""
    rng = np.random.default_rng(seed)
    S = size
    n = int(rng.integers(1, 5))
    word = None
    text_row = None
    if rng.random() < p_word:
        if rng.random() < 0.25:
            if numbers is None:
                word = str(int(rng.integers(0, 10 ** int(rng.integers(1, 4)))))
            else:
                word = numbers[int(rng.integers(len(numbers)))]
        else:
            word = WORDS[int(rng.integers(len(WORDS)))]
        text_row = int(rng.choice([0, 2]))
    cells = [(r, c) for r in range(3) for c in range(3) if r != text_row]
    chosen = rng.choice(len(cells), size=n, replace=False)
    kinds = rng.choice(len(SHAPES), size=n, replace=False)
    colors = rng.choice(len(COLORS), size=n, replace=False)
    cname = list(COLORS)
    objs = [Obj(SHAPES[k], cname[c], cells[i]) for i, k, c in zip(chosen, kinds, colors)]

    img = Image.fromarray(_background(rng, S))
    cell = S / 3
    for o in objs:
        r = rng.uniform(0.2, 0.42) * cell  # half-size
        margin = cell / 2 - r - 0.03 * cell
        cx = (o.cell[1] + 0.5) * cell + rng.uniform(-margin, margin)
        cy = (o.cell[0] + 0.5) * cell + rng.uniform(-margin, margin)
        m = Image.new("L", (S, S), 0)
        _draw_shape(ImageDraw.Draw(m), o.kind, cx, cy, r, 255)
        mask = np.asarray(m) >= 128
        jitter = rng.integers(-15, 16, size=3)
        fill = tuple(int(np.clip(v + j, 0, 255)) for v, j in zip(COLORS[o.color], jitter))
        _draw_shape(ImageDraw.Draw(img), o.kind, cx, cy, r, fill)
        ys, xs = np.nonzero(mask)
        o.box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        o.mask = mask
    if word is not None:
        draw = ImageDraw.Draw(img)
        fsize = S * rng.uniform(0.27, 0.33)
        font = ImageFont.load_default(size=fsize)
        l, t, rr, b = draw.textbbox((0, 0), word, font=font)
        w, h = rr - l, b - t
        if w > S * 0.92:  # shrink long words
            font = ImageFont.load_default(size=fsize * S * 0.92 / w)
            l, t, rr, b = draw.textbbox((0, 0), word, font=font)
            w, h = rr - l, b - t
        x = rng.uniform(0.04 * S, max(0.04 * S, S - w - 0.04 * S)) - l  # a shrunk word may fill the row
        y = (text_row + 0.5) * cell - h / 2 - t + rng.uniform(-0.08, 0.08) * cell
        tc = tuple(int(v) for v in rng.integers(0, 70, size=3))
        draw.text((x, y), word, fill=tc, font=font)
        text_box = tuple(float(v) for v in draw.textbbox((x, y), word, font=font))
    else:
        text_box = None
    return Scene(S, objs, word, text_row, img, text_box)


# --- tasks -----------------------------------------------------------------------------

def loc_bins(box, S):
    """A pixel box (x0, y0, x1, y1) as PaliGemma's four bins y0, x0, y1, x1 in 0...1023."""
    x0, y0, x1, y1 = box
    return [min(max(round(v / S * 1023), 0), 1023) for v in (y0, x0, y1, x1)]


def loc_tokens(box, S):
    return "".join(f"<loc{v:04d}>" for v in loc_bins(box, S))


def mask_crop(obj, out=64):
    """Crop an object's mask to its box and resize to out x out (float in [0, 1])."""
    x0, y0, x1, y1 = obj.box
    m = Image.fromarray((obj.mask[y0:y1, x0:x1] * 255).astype(np.uint8))
    return np.asarray(m.resize((out, out), Image.BILINEAR), dtype=np.float32) / 255.0


def vqa_items(sc: Scene, rng):
    """All question/answer pairs for a scene (a few sampled by the caller)."""
    qa = [("how many shapes are there?", str(len(sc.objs)))]
    present = {o.kind for o in sc.objs}
    for o in sc.objs:
        qa.append((f"what color is the {o.kind}?", o.color))
        qa.append((f"where is the {o.kind}?", POSITIONS[o.cell[0]][o.cell[1]]))
        qa.append((f"which shape is {o.color}?", o.kind))
    k = SHAPES[int(rng.integers(len(SHAPES)))]
    qa.append((f"is there a {k}?", "yes" if k in present else "no"))
    o = sc.objs[int(rng.integers(len(sc.objs)))]
    c = list(COLORS)[int(rng.integers(len(COLORS)))]
    qa.append((f"is there a {c} {o.kind}?", "yes" if o.color == c else "no"))
    qa.append(("is there any text?", "yes" if sc.word else "no"))
    return qa


TASKS = ["caption en", "caption de", "caption fr", "answer", "detect", "ocr", "segment"]


def make_example(sc: Scene, task: str, rng, seg_codes=None, caption_order="kind"):
    """Returns (prompt, target, meta). seg_codes: callable obj -> list of 16 ints; caption_order:
    see `Scene.ordered`."""
    S = sc.size
    if task.startswith("caption"):
        return task, sc.caption(task.split()[1], caption_order), {}
    if task == "answer":
        qa = vqa_items(sc, rng)
        # balance: half the time counting/colour/where, else anything
        q, a = qa[int(rng.integers(len(qa)))]
        return f"answer en {q}", a, {}
    if task == "detect":
        objs = list(sc.objs)
        k = int(rng.integers(1, len(objs) + 1))
        idx = rng.choice(len(objs), size=k, replace=False)
        sel = [objs[i] for i in idx]
        prompt = "detect " + " ; ".join(o.kind for o in sel)
        target = " ; ".join(f"{loc_tokens(o.box, S)} {o.kind}" for o in sel)
        return prompt, target, {"boxes": [list(o.box) for o in sel], "labels": [o.kind for o in sel]}
    if task == "ocr":
        return "ocr", sc.word or "", {}
    if task == "segment":
        o = sc.objs[int(rng.integers(len(sc.objs)))]
        codes = seg_codes(o)
        target = loc_tokens(o.box, S) + "".join(f"<seg{c:03d}>" for c in codes) + " " + o.kind
        return f"segment {o.kind}", target, {"boxes": [list(o.box)], "labels": [o.kind], "obj": o}
    raise ValueError(task)


if __name__ == "__main__":
    import sys
    sc = sample_scene(int(sys.argv[1]) if len(sys.argv) > 1 else 0, 256)
    sc.image.save("/tmp/scene.png")
    print(sc)
    for lang in ("en", "de", "fr", "es"):
        print(sc.caption(lang))
    rng = np.random.default_rng(0)
    for t in ["answer", "detect", "ocr"]:
        print(make_example(sc, t, rng)[:2])
