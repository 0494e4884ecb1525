"""Train the bundled PaliGemma 2 demo model end to end on synthetic scenes.

    python tools/demo/train.py                 # VAE (if missing) + tokenizer (if missing) + model
    python tools/demo/train.py --minutes 57    # time budget for the model training (the default)

The defaults are the shipped model's run (log: tools/demo/logs/train_kind_order.log). The data
(scenes, per-patch targets, cache, batches) is in data.py; the three training-only losses that
teach the model to look, read and point within the hour (per-patch probes on the SigLIP output,
per-patch word targets on the decoder's image positions, grounding targets on prompt words naming
a shape) are in losses.py; this file builds the model, runs the loop and exports. See
Models/demo/README.md.

Writes OUT (default Models/demo/): model.safetensors (bf16), config.json, generation_config.json,
preprocessor_config.json, special_tokens_map.json, and, when missing, the tokenizer files and
vae-oid.npz.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import scenes  # noqa: E402
from data import N_IMG, PATCH, RES, TASK_WEIGHTS, Batcher, build_cache, reading_targets  # noqa: E402
from losses import AuxHeads, decoder_aux_loss, grounding_loss, patch_word_targets  # noqa: E402


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


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
    ap.add_argument("--threads", type=int, default=2)
    scenes.add_data_args(ap)  # --numbers, --caption-order: evaluate with the same
    ap.add_argument("--cache", default=None,
                    help="rendered scenes + targets (built on first use, about 2 minutes; delete it after changing "
                         "scenes.py; default /tmp/demo_train_cache_v5.pt, v4 for --numbers open)")
    ap.add_argument("--ckpt", default="/tmp/demo_model_ckpt")
    ap.add_argument("--vae-ckpt", default="/tmp/demo_vae.pt",
                    help="the mask VQ-VAE with its encoder (which encodes the segmentation targets), trained with "
                         "OUT/vae-oid.npz when either is missing")
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
    ap.add_argument("--read-weight", type=float, default=0.2,
                    help="weight (within the vision losses) of the per-patch character probe on SigLIP's output; "
                         "above 0 the decoder targets also ask each text patch for the OCR answer's piece under it "
                         "(0 turns both off)")
    ap.add_argument("--compile", type=int, default=1,
                    help="torch.compile the two towers' forward passes: 0.36 against 0.42 s per step here, so about "
                         "1.15x the steps in the same minutes (0: eager)")
    ap.add_argument("--proj-gain", type=float, default=1.0,
                    help="initial image-row scale relative to text rows")
    return ap.parse_args()


def main():
    args = parse_args()
    print("task mix: " + ", ".join(f"{k} {v:.2f}" for k, v in TASK_WEIGHTS.items()), flush=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.time()

    # 1. mask VQ-VAE
    vae_npz = os.path.join(args.out, "vae-oid.npz")
    if not (os.path.exists(vae_npz) and os.path.exists(args.vae_ckpt)):
        import train_vae
        sys.argv = [sys.argv[0], "--out", vae_npz, "--ckpt", args.vae_ckpt, "--threads", str(args.threads)]
        train_vae.main()
    from vae import VQVAE
    vae = VQVAE(np.load(vae_npz)["_vq_vae._embedding"].shape[1])
    vae.load_state_dict(torch.load(args.vae_ckpt))
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
        data["aux_char"], data["aux_piece"] = reading_targets(data, tok)
        print(f"reading targets: {int((data['aux_char'] > 0).sum())} text patches", flush=True)
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
    heads = AuxHeads(cfg.vision_config.hidden_size, args.read_weight)
    if args.compile:
        # compile the two towers' forward methods in place: parameters, hooks and checkpoint keys unchanged
        lm, vt = model.model.language_model, model.model.vision_tower
        lm.forward = torch.compile(lm.forward, dynamic=True)
        vt.forward = torch.compile(vt.forward)
    captured = {}

    def keep_features(m, i, o):  # the vision tower's patch features, for the vision probes
        captured["feats"] = o.last_hidden_state if hasattr(o, "last_hidden_state") else o[0] if isinstance(o, tuple) else o
    model.model.vision_tower.register_forward_hook(keep_features)

    params = list(model.named_parameters()) + [("aux." + n, p) for n, p in heads.named_parameters()]
    decay = [p for n, p in params if p.ndim >= 2]
    nodecay = [p for n, p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": nodecay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))
    batcher = Batcher(tok, data, args.seed, image_id, args.caption_order)
    train(args, model, heads, params, opt, batcher, captured, tok, loc0)
    model.save_pretrained(args.ckpt)
    export(model, tok, args.out)
    print(f"total {(time.time() - t_start) / 60:.1f} min", flush=True)


def train(args, model, heads, params, opt, batcher, captured, tok, loc0):
    """The loop: `--minutes` of wall-clock time (or `--max-steps`), lr warm-up then constant, cosine
    decay over the last `--decay-frac` of the budget; logs every 25 steps, checkpoints every 250."""
    budget = args.minutes * 60
    t0 = time.time()
    step = 0
    ema = None  # LM loss (EMA)
    task_ema = {}
    grad_ema = None  # gradient norm before clipping to 1.0 (EMA): above 1, every update is scaled down
    while step < args.max_steps:
        el = time.time() - t0
        if el > budget:
            break
        frac = el / budget
        d = max(0.0, (frac - (1 - args.decay_frac)) / args.decay_frac)
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * d)))
        for g in opt.param_groups:
            g["lr"] = lr
        b, aux = batcher.batch(args.batch)
        labels = b.pop("labels")[:, 1:]  # token t's logits predict token t + 1
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
        loss = lm_loss + args.aux_weight * aux_loss + args.dec_aux_weight * dec_loss + args.ground_weight * ground
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0))
        grad_ema = grad_norm if grad_ema is None else 0.98 * grad_ema + 0.02 * grad_norm
        opt.step()
        ema = lm_loss.item() if ema is None else 0.98 * ema + 0.02 * lm_loss.item()
        per = (nll.detach().sum(1) / counts.clamp(min=1)).tolist()  # per-task loss (EMA): which skill lags
        for t, v in zip(batcher.last_tasks, per):
            task_ema[t] = v if t not in task_ema else 0.97 * task_ema[t] + 0.03 * v
        step += 1
        if step % 25 == 0:
            print(f"step {step} loss {lm_loss.item():.4f} aux {aux_loss.item():.3f} dec {dec_loss.item():.3f} "
                  f"ground {ground.item():.3f} ema {ema:.4f} lr {lr:.2e} "
                  f"{(time.time() - t0) / step:.2f}s/step elapsed {(time.time() - t0) / 60:.1f}m", flush=True)
        if step % 250 == 0:
            print("  per task: " + " ".join(f"{k} {v:.3f}" for k, v in sorted(task_ema.items()))
                  + f"  grad norm {grad_ema:.2f}", flush=True)
            model.save_pretrained(args.ckpt)
    print(f"trained {step} steps, {step * args.batch} examples in {(time.time() - t0) / 60:.1f} min", flush=True)


def export(model, tok, out):
    """Round to bfloat16 in place and write the model folder (weights, config, generation and
    preprocessor configs, special tokens map) as transformers' PaliGemmaProcessor expects it."""
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
