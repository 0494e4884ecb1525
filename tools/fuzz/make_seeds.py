#!/usr/bin/env python3
"""Writes the committed seed corpora under tools/fuzz/corpus/ (small files, a few KB each).

Most seeds are cut down from Tests/Fixtures; the rest are built here. Needs numpy and Pillow
(with WebP). Run from anywhere: python3 tools/fuzz/make_seeds.py
"""
import base64
import io
import json
import os
import shutil
import struct
import zipfile

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
FIX = os.path.join(ROOT, "Tests", "Fixtures")
OUT = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def fixture(*path):
    with open(os.path.join(FIX, *path), "rb") as f:
        return f.read()


# ---- safetensors -------------------------------------------------------------------------------

def safetensors(tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def safetensors_seeds():
    f32 = np.arange(6, dtype="<f4")
    put("safetensors", "f32.safetensors", safetensors({"w": ("F32", [2, 3], f32.tobytes())}, {"format": "pt"}))
    bf16 = (np.arange(4, dtype="<f4").view("<u4") >> 16).astype("<u2").tobytes()
    put("safetensors", "mixed.safetensors", safetensors({
        "language_model.model.embed_tokens.weight": ("BF16", [2, 2], bf16),
        "f16": ("F16", [3], np.array([1, -2, 0.5], dtype="<f2").tobytes()),
        "ids": ("I64", [2], np.array([7, -1], dtype="<i8").tobytes()),
        "mask": ("BOOL", [3], bytes([1, 0, 1])),
        "q": ("I8", [4], bytes([1, 2, 255, 128])),
        "u32": ("U32", [1], struct.pack("<I", 9)),
    }, {"format": "pt", "paligemma_swift": "q8"}))
    put("safetensors", "empty_tensor.safetensors", safetensors({"e": ("F32", [0, 4], b""), "s": ("F64", [], struct.pack("<d", 1.5))}))
    put("safetensors", "no_tensors.safetensors", safetensors({}, {}))
    # The first bytes of a real shard: a header that runs past the end of the file.
    put("safetensors", "real_prefix.safetensors", fixture("model", "gqa2_window", "model-00018-of-00022.safetensors")[:2048])


# ---- config.json -------------------------------------------------------------------------------

def config_seeds():
    for d in ["tiny16", "gqa2_window", "e2e"]:
        put("config", d + ".json", fixture("model", d, "config.json"))
    c = json.loads(fixture("model", "tiny16", "config.json"))
    c["quantization_config"] = {"format": "q4", "group_size": 32, "source_dtype": "bf16", "quant_method": "paligemma-swift"}
    c["text_config"]["rope_parameters"] = {"rope_theta": 10000.0, "rope_type": "default"}
    c["text_config"]["eos_token_id"] = [1, 107]
    c["text_config"]["sliding_window"] = None
    put("config", "quantized.json", json.dumps(c, indent=1))
    put("config", "minimal.json", '{"model_type":"paligemma","text_config":{"model_type":"gemma2"},"vision_config":{"vision_use_head":false},"image_token_id":7}')


# ---- tokenizers --------------------------------------------------------------------------------

# Pieces kept from the fixture vocabulary: specials, the byte pieces, and whatever is built from
# these letters (so that every kept merge has its parts).
LETTERS = set("▁acdeinorst")


def small_vocab(vocab):
    keep = {}
    for piece, i in vocab.items():
        special = piece.startswith("<") and piece.endswith(">") and not piece.startswith("<0x")
        if special and i < 12 or piece.startswith("<0x") or (len(piece) <= 4 and set(piece) <= LETTERS):
            keep[piece] = i
    return keep


def tokenizer_json_seeds():
    t = json.loads(fixture("tokenizer", "tokenizer.json"))
    keep = small_vocab(t["model"]["vocab"])
    ids = {old: new for new, (_, old) in enumerate(sorted(keep.items(), key=lambda kv: kv[1]))}
    vocab = {p: ids[i] for p, i in keep.items()}
    merges = [m for m in t["model"]["merges"] if m[0] in vocab and m[1] in vocab and m[0] + m[1] in vocab]
    n = len(vocab)
    added = [a for a in t["added_tokens"] if a["content"] in vocab]
    for a in added:
        a["id"] = vocab[a["content"]]
    extra = ["<loc0000>", "<loc0512>", "<loc1023>", "<seg000>", "<seg127>"]
    for k, piece in enumerate(extra):
        vocab[piece] = n + k
        added.append({"id": n + k, "content": piece, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": True, "special": False})
    added.append({"id": n + len(extra), "content": "<image>", "single_word": False, "lstrip": False,
                  "rstrip": False, "normalized": False, "special": True})
    small = dict(t)
    small["added_tokens"] = added
    small["model"] = dict(t["model"], vocab=vocab, merges=merges)
    put("tokenizer-json", "bpe_small.json", json.dumps(small, ensure_ascii=False, separators=(",", ":")))
    # The same vocabulary as a scored (Unigram-style) model with a Metaspace pre-tokenizer.
    uni = {"added_tokens": added[:4], "normalizer": None,
           "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False},
           "model": {"type": "Unigram", "unk_id": 3, "byte_fallback": True,
                     "vocab": [[p, -float(len(p))] for p, _ in sorted(vocab.items(), key=lambda kv: kv[1])][:80]}}
    put("tokenizer-json", "unigram_small.json", json.dumps(uni, ensure_ascii=False, separators=(",", ":")))


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(number, wire, payload):
    key = varint(number << 3 | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def read_fields(data):
    i, out = 0, []
    while i < len(data):
        k, i = read_varint(data, i)
        number, wire = k >> 3, k & 7
        if wire == 0:
            v, j = read_varint(data, i)
            out.append((number, wire, data[i:j])); i = j
        elif wire == 2:
            n, j = read_varint(data, i)
            out.append((number, wire, data[j:j + n])); i = j + n
        elif wire == 5:
            out.append((number, wire, data[i:i + 4])); i += 4
        elif wire == 1:
            out.append((number, wire, data[i:i + 8])); i += 8
        else:
            raise ValueError(wire)
    return out


def read_varint(data, i):
    v, shift = 0, 0
    while True:
        b = data[i]; i += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, i
        shift += 7


def tokenizer_model_seeds():
    model = fixture("tokenizer", "tokenizer.model")
    fields = read_fields(model)
    pieces, rest = [], []
    for number, wire, payload in fields:
        if number == 1:
            text = dict((n, p) for n, w, p in read_fields(payload) if n == 1)[1].decode()
            pieces.append((text, payload))
        elif number == 2:  # trainer_spec, less its long list of user-defined symbols (field 31)
            rest.append(field(2, 2, b"".join(field(n, w, p) for n, w, p in read_fields(payload) if n != 31)))
        else:
            rest.append(field(number, wire, payload))
    keep = small_vocab({p: i for i, (p, _) in enumerate(pieces)})
    out = b"".join(field(1, 2, payload) for p, payload in pieces if p in keep)
    extra = [("<loc0000>", 4), ("<seg000>", 4), ("<image>", 3)]
    for text, kind in extra:
        out += field(1, 2, field(1, 2, text.encode()) + field(2, 5, struct.pack("<f", 0.0)) + field(3, 0, varint(kind)))
    put("tokenizer-model", "bpe_small.model", out + b"".join(rest))


# ---- npy / npz ---------------------------------------------------------------------------------

def npy(array, version=None):
    b = io.BytesIO()
    if version:
        np.lib.format.write_array(b, array, version=version)
    else:
        np.save(b, array)
    return b.getvalue()


def npy_seeds():
    put("npy", "f4_2x3.npy", npy(np.arange(6, dtype="<f4").reshape(2, 3)))
    put("npy", "i8.npy", npy(np.array([1, -2, 3], dtype="<i8")))
    put("npy", "f2.npy", npy(np.ones((2, 2), dtype="<f2")))
    put("npy", "u1_v2.npy", npy(np.array([7, 8], dtype="u1"), version=(2, 0)))
    put("npy", "bool_v3.npy", npy(np.array([True, False]), version=(3, 0)))
    put("npy", "scalar_f8.npy", npy(np.float64(3.5)))
    put("npy", "fortran.npy", npy(np.asfortranarray(np.arange(4, dtype="<f4").reshape(2, 2))))
    put("npy", "u8.npy", npy(np.array([2**63 + 1], dtype="<u8")))


def tiny_vae():
    """The vae-oid.npz layout with every width 1 or 2 (runs through the decoder quickly)."""
    r = np.random.default_rng(0)
    k, d, hidden, widths = 4, 2, 2, [2, 2, 1, 1]
    a = {"_vq_vae._embedding": r.standard_normal((k, d)),
         "decoder.0.weight": r.standard_normal((hidden, d, 1, 1)), "decoder.0.bias": r.standard_normal(hidden)}
    for block in [2, 3]:
        for layer, kernel in [(0, 3), (2, 3), (4, 1)]:
            a[f"decoder.{block}.net.{layer}.weight"] = r.standard_normal((hidden, hidden, kernel, kernel))
            a[f"decoder.{block}.net.{layer}.bias"] = r.standard_normal(hidden)
    cin = hidden
    for layer, cout in zip([4, 6, 8, 10], widths):
        a[f"decoder.{layer}.weight"] = r.standard_normal((cin, cout, 4, 4))
        a[f"decoder.{layer}.bias"] = r.standard_normal(cout)
        cin = cout
    a["decoder.12.weight"] = r.standard_normal((1, cin, 1, 1))
    a["decoder.12.bias"] = r.standard_normal(1)
    return {key: v.astype("<f4") for key, v in a.items()}


def npz_seeds():
    for name, save in [("vae_tiny.npz", np.savez), ("vae_tiny_compressed.npz", np.savez_compressed)]:
        b = io.BytesIO()
        save(b, **tiny_vae())
        put("npz", name, b.getvalue())
    b = io.BytesIO()
    np.savez(b, a=np.arange(3, dtype="<i4"), b=np.float16(1))
    put("npz", "two_arrays.npz", b.getvalue())
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", npy(np.zeros(4, dtype="<f8")))
        z.writestr("dir/", b"")
    put("npz", "deflated_with_dir.npz", b.getvalue())


# ---- images ------------------------------------------------------------------------------------

def pil(image, fmt, **kw):
    b = io.BytesIO()
    image.save(b, fmt, **kw)
    return b.getvalue()


def exif(orientation):
    e = Image.Exif()
    e[0x0112] = orientation
    return e.tobytes()


def image_seeds():
    for name in ["png_1bit.png", "png_palette.png", "png_gray16.png", "jpeg_exif6.jpg", "webp_lossy.webp"]:
        put("image", name, fixture("image", "inputs", name))
    for name in ["truncated_header.jpg", "bomb.png", "zero_size.png", "image.gif"]:
        put("image", "bad_" + name, fixture("image", "bad", name))
    rgb = Image.new("RGB", (9, 7))
    for x in range(9):
        for y in range(7):
            rgb.putpixel((x, y), (x * 28, y * 36, (x + y) * 16))
    rgba = rgb.convert("RGBA")
    rgba.putpixel((0, 0), (255, 0, 0, 0))
    put("image", "progressive.jpg", pil(rgb, "JPEG", progressive=True, quality=80))
    put("image", "cmyk.jpg", pil(rgb.convert("CMYK"), "JPEG"))
    put("image", "gray_exif3.jpg", pil(rgb.convert("L"), "JPEG", exif=exif(3)))
    put("image", "rgba.png", pil(rgba, "PNG"))
    put("image", "la_exif8.png", pil(rgba.convert("LA"), "PNG", exif=exif(8)))
    put("image", "rgb16.png", pil(rgb.convert("I;16"), "PNG"))
    put("image", "lossless.webp", pil(rgb, "WEBP", lossless=True))
    put("image", "alpha.webp", pil(rgba, "WEBP", quality=50, exif=exif(6)))
    put("image", "alpha_lossless.webp", pil(rgba, "WEBP", lossless=True))


# ---- <loc>/<seg> text --------------------------------------------------------------------------

def location_seeds():
    seg = "".join(f"<seg{c:03d}>" for c in [0, 1, 2, 3, 3, 2, 1, 0, 1, 1, 2, 2, 3, 0, 0, 1])
    seeds = {
        "detect.txt": "<loc0100><loc0200><loc0500><loc0600> cat ; <loc0000><loc0000><loc1023><loc1023> dog",
        "segment.txt": "<loc0256><loc0128><loc0768><loc0896>" + seg + " car",
        "spaces.txt": "<loc0010> <loc0020>\n<loc0900> <loc0950> <seg005> <seg006> person ;",
        "inverted.txt": "<loc0500><loc0500><loc0100><loc0100> nothing ; <loc0001><loc0002><loc0003> short",
        "caption.txt": "caption en",
        "prompt_detect.txt": "detect cat ; dog ; traffic light",
        "prompt_segment.txt": "  SEGMENT the left <image> cat\n",
        "answer.txt": "answer fr combien de chats ? <bos><eos><loc9999><seg1000>",
        "unicode.txt": "describe ja 猫 🙂 é\u0301 <loc01٣4>",
    }
    for name, text in seeds.items():
        put("location", name, text)


# ---- server requests ---------------------------------------------------------------------------

def server_seeds():
    png = fixture("image", "inputs", "png_1bit.png")
    b64 = base64.b64encode(png).decode()
    requests = {
        "full.json": {"image": b64, "prompt": "caption en", "max_new_tokens": 20, "temperature": 0.7,
                      "top_k": 40, "top_p": 0.9, "seed": 42},
        "minimal.json": {"image": b64[:64], "prompt": "ocr"},
        "data_url.json": {"image": "data:image/png;base64," + base64.urlsafe_b64encode(png[:48]).decode().rstrip("="),
                          "prompt": "detect cat"},
        "wrong_types.json": {"image": 3, "prompt": ["x"], "max_new_tokens": "5", "seed": -1},
        "out_of_range.json": {"image": "AAAA", "prompt": "x", "max_new_tokens": 1e30, "top_p": 2},
    }
    for name, body in requests.items():
        put("server-json", name, json.dumps(body))
    put("server-json", "not_object.json", "[1, 2, 3]")

    def multipart(boundary, parts, quoted=False):
        out = b""
        for name, value, filename in parts:
            disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
            out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
            if filename:
                out += b"Content-Type: image/png\r\n"
            out += b"\r\n" + value + b"\r\n"
        out += f"--{boundary}--\r\n".encode()
        ctype = f'multipart/form-data; boundary="{boundary}"' if quoted else f"multipart/form-data; boundary={boundary}"
        return ctype.encode() + b"\n" + out

    put("server-multipart", "full.txt", multipart("XyZ", [
        ("image", png[:200], "a.png"), ("prompt", b"caption en", None), ("max_new_tokens", b"12", None),
        ("temperature", b"0.5", None), ("top_k", b"3", None), ("top_p", b"0.5", None), ("seed", b"7", None)]))
    put("server-multipart", "quoted_boundary.txt", multipart("----WebKitFormBoundary7MA4YWxkTrZu0gW", [
        ("prompt", b"detect dog", None), ("image", b"\x89PNG\r\n\x1a\n", "x.png")], quoted=True))
    put("server-multipart", "bad_number.txt", multipart("b", [("image", b"x", "x"), ("prompt", b"p", None),
                                                            ("seed", b"-3", None)]))
    put("server-multipart", "json_type.txt", b"application/json\n" + json.dumps(requests["minimal.json"]).encode())


if __name__ == "__main__":
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    safetensors_seeds()
    config_seeds()
    tokenizer_json_seeds()
    tokenizer_model_seeds()
    npy_seeds()
    npz_seeds()
    image_seeds()
    location_seeds()
    server_seeds()
    total = 0
    for d, _, files in sorted(os.walk(OUT)):
        size = sum(os.path.getsize(os.path.join(d, f)) for f in files)
        total += size
        if files:
            print(f"{os.path.relpath(d, OUT):18} {len(files):3} files {size:8} bytes")
    print(f"{'total':18} {total:18} bytes")
