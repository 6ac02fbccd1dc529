"""Search states of separate streams joined into one batch and split back.

The functions are the search core's (:mod:`xtrans.search_core.batch`), one place for both
runtimes; they are importable from here for the PyTorch side.
"""

from xtrans.search_core.batch import split_search_states, stack_search_states

__all__ = ["split_search_states", "stack_search_states"]
