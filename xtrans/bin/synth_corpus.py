"""Synthesise the demo corpus (recipe stage 1): digit strings and commands from eSpeak NG voices.

    python -m xtrans.bin.synth_corpus --outdir data --num_train 3000 --num_dev 200 \
        --num_test 200 --seed 0 --nj 2

Writes Kaldi data directories ``<outdir>/{train,dev,test}`` (``wav.scp``, ``text``, ``utt2spk``,
``spk2utt``, ``utt2num_samples``, ``utt2dur``) and the 16 kHz WAV files under
``<outdir>/wavs/<split>/``, and ``<outdir>/phrases.txt``: the command phrases, one per line (the
phrase inventory of the recipe's decode-time context table). Speakers are voices
``<accent>+<variant>``; dev and test use variants never heard in training. The corpus depends only on the options, not on ``--nj``.
Needs ``pip install espeakng-loader`` (the ``synth`` extra).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from xtrans.synth.corpus import COMMANDS, plan_corpus, synthesize_corpus
from xtrans.synth.espeak import ENGLISH_LANGUAGES, Variation


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outdir", required=True, help="output folder (data dirs and wavs/)")
    parser.add_argument("--num_train", "--num-train", type=int, default=3000)
    parser.add_argument("--num_dev", "--num-dev", type=int, default=200)
    parser.add_argument("--num_test", "--num-test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nj", type=int, default=1, help="worker processes")
    parser.add_argument("--languages", default=",".join(ENGLISH_LANGUAGES),
                        help="comma-separated eSpeak English voices (accents)")
    parser.add_argument("--num_dev_variants", "--num-dev-variants", type=int, default=10,
                        help="voice variants held out for dev")
    parser.add_argument("--num_test_variants", "--num-test-variants", type=int, default=10,
                        help="voice variants held out for test")
    parser.add_argument("--command_prob", "--command-prob", type=float, default=0.3,
                        help="share of command phrases (the rest are digit strings)")
    parser.add_argument("--min_snr", "--min-snr", type=float, default=Variation.snr_db[0], help="dB")
    parser.add_argument("--max_snr", "--max-snr", type=float, default=Variation.snr_db[1], help="dB")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    if args.min_snr > args.max_snr:
        raise ValueError(f"--min_snr {args.min_snr} exceeds --max_snr {args.max_snr}")
    counts = {"train": args.num_train, "dev": args.num_dev, "test": args.num_test}
    for name, n in counts.items():
        if n < 0:
            raise ValueError(f"--num_{name}: expected >= 0, found {n}")
    plan = plan_corpus(counts, args.seed, languages=[s for s in args.languages.split(",") if s],
                       num_dev_variants=args.num_dev_variants, num_test_variants=args.num_test_variants,
                       command_prob=args.command_prob)
    variation = Variation(snr_db=(args.min_snr, args.max_snr))
    with tqdm(total=sum(counts.values()), unit="utt", desc="synthesising") as bar:
        result = synthesize_corpus(args.outdir, plan, nj=args.nj, variation=variation, on_progress=bar.update)
    (Path(args.outdir) / "phrases.txt").write_text("".join(f"{c}\n" for c in COMMANDS), encoding="utf-8")
    for split, data in result.items():
        hours = sum(data.utt2dur.values()) / 3600
        print(f"{args.outdir}/{split}: {len(data)} utterances, {hours:.2f} h, "
              f"{len(set(data.utt2spk.values()))} voices")
    return 0


if __name__ == "__main__":
    sys.exit(main())
