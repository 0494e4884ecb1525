#!/usr/bin/env python3
"""Regenerate the reference fixtures under Tests/Fixtures from Hugging Face transformers.

One tool serves every part of the project; each part lives in its own module
`fixtures_<part>.py` exposing `generate(out_dir: pathlib.Path) -> None`.

Usage (in a venv outside the repo, see tools/reference/requirements.txt):
    python tools/reference/make_fixtures.py            # every part
    python tools/reference/make_fixtures.py model      # one part: model, tokenizer, image, ...
"""
import importlib
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE.parent.parent / "Tests" / "Fixtures"


def parts():
    return sorted(p.stem[len("fixtures_"):] for p in HERE.glob("fixtures_*.py"))


def main(argv):
    wanted = argv[1:] or parts()
    unknown = [w for w in wanted if w not in parts()]
    if unknown:
        sys.exit(f"unknown part(s) {unknown}; available: {parts()}")
    sys.path.insert(0, str(HERE))
    for name in wanted:
        module = importlib.import_module(f"fixtures_{name}")
        out = FIXTURES / name
        out.mkdir(parents=True, exist_ok=True)
        print(f"== {name} -> {out}", flush=True)
        module.generate(out)


if __name__ == "__main__":
    main(sys.argv)
