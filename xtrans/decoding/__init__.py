"""Decoding with either recognizer, for the command-line tools: loading one from its options,
decoding a data directory utterance by utterance, and measuring WER under changed input.

- :mod:`xtrans.decoding.load`: :class:`~xtrans.decoding.load.RecognizerSpec`, how to load a
  :class:`~xtrans.transcription.Recognizer` (a checkpoint's :class:`~xtrans.inference.Speech2Text`
  or an export's :class:`~xtrans.onnx.OnnxSpeech2Text`); picklable, so worker processes load
  their own;
- :mod:`xtrans.decoding.data_dir`: the loop over a Kaldi data directory (optional gain and
  per-utterance transform, simulated or streaming mode, a worker pool) of
  ``python -m xtrans.bin.decode``, ``level_robustness`` and ``robustness``;
- :mod:`xtrans.decoding.measure`: the models, options, scoring and outputs that
  ``python -m xtrans.bin.level_robustness`` and ``python -m xtrans.bin.robustness`` share.

The package imports nothing on import (``xtrans.decoding.load`` imports torch only to load a
checkpoint), so the ONNX paths of the tools stay torch-free where they were.
"""
