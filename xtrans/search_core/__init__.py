"""Transducer search written once: greedy and modified beam search over a runtime's array ops.

Both searches are streaming state machines over encoder frames with the same interface::

    search = GreedySearch(ops, max_symbols=3)        # or ModifiedBeamSearch(ops, beam=4)
    state = search.init_state(batch_size)             # beam: also a scorer (hotwords, LM) per stream
    state = search.step(enc_chunk (B, T, D), state, lengths)   # per chunk
    hyps = search.results(state)

``ops`` (:class:`~xtrans.search_core.ops.TransducerOps`) is what differs between runtimes: the
prediction network, the joiner and their arrays. :mod:`xtrans.search` binds the searches to a
PyTorch :class:`~xtrans.models.transducer.Transducer`, :mod:`xtrans.onnx.search` to an ONNX
export's ``predictor.onnx`` and ``joiner.onnx``; the algorithm, the scores, the scorer hook
(:mod:`xtrans.search_core.scorer`) and the stacking of states across streams
(:mod:`xtrans.search_core.batch`) are this package's, in numpy, for both. Nothing here imports
torch.
"""

from xtrans.search_core.batch import split_search_states, stack_search_states
from xtrans.search_core.beam import BeamState, ModifiedBeamSearch
from xtrans.search_core.greedy import GreedySearch, GreedyState
from xtrans.search_core.ops import Hypothesis, Prediction, TransducerOps, check_chunk
from xtrans.search_core.scorer import Scorer

__all__ = ["BeamState", "GreedySearch", "GreedyState", "Hypothesis", "ModifiedBeamSearch", "Prediction", "Scorer",
           "TransducerOps", "check_chunk", "split_search_states", "stack_search_states"]
