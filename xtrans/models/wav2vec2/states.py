"""What each time-mixing module of the encoder carries from one chunk to the next.

Every module that mixes frames in time streams itself: ``init_state(batch_size, ...)`` makes
one of these frozen values, ``forward_chunk(x, state) -> (y, new_state)`` threads it, and the
full pass (``forward``) is the same computation started from the initial state. The streaming
encoder (:mod:`xtrans.streaming`) only composes them. Attention's cache is
:class:`xtrans.models.attention.AttentionCache`; the ``cumulative_norm`` extractor's running
statistics are :class:`~xtrans.models.wav2vec2.frontend_norm.CumulativeNormState`.

Shape legend: ``B`` streams, ``D`` model dim, ``C_in`` a conv layer's input channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from xtrans.models.wav2vec2.frontend_norm import CumulativeNormState


@dataclass(frozen=True)
class WaveformNormState:
    """Running sums of the ``cumulative`` waveform normalisation (all (B,) float64).

    Attributes:
        count: samples seen so far.
        total: their sum.
        total_sq: the sum of their squares.
    """

    count: torch.Tensor
    total: torch.Tensor
    total_sq: torch.Tensor


@dataclass(frozen=True)
class ConvLayerState:
    """One CNN layer between pieces of audio.

    Attributes:
        carry: (B, C_in, k') input positions not consumed yet (``k' < kernel`` once the layer
            has produced an output).
        norm: running statistics of a ``cumulative`` channel norm, else None.
    """

    carry: torch.Tensor
    norm: Optional[CumulativeNormState]


@dataclass(frozen=True)
class PositionalConvState:
    """The positional convolution's history, per layer of its stack.

    Attributes:
        history: (B, P, D) the ``P = history`` input frames before the next chunk (the projected
            CNN frames: the input of the first, or only, convolution).
        inner: the same (B, P, D) history of the input of each further convolution of a stack
            (data2vec-audio's layers 2..n); empty for one convolution.
    """

    history: torch.Tensor
    inner: Tuple[torch.Tensor, ...] = ()


@dataclass(frozen=True)
class FrontendState:
    """Waveform normalisation and CNN between pieces of audio.

    Attributes:
        wave: the waveform normalisation's running sums.
        conv: one :class:`ConvLayerState` per CNN layer (layer 0's input is the normalised waveform).
    """

    wave: WaveformNormState
    conv: Tuple[ConvLayerState, ...]

    @property
    def carries(self) -> Tuple[torch.Tensor, ...]:
        """Per CNN layer, the (B, C_in, k') input positions not consumed yet."""
        return tuple(layer.carry for layer in self.conv)
