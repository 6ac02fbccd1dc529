"""Model components: the wav2vec 2.0 / XLSR encoder, prediction networks, joiner, transducer.

``build_model(arch)`` (:mod:`xtrans.models.config`) is the one builder of a transducer; its
architecture is a :class:`~xtrans.models.arch.ModelArch`.
"""

from xtrans.models.arch import ModelArch
from xtrans.models.config import build_model, resolve_arch

__all__ = ["ModelArch", "build_model", "resolve_arch"]
