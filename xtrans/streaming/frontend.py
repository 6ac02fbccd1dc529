"""Streaming front end: waveform normalisation + CNN feature extractor + projection, piece by piece.

Every CNN layer (kernel ``k``, stride ``s``) keeps the input positions it has not consumed yet
(fewer than ``k``); new positions are appended and the layer runs only on those plus the
carry-over, so each position of each layer is computed exactly once. Output frame ``t`` of the
whole stack reads samples ``[320 t, 320 t + 400)`` (XLSR strides), so after ``S`` samples the
front end has produced ``(S - 400) // 320 + 1`` frames, as the full pass does.

Streamable per-position operations need no state (per-frame LayerNorm of the ``layer_norm``
extractor, the fixed statistics of the ``batch_norm`` extractor in evaluation, GELU, the
projection). Causal running statistics carry their sums: the
``cumulative`` waveform normalisation (count, sum, sum of squares of the samples) and the
``cumulative_norm`` extractor's first layer (its own ``init_state``/``forward_chunk``).
The ``group_norm`` extractor is refused by ``Wav2Vec2Encoder.check_streaming``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import torch

from xtrans.models.wav2vec2.model import StreamingNotSupportedError, Wav2Vec2Encoder, cumulative_normalize

STREAMABLE_CONV_NORMS = ("layer", "none", "cumulative", "batch")


@dataclass(frozen=True)
class FrontendState:
    """What the front end carries between pieces of audio.

    Attributes:
        wave_sum: (B,) float64 running sum of the raw samples (``cumulative`` normalisation).
        wave_sq_sum: (B,) float64 running sum of their squares.
        carries: per CNN layer, (B, C_in, k') input positions not consumed yet (``k' < kernel``);
            layer 0's input is the normalised waveform (``C_in = 1``).
        norm_states: per CNN layer, the running statistics of a ``cumulative`` channel norm
            (``None`` for layers without one).
        num_samples: samples received (by the longest stream).
    """

    wave_sum: torch.Tensor
    wave_sq_sum: torch.Tensor
    carries: Tuple[torch.Tensor, ...]
    norm_states: Tuple[Optional[Any], ...]
    num_samples: int

    def tensors(self) -> List[torch.Tensor]:
        out = [self.wave_sum, self.wave_sq_sum, *self.carries]
        for norm in self.norm_states:
            if norm is not None:
                out += [getattr(norm, f.name) for f in dataclasses.fields(norm)]
        return out


class StreamingFrontend:
    """Waveform normalisation, CNN and feature projection of an encoder, fed piece by piece.

    Raises:
        StreamingNotSupportedError: for a CNN layer norm that cannot stream (e.g. ``group``).
    """

    def __init__(self, encoder: Wav2Vec2Encoder):
        for i, layer in enumerate(encoder.feature_extractor.conv_layers):
            if layer.norm_kind not in STREAMABLE_CONV_NORMS:
                raise StreamingNotSupportedError(
                    f"CNN layer {i} uses norm {layer.norm_kind!r}, which reads the whole utterance; "
                    f"streaming supports {STREAMABLE_CONV_NORMS}")
        self.encoder = encoder

    def init_state(self, batch_size: int, device=None, dtype: torch.dtype = torch.float32) -> FrontendState:
        fe = self.encoder.feature_extractor
        carries, norms, in_ch = [], [], 1
        for (channels, _, _), layer in zip(fe.conv_layers_spec, fe.conv_layers):
            carries.append(torch.zeros(batch_size, in_ch, 0, device=device, dtype=dtype))
            norms.append(layer.norm.init_state(batch_size, device) if layer.norm_kind == "cumulative" else None)
            in_ch = channels
        zeros = torch.zeros(batch_size, device=device, dtype=torch.float64)
        return FrontendState(wave_sum=zeros, wave_sq_sum=zeros.clone(), carries=tuple(carries),
                             norm_states=tuple(norms), num_samples=0)

    def forward_chunk(self, samples: torch.Tensor, valid: torch.Tensor, state: FrontendState
                      ) -> Tuple[torch.Tensor, FrontendState]:
        """New raw samples (B, m), valid mask (B, m) -> the frames they complete (B, T', D), state.

        Invalid samples (past a stream's end) read as zero, as padding does in the full pass.
        """
        x, wave_sum, wave_sq_sum = self._normalize(samples, valid, state)
        x = x[:, None, :]  # (B, m) -> (B, 1, m)
        fe = self.encoder.feature_extractor
        carries, norms = [], []
        for (_, kernel, stride), layer, carry, norm in zip(fe.conv_layers_spec, fe.conv_layers,
                                                           state.carries, state.norm_states):
            x = torch.cat([carry, x], dim=2)
            n_out = (x.shape[2] - kernel) // stride + 1 if x.shape[2] >= kernel else 0
            carries.append(x[:, :, stride * n_out:])
            x = x[:, :, :stride * (n_out - 1) + kernel] if n_out else x[:, :, :0]
            if layer.norm_kind == "cumulative":
                h = layer.conv(x) if n_out else x.new_zeros(x.shape[0], layer.conv.out_channels, 0)
                h, norm = layer.norm.forward_chunk(h, norm)
                x = torch.nn.functional.gelu(h)
            elif n_out:
                x = layer(x)  # (B, C_in, k) -> (B, C_out, n_out); per-position norm
            else:
                x = x.new_zeros(x.shape[0], layer.conv.out_channels, 0)
            norms.append(norm)
        frames = self.encoder.feature_projection(x.transpose(1, 2))  # (B, C, T') -> (B, T', D)
        return frames, FrontendState(wave_sum=wave_sum, wave_sq_sum=wave_sq_sum, carries=tuple(carries),
                                     norm_states=tuple(norms), num_samples=state.num_samples + samples.shape[1])

    def _normalize(self, x: torch.Tensor, valid: torch.Tensor, state: FrontendState
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Waveform normalisation of new samples (B, m) -> (B, m), and the new running sums."""
        x = x.masked_fill(~valid, 0.0)
        if self.encoder.waveform_norm == "none" or x.shape[1] == 0:
            return x, state.wave_sum, state.wave_sq_sum
        # the full pass's own computation, with the sums carried over (count = samples so far)
        count = torch.tensor(float(state.num_samples), dtype=torch.float64, device=x.device)
        y, _, total, total_sq = cumulative_normalize(x, count, state.wave_sum, state.wave_sq_sum)
        return y.masked_fill(~valid, 0.0), total, total_sq
