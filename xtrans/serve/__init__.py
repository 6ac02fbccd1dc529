"""The live streaming server: websocket protocol, batched decoding across connections, endpointing.

``python -m xtrans.bin.serve --model exp/stage5/best.pt`` serves ``ws://127.0.0.1:6006/ws``
(protocol: :mod:`xtrans.serve.protocol`) and a microphone page at ``http://127.0.0.1:6006/``.
:mod:`xtrans.serve.engine` is the decoding loop without the network, :mod:`xtrans.serve.backend`
the recognizers it batches (:func:`backend_for` picks a recognizer's), :mod:`xtrans.serve.server`
the asyncio server and :mod:`xtrans.serve.client` a Python client.
"""


def backend_for(recognizer, batch_rows=None):
    """The batched server backend of a recognizer (:class:`xtrans.transcription.Recognizer`).

    :class:`~xtrans.serve.onnx_backend.OnnxBackend` for an :class:`xtrans.onnx.OnnxSpeech2Text`
    (torch is not imported), :class:`~xtrans.serve.backend.TorchBackend` for a
    :class:`xtrans.inference.Speech2Text` (under its streaming rule; ``batch_rows`` streams per
    model call, None = its default).

    Raises:
        TypeError: for another kind of recognizer.
        ValueError: as the backends do (a ``Speech2Text`` without a chunk size, an export not at 16 kHz
            or not loaded with ``num_threads=1``).
    """
    from xtrans.onnx import OnnxSpeech2Text

    if isinstance(recognizer, OnnxSpeech2Text):
        from xtrans.serve.onnx_backend import OnnxBackend

        return OnnxBackend(recognizer)
    from xtrans.inference import Speech2Text

    if isinstance(recognizer, Speech2Text):
        from xtrans.serve.backend import TorchBackend

        return TorchBackend(recognizer) if batch_rows is None else TorchBackend(recognizer, batch_rows=batch_rows)
    raise TypeError(f"recognizer: expected a Speech2Text or an OnnxSpeech2Text, found {type(recognizer).__name__}")
