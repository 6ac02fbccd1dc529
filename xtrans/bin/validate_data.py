"""Check a Kaldi data directory and list every problem by utterance (recipe stage 5).

    python -m xtrans.bin.validate_data data/train
    python -m xtrans.bin.validate_data --bpe-model data/lang_bpe_500/bpe.model \
        --clean-dir dump/train_clean dump/train

Prints a summary and one ``<utt> <code>: <reason>`` line per problem (``--max-lines``).
Exit status: 0 when the directory is clean or ``--clean-dir`` was written, 1 when problems were
found and no clean directory was asked for.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys

from tqdm import tqdm

from xtrans.data.validate import validate_data_dir, write_clean_data_dir
from xtrans.frames import SAMPLE_RATE
from xtrans.tokenizer import Tokenizer


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data_dir", help="Kaldi data directory to check")
    parser.add_argument("--sample-rate", type=int, default=SAMPLE_RATE,
                        help=f"required sample rate in Hz (default {SAMPLE_RATE})")
    parser.add_argument("--any-rate", action="store_true",
                        help="accept any sample rate and channel count (raw corpora)")
    parser.add_argument("--no-audio", action="store_true",
                        help="skip reading audio (lengths from utt2num_samples/utt2dur)")
    parser.add_argument("--bpe-model", default=None,
                        help="sentencepiece model for token counts (default: characters)")
    parser.add_argument("--max-tokens-per-frame", type=float, default=1.0,
                        help="'too_long' threshold in tokens per 20 ms encoder frame")
    parser.add_argument("--clean-dir", default=None,
                        help="write the utterances without problems here")
    parser.add_argument("--max-lines", type=int, default=50,
                        help="problem lines to print (the clean dir's report has all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    tokenizer = Tokenizer(args.bpe_model) if args.bpe_model else None
    report = validate_data_dir(
        args.data_dir,
        sample_rate=None if args.any_rate else args.sample_rate,
        mono=not args.any_rate,
        check_audio=not args.no_audio,
        tokenizer=tokenizer,
        max_tokens_per_frame=args.max_tokens_per_frame,
        progress=functools.partial(tqdm, desc=f"validate {args.data_dir}", unit="utt"),
    )
    print(report.summary())
    for p in report.problems[: args.max_lines]:
        print(f"{p.utt_id} {p.code}: {p.reason}")
    if len(report.problems) > args.max_lines:
        print(f"... {len(report.problems) - args.max_lines} more")
    if args.clean_dir:
        clean = write_clean_data_dir(report, args.clean_dir)
        print(f"wrote {len(clean)} utterances to {args.clean_dir}")
        return 0
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
