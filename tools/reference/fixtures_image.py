"""Image fixtures: test pictures in many formats, bad inputs, and PIL / transformers references.

Writes Tests/Fixtures/image/:
  inputs/<name>.<ext>   pictures produced deterministically with PIL / numpy (+ a tiny PNG writer
                        for what PIL cannot write: 16-bit colour and Adam7-interlaced PNG)
  bad/<name>            truncated, garbage, empty, zero-size and decompression-bomb files
  ref/<name>.<kind>.z   zlib-compressed raw arrays (uint8 ones delta-coded, see `put`):
      decoded   uint8 H×W×3  ImageOps.exif_transpose + convert("RGB")        (alpha dropped)
      flat      uint8 H×W×3  transformers convert_to_rgb (alpha over white)  (alpha images only)
      r224/r448 uint8 S×S×3  PIL resize((S,S), BICUBIC) of `flat` (= decoded without alpha)
      d224      uint8        PIL resize of `decoded` (alpha images only)
      f224/f448 float32 3×S×S SiglipImageProcessorPil pixel_values   (subset)
      aa224     float32 3×S×S torch antialiased bilinear, /127.5 − 1 (subset)
  manifest.json         the list of cases and their properties
"""
import io
import json
import pathlib
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw, ImageOps

FLOAT_SUBSET = {"jpeg_baseline", "png_rgba", "png_upscale_37x23", "jpeg_exif6"}
F448_SUBSET = {"jpeg_large"}
R448_SUBSET = {"jpeg_large", "jpeg_exif6", "png_rgba", "png_palette_trns", "png_upscale_37x23", "webp_lossless",
               "png_interlaced", "jpeg_cmyk"}
AA_SUBSET = {"jpeg_large"}
NO_DECODED_REF = {"jpeg_large"}  # 2.1 MB of pixels; its resized references still cover it


def scene(w, h, seed, noise=0.7):
    """A deterministic picture: gradients, hard-edged shapes, fine stripes and mild noise."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 127.5 + 127.5 * np.sin(x / 7.0 + seed) * np.cos(y / 11.0)
    img = np.stack([r, g, b], -1)
    img += rng.normal(0, noise, img.shape)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    for i in range(6):
        x0, y0 = rng.randint(0, w), rng.randint(0, h)
        x1, y1 = x0 + rng.randint(4, max(5, w // 3)), y0 + rng.randint(4, max(5, h // 3))
        col = tuple(int(c) for c in rng.randint(0, 256, 3))
        (d.rectangle if i % 2 else d.ellipse)([x0, y0, x1, y1], fill=col)
    for i in range(0, w, 9):  # fine black/white stripes: ringing and clipping in the resampler
        d.line([i, h // 2, i, h // 2 + h // 8], fill=(255, 255, 255) if i % 2 else (0, 0, 0))
    d.text((3, 3), f"S{seed}", fill=(255, 255, 0))
    return im


def alpha_mask(w, h, seed):
    y, x = np.mgrid[0:h, 0:w]
    a = (255 * (x + y) / (w + h - 2)).astype(np.uint8)
    a[: h // 4, : w // 4] = 0
    a[-h // 5 :, -w // 5 :] = 255
    return a


def exif_bytes(orientation):
    ex = Image.Exif()
    ex[0x0112] = orientation
    return ex.tobytes()


def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def write_png(arr, color_type, depth, interlace=False):
    """Minimal PNG writer (filter 0) for layouts PIL cannot save: 16-bit colour, Adam7."""
    h, w = arr.shape[:2]
    dt = ">u2" if depth == 16 else "u1"
    a = arr.astype(dt).reshape(h, w, -1)
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)] \
        if interlace else [(0, 0, 1, 1)]
    raw = b""
    for xs, ys, dx, dy in passes:
        sub = a[ys::dy, xs::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        for row in sub:
            raw += b"\x00" + row.tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 1 if interlace else 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw, 9))
            + png_chunk(b"IEND", b""))


def save(im, fmt, **kw):
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def make_inputs():
    """(name, extension, bytes, exact_decode)"""
    cases = []
    s = scene(300, 200, 1)
    cases.append(("jpeg_baseline", "jpg", save(s, "JPEG", quality=90), False))
    cases.append(("jpeg_progressive", "jpg", save(scene(256, 192, 2), "JPEG", quality=85, progressive=True), False))
    cases.append(("jpeg_444", "jpg", save(scene(150, 100, 3), "JPEG", quality=95, subsampling=0), False))
    cases.append(("jpeg_gray", "jpg", save(scene(200, 150, 4).convert("L"), "JPEG", quality=90), False))
    cases.append(("jpeg_cmyk", "jpg", save(scene(160, 120, 5).convert("CMYK"), "JPEG", quality=90), False))
    cases.append(("jpeg_large", "jpg", save(scene(1000, 700, 6, noise=0.5), "JPEG", quality=80), False))
    for o in range(2, 9):
        cases.append((f"jpeg_exif{o}", "jpg", save(scene(120, 80, 10 + o), "JPEG", quality=90, exif=exif_bytes(o)), False))
    cases.append(("png_rgb", "png", save(scene(300, 200, 20), "PNG"), True))
    rgba = scene(200, 200, 21)
    rgba.putalpha(Image.fromarray(alpha_mask(200, 200, 21)))
    cases.append(("png_rgba", "png", save(rgba, "PNG"), True))
    cases.append(("png_gray", "png", save(scene(180, 120, 22).convert("L"), "PNG"), True))
    la = scene(128, 96, 23).convert("L")
    la = Image.merge("LA", [la, Image.fromarray(alpha_mask(128, 96, 23))])
    cases.append(("png_gray_alpha", "png", save(la, "PNG"), True))
    pal = scene(150, 150, 24).quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    trns = bytes([0, 128] + [255] * 62)
    cases.append(("png_palette_trns", "png", save(pal, "PNG", transparency=trns), True))
    cases.append(("png_palette", "png", save(scene(100, 60, 25).quantize(colors=16, dither=Image.Dither.NONE), "PNG"), True))
    rng = np.random.RandomState(26)
    base16 = np.asarray(scene(120, 90, 26)).astype(np.uint16) * 257 + rng.randint(0, 257, (90, 120, 3)).astype(np.uint16)
    cases.append(("png_rgb16", "png", write_png(base16, 2, 16), True))
    g16 = (np.asarray(scene(100, 80, 27).convert("L")).astype(np.uint16) * 3)  # 0…765: PIL clips above 255
    cases.append(("png_gray16", "png", save(Image.fromarray(g16), "PNG"), True))
    cases.append(("png_interlaced", "png", write_png(np.asarray(scene(200, 133, 28)), 2, 8, interlace=True), True))
    cases.append(("png_upscale_37x23", "png", save(scene(37, 23, 29, noise=20), "PNG"), True))
    cases.append(("png_tall", "png", save(scene(50, 300, 30), "PNG"), True))
    # Both axes shrink, the height much more: Pillow 13 runs the vertical pass first when
    # (in_h − out_h) > 2·(in_w − out_w); noise makes a wrong pass order visible.
    cases.append(("png_portrait_240x300", "png", save(scene(240, 300, 33, noise=60), "PNG"), True))
    cases.append(("jpeg_portrait_300x620", "jpg", save(scene(300, 620, 34, noise=40), "JPEG", quality=90), False))
    cases.append(("png_1bit", "png", save(scene(64, 64, 31).convert("1"), "PNG"), True))
    cases.append(("png_exif6", "png", save(scene(90, 60, 32), "PNG", exif=exif_bytes(6)), True))
    cases.append(("webp_lossy", "webp", save(scene(240, 180, 40), "WEBP", quality=80), False))
    cases.append(("webp_lossless", "webp", save(scene(160, 120, 41), "WEBP", lossless=True), True))
    wa = scene(128, 128, 42)
    wa.putalpha(Image.fromarray(alpha_mask(128, 128, 42)))
    cases.append(("webp_alpha", "webp", save(wa, "WEBP", lossless=True), True))
    return cases


def make_bad(good):
    bad = {}
    bad["truncated.jpg"] = good["jpeg_baseline"][: len(good["jpeg_baseline"]) // 2]
    bad["truncated_header.jpg"] = good["jpeg_baseline"][:40]
    bad["truncated.png"] = good["png_rgb"][: len(good["png_rgb"]) // 2]
    bad["truncated.webp"] = good["webp_lossy"][: len(good["webp_lossy"]) // 2]
    bad["garbage.jpg"] = np.random.RandomState(7).randint(0, 256, 4096).astype(np.uint8).tobytes()
    bad["empty.png"] = b""
    bad["image.gif"] = save(Image.new("RGB", (8, 8)), "GIF")
    # PNG header claiming 0 × 16 and 100000 × 100000 (the latter a decompression bomb).
    for name, (w, h) in {"zero_size.png": (0, 16), "bomb.png": (100000, 100000)}.items():
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        bad[name] = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
                     + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + png_chunk(b"IEND", b""))
    # JPEG bomb / zero size: patch the SOF0 dimensions of a small JPEG.
    j = bytearray(good["jpeg_baseline"])
    sof = j.find(b"\xff\xc0")
    jb = bytearray(j)
    jb[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    bad["bomb.jpg"] = bytes(jb)
    jz = bytearray(j)
    jz[sof + 5 : sof + 9] = struct.pack(">HH", 0, 300)
    bad["zero_size.jpg"] = bytes(jz)
    # PNG with a damaged CRC in IHDR.
    p = bytearray(good["png_rgb"])
    p[29] ^= 0xFF
    bad["bad_crc.png"] = bytes(p)
    return bad


def put(ref, name, kind, arr):
    """uint8 H×W×3 arrays are stored as differences to the pixel on the left (mod 256, per
    channel, over the flattened array) before zlib, like PNG's Sub filter; floats as they are."""
    a = np.ascontiguousarray(arr)
    if a.dtype == np.uint8:
        flat = a.reshape(-1)
        d = flat.copy()
        d[3:] = flat[3:] - flat[:-3]
        a = d
    (ref / f"{name}.{kind}.z").write_bytes(zlib.compress(a.tobytes(), 9))


def generate(out_dir: pathlib.Path):
    import torch
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil
    from transformers.image_transforms import convert_to_rgb

    for sub in ("inputs", "bad", "ref"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
        for f in (out_dir / sub).iterdir():
            f.unlink()
    procs = {s: SiglipImageProcessorPil(size={"height": s, "width": s}) for s in (224, 448)}
    manifest = []
    good = {}
    for name, ext, data, exact in make_inputs():
        good[name] = data
        path = out_dir / "inputs" / f"{name}.{ext}"
        path.write_bytes(data)
        im = ImageOps.exif_transpose(Image.open(path))
        has_alpha = "A" in im.getbands() or im.info.get("transparency") is not None
        decoded = np.asarray(im.convert("RGB"))
        flat = convert_to_rgb(im, return_numpy=True)
        ref = out_dir / "ref"
        if name not in NO_DECODED_REF:
            put(ref, name, "decoded", decoded)
        if has_alpha:
            put(ref, name, "flat", flat)
        entry = {"name": name, "file": f"inputs/{name}.{ext}", "mode": Image.open(path).mode,
                 "width": int(decoded.shape[1]), "height": int(decoded.shape[0]),
                 "alpha": bool(has_alpha), "exact_decode": exact, "decoded_ref": name not in NO_DECODED_REF,
                 "resized": [], "floats": [], "aa": []}
        flat_im = Image.fromarray(flat)
        for s in (224, 448):
            r = np.asarray(flat_im.resize((s, s), Image.BICUBIC))
            if s == 224 or name in R448_SUBSET:
                put(ref, name, f"r{s}", r)
                entry["resized"].append(s)
            pv = procs[s](images=im, return_tensors="np")["pixel_values"][0]
            assert pv.dtype == np.float32 and pv.shape == (3, s, s)
            # The processor's floats are a pure function of the resized bytes; check that here.
            lut = ((np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32) - np.float32(0.5)) / np.float32(0.5)
            assert np.array_equal(lut[r.transpose(2, 0, 1)], pv), name
            if (s == 224 and name in FLOAT_SUBSET) or (s == 448 and name in F448_SUBSET):
                put(ref, name, f"f{s}", pv)
                entry["floats"].append(s)
        if has_alpha:
            put(ref, name, "d224", np.asarray(Image.fromarray(decoded).resize((224, 224), Image.BICUBIC)))
        if name in AA_SUBSET:
            t = torch.from_numpy(flat.astype(np.float32)).permute(2, 0, 1)[None]
            aa = torch.nn.functional.interpolate(t, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
            put(ref, name, "aa224", (aa[0] / 127.5 - 1).numpy().astype(np.float32))
            entry["aa"].append(224)
        manifest.append(entry)
        print(f"  {name:20s} {entry['mode']:5s} {entry['width']}x{entry['height']} alpha={has_alpha}")
    for fname, data in make_bad(good).items():
        (out_dir / "bad" / fname).write_bytes(data)
    (out_dir / "manifest.json").write_text(json.dumps({"cases": manifest}, indent=1) + "\n")
    total = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file())
    print(f"  {len(manifest)} cases, {total / 1e6:.2f} MB")
