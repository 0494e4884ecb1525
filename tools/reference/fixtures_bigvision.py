"""big_vision / Kaggle parameter trees (.npz) made from the model fixtures, for BigVisionTests.

Google publishes PaliGemma on Kaggle as big_vision `.npz` trees (`paligemma2-3b-pt-224.b16.npz`):
flat keys `params/img/...` and `params/llm/...`, one array per parameter with the layers stacked on a
leading axis, kernels stored input-major, bfloat16 arrays saved by `ml_dtypes`. transformers'
`convert_paligemma2_weights_to_hf.py` (and `convert_paligemma_weights_to_hf.py` for PaliGemma 1) is the
statement of how such a tree maps to a Hugging Face checkpoint.

For each model fixture below, Tests/Fixtures/bigvision/NAME.npz is the tree that this mapping turns
into Tests/Fixtures/model/NAME/model.safetensors, so the transformers outputs recorded there
(reference.json / reference.safetensors) are the expected outputs of the tree:

  e2e.npz      from model/e2e (float32, PaliGemma 2, its tokenizer is Tests/Fixtures/tokenizer)
  bf16.b16.npz from model/bf16 (bfloat16 arrays, saved as ml_dtypes writes them)
  gemma1.npz   from model/gemma1 (PaliGemma 1: Gemma decoder, multi-query attention, no post-norms)

As in the published trees, the embedding has the tokenizer's rows only (`image_token_index` of them):
the Hugging Face conversion appends `<image>` and padding rows. The script checks itself: applying the
forward mapping (written below after the conversion script) to each tree gives back every tensor of the
fixture exactly (the embedding's first rows; lm_head is the tied embedding).

Needs only numpy and ml_dtypes (safetensors files are read by their JSON header).
"""
import json
import pathlib
import struct

import ml_dtypes
import numpy as np

MODELS = pathlib.Path(__file__).resolve().parent.parent.parent / "Tests" / "Fixtures" / "model"
TREES = {"e2e": "e2e.npz", "bf16": "bf16.b16.npz", "gemma1": "gemma1.npz"}


def read_safetensors(path):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    dtypes = {"F32": np.float32, "BF16": ml_dtypes.bfloat16, "F16": np.float16}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(data[start:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"]).copy()
    return out


def hf_names(tensors):
    """The fixture's prefixes (transformers 5 `save_pretrained` or the hub's)."""
    vision = "vision_tower.vision_model." if any(k.startswith("vision_tower.vision_model.") for k in tensors) else "vision_tower."
    return vision, "language_model.model.", "multi_modal_projector."


def to_tree(hf, config):
    """Hugging Face tensors -> big_vision tree (the inverse of the conversion script's mapping)."""
    v, t = config["vision_config"], config["text_config"]
    vp, lp, pp = hf_names(hf)
    d, nv = v["hidden_size"], v["num_attention_heads"]
    lv, l = v["num_hidden_layers"], t["num_hidden_layers"]
    h, n, k, hd = t["hidden_size"], t["num_attention_heads"], t["num_key_value_heads"], t["head_dim"]
    gemma2 = t.get("model_type", "gemma") == "gemma2"
    tree = {}
    tree["img/embedding/kernel"] = hf[vp + "embeddings.patch_embedding.weight"].transpose(2, 3, 1, 0)
    tree["img/embedding/bias"] = hf[vp + "embeddings.patch_embedding.bias"]
    tree["img/pos_embedding"] = hf[vp + "embeddings.position_embedding.weight"][None]

    def vl(j, name):
        return hf[f"{vp}encoder.layers.{j}.{name}"]

    blk = "img/Transformer/encoderblock/"
    stack = lambda f, count: np.stack([f(j) for j in range(count)])
    tree[blk + "LayerNorm_0/scale"] = stack(lambda j: vl(j, "layer_norm1.weight"), lv)
    tree[blk + "LayerNorm_0/bias"] = stack(lambda j: vl(j, "layer_norm1.bias"), lv)
    tree[blk + "LayerNorm_1/scale"] = stack(lambda j: vl(j, "layer_norm2.weight"), lv)
    tree[blk + "LayerNorm_1/bias"] = stack(lambda j: vl(j, "layer_norm2.bias"), lv)
    tree[blk + "MlpBlock_0/Dense_0/kernel"] = stack(lambda j: vl(j, "mlp.fc1.weight").T, lv)
    tree[blk + "MlpBlock_0/Dense_0/bias"] = stack(lambda j: vl(j, "mlp.fc1.bias"), lv)
    tree[blk + "MlpBlock_0/Dense_1/kernel"] = stack(lambda j: vl(j, "mlp.fc2.weight").T, lv)
    tree[blk + "MlpBlock_0/Dense_1/bias"] = stack(lambda j: vl(j, "mlp.fc2.bias"), lv)
    att = blk + "MultiHeadDotProductAttention_0/"
    for ours, theirs in [("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")]:
        tree[att + theirs + "/kernel"] = stack(lambda j: vl(j, f"self_attn.{ours}.weight").T.reshape(d, nv, d // nv), lv)
        tree[att + theirs + "/bias"] = stack(lambda j: vl(j, f"self_attn.{ours}.bias").reshape(nv, d // nv), lv)
    tree[att + "out/kernel"] = stack(lambda j: vl(j, "self_attn.out_proj.weight").T.reshape(nv, d // nv, d), lv)
    tree[att + "out/bias"] = stack(lambda j: vl(j, "self_attn.out_proj.bias"), lv)
    tree["img/Transformer/encoder_norm/scale"] = hf[vp + "post_layernorm.weight"]
    tree["img/Transformer/encoder_norm/bias"] = hf[vp + "post_layernorm.bias"]
    tree["img/head/kernel"] = hf[pp + "linear.weight"].T
    tree["img/head/bias"] = hf[pp + "linear.bias"]

    tree["llm/embedder/input_embedding"] = hf[lp + "embed_tokens.weight"][: config["image_token_index"]]

    def tl(j, name):
        return hf[f"{lp}layers.{j}.{name}"]

    tree["llm/layers/attn/q_einsum/w"] = stack(lambda j: tl(j, "self_attn.q_proj.weight").reshape(n, hd, h).transpose(0, 2, 1), l)
    tree["llm/layers/attn/kv_einsum/w"] = stack(lambda j: np.stack([
        tl(j, "self_attn.k_proj.weight").reshape(k, hd, h).transpose(0, 2, 1),
        tl(j, "self_attn.v_proj.weight").reshape(k, hd, h).transpose(0, 2, 1)]), l)
    tree["llm/layers/attn/attn_vec_einsum/w"] = stack(lambda j: tl(j, "self_attn.o_proj.weight").reshape(h, n, hd).transpose(1, 2, 0), l)
    tree["llm/layers/mlp/gating_einsum"] = stack(lambda j: np.stack([tl(j, "mlp.gate_proj.weight").T, tl(j, "mlp.up_proj.weight").T]), l)
    tree["llm/layers/mlp/linear"] = stack(lambda j: tl(j, "mlp.down_proj.weight").T, l)
    tree["llm/layers/pre_attention_norm/scale"] = stack(lambda j: tl(j, "input_layernorm.weight"), l)
    if gemma2:
        tree["llm/layers/post_attention_norm/scale"] = stack(lambda j: tl(j, "post_attention_layernorm.weight"), l)
        tree["llm/layers/pre_ffw_norm/scale"] = stack(lambda j: tl(j, "pre_feedforward_layernorm.weight"), l)
        tree["llm/layers/post_ffw_norm/scale"] = stack(lambda j: tl(j, "post_feedforward_layernorm.weight"), l)
    else:
        tree["llm/layers/pre_ffw_norm/scale"] = stack(lambda j: tl(j, "post_attention_layernorm.weight"), l)
    tree["llm/final_norm/scale"] = hf[lp + "norm.weight"]
    return {"params/" + key: np.ascontiguousarray(value) for key, value in tree.items()}


def from_tree(tree, config):
    """big_vision tree -> Hugging Face tensors, following convert_paligemma2_weights_to_hf.py's
    `slice_state_dict` (and PaliGemma 1's, where pre_ffw_norm is post_attention_layernorm)."""
    s = {key.removeprefix("params/"): value for key, value in tree.items()}
    v, t = config["vision_config"], config["text_config"]
    d, lv, l = v["hidden_size"], v["num_hidden_layers"], t["num_hidden_layers"]
    h, n, k, hd = t["hidden_size"], t["num_attention_heads"], t["num_key_value_heads"], t["head_dim"]
    vp, lp = "vision_tower.vision_model.", "language_model.model."
    out = {vp + "embeddings.patch_embedding.weight": s["img/embedding/kernel"].transpose(3, 2, 0, 1),
           vp + "embeddings.patch_embedding.bias": s["img/embedding/bias"],
           vp + "embeddings.position_embedding.weight": s["img/pos_embedding"].reshape(-1, d)}
    blk = "img/Transformer/encoderblock/"
    att = blk + "MultiHeadDotProductAttention_0/"
    for i in range(lv):
        b = f"{vp}encoder.layers.{i}."
        out[b + "layer_norm1.weight"] = s[blk + "LayerNorm_0/scale"][i].transpose()
        out[b + "layer_norm1.bias"] = s[blk + "LayerNorm_0/bias"][i]
        out[b + "layer_norm2.weight"] = s[blk + "LayerNorm_1/scale"][i].transpose()
        out[b + "layer_norm2.bias"] = s[blk + "LayerNorm_1/bias"][i]
        out[b + "mlp.fc1.weight"] = s[blk + "MlpBlock_0/Dense_0/kernel"][i].transpose()
        out[b + "mlp.fc1.bias"] = s[blk + "MlpBlock_0/Dense_0/bias"][i]
        out[b + "mlp.fc2.weight"] = s[blk + "MlpBlock_0/Dense_1/kernel"][i].transpose()
        out[b + "mlp.fc2.bias"] = s[blk + "MlpBlock_0/Dense_1/bias"][i]
        for ours, theirs in [("k_proj", "key"), ("v_proj", "value"), ("q_proj", "query"), ("out_proj", "out")]:
            out[b + f"self_attn.{ours}.weight"] = s[att + theirs + "/kernel"][i].reshape(-1, d).transpose()
            out[b + f"self_attn.{ours}.bias"] = s[att + theirs + "/bias"][i].reshape(-1, d).reshape(-1)
    out[vp + "post_layernorm.weight"] = s["img/Transformer/encoder_norm/scale"].transpose()
    out[vp + "post_layernorm.bias"] = s["img/Transformer/encoder_norm/bias"]
    out["multi_modal_projector.linear.weight"] = s["img/head/kernel"].transpose()
    out["multi_modal_projector.linear.bias"] = s["img/head/bias"]
    out[lp + "embed_tokens.weight"] = s["llm/embedder/input_embedding"]
    q, kv, o = s["llm/layers/attn/q_einsum/w"], s["llm/layers/attn/kv_einsum/w"], s["llm/layers/attn/attn_vec_einsum/w"]
    for i in range(l):
        b = f"{lp}layers.{i}."
        out[b + "self_attn.q_proj.weight"] = q[i].transpose(0, 2, 1).reshape(n * hd, h)
        out[b + "self_attn.k_proj.weight"] = kv[i, 0].transpose(0, 2, 1).reshape(k * hd, h)
        out[b + "self_attn.v_proj.weight"] = kv[i, 1].transpose(0, 2, 1).reshape(k * hd, h)
        out[b + "self_attn.o_proj.weight"] = o[i].transpose(2, 0, 1).reshape(h, n * hd)
        out[b + "mlp.gate_proj.weight"] = s["llm/layers/mlp/gating_einsum"][i, 0].transpose()
        out[b + "mlp.up_proj.weight"] = s["llm/layers/mlp/gating_einsum"][i, 1].transpose()
        out[b + "mlp.down_proj.weight"] = s["llm/layers/mlp/linear"][i].transpose()
        out[b + "input_layernorm.weight"] = s["llm/layers/pre_attention_norm/scale"][i]
        if "llm/layers/post_attention_norm/scale" in s:
            out[b + "post_attention_layernorm.weight"] = s["llm/layers/post_attention_norm/scale"][i]
            out[b + "pre_feedforward_layernorm.weight"] = s["llm/layers/pre_ffw_norm/scale"][i]
            out[b + "post_feedforward_layernorm.weight"] = s["llm/layers/post_ffw_norm/scale"][i]
        else:
            out[b + "post_attention_layernorm.weight"] = s["llm/layers/pre_ffw_norm/scale"][i]
    out[lp + "norm.weight"] = s["llm/final_norm/scale"]
    return out


def generate(out_dir: pathlib.Path):
    for name, file in TREES.items():
        config = json.loads((MODELS / name / "config.json").read_text())
        hf = read_safetensors(MODELS / name / "model.safetensors")
        tree = to_tree(hf, config)
        # The fixture's own names, for the check below.
        vp, lp, pp = hf_names(hf)
        back = from_tree(tree, config)
        checked = 0
        for key, value in back.items():
            theirs = key.replace("vision_tower.vision_model.", vp) if key.startswith("vision_tower.") else key
            expected = hf[theirs]
            if theirs.endswith("embed_tokens.weight"):
                expected = expected[: value.shape[0]]
            assert value.dtype == expected.dtype and value.shape == expected.shape, (name, key, value.shape, expected.shape)
            assert np.array_equal(np.ascontiguousarray(value).view(np.uint8), np.ascontiguousarray(expected).view(np.uint8)), (name, key)
            checked += 1
        missing = set(hf) - {k.replace("vision_tower.vision_model.", vp) if k.startswith("vision_tower.") else k for k in back}
        assert missing <= {"lm_head.weight", "language_model.lm_head.weight"}, missing
        np.savez(out_dir / file, **tree)
        kinds = sorted({str(v.dtype) for v in tree.values()})
        print(f"   {file}: {len(tree)} arrays ({', '.join(kinds)}), {checked} tensors round-trip to model/{name} exactly")
