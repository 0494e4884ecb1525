"""Reference fixtures for the Gemma tokenizer (Sources/GemmaTokenizer).

Trains a small SentencePiece BPE model with Gemma's settings (byte fallback, split digits, no dummy
prefix, identity normalisation, whitespace-only pieces) and PaliGemma's layout (the 1024 <locDDDD>
and 128 <segDDD> pieces at the end of the vocabulary, <image> added by the processor right after
them), exports it to tokenizer.json through transformers' fast converter, and records reference
token ids / decodes / PaliGemma prompts for the Swift tests.

Needs, besides tools/reference/requirements.txt, the `protobuf` package (transformers' SentencePiece
converter reads the model proto with it).

Output (Tests/Fixtures/tokenizer/):
    tokenizer.model       SentencePiece ModelProto
    tokenizer.json        the same tokenizer as exported by transformers (with <image>)
    cases.json            corpus strings with reference ids, sentencepiece ids and decodes
    decode_cases.json     id sequences (incl. broken byte runs) with reference decodes
    prompts.json          PaliGemmaProcessor input_ids + token_type_ids
"""
import io
import json
import pathlib
import random
import shutil
import tempfile

NUM_LOC = 1024
NUM_SEG = 128
LOC_SEG = [f"<loc{i:04d}>" for i in range(NUM_LOC)] + [f"<seg{i:03d}>" for i in range(NUM_SEG)]
CONTROL = ["<mask>", "[@BOS@]"]
USER_DEFINED_HEAD = ["<start_of_turn>", "<end_of_turn>"] + [f"<unused{i}>" for i in range(4)]

WORDS = {
    "en": "the quick brown fox jumps over lazy dog image photo caption describe answer question what is "
          "there a in on of and to with cat car person tree sky building street people table red blue green "
          "left right top bottom detect segment where how many color picture shows two three man woman".split(),
    "fr": "le la les une des été café crème élève garçon où déjà très français naïve fenêtre château "
          "hôpital forêt noël cœur œuvre à ça".split(),
    "de": "über straße größe müller schön fräulein mädchen bäume häuser grün weiß fußball".split(),
    "es": "niño señor mañana corazón canción árbol acción según también pingüino".split(),
    "pl": "zażółć gęślą jaźń łódź źdźbło żółw".split(),
    "vi": "tiếng việt người nước xin chào cảm ơn".split(),
    "ru": "привет мир кошка собака дерево небо красный синий зелёный человек машина".split(),
    "uk": "їжак ґанок європа".split(),
    "el": "γειά σου κόσμε αλφάβητο ελληνικά".split(),
    "ar": "مرحبا بالعالم قطة كلب شجرة سماء أحمر أزرق صورة".split(),
    "he": "שלום עולם חתול כלב".split(),
    "hi": "नमस्ते दुनिया बिल्ली कुत्ता पेड़ आसमान लाल नीला तस्वीर".split(),
    "th": "สวัสดี ชาวโลก แมว สุนัข ต้นไม้ ท้องฟ้า".split(),
    "zh": "你好 世界 猫 狗 树 天空 红色 蓝色 图片 描述 一只 在 上面".split(),
    "ja": "こんにちは 世界 ねこ いぬ 木 空 赤い 青い 写真 東京 カタカナ テスト".split(),
    "ko": "안녕하세요 세계 고양이 개 나무 하늘 빨간색 사진".split(),
    "misc": "e-mail http://example.com a_b x+y=z (ok) [1] {k:v} #tag @user $5 50% 3.14 1,000 ... !? ;-)".split(),
}
EMOJI = ["😀", "👍", "👍🏽", "🐈", "🌍", "❤️", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "🧑🏿‍💻", "✨", "🙂"]
COMBINING = ["e\u0301", "a\u0308", "n\u0303", "\u0915\u094d\u0937", "o\u0302\u0323", "Z\u0351\u0352\u0353\u0354"]
ODD = ["\u00a0", "\u200b", "\u200d", "\u200e", "\u202e", "\ufeff", "\ufffd", "\u2581", "\u0000", "\u0007",
       "\r", "\r\n", "\x7f", "\u00ad", "\U0001f600", "\U00010348", "\U0010fffd", "\ue000", "\u2028", "\u3000",
       "ﬁ", "Ⅻ", "①", "ｶ", "＄", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\U0002a6d6"]
SPECIAL_TEXT = ["<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "<image>", "<start_of_turn>", "<end_of_turn>",
                "<unused1>", "[@BOS@]", "<loc0000>", "<loc1023>", "<seg000>", "<seg127>", "<loc12>",
                "<loc01234>", "<seg>", "<loc1024>", "<seg128>", "<0x41>", "<LOC0001>", "< loc0001>"]
RANGES = [(0x20, 0x7e), (0xa0, 0x24f), (0x370, 0x3ff), (0x400, 0x4ff), (0x590, 0x5ff), (0x600, 0x6ff),
          (0x900, 0x97f), (0xe00, 0xe7f), (0x1100, 0x11ff), (0x3040, 0x30ff), (0x4e00, 0x9fff),
          (0xac00, 0xd7a3), (0x1f300, 0x1f64f), (0x2000, 0x206f), (0x1d400, 0x1d7ff)]


def rand_char(rng):
    lo, hi = rng.choice(RANGES)
    return chr(rng.randint(lo, hi))


def sentence(rng, n=None, langs=None):
    n = n or rng.randint(1, 14)
    langs = langs or list(WORDS)
    out = []
    for _ in range(n):
        out.append(rng.choice(WORDS[rng.choice(langs)]))
        if rng.random() < 0.05:
            out.append(str(rng.randint(0, 10 ** rng.randint(1, 8))))
    sep = " "
    return sep.join(out)


def training_corpus():
    rng = random.Random(1234)
    lines = []
    for _ in range(30000):
        lang = rng.choice(list(WORDS))
        s = sentence(rng, langs=[lang, lang, "en"])
        if rng.random() < 0.1:
            s = s.capitalize() + "."
        if rng.random() < 0.05:
            s = "  " + s.replace(" ", "  ")
        if rng.random() < 0.03:
            s += " " + rng.choice(EMOJI)
        if rng.random() < 0.05:
            s = " ".join(rng.choice(LOC_SEG[:NUM_LOC]) for _ in range(4)) + " " + s
        lines.append(s)
    return lines


def test_corpus():
    rng = random.Random(5678)
    out = ["", " ", "  ", "   ", "\t", "\n", "\n\n", " \n ", "\t\t x", "a", "hello", "Hello world", "hello  world",
           " leading", "trailing ", "0", "12345678901234567890", "3.14159", "1,000,000", "a1b2c3",
           "▁", "▁▁hello", "<image><image><bos>caption en\n", "detect cat ; dog\n",
           "<loc0123><loc0456><loc0789><loc1000> cat ; <loc0001><loc0002><loc0003><loc0004><seg045><seg127> dog"]
    out += SPECIAL_TEXT + EMOJI + COMBINING + ODD
    out += [s + "x" + s for s in SPECIAL_TEXT] + ["a" + s + "b" for s in SPECIAL_TEXT]
    out += ["".join(rng.choice(SPECIAL_TEXT) for _ in range(rng.randint(2, 5))) for _ in range(30)]
    for lang, words in WORDS.items():
        out.append(" ".join(words))
        for _ in range(25):
            out.append(sentence(rng, langs=[lang]))
    while len(out) < 2300:
        kind = rng.randrange(12)
        if kind == 0:
            s = sentence(rng)
        elif kind == 1:  # whitespace runs, tabs, newlines
            s = "".join(rng.choice(WORDS["en"]) + rng.choice([" ", "  ", "\t", "\n", " \t ", "   ", "\n\n", "\r\n"])
                        for _ in range(rng.randint(1, 6)))
        elif kind == 2:  # random unicode
            s = "".join(rand_char(rng) for _ in range(rng.randint(1, 12)))
        elif kind == 3:  # emoji / ZWJ
            s = " ".join(rng.choice(EMOJI + WORDS["en"]) for _ in range(rng.randint(1, 6)))
        elif kind == 4:  # combining marks
            s = "".join(rng.choice(COMBINING + WORDS["fr"] + [" "]) for _ in range(rng.randint(1, 6)))
        elif kind == 5:  # digits
            s = rng.choice(["", "x", "in ", "$"]) + str(rng.randint(0, 10 ** rng.randint(1, 15))) + \
                rng.choice(["", " cats", ".5", "%", "th"])
        elif kind == 6:  # loc / seg inline
            parts = []
            for _ in range(rng.randint(1, 3)):
                parts.append("".join(rng.choice(LOC_SEG[:NUM_LOC]) for _ in range(4)))
                parts.append(rng.choice([" ", ""]) + rng.choice(WORDS["en"]))
                if rng.random() < 0.5:
                    parts.append("".join(rng.choice(LOC_SEG[NUM_LOC:]) for _ in range(rng.randint(1, 16))))
                parts.append(rng.choice([" ; ", ";", " "]))
            s = "".join(parts)
        elif kind == 7:  # special tokens inside text
            s = sentence(rng, 3) + rng.choice(SPECIAL_TEXT) + sentence(rng, 2)
        elif kind == 8:  # odd characters
            s = "".join(rng.choice(ODD + [" ", "a", "1"]) for _ in range(rng.randint(1, 8)))
        elif kind == 9:  # prompts
            s = rng.choice(["caption en", "caption fr", "describe en", "answer en where is the cat?",
                            "detect car ; person", "segment cat", "ocr", "question en how many dogs?"]) + \
                rng.choice(["", "\n"])
        elif kind == 10:  # long mixed
            s = "\n".join(sentence(rng, rng.randint(10, 40)) for _ in range(rng.randint(1, 4)))
        else:  # mixed scripts without spaces
            s = "".join(rng.choice(WORDS[rng.choice(list(WORDS))]) for _ in range(rng.randint(2, 8)))
        out.append(s)
    # deterministic de-duplication keeping order
    seen, uniq = set(), []
    for s in out:
        if s not in seen:
            seen.add(s)
            uniq.append(s)
    return uniq


# --- minimal protobuf wire helpers (to move loc/seg to the end of the vocabulary) -------------------

def _read_varint(b, i):
    shift = value = 0
    while True:
        byte = b[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def _varint(v):
    out = bytearray()
    while True:
        byte = v & 0x7F
        v >>= 7
        if v:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _fields(b):
    """Yields (field_number, wire_type, raw bytes of the whole field)."""
    i = 0
    while i < len(b):
        start = i
        key, i = _read_varint(b, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _read_varint(b, i)
        elif wire == 1:
            i += 8
        elif wire == 2:
            n, i = _read_varint(b, i)
            i += n
        elif wire == 5:
            i += 4
        else:
            raise ValueError(wire)
        yield field, wire, b[start:i]


def _piece_name(raw):
    _, i = _read_varint(raw, 0)
    _, i = _read_varint(raw, i)  # length of the embedded message
    for field, wire, sub in _fields(raw[i:]):
        if field == 1:
            _, j = _read_varint(sub, 0)
            n, j = _read_varint(sub, j)
            return sub[j:j + n].decode()
    return None


def move_loc_seg_to_end(model: bytes) -> bytes:
    head, pieces, moved, tail = [], [], [], []
    for field, wire, raw in _fields(model):
        if field == 1:
            (moved if _piece_name(raw) in LOC_SEG else pieces).append(raw)
        elif not pieces:
            head.append(raw)
        else:
            tail.append(raw)
    return b"".join(head + pieces + moved + tail)


# --- generation --------------------------------------------------------------------------------------

def generate(out_dir: pathlib.Path) -> None:
    import numpy as np
    import sentencepiece as spm
    try:
        import google.protobuf  # noqa: F401  (transformers' SentencePiece converter needs it)
    except ImportError as e:
        raise SystemExit("fixtures_tokenizer needs the `protobuf` package (pip install protobuf)") from e
    from PIL import Image
    from transformers import AutoTokenizer, PaliGemmaProcessor, SiglipImageProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_corpus()), model_writer=buf, model_type="bpe",
        vocab_size=4 + len(CONTROL) + len(USER_DEFINED_HEAD) + 256 + 2000 + len(LOC_SEG), hard_vocab_limit=False,
        byte_fallback=True, split_digits=True, add_dummy_prefix=False, normalization_rule_name="identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, split_by_whitespace=True,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", control_symbols=CONTROL, user_defined_symbols=USER_DEFINED_HEAD + LOC_SEG,
        character_coverage=0.9995, max_sentencepiece_length=16, num_threads=1, minloglevel=2,
        input_sentence_size=0, shuffle_input_sentence=False)
    model = move_loc_seg_to_end(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model)
    vocab_size = sp.get_piece_size()
    assert sp.piece_to_id("<loc0000>") == vocab_size - len(LOC_SEG), "loc tokens must sit at the end"

    for old in ["tokenizer.model", "tokenizer.json", "tokenizer_config.json"]:
        (out_dir / old).unlink(missing_ok=True)
    (out_dir / "tokenizer.model").write_bytes(model)

    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp) / "src"
        src.mkdir()
        (src / "tokenizer.model").write_bytes(model)
        (src / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>",
            "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>",
            "add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False}))
        tok = AutoTokenizer.from_pretrained(src)
        image_processor = SiglipImageProcessor(size={"height": 28, "width": 28})
        image_processor.image_seq_length = 4
        processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)
        saved = pathlib.Path(tmp) / "saved"
        processor.save_pretrained(saved)
        shutil.copy(saved / "tokenizer.json", out_dir / "tokenizer.json")
        # the reference: the tokenizer as PaliGemmaProcessor uses it, reloaded from the exported json
        ref = PaliGemmaProcessor.from_pretrained(saved)
    rt = ref.tokenizer
    image_id = rt.convert_tokens_to_ids("<image>")
    assert image_id == vocab_size, (image_id, vocab_size)

    corpus = test_corpus()
    cases, mismatches_sp = [], 0
    for text in corpus:
        ids = rt(text, add_special_tokens=False)["input_ids"]
        sp_ids = sp.encode(text)
        mismatches_sp += ids != sp_ids
        case = {"text": text, "ids": ids}
        # to keep the fixture small, fields equal to the obvious value are left out
        if sp_ids != ids:
            case["sp_ids"] = sp_ids  # sentencepiece itself does not match control tokens inside text
        decoded = rt.decode(ids, skip_special_tokens=True)
        decoded_raw = rt.decode(ids, skip_special_tokens=False)
        if decoded != text:
            case["decoded"] = decoded
        if decoded_raw != text:
            case["decoded_raw"] = decoded_raw
        cases.append(case)
    print(f"   {len(cases)} strings; sentencepiece differs from HF on {mismatches_sp}")

    # decode of arbitrary id sequences: broken byte runs, specials, loc/seg, mixed
    rng = random.Random(99)
    byte_ids = [sp.piece_to_id(f"<0x{b:02X}>") for b in range(256)]
    specials = [0, 1, 2, 3, sp.piece_to_id("<mask>"), image_id, sp.piece_to_id("<start_of_turn>"),
                sp.piece_to_id("<loc0123>"), sp.piece_to_id("<seg045>")]
    utf8_runs = [list(c.encode()) for c in ["é", "日", "😀", "ก", "👍🏽"]]
    decode_cases = []
    for n in range(400):
        seq = []
        for _ in range(rng.randint(0, 12)):
            k = rng.randrange(6)
            if k == 0:
                seq.append(rng.randrange(vocab_size + 1))
            elif k == 1:
                seq.append(rng.choice(byte_ids))
            elif k == 2:
                run = rng.choice(utf8_runs)
                cut = rng.randint(1, len(run))
                seq += [byte_ids[b] for b in (run if rng.random() < 0.6 else run[:cut])]
            elif k == 3:
                seq.append(rng.choice(specials))
            else:
                seq += rt(sentence(rng, 2), add_special_tokens=False)["input_ids"]
        decode_cases.append({"ids": seq, "decoded": rt.decode(seq, skip_special_tokens=True),
                             "decoded_raw": rt.decode(seq, skip_special_tokens=False),
                             "pieces": rt.convert_ids_to_tokens(seq)})

    image = Image.fromarray(np.zeros((28, 28, 3), dtype=np.uint8))
    prompts = []
    prng = random.Random(7)
    for n in range(40):
        n_img = [1, 4, 16, 256][n % 4]
        ref.image_seq_length = n_img
        prefix = prng.choice(["caption en", "", "detect cat", "answer en what is this?", "ocr",
                             sentence(prng), "segment <loc0001> dog", "  spaced  ", "日本語 describe"])
        suffix = prng.choice([None, "a cat", "<loc0010><loc0020><loc0030><loc0040> cat", "", sentence(prng)])
        out = ref(images=image, text=prefix, suffix=suffix)
        prompts.append({"prefix": prefix, "suffix": suffix, "image_tokens": n_img,
                        "ids": [int(x) for x in out["input_ids"][0]],
                        "token_types": [int(x) for x in out["token_type_ids"][0]]})

    meta = {"vocab_size_model": vocab_size, "vocab_size_json": len(rt), "image_id": image_id,
            "bos": rt.bos_token_id, "eos": rt.eos_token_id, "pad": rt.pad_token_id, "unk": rt.unk_token_id}
    dump = dict(ensure_ascii=False, separators=(",", ":"))
    (out_dir / "cases.json").write_text(json.dumps({"meta": meta, "cases": cases}, **dump) + "\n")
    (out_dir / "decode_cases.json").write_text(json.dumps(decode_cases, **dump) + "\n")
    (out_dir / "prompts.json").write_text(json.dumps(prompts, **dump) + "\n")
    for p in sorted(out_dir.iterdir()):
        print(f"   {p.name}: {p.stat().st_size} bytes")
