"""Train a token-level n-gram LM (ARPA) from transcripts, for shallow fusion in beam search.

Usage::

    python -m xtrans.bin.train_lm --text data/train/text --tokenizer data/lang_bpe/bpe.model \\
        --order 3 --out exp/lm/lm_3gram.arpa [--text more/text ...] [--plain]

Each line of a ``--text`` file is a Kaldi transcript, ``<utterance id> <words>`` (``--plain``:
the whole line is the words). The words are encoded with the model's tokenizer (a sentencepiece
``.model``, normalised as in training; or a ``tokens.txt``, spelled by BPE merges) and the
token sequences train an interpolated Witten-Bell back-off model of ``--order`` over the
tokenizer's pieces (:mod:`xtrans.context.ngram`), written in the ARPA format. Decode with it by
``--search beam --lm FILE --lm-scale X`` (``python -m xtrans.bin.transcribe``, ``decode``,
``serve``; ``docs/decoding.md``).

Prints the sentences and tokens read, the n-gram counts, and the LM's perplexity per token on
the training text (``</s>`` included).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator, List, Optional

from tqdm import tqdm

from xtrans.context import train_ngram, write_arpa
from xtrans.context.pieces import spelling


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xtrans.bin.train_lm", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--text", action="append", required=True, metavar="FILE",
                   help="Kaldi text file (<utt> <words> per line); repeat for more")
    p.add_argument("--plain", action="store_true", help="the --text files hold the words alone, one sentence a line")
    p.add_argument("--tokenizer", required=True, help="the model's sentencepiece .model (or tokens.txt)")
    p.add_argument("--order", type=int, default=3, help="n-gram order N (>= 1)")
    p.add_argument("--out", required=True, help="the ARPA file to write")
    return p


def read_sentences(paths: List[str], plain: bool) -> Iterator[str]:
    """The transcripts of the text files (empty ones skipped)."""
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                words = line.strip() if plain else (line.split(maxsplit=1) + [""])[1].strip()
                if words:
                    yield words


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    if args.order < 1:
        print(f"error: --order: expected >= 1, found {args.order}", file=sys.stderr)
        return 2
    missing = [p for p in args.text + [args.tokenizer] if not Path(p).is_file()]
    if missing:
        print(f"error: {', '.join(missing)}: no such file", file=sys.stderr)
        return 2
    try:
        from xtrans.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    except (ImportError, ValueError, OSError) as err:
        print(f"error: --tokenizer: {err}", file=sys.stderr)
        return 2
    encode, _ = spelling(tokenizer)
    pieces = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
    sentences = []
    try:
        for text in tqdm(read_sentences(args.text, args.plain), desc="tokenise", unit=" sentences", file=sys.stderr):
            sentences.append([pieces[i] for i in encode(text)])
    except ValueError as err:  # a tokens.txt that cannot spell a character
        print(f"error: --text: {err}", file=sys.stderr)
        return 2
    if not sentences:
        print(f"error: --text: no transcripts in {', '.join(args.text)}", file=sys.stderr)
        return 2
    lm = train_ngram(sentences, args.order, pieces[1:])
    write_arpa(lm, args.out)
    tokens = sum(len(s) + 1 for s in sentences)
    log10 = sum(lm.log10_prob(w, ["<s>"] + s[:i]) for s in sentences for i, w in enumerate(s + ["</s>"]))
    counts = ", ".join(f"{n + 1}-grams {c}" for n, c in enumerate(lm.counts()))
    print(f"{args.out}: order {args.order} from {len(sentences)} sentences, {tokens} tokens (</s> included); {counts}; "
          f"training perplexity {10 ** (-log10 / tokens):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
