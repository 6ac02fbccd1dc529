"""Real chunk-by-chunk streaming inference (state threaded through ``forward_chunk``)."""

from xtrans.streaming.encoder import EncoderState, LayerCache, StreamingEncoder
from xtrans.streaming.state import flatten_state, split_states, stack_states, unflatten_state

__all__ = ["EncoderState", "LayerCache", "StreamingEncoder", "flatten_state", "split_states", "stack_states",
           "unflatten_state"]
