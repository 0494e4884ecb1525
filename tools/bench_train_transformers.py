#!/usr/bin/env python3
"""The transformers + PEFT baseline for `paligemma bench --train`: one LoRA training step on the
same shapes, threads and sequence (image tokens, a 10-token prompt, a 16-token answer).

Builds a random-weight PaliGemma 2 model of a published size in memory (tools/bench_transformers.py),
wraps it with PEFT LoRA (rank 16, alpha 32, no dropout, the language model's q,k,v,o,gate,up,down),
and times forward + loss + backward + AdamW step, like `paligemma bench --train` does.

    python tools/bench_train_transformers.py 3b-224 --threads 2 --steps 2

Run it in the reference venv (tools/reference/requirements.txt). A 3B model in float32 needs about
13 GB of memory.
"""
import argparse
import json
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_transformers import build  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("preset", nargs="?", default="3b-224")
    ap.add_argument("--dtype", default="float32", choices=["bfloat16", "float32"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=10)
    ap.add_argument("--answer-tokens", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from peft import LoraConfig, get_peft_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model, config = build(args.preset, getattr(torch, args.dtype))
    model = get_peft_model(model, LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, bias="none",
        target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"))
    model.train()
    load = time.perf_counter() - t0
    size = config.vision_config.image_size
    n_img = (size // config.vision_config.patch_size) ** 2
    g = torch.Generator().manual_seed(1)
    prompt = [config.image_token_index] * n_img + [2] + torch.randint(1000, 6000, (args.prompt_tokens - 2,), generator=g).tolist() + [108]
    answer = torch.randint(1000, 6000, (args.answer_tokens,), generator=g).tolist()
    ids = torch.tensor([prompt + answer])
    types = torch.tensor([[0] * len(prompt) + [1] * len(answer)])
    labels = torch.tensor([[-100] * len(prompt) + answer])
    pixels = torch.rand(1, 3, size, size, generator=g, dtype=getattr(torch, args.dtype)) * 2 - 1
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01)
    times = []
    for i in range(args.steps):
        t = time.perf_counter()
        out = model(input_ids=ids, pixel_values=pixels, token_type_ids=types, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - t)
        print(f"step {i + 1}: loss {out.loss.item():.4f}, {times[-1]:.2f} s", file=sys.stderr)
    steady = sum(times[1:]) / (len(times) - 1) if len(times) > 1 else times[0]
    report = dict(configuration=f"{args.preset} transformers {args.dtype} + PEFT", threads=args.threads,
                  sequence_tokens=ids.shape[1], answer_tokens=args.answer_tokens, load_seconds=load,
                  first_step_seconds=times[0], step_seconds=steady,
                  peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
                  note="the step includes the vision tower's forward (frozen; no gradient flows into it)")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for k, v in report.items():
            print(f"{k:22} {v:.2f}" if isinstance(v, float) else f"{k:22} {v}")


if __name__ == "__main__":
    main()
