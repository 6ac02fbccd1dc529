"""Train the sentencepiece tokenizer (blank = 0) on a Kaldi ``text`` file (recipe stage 3).

    python -m xtrans.bin.train_bpe --vocab-size 500 --normalizer upper \
        data/train/text data/lang_bpe_500

Writes ``<out_dir>/bpe.model``, ``bpe.vocab``, ``bpe.json`` (normaliser) and ``tokens.txt``
(``<blk> 0``, ``<unk> 1``, ...). ``--vocab-size`` is the transducer's output size ``V``,
blank included.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from xtrans.data.kaldi_dir import read_table
from xtrans.tokenizer import NORMALIZERS, train_tokenizer


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("text", help="Kaldi text file: <utt-id> <transcript> per line")
    parser.add_argument("out_dir", help="output directory")
    parser.add_argument("--vocab-size", type=int, required=True,
                        help="output size V including the blank")
    parser.add_argument("--model-type", choices=("bpe", "unigram", "char", "word"), default="bpe")
    parser.add_argument("--normalizer", choices=sorted(NORMALIZERS), default="none")
    parser.add_argument("--character-coverage", type=float, default=1.0)
    parser.add_argument("--user-defined-symbols", default="",
                        help="comma-separated pieces kept whole, e.g. '<noise>,<laugh>'")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    texts = [value for _, value in read_table(args.text)]
    out_dir = Path(args.out_dir)
    tokenizer = train_tokenizer(
        texts,
        out_dir / "bpe",
        vocab_size=args.vocab_size,
        model_type=args.model_type,
        normalizer=args.normalizer,
        character_coverage=args.character_coverage,
        user_defined_symbols=[s for s in args.user_defined_symbols.split(",") if s],
    )
    tokenizer.write_tokens(out_dir / "tokens.txt")
    print(f"{args.model_type} tokenizer, V={tokenizer.vocab_size} (blank=0), "
          f"{len(texts)} transcripts -> {out_dir}/bpe.model, {out_dir}/tokens.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
