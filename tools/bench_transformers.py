#!/usr/bin/env python3
"""The transformers baseline for `paligemma bench`: the same shapes, threads and prompt length.

Builds a random-weight PaliGemma 2 model of a published size in memory (no download), then times
the vision tower + projector, the prefill (time to first token) and greedy decoding, like
`paligemma bench` does, and prints one JSON object (or a table).

    python tools/bench_transformers.py 3b-224 --dtype bfloat16 --threads 2 --decode-tokens 16

Run it in the reference venv (tools/reference/requirements.txt). A 3B model needs about 7 GB of
memory in bfloat16 and 13 GB in float32.
"""
import argparse
import json
import time

import torch
from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

SIZES = {  # hidden, layers, heads, kv heads, head_dim, MLP, query_pre_attn_scalar
    "3b": (2304, 26, 8, 4, 256, 9216, 256),
    "10b": (3584, 42, 16, 8, 256, 14336, 256),
    "28b": (4608, 46, 32, 16, 128, 36864, 144),
}


def build(preset: str, dtype):
    size, res = preset.lower().split("-")
    hidden, layers, heads, kv, head_dim, mlp, qpas = SIZES[size]
    config = PaliGemmaConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                           num_hidden_layers=27, num_attention_heads=16, patch_size=14, image_size=int(res),
                           vision_use_head=False),
        text_config=dict(model_type="gemma2", hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim,
                         intermediate_size=mlp, query_pre_attn_scalar=qpas, vocab_size=257216),
        image_token_index=257152, vocab_size=257216, projection_dim=hidden, hidden_size=hidden)
    config._attn_implementation = "eager"
    torch.set_default_dtype(dtype)
    with torch.device("cpu"):
        model = PaliGemmaForConditionalGeneration(config).eval()
    torch.set_default_dtype(torch.float32)
    model.config._attn_implementation = "eager"
    return model, config


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("preset", nargs="?", default="3b-224")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=10)
    ap.add_argument("--decode-tokens", type=int, default=16)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    t0 = time.perf_counter()
    model, config = build(args.preset, dtype)
    build_seconds = time.perf_counter() - t0
    n_img = (config.vision_config.image_size // 14) ** 2
    g = torch.Generator().manual_seed(0)
    pixels = (torch.rand((1, 3, config.vision_config.image_size, config.vision_config.image_size), generator=g) * 2 - 1).to(dtype)
    text = torch.randint(1000, 6000, (args.prompt_tokens - 2,), generator=g)
    ids = torch.cat([torch.full((n_img,), 257152), torch.tensor([2]), text, torch.tensor([108])])[None]
    types = torch.zeros_like(ids)

    t0 = time.perf_counter()
    features = model.model.get_image_features(pixels).pooler_output
    image_seconds = time.perf_counter() - t0

    # Time to first token: one full forward (vision tower + decoder prefill), as a request pays it;
    # the prefill alone is that minus the image time measured above.
    t0 = time.perf_counter()
    out = model(input_ids=ids, token_type_ids=types, pixel_values=pixels, use_cache=True, logits_to_keep=1)
    ttft = time.perf_counter() - t0
    cache = out.past_key_values
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    position = ids.shape[1]
    t0 = time.perf_counter()
    for i in range(args.decode_tokens):
        step = model(input_ids=token, past_key_values=cache, use_cache=True,
                     cache_position=torch.tensor([position + i]), logits_to_keep=1)
        cache = step.past_key_values
        token = step.logits[:, -1].argmax(-1, keepdim=True)
    decode_seconds = time.perf_counter() - t0

    report = {
        "configuration": args.preset, "system": f"transformers + torch {torch.__version__}", "dtype": args.dtype,
        "threads": args.threads, "build_seconds": build_seconds, "image_tokens": n_img,
        "prompt_tokens": int(ids.shape[1]), "image_encode_seconds": image_seconds,
        "time_to_first_token_seconds": ttft, "prefill_seconds": ttft - image_seconds,
        "decode_tokens": args.decode_tokens, "decode_tokens_per_second": args.decode_tokens / decode_seconds,
    }
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for k, v in report.items():
            print(f"{k:30} {v:.3f}" if isinstance(v, float) else f"{k:30} {v}")


if __name__ == "__main__":
    main()
