"""What a decoder returns, and the ``tokens.txt`` table — without torch.

:class:`Transcription` is what :class:`xtrans.inference.Speech2Text` and the onnxruntime
recognizer (:mod:`xtrans.onnx`) return; :class:`TokenTable` decodes ids with a ``tokens.txt``.
Both live here, without torch, so that :mod:`xtrans.onnx` can use them; :mod:`xtrans.inference`
and :mod:`xtrans.tokenizer` re-export them.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Union


@dataclass
class Transcription:
    """The result of decoding one utterance.

    Attributes:
        text: the decoded text.
        tokens: token ids (no blank).
        pieces: the token strings.
        timestamps: emission time of each token in seconds (frame index x 20 ms).
        score: log-probability of the result as defined by the search
            (:mod:`xtrans.search.greedy`, :mod:`xtrans.search.beam`).
        nbest: for beam search, every returned hypothesis best first (the first is this one);
            empty for greedy search.
    """

    text: str
    tokens: List[int]
    pieces: List[str]
    timestamps: List[float]
    score: float
    nbest: List["Transcription"] = field(default_factory=list)

    @property
    def token_ids(self) -> List[int]:
        """The token ids (the same as :attr:`tokens`)."""
        return self.tokens

    def to_dict(self) -> Dict[str, Any]:
        """Plain types (for JSON)."""
        return asdict(self)


class TokenTable:
    """A ``tokens.txt`` (``<token> <id>`` per line, id 0 = blank) used as a decode-only tokenizer.

    Pieces are joined and sentencepiece's word marker ``▁`` becomes a space.

    Raises:
        ValueError: on a malformed line or ids that are not ``0 .. V-1``.
    """

    def __init__(self, path: Union[str, os.PathLike]):
        self.path = Path(path)
        table: Dict[int, str] = {}
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].isdigit():
                raise ValueError(f"{self.path}:{n}: expected '<token> <id>', found {line!r}")
            table[int(parts[1])] = parts[0]
        if sorted(table) != list(range(len(table))):
            raise ValueError(f"{self.path}: expected ids 0 .. {len(table) - 1}, each once")
        self._tokens = [table[i] for i in range(len(table))]

    @property
    def vocab_size(self) -> int:
        """``V``: every id of the table, the blank included."""
        return len(self._tokens)

    def id_to_token(self, i: int) -> str:
        """The token string of an id."""
        return self._tokens[i]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text; blanks (id 0) are skipped."""
        return "".join(self._tokens[int(i)] for i in ids if int(i) != 0).replace("\u2581", " ").strip()
