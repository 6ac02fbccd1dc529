"""Speech recognition from an ONNX export on onnxruntime + numpy, without torch.

::

    from xtrans.onnx import OnnxSpeech2Text
    s2t = OnnxSpeech2Text("exp/onnx", search="beam", beam=4)
    session = s2t.stream()
    partial = session.accept_waveform(samples_16k)      # as Speech2Text.stream()
    final = session.finalize()

An export is written by ``python -m xtrans.bin.export_onnx``; its layout is documented in
:mod:`xtrans.onnx.config`. Nothing in this package imports torch.
"""

from xtrans.onnx.config import FORMAT, check_config, load_config, read_metadata
from xtrans.onnx.recognizer import OnnxDecoder, OnnxSpeech2Text, OnnxStreamingSession
from xtrans.onnx.search import GreedySearch, Hypothesis, ModifiedBeamSearch
from xtrans.transcription import TokenTable, Transcription

__all__ = ["FORMAT", "GreedySearch", "Hypothesis", "ModifiedBeamSearch", "OnnxDecoder", "OnnxSpeech2Text",
           "OnnxStreamingSession", "TokenTable", "Transcription", "check_config", "load_config",
           "read_metadata"]
