"""Train the demo's SentencePiece BPE tokenizer (Gemma settings) and export HF files."""
import json, os, shutil, sys, tempfile
import numpy as np
import sentencepiece as spm
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scenes

LOC = [f"<loc{i:04d}>" for i in range(1024)]
SEG = [f"<seg{i:03d}>" for i in range(128)]


def corpus_lines(n_scenes=4000, seed=5_000_000):
    # Open numbers and reading-order captions, the data of the models before the shipped one: the
    # shipped tokenizer was trained on them, and the same words and digits cover the closed numbers
    # and kind-order captions the shipped model was trained on.
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n_scenes):
        sc = scenes.sample_scene(seed + i, 64, numbers=None)
        for lang in ("en", "de", "fr"):
            lines.append(f"caption {lang}")
            lines.append(sc.caption(lang, "reading"))
        for q, a in scenes.vqa_items(sc, rng):
            lines.append(f"answer en {q}")
            lines.append(a)
        p, t, _ = scenes.make_example(sc, "detect", rng)
        lines += [p, t]
        for o in sc.objs:
            lines.append(f"segment {o.kind}")
            lines.append(scenes.loc_tokens(o.box, sc.size) + "".join(SEG[int(c)] for c in rng.integers(0, 128, 16)) + " " + o.kind)
        lines.append("ocr")
        if sc.word:
            lines.append(sc.word)
    return lines


def build(out_dir, vocab_size=1800):
    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp()
    with open(os.path.join(tmp, "corpus.txt"), "w") as f:
        f.write("\n".join(corpus_lines()) + "\n")
    spm.SentencePieceTrainer.train(
        input=os.path.join(tmp, "corpus.txt"), model_prefix=os.path.join(tmp, "sp"),
        model_type="bpe", vocab_size=vocab_size, hard_vocab_limit=False,
        byte_fallback=True, split_digits=True, add_dummy_prefix=False,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, character_coverage=1.0,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        user_defined_symbols=LOC + SEG + ["<image>"],
        max_sentencepiece_length=16, num_threads=2, minloglevel=2)
    sp_dir = os.path.join(tmp, "hf")
    os.makedirs(sp_dir)
    shutil.copy(os.path.join(tmp, "sp.model"), os.path.join(sp_dir, "tokenizer.model"))
    cfg = {"tokenizer_class": "GemmaTokenizer", "add_bos_token": False, "add_eos_token": False,
           "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
           "mask_token": None, "model_max_length": 1000000000000000019884624838656,
           "padding_side": "right", "clean_up_tokenization_spaces": False, "spaces_between_special_tokens": False}
    json.dump(cfg, open(os.path.join(sp_dir, "tokenizer_config.json"), "w"), indent=2)
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(sp_dir)
    tok.save_pretrained(out_dir)
    shutil.copy(os.path.join(tmp, "sp.model"), os.path.join(out_dir, "tokenizer.model"))
    return tok


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/demo_tok"
    tok = build(out)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(out, "tokenizer.model"))
    print("sp size", sp.get_piece_size(), "hf len", len(tok))
    for s in ["caption en", 'a red circle, an orange star and a blue square with the word "zebra"\n',
              "<loc0012><loc0999><seg005> star ; <loc0001>", "answer en how many shapes are there?\n", "2024 écho Wort grün"]:
        a = sp.encode(s); b = tok.encode(s, add_special_tokens=False)
        print(a == b, len(a), [sp.id_to_piece(i) for i in a][:12])
    print({t: tok.convert_tokens_to_ids(t) for t in ["<pad>", "<eos>", "<bos>", "<unk>", "<loc0000>", "<loc1023>", "<seg000>", "<seg127>", "<image>"]})
