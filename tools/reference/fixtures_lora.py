"""LoRA fine-tuning parity: loss, LoRA gradients and one AdamW step, from transformers + PEFT.

For each entry of FIXTURES_LORA (fixture NAME, float32 base checkpoint Tests/Fixtures/model/BASE, loaded
as committed, not copied: gqa2_window and tiny16 on the bases of the same name, LoRA only; tiny16_tokens on
tiny16, LoRA + trainable tokens; gqa2_vision on gqa2_window, LoRA on the SigLIP tower too; see below),
Tests/Fixtures/lora/NAME/ holds:

  examples.safetensors   two training examples, laid out as PaliGemmaProcessor lays out training input:
                           ids_i    (T_i,) i64   [511]*N_img + [BOS=2] + prefix + [NEWLINE=10] + suffix + [EOS=1]
                           types_i  (T_i,) i64   0 up to and including the NEWLINE, 1 for suffix + EOS
                           labels_i (T_i,) i64   -100 where types == 0, else the token id (EOS included)
                           pixels_i (3,S,S) f32  uniform in [-1, 1]
                         (example 0: prefix 3 ids, suffix 4 ids; example 1: prefix 5, suffix 6; ids in 12...500)
  adapter_initial/       the adapter before training  } PEFT's save_pretrained format:
  adapter_step1/         the adapter after one step   }   adapter_config.json + adapter_model.safetensors
                                                           (PEFT's boilerplate README.md model card is dropped)
  grads.safetensors      `loss` (1,) f32 and the gradient of every LoRA weight (before clipping), under the
                         same key names as adapter_model.safetensors
  reference.json         hyper-parameters, loss, per-example CE sums and token counts, gradient norm,
                         clip coefficient, greedy ids with and without the adapter

Adapter tensor names (adapter_model.safetensors, f32; PEFT strips the adapter name `.default`):
  base_model.model.model.language_model.layers.{L}.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight
  base_model.model.model.language_model.layers.{L}.mlp.{gate,up,down}_proj.lora_{A,B}.weight
  lora_A: (r, in_features), lora_B: (out_features, r); delta W = (lora_alpha / r) * B @ A, y = x W^T + x (dW)^T.
  No other tensors (no bias, no embeddings, nothing of the SigLIP tower, whose q/k/v_proj are not adapted),
  except in tiny16_tokens and gqa2_vision (below).
adapter_config.json (the fields that matter; PEFT writes many more, mostly null/false/defaults):
  "peft_type": "LORA", "r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "bias": "none",
  "target_modules": ".*language_model.*\\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    (a string: PEFT matches it with re.fullmatch against module names such as
     "model.language_model.layers.0.self_attn.q_proj"),
  "use_rslora": false, "use_dora": false, "fan_in_fan_out": false, "task_type": null,
  "base_model_name_or_path": "Tests/Fixtures/model/BASE", "peft_version": "0.21.2", ...

tiny16_tokens: the same recipe (its own seed, so its own examples) on base tiny16, whose lm_head is tied to
embed_tokens, with LoraConfig(..., trainable_token_indices={"embed_tokens": TOKENS}); TOKENS = the sorted
distinct suffix ids of both examples plus EOS=1 (11 ids). adapter_config.json then has
  "trainable_token_indices": {"embed_tokens": [1, 64, ...]}, "ensure_weight_tying": false
and adapter_model.safetensors / grads.safetensors one more tensor,
  base_model.model.model.language_model.embed_tokens.token_adapter.trainable_tokens_delta  (len(TOKENS), hidden)
holding the full replacement rows (not deltas despite the name), row j for token TOKENS[j]. PEFT starts them
as copies of the base rows; here they are then perturbed by N(0,1) * TOKEN_PERTURB (drawn after the LoRA init).
Forward: the embedding matrix with rows TOKENS replaced (index_copy), times Gemma's embed_scale sqrt(hidden)
as usual; PEFT wraps the tied lm_head too (a TrainableTokensWrapper sharing the same parameter), so the logits
use the replaced rows as well. The rows' gradient is therefore the sum of the embedding path (embed_scale
included; zero for EOS, which is only ever a last input) and the lm_head path. They are clipped and stepped
with the LoRA tensors (one norm, one AdamW param group, weight decay pulling them toward 0, not toward the
base rows). reference.json adds "base_model_dir", "trainable_tokens", "tied": true, the tensor's key/shape,
its init and its gradient norm; "base" still names the model directory.

gqa2_vision: the same recipe (its own seed, so its own examples) on base gqa2_window, with target_modules
  ".*language_model.*\\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)|.*vision_tower.*\\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)"
(saved as that string in adapter_config.json; checked with re.fullmatch to select exactly the language model's
7 per layer and every SigLIP encoder layer's q/k/v/out_proj and fc1/fc2: not the multi_modal_projector.linear,
not the patch embedding, no layer norm, no bias). adapter_model.safetensors / grads.safetensors add, per
vision layer L (lora_A: (r, in), lora_B: (out, r), same delta W formula; the base Linear keeps its bias):
  base_model.model.model.vision_tower.encoder.layers.{L}.self_attn.{q,k,v,out}_proj.lora_{A,B}.weight
  base_model.model.model.vision_tower.encoder.layers.{L}.mlp.{fc1,fc2}.lora_{A,B}.weight
All LoRA tensors (vision and text) get the N(0,1) * scale init, drawn in named_parameters order (vision tower
first), are clipped with one norm and stepped in one AdamW group. The vision gradients flow back through the
projector and the tower's post_layernorm (applied: PaliGemma takes last_hidden_state after it); each of their
entries is checked nonzero. reference.json adds "base_model_dir", "vision": true, the number of adapted modules
and vision LoRA tensors and the vision gradients' norm. (For this seed the vision half alone does not change
the greedy ids; loss and grads are the check on it.)

Loss (one optimiser step over both examples):
  Each example runs alone (batch 1) through the model's own forward with token_type_ids, so the attention
  mask is transformers': image + BOS + prefix + NEWLINE (types 0) attend bidirectionally among themselves
  (in Gemma 2's sliding layers too: the block overlay is OR-ed with the sliding-window causal mask, so the
  prefix ignores the window), suffix tokens (types 1) attend causally (and within the window in sliding
  layers). Logits are shifted as a causal LM: position t predicts token t+1, so the logit at the NEWLINE
  predicts the first suffix token and the one at the last suffix token predicts EOS; the logit at EOS
  predicts nothing. CE in float32 on the (soft-capped, where configured) logits.
    loss = (sum over examples of the per-token CE sums) / (total number of labelled tokens)
  i.e. a mean over all labelled tokens of both examples (not a mean of per-example means). One backward.
Step: g = grads; clip_grad_norm_(lora params, max_norm) (torch: coef = max_norm / (||g||_2 + 1e-6),
  applied when < 1; the norm is over all LoRA tensors together), then one torch.optim.AdamW step
  (decoupled weight decay: p -= lr*wd*p, then Adam with bias correction; step 1 gives
  p -= lr * g_c / (|g_c| + eps) elementwise, g_c the clipped gradient). Note: that first step is almost
  lr * sign(g) and barely depends on the gradient's magnitude or the clipping, so adapter_step1 checks the
  optimiser arithmetic and the gradients' signs; grads.safetensors is the check on gradient values.
Greedy: PeftModel.from_pretrained(fresh base, adapter_step1).generate on example 0's prompt only
  (ids up to and including NEWLINE, types 0, pixels_0), do_sample=False, max_new_tokens=12 (stops at EOS);
  generate() types every generated token 1 (causal). Seeds / LoRA init scale are the first (from 0.1 up)
  with which the adapter changes the greedy ids and both greedy runs keep a top-2 logit margin >= 0.05
  (reference.json: seed, lora_init, greedy_min_margin_*).

Reference: transformers 5.24.0, peft 0.21.2, torch, float32, eager attention, CPU.
"""
import json
import pathlib
import re
import shutil

import torch
from safetensors.torch import save_file, load_file
import transformers
from transformers import PaliGemmaForConditionalGeneration

from fixtures_model import FIXTURES, IMAGE_TOKEN, BOS, EOS, NEWLINE, VOCAB

import peft
from peft import LoraConfig, PeftModel, get_peft_model

assert peft.__version__ == "0.21.2", f"reference needs peft 0.21.2, not {peft.__version__}"

# (fixture directory, base model directory, train embedding rows with PEFT's trainable tokens,
#  adapt the SigLIP tower too)
FIXTURES_LORA = [("gqa2_window", "gqa2_window", False, False), ("tiny16", "tiny16", False, False),
                 ("tiny16_tokens", "tiny16", True, False), ("gqa2_vision", "gqa2_window", False, True)]
MODEL_FIXTURES = pathlib.Path(__file__).resolve().parent.parent.parent / "Tests" / "Fixtures" / "model"

RANK, ALPHA = 4, 8
TARGET = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
TARGET_VISION = TARGET + r"|.*vision_tower.*\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)"
LORA_INIT_SCALES = (0.1, 0.2, 0.3, 0.5)   # the first that makes the adapter change greedy ids
MIN_MARGIN = 0.05   # top-2 logit margin along both greedy runs, so float32 rounding cannot flip them
LR, BETAS, EPS, WEIGHT_DECAY = 1e-3, (0.9, 0.999), 1e-8, 0.01
MAX_NORM = 0.5
TOKEN_PERTURB = 0.05   # trainable-token rows start at the base rows + N(0,1) * this
GREEDY_NEW = 12
PREFIX_LENS, SUFFIX_LENS = (3, 5), (4, 6)
ID_LOW, ID_HIGH = 12, 500   # inclusive


def load_base(name):
    model = PaliGemmaForConditionalGeneration.from_pretrained(
        MODEL_FIXTURES / name, dtype=torch.float32, attn_implementation="eager")
    assert model.config.text_config.vocab_size == VOCAB and model.config.image_token_id == IMAGE_TOKEN
    return model.eval()


def make_examples(cfg, gen):
    size = cfg.vision_config.image_size
    n_img = (size // cfg.vision_config.patch_size) ** 2
    examples = []
    for p_len, s_len in zip(PREFIX_LENS, SUFFIX_LENS):
        prefix = torch.randint(ID_LOW, ID_HIGH + 1, (p_len,), generator=gen)
        suffix = torch.randint(ID_LOW, ID_HIGH + 1, (s_len,), generator=gen)
        prompt = torch.cat([torch.full((n_img,), IMAGE_TOKEN), torch.tensor([BOS]), prefix, torch.tensor([NEWLINE])])
        answer = torch.cat([suffix, torch.tensor([EOS])])
        ids = torch.cat([prompt, answer]).long()
        types = torch.cat([torch.zeros(len(prompt)), torch.ones(len(answer))]).long()
        labels = torch.where(types == 0, torch.full_like(ids, -100), ids)
        pixels = torch.rand((3, size, size), generator=gen) * 2 - 1
        examples.append(dict(ids=ids, types=types, labels=labels, pixels=pixels, prompt_len=len(prompt)))
    return examples


def adapter_key(param_name):
    """named_parameters name -> the key PEFT's save_pretrained writes."""
    if param_name.endswith(".trainable_tokens_delta.default"):
        return param_name[:-len(".default")]
    return param_name.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")


def save_adapter(model, path):
    model.save_pretrained(path)
    (path / "README.md").unlink()   # PEFT's boilerplate model card (absolute paths, nothing for the tests)


def greedy(model, ex):
    n = ex["prompt_len"]
    with torch.no_grad():
        out = model.generate(input_ids=ex["ids"][None, :n], token_type_ids=ex["types"][None, :n],
                             pixel_values=ex["pixels"][None], max_new_tokens=GREEDY_NEW, do_sample=False,
                             output_logits=True, return_dict_in_generate=True)
    new = out.sequences[0, n:].tolist()
    top2 = torch.stack(out.logits)[:, 0].topk(2, dim=-1).values
    return new, float((top2[:, 0] - top2[:, 1]).min())


def expected_targets(cfg, vision):
    """The module names the target_modules regex must select (re.fullmatch), nothing more."""
    names = [f"model.language_model.layers.{layer}.{part}" for layer in range(cfg.text_config.num_hidden_layers)
             for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    if vision:
        names += [f"model.vision_tower.encoder.layers.{layer}.{part}"
                  for layer in range(cfg.vision_config.num_hidden_layers)
                  for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                               "mlp.fc1", "mlp.fc2")]
    return set(names)


def build(name, root: pathlib.Path, seed, init_scale, base_name=None, tokens=False, vision=False):
    base_name = base_name or name
    target = TARGET_VISION if vision else TARGET
    assert FIXTURES[base_name]["dtype"] == "float32"
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    out_dir = root / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)

    base = load_base(base_name)
    examples = make_examples(base.config, gen)
    save_file({f"{k}_{i}": ex[k].contiguous() for i, ex in enumerate(examples)
               for k in ("ids", "types", "labels", "pixels")}, str(out_dir / "examples.safetensors"))
    base_greedy, base_margin = greedy(base, examples[0])

    token_ids = None
    extra = {}
    if tokens:
        # Every distinct suffix id of both examples plus EOS: rows that are suffix inputs and targets.
        token_ids = sorted({int(t) for ex in examples for t in ex["ids"][ex["prompt_len"]:]} | {EOS})
        assert base.config.text_config.tie_word_embeddings and base.config.tie_word_embeddings
        assert base.lm_head.weight is base.model.language_model.embed_tokens.weight
        extra = {"trainable_token_indices": {"embed_tokens": token_ids}}
    selected = {n for n, _ in base.named_modules() if re.fullmatch(target, n)}
    assert selected == expected_targets(base.config, vision), sorted(selected ^ expected_targets(base.config, vision))
    assert not any("multi_modal_projector" in n for n in selected)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=target, bias="none", **extra)
    model = get_peft_model(base, config)
    # Recorded in adapter_config.json; repo-relative rather than this machine's absolute path.
    model.peft_config["default"].base_model_name_or_path = f"Tests/Fixtures/model/{base_name}"
    lora = [(n, p) for n, p in model.named_parameters() if "lora_" in n]
    token_params = [(n, p) for n, p in model.named_parameters() if "trainable_tokens_delta" in n]
    assert all(p.requires_grad for _, p in lora + token_params)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n and "trainable_tokens_delta" not in n)
    adapted_modules = sorted({n.split(".lora_")[0][len("base_model.model."):] for n, _ in lora})
    assert set(adapted_modules) == selected, sorted(set(adapted_modules) ^ selected)
    vision_lora = [(n, p) for n, p in lora if "vision_tower" in n]
    if vision:
        print(f"   {name}: adapted modules ({len(adapted_modules)}): {adapted_modules}")
        assert len(vision_lora) == 2 * 6 * base.config.vision_config.num_hidden_layers
    else:
        assert not vision_lora, "the SigLIP tower must not be adapted"
    assert not any("multi_modal_projector" in n for n, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        for _, p in lora:
            p.copy_(torch.randn(p.shape, generator=gen) * init_scale)
    if tokens:
        # One shared replacement-row tensor: named under embed_tokens, used by the tied lm_head too.
        embed_w = base.model.language_model.embed_tokens.token_adapter.base_layer.weight
        lm_head = model.base_model.model.lm_head
        print(f"   {name}: embed_tokens {type(model.base_model.model.model.language_model.embed_tokens).__name__}, "
              f"lm_head {type(lm_head).__name__} (tied adapter: {lm_head.token_adapter.tied_adapter is not None})")
        assert [n for n, _ in token_params] == [
            "base_model.model.model.language_model.embed_tokens.token_adapter.trainable_tokens_delta.default"], token_params
        assert type(lm_head).__name__ == "TrainableTokensWrapper"
        assert lm_head.token_adapter.trainable_tokens_delta["default"] is token_params[0][1]
        assert lm_head.token_adapter.base_layer.weight is embed_w
        delta = token_params[0][1]
        assert tuple(delta.shape) == (len(token_ids), base.config.text_config.hidden_size)
        assert torch.equal(delta.detach(), embed_w[token_ids].detach()), "rows start as the base rows"
        with torch.no_grad():
            delta.add_(torch.randn(delta.shape, generator=gen) * TOKEN_PERTURB)
    lora = lora + token_params   # every trainable tensor, LoRA first
    save_adapter(model, out_dir / "adapter_initial")

    saved = load_file(str(out_dir / "adapter_initial" / "adapter_model.safetensors"))
    assert set(saved) == {adapter_key(n) for n, _ in lora}, (sorted(saved)[:4], [n for n, _ in lora][:4])
    for n, p in lora:
        assert torch.equal(saved[adapter_key(n)], p.detach())
    adapter_config = json.loads((out_dir / "adapter_initial" / "adapter_config.json").read_text())

    # Loss over both examples: per-token CE sums, divided by the total number of labelled tokens.
    model.train()   # dropout is 0 everywhere; train mode as a fine-tuning loop would run it
    sums, counts = [], []
    total = 0.0
    for ex in examples:
        out = model(input_ids=ex["ids"][None], token_type_ids=ex["types"][None], pixel_values=ex["pixels"][None],
                    labels=ex["labels"][None], use_cache=False)
        logits = out.logits[0].float()
        targets = ex["labels"][1:]
        keep = targets != -100
        ce_sum = torch.nn.functional.cross_entropy(logits[:-1][keep], targets[keep], reduction="sum")
        count = int(keep.sum())
        # transformers' own loss is the per-example mean over the same tokens.
        assert torch.allclose(out.loss * count, ce_sum, rtol=1e-5, atol=1e-5), (float(out.loss) * count, float(ce_sum))
        sums.append(ce_sum)
        counts.append(count)
    loss = torch.stack(sums).sum() / sum(counts)
    loss.backward()

    grads = {adapter_key(n): p.grad.detach().clone().contiguous() for n, p in lora}
    assert all(float(g.abs().max()) > 0 for g in grads.values()), "some LoRA gradient is zero"
    if vision:
        vision_grads = {k: g for k, g in grads.items() if "vision_tower" in k}
        assert len(vision_grads) == len(vision_lora)
        assert all(float(g.abs().min()) > 0 for g in vision_grads.values()), "a vision LoRA gradient entry is zero"
        vision_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in vision_grads.values()])))
        for k in sorted(vision_grads):
            if ".layers.0." in k:
                print(f"   {name}: grad {k} {tuple(vision_grads[k].shape)} norm {float(torch.linalg.vector_norm(vision_grads[k])):.4e}")
    if tokens:
        g_rows = grads[adapter_key(token_params[0][0])]
        assert all(float(r.abs().max()) > 0 for r in g_rows), "a trainable-token row has no gradient"
    save_file({"loss": loss.detach().reshape(1).contiguous(), **grads}, str(out_dir / "grads.safetensors"))

    params = [p for _, p in lora]
    pre_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))
    assert pre_norm > MAX_NORM, f"gradient norm {pre_norm} does not exceed max_norm {MAX_NORM}: no clipping"
    returned = float(torch.nn.utils.clip_grad_norm_(params, max_norm=MAX_NORM))
    clip_coef = MAX_NORM / (returned + 1e-6)
    optimizer = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    before = [p.detach().clone() for p in params]
    optimizer.step()
    max_update = max(float((p.detach() - b).abs().max()) for p, b in zip(params, before))
    save_adapter(model, out_dir / "adapter_step1")
    step1 = load_file(str(out_dir / "adapter_step1" / "adapter_model.safetensors"))
    assert set(step1) == set(saved)

    # How close to zero the gradients get: a sign-like first Adam step flips with the sign of a tiny g.
    flat = torch.cat([g.flatten() for g in grads.values()]).abs()
    small = int((flat < 1e-4 * float(flat.max())).sum())
    tiny = int((flat * clip_coef < 100 * EPS).sum())

    # Greedy decoding with the trained adapter on a fresh base.
    adapted = PeftModel.from_pretrained(load_base(base_name), out_dir / "adapter_step1").eval()
    if tokens:
        key = adapter_key(token_params[0][0])
        assert type(adapted.base_model.model.lm_head).__name__ == "TrainableTokensWrapper"
        loaded = adapted.base_model.model.model.language_model.embed_tokens.token_adapter.trainable_tokens_delta["default"]
        assert torch.equal(loaded.detach(), step1[key])
        assert adapted.base_model.model.lm_head.token_adapter.trainable_tokens_delta["default"] is loaded
    adapter_greedy, adapter_margin = greedy(adapted, examples[0])
    if vision:
        # Printed only: how much the vision half of the adapter alone moves the greedy run.
        vision_b = [p for n, p in adapted.named_parameters() if "vision_tower" in n and "lora_B" in n]
        kept = [p.detach().clone() for p in vision_b]
        with torch.no_grad():
            for p in vision_b:
                p.zero_()
        text_only_greedy, text_only_margin = greedy(adapted, examples[0])
        with torch.no_grad():
            for p, k in zip(vision_b, kept):
                p.copy_(k)
        print(f"   {name}: greedy lora without its vision part {text_only_greedy} (margin {text_only_margin:.3f})")

    # Merge check (printed only): merged W == W + (alpha/r) B A.
    w0 = load_base(base_name).model.language_model.layers[0].self_attn.q_proj.weight.detach()
    a = step1["base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight"]
    b = step1["base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_B.weight"]
    merged = adapted.merge_and_unload()
    merge_diff = float((merged.model.language_model.layers[0].self_attn.q_proj.weight - (w0 + ALPHA / RANK * b @ a)).abs().max())
    if tokens:
        # Merging writes the rows into the (still tied) embedding matrix, so lm_head uses them too.
        e = merged.model.language_model.embed_tokens.weight
        assert merged.lm_head.weight is e
        assert torch.equal(e[token_ids], step1[key])

    info = {
        "transformers": transformers.__version__, "peft": peft.__version__, "torch": torch.__version__,
        "seed": seed, "base": f"Tests/Fixtures/model/{base_name}",
        "rank": RANK, "alpha": ALPHA, "scaling": ALPHA / RANK, "lora_dropout": 0.0, "target_modules": target,
        "lora_init": f"every lora_A and lora_B ~ N(0,1) * {init_scale}",
        "loss": float(loss.detach()), "loss_definition": "sum of per-token CE over both examples / total labelled tokens",
        "example_loss_sums": [float(s.detach()) for s in sums], "example_token_counts": counts,
        "lr": LR, "betas": list(BETAS), "eps": EPS, "weight_decay": WEIGHT_DECAY,
        "max_norm": MAX_NORM, "grad_norm": pre_norm, "clip_coef": clip_coef,
        "prompt_len": examples[0]["prompt_len"],
        "greedy_max_new_tokens": GREEDY_NEW,
        "greedy_ids_base": base_greedy, "greedy_ids_adapter": adapter_greedy,
        "greedy_min_margin_base": base_margin, "greedy_min_margin_adapter": adapter_margin,
    }
    more = {}
    if tokens:
        more = {"base_model_dir": base_name, "trainable_tokens": token_ids, "tied": True,
                "trainable_tokens_key": key, "trainable_tokens_shape": list(step1[key].shape),
                "trainable_tokens_init": f"base embedding rows + N(0,1) * {TOKEN_PERTURB} (drawn after the LoRA init)",
                "trainable_tokens_grad_norm": float(torch.linalg.vector_norm(g_rows))}
    if vision:
        more = {"base_model_dir": base_name, "vision": True, "adapted_modules": len(adapted_modules),
                "vision_lora_tensors": len(vision_lora), "vision_grad_norm": vision_norm}
    if more:
        # Keys after "base", so the two LoRA-only fixtures keep their exact reference.json.
        keys = list(info)
        at = keys.index("base") + 1
        info = {k: info[k] for k in keys[:at]} | more | {k: info[k] for k in keys[at:]}
    (out_dir / "reference.json").write_text(json.dumps(info, indent=1) + "\n")

    print(f"   {name}: adapter keys {len(saved)}, e.g. {sorted(saved)[0]} {tuple(saved[sorted(saved)[0]].shape)}")
    print(f"   {name}: adapter_config {json.dumps({k: adapter_config.get(k) for k in ('peft_type', 'r', 'lora_alpha', 'lora_dropout', 'bias', 'target_modules', 'use_rslora', 'use_dora', 'fan_in_fan_out', 'task_type')})}")
    print(f"   {name}: seed {seed}, init scale {init_scale}: loss {float(loss.detach()):.6f} (sums {[round(float(s.detach()), 4) for s in sums]}, tokens {counts}), "
          f"grad norm {pre_norm:.4f} > max_norm {MAX_NORM} (coef {clip_coef:.4f}), max |update| {max_update:.2e}, "
          f"grads below 1e-4·max: {small}/{flat.numel()}, clipped |g| < 100·eps: {tiny}, min |g| {float(flat.min()):.2e}")
    print(f"   {name}: greedy base {base_greedy} (margin {base_margin:.3f})")
    print(f"   {name}: greedy lora {adapter_greedy} (margin {adapter_margin:.3f}); merge check max diff {merge_diff:.2e}")
    if vision:
        prefix = "base_model.model.model.vision_tower.encoder.layers.0."
        fresh = load_base(base_name).model.vision_tower.encoder.layers[0]
        for part, mod, merged_mod in (("self_attn.q_proj", fresh.self_attn.q_proj, merged.model.vision_tower.encoder.layers[0].self_attn.q_proj),
                                      ("mlp.fc1", fresh.mlp.fc1, merged.model.vision_tower.encoder.layers[0].mlp.fc1)):
            a, b = step1[prefix + part + ".lora_A.weight"], step1[prefix + part + ".lora_B.weight"]
            d = float((merged_mod.weight - (mod.weight + ALPHA / RANK * b @ a)).abs().max().detach())
            assert torch.equal(merged_mod.bias, mod.bias)
            print(f"   {name}: vision merge check {part} max diff {d:.2e}")
            merge_diff = max(merge_diff, d)
    assert merge_diff < 1e-5
    return base_greedy != adapter_greedy and min(base_margin, adapter_margin) >= MIN_MARGIN


def generate(out_dir: pathlib.Path):
    """The fixture tool's entry point."""
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    for i, (name, base_name, tokens, vision) in enumerate(FIXTURES_LORA):
        # Take the smallest LoRA init scale, then the first seed, with which the step-1 adapter changes
        # example 0's greedy ids and both greedy runs keep a clear top-2 margin.
        for init_scale in LORA_INIT_SCALES:
            for attempt in range(5):
                if build(name, out_dir, seed=4321 + 100 * i + attempt, init_scale=init_scale,
                         base_name=base_name, tokens=tokens, vision=vision):
                    break
                print(f"   {name}: rejected (greedy ids unchanged or a margin below {MIN_MARGIN})")
            else:
                continue
            break
        else:
            raise SystemExit(f"{name}: no LoRA init changes greedy decoding")
