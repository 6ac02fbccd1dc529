"""The encoder's convolutional positional embedding, under the streaming rule.

One module for the two layouts (one weight-normed grouped convolution, or data2vec-audio's stack of
plain ones), each ``pos_conv`` mode (``full | chunk | causal | none``), and its streaming form:
``forward_chunk`` carries each layer's history (:class:`~xtrans.models.wav2vec2.states.PositionalConvState`).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from xtrans.masks import StreamingNotSupportedError, key_padding_mask
from xtrans.models.wav2vec2.states import PositionalConvState

POS_CONV_MODES = ("full", "chunk", "causal", "none")
POS_CONV_NORMS = ("weight", "layer")


class PositionalConv(nn.Module):
    """Convolutional relative positional embedding: one grouped convolution, or a stack of them.

    Two layouts: wav2vec 2.0, HuBERT and WavLM use one weight-normed convolution (kernel
    ``K = 128``, 16 groups) and GELU (``norm="weight"``); data2vec-audio a stack of
    ``num_layers = 5`` plain convolutions (``K = 19``), each followed by a LayerNorm without
    affine parameters and GELU (``norm="layer"``). Output frame ``t`` of one (``full``)
    convolution reads input frames ``t - K//2 .. t + (K-1)//2`` (zeros outside the utterance).
    Every layer of a stack obeys the mode on its own input, so the stack does too. Modes:

    - ``full``: the original; looks ``(K-1)//2`` frames (1.26 s for K=128) ahead per layer.
    - ``chunk``: for a frame in chunk ``c``, every input frame at or after the end of chunk
      ``c`` reads as zero — exactly what the convolution sees at the end of an utterance — so
      no future chunk leaks in, at any layer. Needs ``K//2`` frames of history per layer.
    - ``causal``: the same kernel shifted onto the past: frame ``t`` reads ``t-K+1 .. t``.
    - ``none``: no positional embedding (the module returns zeros).

    The input of layers 2..n is zeroed past each utterance's length (``lengths``), so that
    padding a batch changes nothing (the original stack reads its own outputs over the padding).
    """

    def __init__(self, *, embed_dim: int, kernel: int = 128, groups: int = 16, mode: str = "full",
                 num_layers: int = 1, norm: str = "weight"):
        super().__init__()
        if mode not in POS_CONV_MODES:
            raise ValueError(f"pos_conv: expected one of {POS_CONV_MODES}, found {mode!r}")
        if norm not in POS_CONV_NORMS:
            raise ValueError(f"pos_conv_norm: expected one of {POS_CONV_NORMS}, found {norm!r}")
        if num_layers < 1 or (norm == "weight" and num_layers != 1):
            raise ValueError(f"pos_conv_layers: expected 1 for pos_conv_norm='weight' (one weight-normed "
                             f"convolution) or >= 1 for 'layer', found {num_layers}")
        if kernel < 1:
            raise ValueError(f"pos_conv_kernel: expected >= 1, found {kernel}")
        self.mode = mode
        self.kernel = kernel
        self.norm = norm
        self.num_layers = num_layers
        if norm == "weight":
            conv = nn.Conv1d(embed_dim, embed_dim, kernel, padding=0, groups=groups)
            self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        else:
            self.convs = nn.ModuleList(nn.Conv1d(embed_dim, embed_dim, kernel, padding=0, groups=groups)
                                       for _ in range(num_layers))

    @property
    def history(self) -> int:
        """Input frames before the current chunk that streaming must keep, per layer (0 when unused)."""
        return {"full": self.kernel // 2, "chunk": self.kernel // 2, "causal": self.kernel - 1,
                "none": 0}[self.mode]

    def _layer(self, i: int, window: torch.Tensor) -> torch.Tensor:
        """Layer ``i`` on padded input (B, D, n + K - 1) -> (B, D, n): conv, [LayerNorm], GELU."""
        if self.norm == "weight":
            return F.gelu(self.conv(window))
        conv = self.convs[i]
        y = conv(window).transpose(1, 2)  # (B, D, n) -> (B, n, D)
        return F.gelu(F.layer_norm(y, (conv.out_channels,), eps=1e-5)).transpose(1, 2)

    def forward(self, x: torch.Tensor, chunk_size: Optional[int] = None,
                lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, T, D) -> positional embedding (B, T, D); padded frames of ``x`` must be zero.

        Args:
            x: frames, zero past each utterance's end.
            chunk_size: ``C`` for ``chunk`` mode; ``None`` makes ``chunk`` equal to ``full``.
            lengths: (B,) valid frames, for a stack (the input of its inner layers is zeroed past
                them); ``None`` = all.
        """
        if self.mode == "none":
            return torch.zeros_like(x)
        h = x.transpose(1, 2)  # (B, T, D) -> (B, D, T)
        T = h.shape[2]
        valid = None if lengths is None else key_padding_mask(lengths, T)[:, None, :]  # (B, 1, T)
        for i in range(self.num_layers):
            if i and valid is not None:
                h = h.masked_fill(~valid, 0.0)
            if self.mode == "causal":
                h = self._convolve(i, F.pad(h, (self.kernel - 1, 0)))
            elif self.mode == "full" or chunk_size is None or chunk_size >= T:
                h = self._layer(i, F.pad(h, (self.kernel // 2, (self.kernel - 1) // 2)))
            else:
                h = self._chunked(i, h, chunk_size)
        return h.transpose(1, 2)

    def _convolve(self, i: int, window: torch.Tensor) -> torch.Tensor:
        """``causal``/``chunk``: layer ``i`` on (B, D, P + n) history and frames -> (B, D, n).

        In ``chunk`` mode the ``(K-1)//2`` frames after the window read as zero.
        """
        if self.mode == "chunk":
            window = F.pad(window, (0, (self.kernel - 1) // 2))
        return self._layer(i, window)

    def init_state(self, batch_size: int, device=None, dtype: Optional[torch.dtype] = None) -> PositionalConvState:
        """Zero history at every layer: what the full pass sees before the first frame."""
        embed_dim = (self.conv if self.norm == "weight" else self.convs[0]).in_channels

        def zeros() -> torch.Tensor:
            return torch.zeros(batch_size, self.history, embed_dim, device=device, dtype=dtype)

        return PositionalConvState(zeros(), tuple(zeros() for _ in range(self.num_layers - 1)))

    def forward_chunk(self, x: torch.Tensor, state: PositionalConvState, valid: Optional[torch.Tensor] = None
                      ) -> Tuple[torch.Tensor, PositionalConvState]:
        """The embedding (B, n, D) of one whole chunk's frames ``x`` (B, n, D), and the new history.

        ``chunk`` mode reads zeros after the chunk, ``causal`` nothing after it, as :meth:`forward`.
        ``valid`` (B, n) marks the frames before each stream's end (the inner layers' input is
        zeroed after it, as :meth:`forward` does past ``lengths``); ``None`` = all.
        """
        if self.mode == "full":
            raise StreamingNotSupportedError("pos_conv='full' looks ahead across chunk borders and cannot stream")
        h, histories = x, []
        for i, history in enumerate((state.history, *state.inner)):
            if i and valid is not None:
                h = h.masked_fill(~valid[:, :, None], 0.0)
            window = torch.cat([history, h], dim=1)  # (B, P + n, D)
            histories.append(window[:, window.shape[1] - self.history:])
            if self.mode != "none":
                h = self._convolve(i, window.transpose(1, 2)).transpose(1, 2)  # (B, D, n) -> (B, n, D)
        new = PositionalConvState(histories[0], tuple(histories[1:]))
        return (torch.zeros_like(x) if self.mode == "none" else h), new

    def _chunked(self, i: int, h: torch.Tensor, chunk_size: int) -> torch.Tensor:
        """Chunk mode, layer ``i``: each chunk convolved with its ``K//2`` frames of history and zeros after it."""
        B, D, T = h.shape
        half, C = self.kernel // 2, chunk_size
        n = -(-T // C)
        padded = F.pad(h, (half, n * C - T))  # history of chunk 0 is zeros
        # window of chunk c: input frames c*C - half .. (c+1)*C - 1, then zeros for the future
        windows = padded.unfold(2, C + half, C)  # (B, D, n, C + half)
        windows = windows.permute(0, 2, 1, 3).reshape(B * n, D, C + half)
        y = self._convolve(i, windows)  # (B*n, D, C)
        return y.reshape(B, n, D, C).permute(0, 2, 1, 3).reshape(B, D, n * C)[:, :, :T]
