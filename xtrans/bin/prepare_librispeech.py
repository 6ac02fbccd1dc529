"""Kaldi data directories from an extracted LibriSpeech tree (recipe stage 1).

Usage::

    python -m xtrans.bin.prepare_librispeech --root downloads --parts dev-clean,test-clean,train-clean-100 \\
        --out data [--no_num_samples]

Reads ``<root>/LibriSpeech/<part>/<spk>/<chapter>/`` (FLAC + ``<spk>-<chapter>.trans.txt``) and writes
``<out>/<part with _>/`` (``data/dev_clean``): wav.scp (absolute FLAC paths), text, utt2spk,
spk2utt, utt2num_samples, sorted. See :mod:`xtrans.recipes.librispeech`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from xtrans.recipes.librispeech import LibriSpeechError, prepare


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xtrans.bin.prepare_librispeech",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root", required=True, help="folder holding LibriSpeech/<part>")
    p.add_argument("--parts", required=True, help="comma-separated parts, e.g. dev-clean,test-clean")
    p.add_argument("--out", default="data", help="parent of the data directories")
    p.add_argument("--no_num_samples", "--no-num-samples", action="store_true",
                   help="skip utt2num_samples (reading every FLAC header)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        summaries = prepare(args.root, args.parts, args.out, num_samples=not args.no_num_samples)
    except (LibriSpeechError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for s in summaries:
        print(f"{s.part}: {s.utterances} utterances, {s.speakers} speakers, {s.seconds / 3600:.2f} h -> {s.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
