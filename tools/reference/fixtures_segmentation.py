"""Segmentation fixtures: big_vision's VQ-VAE mask decoder in PyTorch, random weights, and PIL box placement.

Writes Tests/Fixtures/segmentation/:
  vae_d16.npz            np.savez_compressed, the exact vae-oid.npz key layout, D=16 and the real
                         channel widths 128/64/32/16 (sparse weights on a coarse grid so deflate
                         keeps it small)
  vae_small.npz          np.savez (stored entries), D=4, hidden width 8 (8/8/4/2/1): same key layout
  vae_small_compressed.npz  the same arrays through np.savez_compressed
  bad_missing_key.npz    vae_small without decoder.8.weight
  bad_shape.npz          vae_small with decoder.6.weight of the wrong shape
  bad_fortran.npz        vae_small with decoder.0.weight stored in Fortran order
  bad_truncated.npz      the first half of vae_small.npz's bytes
  expected_d16.npz       codes int64 (N,16), masks float32 (N,64,64): decoder outputs for vae_d16
  expected_small.npz     the same for vae_small
  expected_vae_oid.npz   the same for a trained vae-oid.npz (D=32): Models/demo's, or $PALIGEMMA_VAE_OID
                         names that file; the Swift test runs against it when the variable is set
  placement.npz          ramp float32 (64,64); per case i: soft_i float32, the soft mask inside the visible box
  placement.json         per case: image size, loc bins, pixel box, source (row of expected_d16 masks,
                         −1 = ramp), area and the binary mask's RLE counts (column-major, COCO)

Decoder (big_vision/evaluators/proj/paligemma/transfers/segmentation.py, written as PyTorch):
  codes (16) → codebook rows → 4×4×D → Conv1×1(D→128)+ReLU → 2 × ResBlock → 4 × [ConvTranspose2d(k4, s2, p1)
  + ReLU] (128→128→64→32→16) → Conv1×1(16→1); ResBlock(x) = x + Conv1×1(ReLU(Conv3×3(ReLU(Conv3×3(x))))).
  References are computed in float64 and stored as float32.

Placement (big_vision's segmentation evaluator): box = loc / 1023 × (H or W), truncated to integers
(int()), the 64×64 float logits resized to the box with PIL BILINEAR (mode "F": triangle filter,
antialiased when shrinking, pixel centres at +0.5), then > 0 for the binary mask; the soft mask is
clip(v × 0.5 + 0.5, 0, 1) of the resized logits. A box reaching outside the image is resized at its
full size and then cropped to the image.
"""
import json
import os
import pathlib

import numpy as np
import torch
from PIL import Image
from torch import nn


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, c, 1))

    def forward(self, x):
        return x + self.net(x)


class Decoder(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        layers = [nn.Conv2d(d, hidden, 1), nn.ReLU(), ResBlock(hidden), ResBlock(hidden)]
        c = hidden
        for out in (hidden, hidden // 2, hidden // 4, hidden // 8):
            layers += [nn.ConvTranspose2d(c, out, 4, stride=2, padding=1), nn.ReLU()]
            c = out
        layers += [nn.Conv2d(c, 1, 1)]
        self.decoder = nn.Sequential(*layers)


def decode(codebook, model, codes):
    x = torch.from_numpy(codebook)[torch.as_tensor(codes)]          # (16, D)
    x = x.reshape(4, 4, -1).permute(2, 0, 1)[None]                  # (1, D, 4, 4)
    with torch.no_grad():
        return model.decoder(x)[0, 0].numpy()                       # (64, 64)


def make_model(d, hidden, seed, sparse):
    """Random decoder; with `sparse`, most weights are 0 and the rest multiples of 1/64 (× a power of 2)."""
    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    model = Decoder(d, hidden).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            a = p.detach().numpy()
            fan_in = a.shape[1] * a.shape[2] * a.shape[3] if a.ndim == 4 else 1
            if "decoder.4." in name or "decoder.6." in name or "decoder.8." in name or "decoder.10." in name:
                fan_in = a.shape[0] * 4  # transposed conv: each output sees in × (2×2 taps)
            std = (2.0 / fan_in) ** 0.5
            v = rng.randn(*a.shape) * std
            if sparse and a.ndim == 4 and a.size > 4096:
                keep = rng.rand(*a.shape) < 0.04
                v = v / 0.04 ** 0.5 * keep
            if sparse:
                scale = 2.0 ** np.floor(np.log2(std + 1e-12))
                v = np.round(v / scale * 4) / 4 * scale
            if name.endswith("bias"):
                v = v * 0.1
            p.copy_(torch.from_numpy(v.astype(np.float32).astype(np.float64)))
    codebook = rng.randn(128, d).astype(np.float32).astype(np.float64)
    if sparse:
        codebook = np.round(codebook * 16) / 16
    # Rescale the last conv so outputs sit in about [−1, 1] with both signs.
    probe = np.stack([decode(codebook, model, rng.randint(0, 128, 16)) for _ in range(4)])
    with torch.no_grad():
        last = model.decoder[12]
        s = 2.0 ** -np.round(np.log2(np.abs(probe).max() + 1e-12))
        last.weight.mul_(s)
        last.bias.mul_(s)
        probe = probe * s
        last.bias.sub_(float(np.round(np.median(probe) * 64) / 64))
        for p in model.parameters():  # the reference runs on exactly the float32 values stored
            p.copy_(p.float().double())
    return model, codebook


def npz_arrays(model, codebook):
    arrays = {"_vq_vae._embedding": codebook.astype(np.float32)}
    for k, v in model.state_dict().items():
        arrays[k] = v.numpy().astype(np.float32)
    return arrays


def expected(arrays, model, codes_list):
    codebook = arrays["_vq_vae._embedding"].astype(np.float64)
    masks = np.stack([decode(codebook, model, c) for c in codes_list]).astype(np.float32)
    return {"codes": np.asarray(codes_list, dtype=np.int64), "masks": masks}


def pixel_box(bins, w, h):
    """big_vision: loc / 1023 × size, then int()."""
    y0, x0, y1, x1 = (b / 1023 for b in bins)
    return int(x0 * w), int(y0 * h), int(x1 * w), int(y1 * h)


def place(m64, box, w, h):
    x0, y0, x1, y1 = box
    soft = np.zeros((h, w), np.float32)
    binary = np.zeros((h, w), np.uint8)
    if x1 > x0 and y1 > y0:
        r = np.asarray(Image.fromarray(m64.astype(np.float32), mode="F").resize(
            [x1 - x0, y1 - y0], resample=Image.BILINEAR), dtype=np.float32)
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if cx1 > cx0 and cy1 > cy0:
            part = r[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
            soft[cy0:cy1, cx0:cx1] = np.clip(part * 0.5 + 0.5, 0, 1)
            binary[cy0:cy1, cx0:cx1] = part > 0
    return soft, binary


def rle_coco(binary):
    """pycocotools' uncompressed RLE: column-major (Fortran) runs, starting with a run of zeros."""
    flat = binary.flatten(order="F")
    counts, prev, run = [], 0, 0
    for v in flat:
        if v != prev:
            counts.append(run)
            run, prev = 0, v
        run += 1
    counts.append(run)
    return counts


def generate(out_dir: pathlib.Path) -> None:
    rng = np.random.RandomState(1234)
    torch.set_num_threads(2)

    # Full-width model, D = 16.
    model, codebook = make_model(16, 128, seed=7, sparse=True)
    big = npz_arrays(model, codebook)
    np.savez_compressed(out_dir / "vae_d16.npz", **big)
    codes = [list(range(16)), [127] * 16, [0] * 16] + [list(rng.randint(0, 128, 16)) for _ in range(5)]
    exp_big = expected(big, model, codes)
    np.savez_compressed(out_dir / "expected_d16.npz", **exp_big)

    # Small model, D = 4, hidden 8: both npz flavours and the bad files.
    small_model, small_cb = make_model(4, 8, seed=11, sparse=False)
    small = npz_arrays(small_model, small_cb)
    np.savez(out_dir / "vae_small.npz", **small)
    np.savez_compressed(out_dir / "vae_small_compressed.npz", **small)
    np.savez_compressed(out_dir / "expected_small.npz",
                        **expected(small, small_model, [list(rng.randint(0, 128, 16)) for _ in range(3)]))
    missing = {k: v for k, v in small.items() if k != "decoder.8.weight"}
    np.savez(out_dir / "bad_missing_key.npz", **missing)
    wrong = dict(small)
    wrong["decoder.6.weight"] = np.zeros((8, 3, 4, 4), np.float32)
    np.savez(out_dir / "bad_shape.npz", **wrong)
    fortran = dict(small)
    fortran["decoder.0.weight"] = np.asfortranarray(small["decoder.0.weight"].reshape(8, 4))
    np.savez(out_dir / "bad_fortran.npz", **fortran)
    raw = (out_dir / "vae_small.npz").read_bytes()
    (out_dir / "bad_truncated.npz").write_bytes(raw[: len(raw) // 2])

    # Placement: decoded masks (and one synthetic ramp) into boxes of several image sizes.
    m = exp_big["masks"]
    ramp = (np.add.outer(np.arange(64), np.arange(64)) / 63.0 - 1.0).astype(np.float32)
    cases = [
        dict(source=3, mask=m[3], w=320, h=240, bins=[100, 200, 900, 700]),    # upscale both ways
        dict(source=4, mask=m[4], w=97, h=53, bins=[0, 0, 1023, 1023]),        # shrink both ways, whole image
        dict(source=5, mask=m[5], w=300, h=200, bins=[512, 10, 700, 60]),      # shrink x, upscale y
        dict(source=-1, mask=ramp, w=64, h=64, bins=[0, 0, 1023, 1023]),        # identity size
        dict(source=6, mask=m[6], w=1000, h=37, bins=[3, 1019, 1000, 1023]),   # 3 px wide
        dict(source=7, mask=m[7], w=123, h=77, bins=[300, 300, 200, 400]),     # inverted: empty
        dict(source=3, mask=m[3], w=200, h=150, box=[150, -20, 260, 90]),      # pixel box past the image
    ]
    out, meta = {}, []
    for i, c in enumerate(cases):
        if "bins" in c:
            box = pixel_box(c["bins"], c["w"], c["h"])
        else:
            box = tuple(c["box"])
        soft, binary = place(c["mask"], box, c["w"], c["h"])
        x0, y0, x1, y1 = box
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, c["w"]), min(y1, c["h"])
        out[f"soft_{i}"] = soft[cy0:max(cy1, cy0), cx0:max(cx1, cx0)]  # the visible box only
        meta.append(dict(width=c["w"], height=c["h"], bins=c.get("bins"), box=list(box),
                         source=c["source"], area=int(binary.sum()), rle=rle_coco(binary)))
    out["ramp"] = ramp
    np.savez_compressed(out_dir / "placement.npz", **out)
    (out_dir / "placement.json").write_text("[\n" + ",\n".join(json.dumps(x) for x in meta) + "\n]\n")
    # A trained, dense decoder with the real widths: the demo model's (or $PALIGEMMA_VAE_OID).
    real = os.environ.get("PALIGEMMA_VAE_OID") or str(out_dir.parent.parent.parent / "Models" / "demo" / "vae-oid.npz")
    if os.path.exists(real):
        arrays = dict(np.load(real))
        d = arrays["_vq_vae._embedding"].shape[1]
        real_model = Decoder(d, arrays["decoder.0.weight"].shape[0]).double()
        real_model.load_state_dict({k: torch.from_numpy(v.astype(np.float64))
                                    for k, v in arrays.items() if k.startswith("decoder.")})
        real_codes = [list(range(16)), [(i * 37 + 5) % 128 for i in range(16)], [77] * 16]
        np.savez_compressed(out_dir / "expected_vae_oid.npz", **expected(arrays, real_model, real_codes))
    total = sum(p.stat().st_size for p in out_dir.iterdir())
    print(f"segmentation fixtures: {total / 1024:.0f} KiB in {out_dir}")
