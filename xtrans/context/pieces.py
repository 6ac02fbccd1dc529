"""Text to token ids with only a ``tokens.txt``: sentencepiece BPE's merges, replayed.

An ONNX export ships ``tokens.txt`` (``<piece> <id>``), not the sentencepiece model, and the
onnxruntime recognizer must spell hotwords without it. For a sentencepiece BPE model this is
exact: sentencepiece splits text at whitespace into words, writes each as ``▁`` + the word, and
then, starting from single characters, repeatedly merges the adjacent pair whose concatenation
is the highest-scoring piece — and a BPE model's pieces are stored (and numbered) in the order
of their scores, so "highest score" is "lowest id" in ``tokens.txt`` (xtrans shifts every
sentencepiece id by one, which keeps the order). :class:`PieceEncoder` replays that.

For a unigram model the Viterbi segmentation needs the pieces' probabilities, which
``tokens.txt`` does not hold; the merges then give *a* spelling of the text in the model's
pieces, usually but not always the one sentencepiece picks. Text normalisation is not replayed
either: write phrases as the model's transcripts are written (e.g. upper case). A character
outside the vocabulary is an error.
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

WORD_MARK = "\u2581"


class PieceEncoder:
    """Encodes text as the ids of a piece table by sentencepiece BPE's merge rule (module docstring).

    Args:
        pieces: the piece of every id (``tokens.txt`` in id order; id 0, the blank, is never produced).
    """

    def __init__(self, pieces: Sequence[str]):
        self.ids: Dict[str, int] = {}
        for i, piece in enumerate(pieces):
            if i > 0:
                self.ids.setdefault(piece, i)

    def encode_word(self, word: str) -> List[int]:
        """One word (no whitespace) -> the ids of ``▁word``'s pieces.

        Raises:
            ValueError: for a character that is no piece of the table.
        """
        symbols = list(WORD_MARK + word)
        if WORD_MARK not in self.ids and symbols[0] + symbols[1] in self.ids:  # a table without "▁" alone
            symbols[:2] = [symbols[0] + symbols[1]]
        unknown = sorted({c for c in symbols if c not in self.ids})
        if unknown:
            raise ValueError(f"characters {unknown} are not in the model's tokens (tokens.txt); write the text "
                             "as the model's transcripts are written")
        while len(symbols) > 1:
            best, where = None, -1
            for i in range(len(symbols) - 1):
                merged = self.ids.get(symbols[i] + symbols[i + 1])
                if merged is not None and (best is None or merged < best):
                    best, where = merged, i
            if best is None:
                break
            symbols[where:where + 2] = [symbols[where] + symbols[where + 1]]
        return [self.ids[s] for s in symbols]

    def encode(self, text: str) -> List[int]:
        """Text -> ids, word by word (raises ValueError as :meth:`encode_word`)."""
        return [i for word in text.split() for i in self.encode_word(word)]

    __call__ = encode


def is_bpe_table(pieces: Sequence[str]) -> bool:
    """Whether a piece table looks like sentencepiece BPE's, where :class:`PieceEncoder` is exact:
    every piece longer than one character is two pieces joined, each a single character or of a
    lower id (merged earlier)."""
    ids = {p: i for i, p in enumerate(pieces) if i > 0}
    for piece, i in ids.items():
        if len(piece) < 2 or (piece.startswith("<") and piece.endswith(">")):
            continue
        if not any((len(a) == 1 or ids.get(a, i) < i) and (len(b) == 1 or ids.get(b, i) < i)
                   and a in ids and b in ids for a, b in ((piece[:k], piece[k:]) for k in range(1, len(piece)))):
            return False
    return True


def spelling(tokenizer) -> Tuple[Callable[[str], List[int]], Optional[int]]:
    """How to spell phrases with a recognizer's tokenizer: ``(encode, unk_id)``.

    A sentencepiece tokenizer (``encode``, ``unk_id``: :class:`xtrans.tokenizer.Tokenizer`)
    spells with its own model (normalising the text as in training); a piece table
    (``id_to_token``, ``vocab_size``: a ``tokens.txt``) with :class:`PieceEncoder`, which refuses
    characters outside the table (``unk_id`` None). A table that is not BPE-shaped
    (:func:`is_bpe_table`) is logged as a warning when the first phrase is spelled: spellings may
    then differ from the model's.
    """
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "unk_id"):
        return tokenizer.encode, tokenizer.unk_id
    pieces = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
    encoder = PieceEncoder(pieces)
    checked: List[bool] = []

    def encode(text: str) -> List[int]:
        if not checked:
            checked.append(True)
            if not is_bpe_table(pieces):
                logger.warning("the tokens (%s) are not a sentencepiece BPE table: phrases are spelled by BPE "
                               "merges and may differ from the tokenizer's spelling (docs/decoding.md)",
                               getattr(tokenizer, "path", "tokens.txt"))
        return encoder.encode(text)

    return encode, None
