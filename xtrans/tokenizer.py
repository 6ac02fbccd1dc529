"""Sentencepiece tokenizer with the transducer's blank at id 0.

The transducer's output layer has ``V`` entries: the blank and the sentencepiece pieces. Ids
are the sentencepiece ids shifted by one::

    id 0      <blk>    the RNN-T blank (never produced by encode)
    id 1      <unk>    sentencepiece's unknown piece (its id 0)
    id k + 1  piece k  every other piece

so ``V = 1 + pieces``; :func:`train_tokenizer` asks sentencepiece for ``V - 1`` pieces, so
``vocab_size`` always means the size of the output layer. ``tokens.txt`` (``<token> <id>`` per
line, icefall/k2 style) lists all ``V``.

Text is normalised before training and encoding by a named function from
:data:`NORMALIZERS` (``"none"``, ``"upper"``, ``"lower"``, ``"upper_no_punct"``,
``"lower_no_punct"``; add more with :func:`register_normalizer`). The name is saved next to the
model (``<prefix>.json``) so that a loaded tokenizer normalises as it was trained.

For decoding, :func:`load_tokenizer` reads either a ``.model`` or a bare ``tokens.txt``
(:class:`TokenTable`), and :func:`find_tokenizer` finds the one a checkpoint was trained with.
"""

from __future__ import annotations

import json
import logging
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

from xtrans.transcription import TokenTable  # noqa: F401 (a tokenizer for decoding; torch-free home)

logger = logging.getLogger(__name__)

BLANK = "<blk>"
UNK = "<unk>"
BLANK_ID = 0
UNK_ID = 1

NORMALIZERS: dict[str, Callable[[str], str]] = {}
"""Text normalisers by name."""


def register_normalizer(name: str) -> Callable[[Callable[[str], str]], Callable[[str], str]]:
    """Decorator adding a ``str -> str`` function to :data:`NORMALIZERS` under ``name``.

    Raises:
        ValueError: when ``name`` is already registered.
    """

    def add(fn: Callable[[str], str]) -> Callable[[str], str]:
        if name in NORMALIZERS:
            raise ValueError(f"normalizer name {name!r} is already registered")
        NORMALIZERS[name] = fn
        return fn

    return add


def _strip_punct(text: str) -> str:
    # keep letters, digits, marks, apostrophes inside words; everything else becomes a space
    text = "".join(
        c if unicodedata.category(c)[0] in "LNM" or c == "'" else " " for c in text
    )
    text = re.sub(r"(?<![^\W_])'|'(?![^\W_])", " ", text)  # drop quotes not inside a word
    return " ".join(text.split())


@register_normalizer("none")
def _none(text: str) -> str:
    return " ".join(text.split())


@register_normalizer("upper")
def _upper(text: str) -> str:
    return " ".join(text.upper().split())


@register_normalizer("lower")
def _lower(text: str) -> str:
    return " ".join(text.lower().split())


@register_normalizer("upper_no_punct")
def _upper_no_punct(text: str) -> str:
    return _strip_punct(text.upper())


@register_normalizer("lower_no_punct")
def _lower_no_punct(text: str) -> str:
    return _strip_punct(text.lower())


def get_normalizer(name: str) -> Callable[[str], str]:
    """The normaliser registered as ``name``.

    Raises:
        ValueError: naming the known normalisers when ``name`` is not one of them.
    """
    try:
        return NORMALIZERS[name]
    except KeyError:
        raise ValueError(
            f"normalizer must be one of {sorted(NORMALIZERS)}, got {name!r}"
        ) from None


class Tokenizer:
    """Sentencepiece model with blank = 0 (see the module docstring for the id layout).

    Args:
        model_path: a sentencepiece ``.model`` file.
        normalizer: name of the text normaliser; ``None`` reads it from ``<prefix>.json``
            beside the model, ``"none"`` if that file does not exist.

    Raises:
        FileNotFoundError: when the model file does not exist.
        ValueError: for an unknown normaliser, or a model whose unknown piece is not its id 0
            (trained without ``unk_id=0``) or that has a piece called ``<blk>``.
    """

    def __init__(self, model_path: str | os.PathLike, normalizer: str | None = None):
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"sentencepiece model {self.model_path} does not exist")
        if normalizer is None:
            meta = self.model_path.with_suffix(".json")
            normalizer = json.loads(meta.read_text())["normalizer"] if meta.exists() else "none"
        self.normalizer_name = normalizer
        self.normalize = get_normalizer(normalizer)
        self._sp = spm.SentencePieceProcessor(model_file=str(self.model_path))
        if self._sp.unk_id() != 0:
            raise ValueError(
                f"{self.model_path}: the unknown piece has id {self._sp.unk_id()}, expected 0; "
                "train with train_tokenizer (unk_id=0, no bos/eos)"
            )
        if self._sp.piece_to_id(BLANK) != self._sp.unk_id():
            raise ValueError(f"{self.model_path}: has a piece {BLANK!r}, reserved for the blank")

    @property
    def vocab_size(self) -> int:
        """``V``: the blank plus every sentencepiece piece."""
        return self._sp.get_piece_size() + 1

    @property
    def blank_id(self) -> int:
        """Id of the RNN-T blank, always 0."""
        return BLANK_ID

    @property
    def unk_id(self) -> int:
        """Id of the unknown piece, always 1."""
        return UNK_ID

    def encode(self, text: str) -> list[int]:
        """Normalise and encode text to ids in ``[1, V)`` (never the blank)."""
        return [i + 1 for i in self._sp.encode(self.normalize(text), out_type=int)]

    def __call__(self, text: str) -> list[int]:
        return self.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text; blanks are skipped.

        Raises:
            ValueError: for an id outside ``[0, V)``.
        """
        pieces = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"ids must be in [0, {self.vocab_size}), found {i}")
            if i != BLANK_ID:
                pieces.append(i - 1)
        return self._sp.decode(pieces)

    def id_to_token(self, i: int) -> str:
        """The token string of an id (``<blk>`` for 0)."""
        if not 0 <= i < self.vocab_size:
            raise ValueError(f"i: expected a token id in [0, {self.vocab_size}), found {i}")
        return BLANK if i == BLANK_ID else self._sp.id_to_piece(i - 1)

    def tokens(self) -> list[str]:
        """All ``V`` tokens in id order."""
        return [self.id_to_token(i) for i in range(self.vocab_size)]

    def write_tokens(self, path: str | os.PathLike) -> None:
        """Write ``tokens.txt``: one ``<token> <id>`` line per id, starting ``<blk> 0``."""
        lines = [f"{token} {i}\n" for i, token in enumerate(self.tokens())]
        Path(path).write_text("".join(lines), encoding="utf-8")


def train_tokenizer(
    texts: Iterable[str],
    model_prefix: str | os.PathLike,
    *,
    vocab_size: int,
    model_type: str = "bpe",
    normalizer: str = "none",
    character_coverage: float = 1.0,
    user_defined_symbols: Sequence[str] = (),
    seed_sentencepiece_size: int | None = None,
) -> Tokenizer:
    """Train a sentencepiece model on transcripts and return it as a :class:`Tokenizer`.

    Writes ``<prefix>.model``, ``<prefix>.vocab`` and ``<prefix>.json`` (the normaliser).

    Args:
        texts: transcripts (without utterance ids), normalised here.
        model_prefix: output path without extension, e.g. ``data/lang_bpe_500/bpe``.
        vocab_size: ``V``, the output layer size including the blank (>= 3).
        model_type: ``"bpe"``, ``"unigram"``, ``"char"`` or ``"word"``.
        normalizer: a name from :data:`NORMALIZERS`.
        character_coverage: fraction of characters covered (1.0 for small alphabets).
        user_defined_symbols: pieces always kept whole (e.g. ``"<noise>"``).
        seed_sentencepiece_size: unigram seed vocabulary size (sentencepiece default if None).

    Returns:
        the trained :class:`Tokenizer`.

    Raises:
        ValueError: for a bad argument, no text, or a ``vocab_size`` the text cannot support.
    """
    if model_type not in ("bpe", "unigram", "char", "word"):
        raise ValueError(
            f"model_type must be 'bpe', 'unigram', 'char' or 'word', found {model_type!r}"
        )
    if vocab_size < 3:
        raise ValueError(f"vocab_size must be >= 3 (blank, unk and a piece), found {vocab_size}")
    normalize = get_normalizer(normalizer)
    sentences = [s for s in (normalize(t) for t in texts) if s]
    if not sentences:
        raise ValueError("texts holds no non-empty transcript to train on")
    prefix = Path(model_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    options = _sentencepiece_options(sentences, prefix, vocab_size, model_type, character_coverage,
                                     user_defined_symbols, seed_sentencepiece_size)
    try:
        spm.SentencePieceTrainer.train(**options)
    except RuntimeError as err:
        raise ValueError(
            f"sentencepiece could not train vocab_size={vocab_size} "
            f"({vocab_size - 1} pieces) on {len(sentences)} sentences: {err}; "
            "lower vocab_size or give more text"
        ) from None
    Path(f"{prefix}.json").write_text(
        json.dumps({"normalizer": normalizer, "model_type": model_type, "vocab_size": vocab_size})
        + "\n"
    )
    tokenizer = Tokenizer(f"{prefix}.model")
    logger.info("trained %s tokenizer, V=%d, at %s", model_type, tokenizer.vocab_size, prefix)
    return tokenizer


def _sentencepiece_options(sentences: list[str], prefix: Path, vocab_size: int, model_type: str,
                           character_coverage: float, user_defined_symbols: Sequence[str],
                           seed_sentencepiece_size: int | None) -> dict:
    """The options of ``SentencePieceTrainer.train`` for a vocabulary of ``V = vocab_size``.

    ``V - 1`` pieces, the unknown piece at id 0, no bos/eos/pad: :class:`Tokenizer` shifts every
    id by one to put the blank at 0.
    """
    options = dict(
        sentence_iterator=iter(sentences),
        model_prefix=str(prefix),
        vocab_size=vocab_size - 1,
        model_type=model_type,
        character_coverage=character_coverage,
        unk_id=0,
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        unk_piece=UNK,
        user_defined_symbols=list(user_defined_symbols),
        input_sentence_size=10_000_000,
        shuffle_input_sentence=True,
        num_threads=os.cpu_count() or 1,
        minloglevel=2,
    )
    if seed_sentencepiece_size is not None:
        options["seed_sentencepiece_size"] = seed_sentencepiece_size
    return options


def find_tokenizer(checkpoint: str | os.PathLike, ckpt: dict) -> Path:
    """Where the tokenizer of a checkpoint is: ``ckpt["tokenizer"]``, the training config's
    ``data.tokenizer``, else ``bpe.model`` / ``tokens.txt`` next to the checkpoint.

    Args:
        checkpoint: the checkpoint's path.
        ckpt: the loaded checkpoint dict.

    Raises:
        FileNotFoundError: naming every place looked at.
    """
    candidates = []
    if isinstance(ckpt.get("tokenizer"), str):
        candidates.append(Path(ckpt["tokenizer"]))
    config = ckpt.get("config")
    if isinstance(config, dict) and isinstance(config.get("data"), dict) \
            and isinstance(config["data"].get("tokenizer"), str):
        candidates.append(Path(config["data"]["tokenizer"]))
    here = Path(checkpoint).parent
    candidates += [here / "bpe.model", here / "tokens.txt"]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"tokenizer: none given for {checkpoint} and none found at "
                            f"{', '.join(str(c) for c in candidates)}; pass --tokenizer / tokenizer=")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer | TokenTable:
    """A sentencepiece ``.model`` -> :class:`Tokenizer`; a ``tokens.txt`` -> :class:`TokenTable`.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer: {path} does not exist")
    if path.suffix == ".txt":
        return TokenTable(path)
    return Tokenizer(path)
