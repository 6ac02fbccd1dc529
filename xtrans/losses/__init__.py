"""Training losses for transducer models."""

from xtrans.losses.rnnt import rnnt_loss

__all__ = ["rnnt_loss"]
