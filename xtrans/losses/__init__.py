"""Training losses for transducer models.

* :func:`rnnt_loss`: the exact RNN-T loss over the whole (B, T, U+1, V) lattice.
* Pruned RNN-T (Kuang et al., Interspeech 2022): :func:`simple_rnnt_loss` of a trivial joiner
  ``am + lm``, :func:`prune_ranges` chosen from its lattice, :func:`prune_joiner_inputs` to run
  the real joiner on (B, T, R, *) only, and :func:`pruned_rnnt_loss` on the result.
"""

from xtrans.losses.pruned import prune_joiner_inputs, pruned_rnnt_loss
from xtrans.losses.rnnt import rnnt_loss
from xtrans.losses.simple import prune_ranges, simple_rnnt_loss

__all__ = [
    "prune_joiner_inputs",
    "prune_ranges",
    "pruned_rnnt_loss",
    "rnnt_loss",
    "simple_rnnt_loss",
]
