"""Real chunk-by-chunk streaming inference (state threaded through ``forward_chunk``)."""

from xtrans.streaming.encoder import LayerCache, StreamingEncoder
from xtrans.streaming.state import EncoderState, flatten_state, split_states, stack_states, unflatten_state

__all__ = ["EncoderState", "LayerCache", "StreamingEncoder", "flatten_state", "split_states", "stack_states",
           "unflatten_state"]
