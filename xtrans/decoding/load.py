"""How to load a recognizer: a checkpoint or an ONNX export, with its streaming rule and search.

::

    spec = RecognizerSpec(model="exp/stage5/best.pt", chunk_ms=640, left_ms=640, sinks=4, search="beam")
    spec = RecognizerSpec(onnx="exp/onnx", search="beam", num_threads=2)
    spec = RecognizerSpec(model="best.pt", search="beam", hotwords="hotwords.txt", lm="lm.arpa", lm_scale=0.3)
    recognizer = spec.load()        # a Speech2Text or an OnnxSpeech2Text: the same Recognizer interface

The one place that asks "checkpoint or export?" for the command-line tools. A spec is frozen
and picklable, so a worker process loads its own recognizer from it (and keys its cache by it).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional

from xtrans.context.hotwords import DEFAULT_HOTWORDS_SCORE, read_hotwords
from xtrans.context.lm import DEFAULT_LM_SCALE
from xtrans.transcription import Recognizer


@dataclass(frozen=True)
class RecognizerSpec:
    """The options that load a :class:`~xtrans.transcription.Recognizer`.

    Attributes:
        model: a checkpoint (:meth:`xtrans.inference.Speech2Text.from_checkpoint`), or
        onnx: an export directory (:class:`xtrans.onnx.OnnxSpeech2Text`); exactly one of them.
        onnx_encoder: with ``onnx``: the encoder file to load (default: the export's ``encoder_file``).
        tokenizer: with ``model``: a sentencepiece ``.model`` or ``tokens.txt`` (default: found
            from the checkpoint).
        device: with ``model``: where to run (an export runs on onnxruntime's CPU provider).
        chunk_ms, left_ms, sinks: with ``model``: the streaming rule (``chunk_ms`` None = full
            attention); an export has its own.
        search, beam, max_symbols, nbest: the search.
        hotwords: a hotwords file (one ``PHRASE`` or ``PHRASE :SCORE`` per line) boosted in every
            utterance; ``hotwords_score``: the per-token boost of phrases without their own.
        lm: an ARPA n-gram LM over the tokenizer's pieces, fused with weight ``lm_scale``.
            Hotwords and the LM need ``search="beam"`` (``docs/decoding.md``).
        num_threads: with ``onnx``: onnxruntime's intra-op threads (torch's are the caller's:
            ``torch.set_num_threads`` is process-wide).

    Raises:
        ValueError: unless exactly one of ``model`` and ``onnx`` is given, or for options of a
            checkpoint given with ``onnx`` (the export fixes its tokens, rule and device).
    """

    model: Optional[str] = None
    onnx: Optional[str] = None
    onnx_encoder: Optional[str] = None
    tokenizer: Optional[str] = None
    device: str = "cpu"
    chunk_ms: Optional[float] = None
    left_ms: Optional[float] = None
    sinks: int = 0
    search: str = "greedy"
    beam: int = 4
    max_symbols: int = 3
    nbest: Optional[int] = None
    num_threads: Optional[int] = None
    hotwords: Optional[str] = None
    hotwords_score: float = DEFAULT_HOTWORDS_SCORE
    lm: Optional[str] = None
    lm_scale: float = DEFAULT_LM_SCALE

    def __post_init__(self):
        if (self.model is None) == (self.onnx is None):
            raise ValueError(f"model/onnx: expected exactly one of a checkpoint and an ONNX export, found "
                             f"model={self.model!r}, onnx={self.onnx!r}")
        if self.onnx is not None:
            given = [name for name, value in (("tokenizer", self.tokenizer), ("chunk_ms", self.chunk_ms),
                                              ("left_ms", self.left_ms)) if value is not None]
            given += ["sinks"] * bool(self.sinks) + ["device"] * (self.device != "cpu")
            if given:
                raise ValueError(f"onnx: the export fixes its tokens, streaming rule and device; found {given}")
        elif self.onnx_encoder is not None:
            raise ValueError("onnx_encoder: expected an ONNX export (onnx) with it, found a checkpoint")

    @classmethod
    def from_options(cls, options: Any) -> "RecognizerSpec":
        """The spec of an options object (e.g. an ``argparse.Namespace`` of ``python -m
        xtrans.bin.decode``): each field from the attribute of its name, when there is one."""
        return cls(**{f.name: getattr(options, f.name) for f in fields(cls) if hasattr(options, f.name)})

    def load(self) -> Recognizer:
        """Loads the recognizer.

        Raises:
            CheckpointError, FileNotFoundError, ValueError: as the recognizers do, and for a
                malformed hotwords file.
            ImportError: for a checkpoint where PyTorch is not installed (a runtime install decodes
                exports only).
        """
        context = dict(hotwords=None if self.hotwords is None else read_hotwords(self.hotwords),
                       hotwords_score=self.hotwords_score, lm=self.lm, lm_scale=self.lm_scale)
        if self.onnx is not None:
            from xtrans.onnx import OnnxSpeech2Text

            return OnnxSpeech2Text(self.onnx, search=self.search, beam=self.beam, max_symbols=self.max_symbols,
                                   nbest=self.nbest, num_threads=self.num_threads, encoder_file=self.onnx_encoder,
                                   **context)
        try:
            import torch  # noqa: F401
        except ImportError as err:
            raise ImportError(f"model: a checkpoint ({self.model}) needs PyTorch, which this install lacks "
                              "(pip install 'xtrans[train]'); an install of xtrans[runtime] decodes ONNX exports "
                              "(--onnx DIR, python -m xtrans.bin.export_onnx)") from err
        from xtrans.inference import Speech2Text

        return Speech2Text.from_checkpoint(self.model, self.tokenizer, self.device, chunk_ms=self.chunk_ms,
                                           left_ms=self.left_ms, sinks=self.sinks, search=self.search, beam=self.beam,
                                           max_symbols=self.max_symbols, nbest=self.nbest, **context)
