#!/usr/bin/env python3
"""Golden files for tlmoe's byte-level BPE (text::BartBpeTokenizer), made with the real
`transformers` / `tokenizers` of both releases tlmoe follows (test tooling only):

    make_golden_tokenizers.py OUT_DIR

runs under transformers 5.x (the virtualenv's), makes the tokenizer directories below, records
what 5.x encodes and decodes, then runs itself under transformers 4.46.3 (the copy installed in
`sys.prefix/legacy-transformers`, put first on PYTHONPATH) to record what 4.x does with the same
directories and ids. Writes

    OUT_DIR/<name>/         the tokenizer directories:
        bpe5        a byte-level BPE trained here, saved by 5.x's BartTokenizer.save_pretrained
                    (tokenizer.json + tokenizer_config.json only), <mask> with lstrip as bart-base
        added5      bpe5 plus an added special token, added tokens that are not special, and
                    clean_up_tokenization_spaces: true in tokenizer_config.json
        prefix5     bpe5 with add_prefix_space
        strmerges5  added5 with tokenizer.json's merges as "a b" strings instead of [a, b] pairs
        vm          vocab.json + merges.txt alone (tokenizers' save_model)
        vmclean     vm with tokenizer_config.json saying clean_up_tokenization_spaces: true
        vm4         4.46.3's Python BartTokenizer with added tokens, saved by its save_pretrained
    OUT_DIR/tokenizers.json  per directory and text: the ids and the decoded strings of each
                    release (skip_special_tokens true/false; clean-up as the release does by
                    default, forced on, forced off; for 4.x the default is that of the releases
                    before 4.45, and release_default 4.46.3's own), and random byte strings
                    decoded by Python's bytes.decode("utf-8", errors="replace") and by each
                    release's tokenizer

    make_golden_tokenizers.py --check ROOT

loads every directory under ROOT/dirs (written by tlmoe) with 5.x's BartTokenizer and
AutoTokenizer and 4.46.3's BartTokenizer and BartTokenizerFast, and writes ROOT/found.json: the
ids of ROOT/request.json's texts and the decoded strings of its ids, per release and class.
"""
import json
import os
import random
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's a dog's life, isn't it?",
    "Hello , world ! don 't stop . I 'm here , you 're there and we 've seen it .",
    "Question: what is the capital of France? Answer: Paris.",
    "Zürich, Köln, São Paulo and Kraków are cities; naïve café résumé.",
    "Привет, мир! Как дела? Москва — столица России.",
    "日本語のテキストです。東京は大きい都市です。",
    "中文文本测试，北京是中国的首都。",
    "مرحبا بالعالم، هذه جملة عربية.",
    "Emoji 😀🎉👍 and symbols ©®™ ∑∫√ ← → ★",
    "Ελληνικά κείμενα και αριθμοί ٣٤٥ ۶۷ ४५६",
]

TEXTS = [
    " Hello , world !",
    "don 't",
    "I 'm",
    " don 't stop . , ? ! ' s they 're we 've it 's",
    "Hello world",
    "  leading and trailing   ",
    "a\n\nb\t\tc",
    "\ta",
    "Zürich naïve café résumé Kraków",
    "Привет, мир! Москва — столица.",
    "日本語のテキスト。中文文本测试，",
    "مرحبا بالعالم",
    "Emoji 😀🎉👍 ©®™ ← → ★",
    "a <mask> b",
    " <mask>",
    "x\n<mask>",
    "Fill: the <mask> sat on the <mask>.",
    "<mask>b",
    "mixed<s>special</s>tokens <pad> and <unk> here",
    "x <extra_id_0> newword y",
    "<extra_id_0>newword , café newword !",
    "a newwordb <extra_id_0>",
    "",
]

ADDED_SPECIAL = "<extra_id_0>"
ADDED_PLAIN = ["newword", "café"]  # not special; "café" is not byte-level text
NAMES = ["bpe5", "added5", "prefix5", "strmerges5", "vm", "vmclean", "vm4"]


def quiet():
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging
    logging.set_verbosity_error()


def bytes_to_unicode():
    """GPT-2's byte -> printable character table (openai/gpt-2 encoder.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def byte_strings():
    """A few thousand random and adversarial byte strings for the UTF-8 repair of decode."""
    rng = random.Random(1234)
    tricky = [0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xC3, 0xDF, 0xE0, 0xE1, 0xE2,
              0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xF8, 0xFE, 0xFF]
    out = [bytes([b]) for b in range(256)]
    out += [bytes([a, b]) for a in tricky for b in tricky]
    out += [bytes([a, b, c]) for a in (0xE0, 0xED, 0xEF, 0xF0, 0xF4) for b in (0x80, 0x9F, 0xA0, 0xBF) for c in (0x80, 0x41)]
    valid = "aé€😀\U0010ffff\ud7ff\ue000".encode("utf-8", "surrogatepass")
    for _ in range(2000):
        n = rng.randint(1, 12)
        if rng.random() < 0.5:
            s = bytes(rng.choice(tricky) for _ in range(n))
        else:  # valid text cut and spliced at random byte positions
            i, j = sorted(rng.randint(0, len(valid)) for _ in range(2))
            s = valid[i:j] + bytes(rng.choice(tricky) for _ in range(rng.randint(0, 3))) + valid[j:]
        out.append(s)
    return out


def version_results(tok, forced, decode_inputs, default_args):
    """What one release encodes (TEXTS) and decodes (decode_inputs) with tokenizer tok; forced is
    the same directory loaded so that clean_up_tokenization_spaces=True is applied; default_args
    the decode arguments of the release's default (release_default: none at all)."""
    res = {"class": type(tok).__name__, "ids": [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS],
           "decoded": []}
    for ids in decode_inputs:
        row = {}
        for skip in (True, False):
            k = "skip" if skip else "keep"
            row[k + "_default"] = tok.decode(ids, skip_special_tokens=skip, **default_args)
            row[k + "_release_default"] = tok.decode(ids, skip_special_tokens=skip)
            row[k + "_clean"] = forced.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=True)
            row[k + "_raw"] = tok.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=False)
        res["decoded"].append(row)
    return res


def framed(tok):
    """What both releases decode: <s> ids </s> <unk> <mask> <pad> for each text, ids from tok."""
    mask = tok.convert_tokens_to_ids("<mask>")
    return [[0] + tok(t, add_special_tokens=False)["input_ids"] + [2, 3, mask, 1] for t in TEXTS]


def decode_bytes(tok, byte_ids, strings):
    return [tok.decode([byte_ids[b] for b in s], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            for s in strings]


# ---- transformers 5.x: the directories and the current results ----------------------------------------

def train_bpe(out: Path):
    from tokenizers import ByteLevelBPETokenizer
    tok = ByteLevelBPETokenizer(add_prefix_space=False)
    tok.train_from_iterator(CORPUS * 3, vocab_size=600, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_model(str(out))


def make_dirs_current(out: Path):
    from tokenizers import AddedToken
    from transformers import BartTokenizer
    train_bpe(out / "vm")
    shutil.copytree(out / "vm", out / "vmclean")
    (out / "vmclean" / "tokenizer_config.json").write_text(json.dumps({"clean_up_tokenization_spaces": True}))
    mask = AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True)
    stage = out / "_stage"
    for name, kw in (("bpe5", {}), ("prefix5", {"add_prefix_space": True})):
        BartTokenizer.from_pretrained(str(out / "vm"), mask_token=mask, **kw).save_pretrained(str(stage / name))
    t = BartTokenizer.from_pretrained(str(out / "vm"), mask_token=mask)
    t.add_tokens([AddedToken(ADDED_SPECIAL, special=True)], special_tokens=True)
    t.add_tokens([AddedToken(w, special=False) for w in ADDED_PLAIN])
    t.save_pretrained(str(stage / "added5"))
    cfg = json.loads((stage / "added5" / "tokenizer_config.json").read_text())
    cfg["clean_up_tokenization_spaces"] = True
    (stage / "added5" / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1))
    shutil.copytree(stage / "added5", stage / "strmerges5")
    tj = json.loads((stage / "strmerges5" / "tokenizer.json").read_text())
    assert all(isinstance(m, list) for m in tj["model"]["merges"]), "tokenizers now writes merges as pairs"
    tj["model"]["merges"] = [" ".join(m) for m in tj["model"]["merges"]]
    (stage / "strmerges5" / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False))
    for name in ("bpe5", "prefix5", "added5", "strmerges5"):
        shutil.move(str(stage / name), str(out / name))
    shutil.rmtree(stage)


# ---- transformers 4.46.3: run as a subprocess --------------------------------------------------------------

def legacy_main(out: Path):
    """Makes vm4 with 4.x and records what 4.x does with every directory (plan.json: the ids)."""
    quiet()
    import transformers
    from tokenizers import AddedToken
    from transformers import BartTokenizer, BartTokenizerFast
    assert transformers.__version__.startswith("4."), transformers.__version__
    t = BartTokenizer.from_pretrained(str(out / "vm"))
    t.add_special_tokens({"additional_special_tokens": [ADDED_SPECIAL]})
    t.add_tokens([AddedToken(w, special=False) for w in ADDED_PLAIN])
    t.save_pretrained(str(out / "vm4"))
    plan = json.loads((out / "plan.json").read_text())
    res = {"transformers": transformers.__version__, "dirs": {}}
    for name in NAMES:
        d = out / name
        # BartTokenizer (the Python class) where it can load the directory, else BartTokenizerFast
        python_class = (d / "vocab.json").exists() and (d / "merges.txt").exists()
        tok = (BartTokenizer if python_class else BartTokenizerFast).from_pretrained(str(d))
        inputs = plan["decode_inputs"].get(name) or framed(tok)
        # the clean-up default of the 4.x releases before 4.45 (which the paper ran): on unless
        # tokenizer_config.json says otherwise; 4.45 made it off (release_default)
        cfg = d / "tokenizer_config.json"
        clean = json.loads(cfg.read_text()).get("clean_up_tokenization_spaces", True) if cfg.exists() else True
        r = version_results(tok, tok, inputs, {"clean_up_tokenization_spaces": clean})
        res["dirs"][name] = dict(r, decode_inputs=inputs, config_says_clean_up=cfg.exists() and
                                 "clean_up_tokenization_spaces" in json.loads(cfg.read_text()))
    strings = [bytes.fromhex(h) for h in plan["utf8_bytes"]]
    res["utf8"] = decode_bytes(BartTokenizer.from_pretrained(str(out / "vm")), plan["byte_ids"], strings)
    (out / "legacy.json").write_text(json.dumps(res, ensure_ascii=False))


def run_legacy(mode: str, out: Path, result: str):
    """Runs this script under transformers 4.46.3 and returns the JSON it wrote to out/result."""
    legacy = Path(sys.prefix) / "legacy-transformers"
    if not (legacy / "transformers").is_dir():
        sys.exit(f"make_golden_tokenizers.py: transformers 4.46.3 is not installed in {legacy} (scripts/setup.sh installs it)")
    env = dict(os.environ, PYTHONPATH=str(legacy) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, __file__, mode, str(out)], env=env, check=True)
    res = json.loads((out / result).read_text())
    (out / result).unlink()
    return res


# ---- checking directories that tlmoe wrote (BartBpeTokenizer::save_hf_files) ----------------------------------

def check_one_release(root: Path, classes):
    """What each tokenizer class of this release encodes (and decodes) for the directories under
    root/dirs, on root/request.json's texts and ids."""
    req = json.loads((root / "request.json").read_text())
    found = {}
    for name, d in req["dirs"].items():
        for cls in classes:
            tok = cls.from_pretrained(str(root / "dirs" / name))
            found.setdefault(name, {})[cls.__name__] = {
                "ids": [tok(t, add_special_tokens=False)["input_ids"] for t in req["texts"]],
                "skip": [tok.decode(ids, skip_special_tokens=True) for ids in d["decode"]],
                "keep": [tok.decode(ids, skip_special_tokens=False) for ids in d["decode"]]}
    return found


def check_legacy(root: Path):
    quiet()
    from transformers import BartTokenizer, BartTokenizerFast
    (root / "legacy.json").write_text(json.dumps(check_one_release(root, [BartTokenizer, BartTokenizerFast])))


def check(root: Path):
    """make_golden_tokenizers.py --check ROOT: root/found.json = {dir: {"current": {class: ...},
    "legacy": {class: ...}}} (the C++ test compares it with tlmoe)."""
    quiet()
    from transformers import AutoTokenizer, BartTokenizer
    current = check_one_release(root, [BartTokenizer, AutoTokenizer])
    legacy = run_legacy("--check-legacy", root, "legacy.json")
    found = {name: {"current": current[name], "legacy": legacy[name]} for name in current}
    (root / "found.json").write_text(json.dumps(found, ensure_ascii=False))


def main():
    modes = {"--legacy": legacy_main, "--check": check, "--check-legacy": check_legacy}
    if len(sys.argv) == 3 and sys.argv[1] in modes:
        modes[sys.argv[1]](Path(sys.argv[2]))
        return
    quiet()
    import transformers
    from transformers import BartTokenizer
    out = Path(sys.argv[1])
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    make_dirs_current(out)
    strings = byte_strings()
    vocab = BartTokenizer.from_pretrained(str(out / "vm")).get_vocab()
    table = bytes_to_unicode()
    byte_ids = [vocab[table[b]] for b in range(256)]
    # the ids that 5.x encodes are what both releases decode (vm4, made by 4.x: what 4.x encodes)
    inputs = {n: framed(BartTokenizer.from_pretrained(str(out / n))) for n in NAMES if n != "vm4"}
    plan = {"decode_inputs": inputs, "utf8_bytes": [s.hex() for s in strings], "byte_ids": byte_ids}
    (out / "plan.json").write_text(json.dumps(plan))
    legacy = run_legacy("--legacy", out, "legacy.json")
    (out / "plan.json").unlink()
    index = {"texts": TEXTS, "added_special": ADDED_SPECIAL, "added_plain": ADDED_PLAIN,
             "current_version": transformers.__version__, "legacy_version": legacy["transformers"], "dirs": {}}
    for name in NAMES:
        d = out / name
        tok = BartTokenizer.from_pretrained(str(d))
        forced = BartTokenizer.from_pretrained(
            str(d), clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output=True)
        lg = legacy["dirs"][name]
        index["dirs"][name] = {"files": sorted(p.name for p in d.iterdir()), "decode_inputs": lg["decode_inputs"],
                               "current": version_results(tok, forced, lg["decode_inputs"], {}),
                               "legacy": {k: v for k, v in lg.items() if k != "decode_inputs"}}
    index["utf8"] = {"dir": "vm", "byte_ids": byte_ids, "bytes": [s.hex() for s in strings],
                     "python": [s.decode("utf-8", errors="replace") for s in strings],
                     "current": decode_bytes(BartTokenizer.from_pretrained(str(out / "vm")), byte_ids, strings),
                     "legacy": legacy["utf8"]}
    (out / "tokenizers.json").write_text(json.dumps(index, indent=1, ensure_ascii=False))
    print(f"tokenizer golden files in {out} (transformers {index['current_version']} and {index['legacy_version']})")


if __name__ == "__main__":
    main()
