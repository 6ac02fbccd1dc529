"""Format a data directory's audio as 16 kHz mono kaldiio ark/scp (recipe stage 2).

    python -m xtrans.bin.prepare_audio --nj 2 data/train dump/train

Audio is stored as 16-bit PCM WAV inside the ark by default (``--dtype float32`` for IEEE
float); see :mod:`xtrans.data.prepare`. Bad utterances, and transcripts without audio, are
dropped and listed in ``<dest>/dropped_utts`` with their reasons; the run does not stop on them.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tqdm import tqdm

from xtrans.data.kaldi_dir import read_data_dir
from xtrans.data.prepare import DROPPED_FILE, prepare_audio
from xtrans.frames import SAMPLE_RATE


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", help="input Kaldi data directory")
    parser.add_argument("dest", help="output data directory (ark files go to <dest>/data/)")
    parser.add_argument("--nj", type=int, default=1, help="parallel worker processes")
    parser.add_argument("--sample-rate", type=int, default=SAMPLE_RATE, help="output rate in Hz")
    parser.add_argument("--dtype", choices=("int16", "float32"), default="int16",
                        help="sample storage in the ark (default: int16 PCM)")
    parser.add_argument("--min-seconds", type=float, default=0.025,
                        help="drop shorter utterances (default: one encoder frame)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="drop longer utterances (default: keep all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    total = len(read_data_dir(args.src))
    with tqdm(total=total, desc=f"prepare_audio {args.src}", unit="utt") as bar:
        result = prepare_audio(
            args.src, args.dest, nj=args.nj, sample_rate=args.sample_rate, dtype=args.dtype,
            min_seconds=args.min_seconds, max_seconds=args.max_seconds, on_progress=bar.update,
        )
    print(result.summary())
    if result.dropped:
        print(f"dropped utterances and reasons: {args.dest}/{DROPPED_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
