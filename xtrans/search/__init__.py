"""Transducer search on a PyTorch model: greedy and modified beam search, offline and streaming.

Both searches are streaming state machines over encoder frames with the same interface::

    search = GreedySearch(model, max_symbols=3)        # or ModifiedBeamSearch(model, beam=4)
    state = search.init_state(batch_size)               # beam: init_state(B, device, scorer=...)
    state = search.step(enc_chunk (B, T, D), state, lengths)   # per chunk
    hyps = search.results(state)

and an offline function each (:func:`greedy_search`, :func:`modified_beam_search`). The searches
themselves are written once, in :mod:`xtrans.search_core`, for this runtime and the onnxruntime
one (:mod:`xtrans.onnx.search`); :mod:`xtrans.search.ops` runs them on a
:class:`~xtrans.models.transducer.Transducer`.
"""

from xtrans.search.beam import BeamState, ModifiedBeamSearch, modified_beam_search
from xtrans.search.greedy import GreedySearch, GreedyState, greedy_search
from xtrans.search_core.ops import Hypothesis

__all__ = ["BeamState", "GreedySearch", "GreedyState", "Hypothesis", "ModifiedBeamSearch",
           "greedy_search", "modified_beam_search"]
