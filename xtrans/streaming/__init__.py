"""Real chunk-by-chunk streaming inference (state threaded through ``forward_chunk``)."""

from xtrans.streaming.encoder import EncoderState, LayerCache, StreamingEncoder

__all__ = ["EncoderState", "LayerCache", "StreamingEncoder"]
