"""What a recognizer is and what it returns, and the ``tokens.txt`` table — without torch.

:class:`Recognizer` and :class:`RecognizerSession` are the interface that both recognizers
implement, :class:`xtrans.inference.Speech2Text` (PyTorch) and
:class:`xtrans.onnx.OnnxSpeech2Text` (onnxruntime), so that tools decode with either through
the same code::

    result = recognizer.transcribe(samples, sample_rate)      # a whole utterance
    session = recognizer.stream()                              # or live, piece by piece
    for piece in pieces:
        partial_text = session.accept_waveform(piece, sample_rate)
    result = session.finalize()                                # .text .tokens .pieces .timestamps

:class:`Transcription` is what they return; :class:`SearchTranscriber` and
:class:`SessionResults` are the bookkeeping they share (a search state -> its
:class:`Transcription`; a session's ``text`` and ``result()``). :class:`TokenTable` decodes ids
with a ``tokens.txt``. All of it lives here, without torch, so that :mod:`xtrans.onnx` can use
it; :mod:`xtrans.inference` and :mod:`xtrans.tokenizer` re-export the result types.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Protocol, Sequence, Union, runtime_checkable


@dataclass
class Transcription:
    """The result of decoding one utterance.

    Attributes:
        text: the decoded text.
        tokens: token ids (no blank).
        pieces: the token strings.
        timestamps: emission time of each token in seconds (frame index x 20 ms).
        score: log-probability of the result as defined by the search
            (:mod:`xtrans.search_core.greedy`, :mod:`xtrans.search_core.beam`).
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


@runtime_checkable
class RecognizerSession(Protocol):
    """One audio stream decoded as it arrives (what :meth:`Recognizer.stream` opens).

    Attributes:
        chunk_frames: ``C``, encoder frames per chunk of the session's streaming rule.
        num_frames: encoder frames decoded so far (a multiple of ``C`` until :meth:`finalize`).
        finished: True after :meth:`finalize`.
        text: the best text of the frames decoded so far.
    """

    @property
    def chunk_frames(self) -> int: ...

    @property
    def num_frames(self) -> int: ...

    @property
    def finished(self) -> bool: ...

    @property
    def text(self) -> str: ...

    def accept_waveform(self, samples: Any, sample_rate: int = ...) -> str:
        """Feeds the next samples ``(n,)`` or channels-last ``(n, C)`` at ``sample_rate`` Hz (the
        same rate and channel count for the whole session); returns the text decoded so far.

        Raises:
            ValueError: after :meth:`finalize`, or when the rate or channel count changes.
        """

    def result(self) -> Transcription:
        """The current best result (partial until :meth:`finalize`)."""

    def finalize(self) -> Transcription:
        """Ends the stream: decodes the last (partial) chunk and returns the final result.

        Raises:
            ValueError: when called twice.
        """


@runtime_checkable
class Recognizer(Protocol):
    """Speech to text, for whole utterances and live streams (module docstring)."""

    def transcribe(self, audio: Any, sample_rate: int = ...) -> Transcription:
        """Decodes one whole utterance: samples ``(S,)`` / ``(S, C)`` at ``sample_rate`` Hz, or a file path.
        Both recognizers also take ``transcribe(..., hotwords=[...], hotwords_score=...)``: the
        utterance's own hotwords, as :meth:`stream`."""

    def stream(self) -> RecognizerSession:
        """Opens a streaming session under the recognizer's streaming rule. Both recognizers also
        take ``stream(hotwords=[...], hotwords_score=...)``: the stream's own hotwords, with
        modified beam search (``docs/decoding.md``)."""

    def settings(self) -> Dict[str, Any]:
        """What decodes, as JSON values: at least ``device``, the streaming rule (``chunk_ms``,
        ``left_ms``, ``sinks``; ``None``, ``None``, 0 for full attention) and ``search``."""


class SearchTranscriber:
    """Turns a one-stream search state into a :class:`Transcription` (shared by the recognizers).

    The recognizer provides ``tokenizer`` (``decode``, ``id_to_token``), ``search`` (``results``;
    greedy: ``results(state)``, beam: ``results(state, nbest)``), ``search_name`` (``"greedy"`` or
    ``"beam"``), ``nbest`` and ``frame_ms`` (the duration of an encoder frame, for timestamps).
    """

    tokenizer: Any
    search: Any
    search_name: str
    nbest: Optional[int]
    frame_ms: int

    def new_search_state(self, scorer: Any = None, device: Any = None) -> Any:
        """A one-stream state of :attr:`search`, with the stream's scorer (beam search; greedy
        search takes none: :class:`xtrans.context.SearchContext` never gives it one)."""
        if scorer is None:
            return self.search.init_state(1, device)
        return self.search.init_state(1, device, scorer=scorer)

    def transcription(self, search_state: Any) -> Transcription:
        """The result so far of a one-stream search state of :attr:`search`.

        Returns:
            the best hypothesis as a :class:`Transcription`; for beam search with the
            :attr:`nbest` best hypotheses in ``nbest`` (best first).
        """
        if self.search_name == "greedy":
            return self._make(self.search.results(search_state)[0])
        nbest = [self._make(h) for h in self.search.results(search_state, self.nbest)[0]]
        return replace(nbest[0], nbest=nbest)

    def _make(self, hyp: Any) -> Transcription:
        """A hypothesis (``tokens``, ``timestamps`` in frames, ``score``) -> :class:`Transcription`."""
        tokens: Sequence[int] = hyp.tokens
        return Transcription(text=self.tokenizer.decode(tokens), tokens=list(tokens),
                             pieces=[self.tokenizer.id_to_token(i) for i in tokens],
                             timestamps=[t * self.frame_ms / 1000.0 for t in hyp.timestamps], score=hyp.score)


class SessionResults:
    """``text`` and ``result()`` of a streaming session (shared by the recognizers' sessions).

    The session provides ``s2t`` (its recognizer, a :class:`SearchTranscriber`), ``search_state``
    (its one-stream search state) and ``finished``.
    """

    s2t: Any
    search_state: Any
    finished: bool

    @property
    def text(self) -> str:
        """The best text of the frames decoded so far."""
        return self.result().text

    def result(self) -> Transcription:
        """The current best result (partial until :meth:`finalize`)."""
        return self.s2t.transcription(self.search_state)

    def _check_open(self) -> None:
        """Raises ValueError after ``finalize``."""
        if self.finished:
            raise ValueError(f"session: already finalized; open a new one with {type(self.s2t).__name__}.stream()")
