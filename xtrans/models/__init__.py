"""Model components: the wav2vec 2.0 / XLSR encoder, prediction networks, joiner, transducer.

``build_model(arch)`` (:mod:`xtrans.models.config`) is the one builder of a transducer; its
architecture is a :class:`~xtrans.models.arch.ModelArch`. What any encoder must provide is the
protocol :class:`~xtrans.models.encoder.Encoder`.
"""

from xtrans.models.arch import ModelArch
from xtrans.models.config import build_model, resolve_arch
from xtrans.models.encoder import Encoder

__all__ = ["Encoder", "ModelArch", "build_model", "resolve_arch"]
