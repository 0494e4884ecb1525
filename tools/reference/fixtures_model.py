"""Small random-weight PaliGemma 2 (and one PaliGemma 1) checkpoints and the reference tensors
transformers computes.

Each fixture directory holds a checkpoint exactly as `save_pretrained` writes it (config.json,
model.safetensors or shards + index) and `reference.safetensors` with:
  pixel_values (1,3,S,S) f32, input_ids (T,) i64, token_type_ids (T,) i64,
  vision_output (N, Dv), projector_output (N, D), prefill_logits (T, V),
  greedy_ids (G,) i64, greedy_logits (G, V)            — greedy from the prefix, G ≥ 16 steps,
  suffix_input_ids / suffix_token_type_ids / suffix_logits — a prefix + suffix (types 1) prefill.
Reference: transformers 5.24.0, eager attention, token_type_ids always passed.
float32 fixtures are computed in float32; the bf16 fixture in bfloat16 (as people run it).
"""
import json
import pathlib
import shutil

import torch
from safetensors.torch import save_file, safe_open, load_file
import transformers
from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

assert transformers.__version__ == "5.24.0", f"reference needs transformers 5.24.0, not {transformers.__version__}"

GREEDY_STEPS = 20

# name: (vision, text, image_size, dtype, extra)
FIXTURES = {
    # 16 image tokens, GQA 1 (heads == kv heads), hub tensor names (vision_tower.vision_model.…).
    "tiny16": dict(
        image_size=56, vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, head_dim=16, query_pre_attn_scalar=16, sliding_window=4096),
        dtype="float32", hub_names=True, prompt_len=6),
    # 64 image tokens, GQA 2, head_dim ≠ hidden/heads, query_pre_attn_scalar ≠ head_dim, sliding window
    # shorter than the sequence, final softcap null; sharded.
    "gqa2_window": dict(
        image_size=112, vision=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4),
        text=dict(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=24, query_pre_attn_scalar=20, sliding_window=24,
                  final_logit_softcapping=None),
        dtype="float32", shard="40KB", prompt_len=7),
    # 256 image tokens (224 px like the real 224 models), GQA 4, window shorter than the sequence.
    "gqa4_256": dict(
        image_size=224, vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=8,
                  num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=32, sliding_window=200),
        dtype="float32", prompt_len=9),
    # PaliGemma 1: a Gemma 1 decoder (multi-query attention, two norms per layer, no softcaps, no
    # sliding window, scores scaled by head_dim^-0.5).
    "gemma1": dict(
        image_size=56, vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=1, head_dim=16),
        text_type="gemma", dtype="float32", prompt_len=6),
    # bf16 weights, reference computed in bfloat16.
    "bf16": dict(
        image_size=56, vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=4096),
        dtype="bfloat16", prompt_len=6),
}

VOCAB = 512
IMAGE_TOKEN = 511
BOS, EOS, NEWLINE = 2, 1, 10


def make_config(spec):
    vision = dict(model_type="siglip_vision_model", patch_size=14, image_size=spec["image_size"],
                  vision_use_head=False, **spec["vision"])
    text = dict(model_type=spec.get("text_type", "gemma2"), vocab_size=VOCAB, **spec["text"])
    cfg = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN,
                          vocab_size=VOCAB, projection_dim=text["hidden_size"], hidden_size=text["hidden_size"])
    cfg._attn_implementation = "eager"
    return cfg


def randomize(model, gen):
    """Lively random weights: unit-scale activations, peaked logits, so greedy ids are stable."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                if "vision" in name:   # LayerNorm γ around 1
                    p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
                elif name.endswith("language_model.norm.weight") or name.endswith("model.norm.weight"):
                    # The final norm sets the logit scale: make logits span tens, like a real model's.
                    p.copy_(15 + torch.randn(p.shape, generator=gen))
                elif "post_" in name:  # Gemma RMSNorm stores w, applied as (1 + w): make the
                    # sublayers loud enough that the residual stream is not just the input embedding.
                    p.copy_(2 + 0.3 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
            elif "position_embedding" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)


def rename_to_hub(path: pathlib.Path):
    """Rewrite tensor names the way the checkpoints on the hub spell them."""
    tensors = load_file(str(path))
    renamed = {}
    for k, v in tensors.items():
        if k.startswith("vision_tower.") and not k.startswith("vision_tower.vision_model."):
            k = "vision_tower.vision_model." + k[len("vision_tower."):]
        renamed[k] = v.contiguous()
    save_file(renamed, str(path), metadata={"format": "pt"})


@torch.no_grad()
def logits_for(model, ids, types, pixels):
    out = model(input_ids=ids[None], token_type_ids=types[None], pixel_values=pixels, use_cache=False)
    return out.logits[0].float()


def build_fixture(name, spec, root: pathlib.Path, seed):
    gen = torch.Generator().manual_seed(seed)
    cfg = make_config(spec)
    torch_dtype = torch.bfloat16 if spec["dtype"] == "bfloat16" else torch.float32
    model = PaliGemmaForConditionalGeneration(cfg).eval()
    randomize(model, gen)
    model = model.to(torch_dtype)
    model.config._attn_implementation = "eager"

    out_dir = root / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    kwargs = {"max_shard_size": spec["shard"]} if "shard" in spec else {}
    model.save_pretrained(out_dir, **kwargs)
    if spec.get("hub_names"):
        rename_to_hub(out_dir / "model.safetensors")
    # Reload from disk so the reference runs on exactly what we ship.
    model = PaliGemmaForConditionalGeneration.from_pretrained(out_dir, dtype=torch_dtype, attn_implementation="eager").eval()

    n_img = (spec["image_size"] // 14) ** 2
    pixels = (torch.rand((1, 3, spec["image_size"], spec["image_size"]), generator=gen) * 2 - 1)
    prompt = torch.randint(3, IMAGE_TOKEN - 1, (spec["prompt_len"],), generator=gen)
    ids = torch.cat([torch.full((n_img,), IMAGE_TOKEN), torch.tensor([BOS]), prompt, torch.tensor([NEWLINE])])
    types = torch.zeros_like(ids)
    px = pixels.to(torch_dtype)

    with torch.no_grad():
        vision = model.model.vision_tower(px).last_hidden_state[0].float()
        projected = model.model.get_image_features(px).pooler_output[0].float()
    prefill = logits_for(model, ids, types, px)

    # Greedy decoding: full recompute each step, generated tokens typed 1 (causal), as generate() does.
    g_ids, g_logits = [], []
    cur_ids, cur_types = ids.clone(), types.clone()
    for _ in range(GREEDY_STEPS):
        logits = logits_for(model, cur_ids, cur_types, px)[-1]
        nxt = int(torch.argmax(logits))
        g_ids.append(nxt)
        g_logits.append(logits)
        if nxt == EOS:
            break
        cur_ids = torch.cat([cur_ids, torch.tensor([nxt])])
        cur_types = torch.cat([cur_types, torch.tensor([1])])
    # Cross-check with generate() and its KV cache.
    with torch.no_grad():
        gen_out = model.generate(input_ids=ids[None], token_type_ids=types[None], pixel_values=px,
                                 max_new_tokens=GREEDY_STEPS, do_sample=False)
    gen_ids = gen_out[0, ids.shape[0]:].tolist()
    if gen_ids != g_ids:
        print(f"   note: generate() ids {gen_ids} differ from recompute ids {g_ids}")

    # Prefix + suffix (training layout): suffix tokens typed 1 attend causally.
    suffix = torch.randint(3, IMAGE_TOKEN - 1, (5,), generator=gen)
    s_ids = torch.cat([ids, suffix, torch.tensor([EOS])])
    s_types = torch.cat([types, torch.ones(6, dtype=torch.long)])
    s_logits = logits_for(model, s_ids, s_types, px)

    tensors = {
        "pixel_values": pixels.float().contiguous(),
        "input_ids": ids.long(), "token_type_ids": types.long(),
        "vision_output": vision.contiguous(), "projector_output": projected.contiguous(),
        "prefill_logits": prefill.contiguous(),
        "greedy_ids": torch.tensor(g_ids, dtype=torch.long),
        "greedy_logits": torch.stack(g_logits).contiguous(),
        "suffix_input_ids": s_ids.long(), "suffix_token_type_ids": s_types.long(),
        "suffix_logits": s_logits.contiguous(),
    }
    save_file(tensors, str(out_dir / "reference.safetensors"))
    top2 = torch.stack(g_logits).topk(2, dim=-1).values
    margin = float((top2[:, 0] - top2[:, 1]).min())
    info = {"transformers": transformers.__version__, "torch": torch.__version__, "seed": seed,
            "dtype": spec["dtype"], "image_tokens": n_img, "greedy_steps": len(g_ids),
            "min_greedy_margin": margin, "generate_ids_match": gen_ids == g_ids}
    (out_dir / "reference.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"   {name}: {n_img} image tokens, {len(g_ids)} greedy steps, min top-2 margin {margin:.3f}, "
          f"generate() agrees: {gen_ids == g_ids}")
    return margin


def generate_all(out_dir: pathlib.Path):
    torch.manual_seed(0)
    for i, (name, spec) in enumerate(FIXTURES.items()):
        # Random weights can tie the top two logits; a tie makes greedy ids depend on rounding.
        # Take the first seed whose greedy margins clear a bound the dtype can resolve.
        need = 0.5 if spec["dtype"] == "bfloat16" else 0.05
        for attempt in range(40):
            margin = build_fixture(name, spec, out_dir, seed=1234 + 100 * i + attempt)
            if margin >= need:
                break
    build_e2e(out_dir)
    build_e2e_multi(out_dir)


def generate(out_dir: pathlib.Path):
    """The fixture tool's entry point."""
    generate_all(out_dir)


# ---------------------------------------------------------------------------------------------
# End to end: image file → processor → model → text, with the tokenizer fixture's vocabulary.
E2E_CASES = [
    ("inputs/jpeg_baseline.jpg", "caption en"),
    ("inputs/png_rgba.png", "detect cat ; dog"),
    ("inputs/jpeg_exif6.jpg", "answer en what is in the image?"),
]


def build_e2e(root: pathlib.Path, seed=777):
    from PIL import Image, ImageOps
    from transformers import GemmaTokenizerFast, PaliGemmaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    fixtures = root.parent
    tok = GemmaTokenizerFast(tokenizer_file=str(fixtures / "tokenizer" / "tokenizer.json"))
    image_id = tok.convert_tokens_to_ids("<image>")
    assert image_id is not None and image_id != tok.unk_token_id, "tokenizer fixture lacks <image>"
    image_processor = SiglipImageProcessorPil(size={"height": 224, "width": 224})
    image_processor.image_seq_length = 256   # what the hub's preprocessor_config.json carries
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)
    vocab = (len(tok) + 63) // 64 * 64
    spec = dict(
        image_size=224, vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=4096))
    vision = dict(model_type="siglip_vision_model", patch_size=14, image_size=224, vision_use_head=False, **spec["vision"])
    text = dict(model_type="gemma2", vocab_size=vocab, **spec["text"])
    cfg = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_index=image_id, vocab_size=vocab,
                          projection_dim=64, hidden_size=64)
    gen = torch.Generator().manual_seed(seed)
    model = PaliGemmaForConditionalGeneration(cfg).eval()
    randomize(model, gen)
    out_dir = root / "e2e"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    model = PaliGemmaForConditionalGeneration.from_pretrained(out_dir, dtype=torch.float32, attn_implementation="eager").eval()

    cases, tensors = [], {}
    for i, (image_file, prompt) in enumerate(E2E_CASES):
        # We apply EXIF orientation (people expect upright photos); transformers' processor does not,
        # so the reference is given the upright image.
        image = ImageOps.exif_transpose(Image.open(fixtures / "image" / image_file))
        inputs = processor(images=image, text=prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=12, do_sample=False, output_logits=True,
                                 return_dict_in_generate=True)
        new = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
        top2 = torch.stack(out.logits)[:, 0].topk(2, dim=-1).values
        cases.append({
            "image": image_file, "prompt": prompt,
            "input_ids": inputs["input_ids"][0].tolist(), "token_type_ids": inputs["token_type_ids"][0].tolist(),
            "generated_ids": new, "text": processor.decode(new, skip_special_tokens=True),
            "min_margin": float((top2[:, 0] - top2[:, 1]).min()),
        })
        tensors[f"pixel_values_{i}"] = inputs["pixel_values"][0].float().contiguous()
    save_file(tensors, str(out_dir / "reference.safetensors"))
    (out_dir / "reference.json").write_text(json.dumps({"transformers": transformers.__version__, "cases": cases}, indent=1) + "\n")
    print(f"   e2e: vocab {vocab}, {len(cases)} cases, texts {[c['text'] for c in cases]}")


# Several images in one prompt (as the processor builds it: every image's tokens, in order, then
# <bos>, the prompt and a newline), on the e2e checkpoint.
E2E_MULTI_CASES = [
    (["inputs/jpeg_baseline.jpg", "inputs/png_rgb.png"], "answer en which picture is brighter?"),
    (["inputs/jpeg_exif6.jpg", "inputs/jpeg_baseline.jpg", "inputs/png_palette.png"], "caption en"),
]


def build_e2e_multi(root: pathlib.Path):
    from PIL import Image, ImageOps
    from transformers import PaliGemmaProcessor

    fixtures = root.parent
    out_dir = root / "e2e"
    processor = PaliGemmaProcessor.from_pretrained(out_dir)
    model = PaliGemmaForConditionalGeneration.from_pretrained(out_dir, dtype=torch.float32, attn_implementation="eager").eval()
    cases = []
    for files, prompt in E2E_MULTI_CASES:
        images = [ImageOps.exif_transpose(Image.open(fixtures / "image" / f)).convert("RGB") for f in files]
        inputs = processor(images=[images], text=[prompt], return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=12, do_sample=False, output_logits=True,
                                 return_dict_in_generate=True)
        new = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
        top2 = torch.stack(out.logits)[:, 0].topk(2, dim=-1).values
        cases.append({"images": files, "prompt": prompt, "input_ids": inputs["input_ids"][0].tolist(),
                      "generated_ids": new, "text": processor.decode(new, skip_special_tokens=True),
                      "min_margin": float((top2[:, 0] - top2[:, 1]).min())})
    (out_dir / "reference_multi.json").write_text(
        json.dumps({"transformers": transformers.__version__, "cases": cases}, indent=1) + "\n")
    print(f"   e2e multi-image: {[len(c['images']) for c in cases]} images, texts {[c['text'] for c in cases]}")
