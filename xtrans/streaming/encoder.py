"""Chunk-by-chunk streaming inference of an encoder (:class:`~xtrans.models.encoder.Encoder`).

Reproduces the masked full-utterance pass ``encoder(waveform, lengths, streaming=cfg)`` while
audio arrives in pieces of any size, at a cost per chunk that does not grow with the stream when
the left context is bounded (Kumar et al., "XLSR-Transducer:
Streaming ASR for Self-Supervised Pretrained Models", ICASSP 2025). Shape legend: ``B`` batch,
``S`` samples (16 kHz), ``T`` frames (20 ms), ``D`` model dim, ``H`` heads, ``C`` chunk frames.

The encoder's modules stream themselves (``init_state`` / ``forward_chunk`` beside ``forward``,
one computation; the wav2vec 2.0 family's states are in :mod:`xtrans.models.wav2vec2.states` and
:class:`~xtrans.models.attention.AttentionCache`); this module only composes them through the
encoder's contract (:class:`~xtrans.models.encoder.Encoder`):

- ``Encoder.extract_chunk``: waveform normalisation (running sums) and the CNN
  (each layer carries the input positions it has not consumed) turn new samples into frames;
- the frames wait in ``pending`` until a chunk of ``C`` is complete;
- ``Encoder.encode_chunk``: the positional convolution (its history) and every
  layer's attention (keys/values of the sinks and of the last ``L`` frames) encode the chunk.
  Chunk ``c`` attends::

      keys = [sink frames 0..S-1 not already in the window] + [frames cC-L .. cC-1] + [chunk]

  which is exactly the set ``j < (c+1)C and (j >= cC - L or j < S)`` of the rule.

A chunk is complete, and emitted, once samples up to ``320 (c+1) C + 80`` have arrived.

Batched streams run in lockstep: every open stream receives the same number of samples per
call (streams need not have started together: the counters are per stream, and
:func:`~xtrans.streaming.stack_states` / :func:`~xtrans.streaming.split_states` join and part
them between calls); a stream ends at the first call that gives it fewer samples than the others (``lengths``)
or at :meth:`StreamingEncoder.finalize`. An ended stream behaves as a padded utterance of the
masked full pass (its frames past its end are zero and never attended), so a batch streamed to
the end equals ``encoder(padded_waveform, lengths, streaming=cfg)`` frame for frame. Chunks
are emitted for the whole batch together, so an ended stream's last partial chunk comes out
with the batch's next chunk (or at ``finalize``).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple, Union

import torch
from torch.nn.utils import parametrize

from xtrans.frames import num_frames
from xtrans.masks import StreamingConfig
from xtrans.models.attention import AttentionCache
from xtrans.models.encoder import Encoder, check_encoder
from xtrans.streaming.state import EncoderState


LayerCache = AttentionCache
"""One transformer layer's key/value cache (the name this module exported before the modules streamed themselves)."""


class StreamingEncoder:
    """Real chunk-by-chunk inference of an :class:`~xtrans.models.encoder.Encoder` under a streaming rule.

    Holds no state of its own: the state is an :class:`EncoderState` created by
    :meth:`init_state` and threaded through :meth:`forward_chunk` and :meth:`finalize`::

        streamer = StreamingEncoder(encoder.eval(), StreamingConfig(32, 32, 4))
        state = streamer.init_state(batch_size=1)
        for piece in pieces:                       # (1, n) samples, any n
            frames, counts, state = streamer.forward_chunk(piece, state)
        frames, counts, state = streamer.finalize(state)

    Concatenated over the calls, the frames equal ``encoder(waveform, lengths, streaming)``.

    Args:
        encoder: the encoder, in eval mode (dropout and layer drop would make streaming differ).
        streaming: the rule; ``chunk_size`` must be set.

    Raises:
        TypeError: when ``encoder`` lacks a member of :class:`~xtrans.models.encoder.Encoder`, or
            ``streaming`` is no :class:`~xtrans.masks.StreamingConfig`.
        ValueError: when ``streaming.chunk_size`` is None (full attention cannot stream).
        StreamingNotSupportedError: when the encoder cannot obey the rule (group-norm CNN,
            ``waveform_norm='utterance'``, ``pos_conv='full'``).
    """

    def __init__(self, encoder: Encoder, streaming: StreamingConfig):
        check_encoder(encoder)
        if not isinstance(streaming, StreamingConfig):
            raise TypeError(f"streaming: expected a StreamingConfig, found {type(streaming).__name__}")
        if streaming.is_full:
            raise ValueError("streaming.chunk_size: expected a chunk size in frames for streaming "
                             "inference, found None (full attention needs the whole utterance; "
                             "use encoder(waveform, lengths) instead)")
        encoder.check_streaming(streaming)
        self.encoder = encoder
        self.streaming = streaming

    # ------------------------------------------------------------------ state
    def init_state(self, batch_size: int, device: Union[str, torch.device, None] = None,
                   dtype: Optional[torch.dtype] = None) -> EncoderState:
        """The state before the first sample of ``batch_size`` streams.

        ``device``/``dtype`` default to those of the encoder's parameters (read now, not cached).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, found {batch_size}")
        enc = self.encoder
        param = next(enc.parameters())
        device = param.device if device is None else device
        dtype = param.dtype if dtype is None else dtype
        positional, layers = enc.init_chunk_state(batch_size, self.streaming, device, dtype)
        return EncoderState(
            frontend=enc.init_frontend_state(batch_size, device, dtype),
            pending=torch.zeros(batch_size, 0, enc.embed_dim, device=device, dtype=dtype),
            positional=positional, layers=layers, frames=torch.zeros(batch_size, dtype=torch.long, device=device),
            samples=torch.zeros(batch_size, dtype=torch.long, device=device), stream_ends=(None,) * batch_size)

    # ------------------------------------------------------------------ public steps
    @torch.no_grad()
    def forward_chunk(self, samples: torch.Tensor, state: EncoderState,
                      lengths: Union[torch.Tensor, Sequence[int], None] = None
                      ) -> Tuple[torch.Tensor, torch.Tensor, EncoderState]:
        """Feeds new audio; returns the frames of every chunk it completes.

        Args:
            samples: (B, n) float, the next ``n`` raw 16 kHz samples of each stream (any ``n``).
            state: from :meth:`init_state` or the previous call.
            lengths: (B,) valid new samples per stream, ``0 <= lengths[b] <= n``; ``None`` = ``n``
                for every open stream. A stream given fewer than ``n`` ends here; an ended stream
                must be given 0 (its samples are ignored).

        Returns:
            frames (B, T_new, D) of the completed chunks (``T_new`` a multiple of ``C`` while a
            stream is open, possibly 0), zero past each stream's end; frame counts (B,) long,
            the valid frames of each stream among them; the new state.

        Raises:
            ValueError: on a badly shaped input, bad ``lengths``, or an encoder in training mode.
        """
        self._check_eval()
        if samples.dim() != 2 or samples.shape[0] != state.batch_size:
            raise ValueError(f"samples: expected ({state.batch_size}, n), found shape {tuple(samples.shape)}")
        n = samples.shape[1]
        if lengths is None:
            new = [0 if end is not None else n for end in state.stream_ends]
        else:
            new = [int(v) for v in (lengths.tolist() if torch.is_tensor(lengths) else lengths)]
            if len(new) != state.batch_size or any(not 0 <= v <= n for v in new):
                raise ValueError(f"lengths: expected {state.batch_size} values in [0, {n}], found {new}")
            ended = [b for b, end in enumerate(state.stream_ends) if end is not None and new[b] > 0]
            if ended:
                raise ValueError(f"lengths: stream {ended[0]} has ended (given fewer samples than the "
                                 f"others, or finalized) and must be given 0 samples, found {new[ended[0]]}")
        received = state.samples.tolist()
        ends = tuple(end if end is not None or new[b] == n else received[b] + new[b]
                     for b, end in enumerate(state.stream_ends))
        m = max(new)  # the new extent of the longest stream
        valid = torch.arange(m, device=samples.device)[None, :] < torch.tensor(new, device=samples.device)[:, None]
        state = self._consume(samples[:, :m].to(state.pending.dtype), valid, state, ends)
        state = dataclasses.replace(state, samples=state.samples + torch.tensor(new, device=state.samples.device))
        return self._emit(state)

    @torch.no_grad()
    def finalize(self, state: EncoderState) -> Tuple[torch.Tensor, torch.Tensor, EncoderState]:
        """Ends every open stream and emits the remaining frames (the short last chunk).

        The last chunk is computed as the masked full pass computes it at the end of an
        utterance: the positional convolution sees zeros after the end. Returns like
        :meth:`forward_chunk`; the returned state is finished.
        """
        self._check_eval()
        ends = tuple(received if end is None else end
                     for received, end in zip(state.samples.tolist(), state.stream_ends))
        return self._emit(dataclasses.replace(state, stream_ends=ends))

    # ------------------------------------------------------------------ internals
    def _check_eval(self) -> None:
        if self.encoder.training:
            raise ValueError("encoder: expected eval mode for streaming inference (dropout and layer "
                             "drop differ between calls); call encoder.eval() first")

    def _frames_for(self, num_samples: int) -> int:
        """CNN frames of ``num_samples`` samples: ``(S - 400) // 320 + 1``, 0 below 400 (:func:`xtrans.frames.num_frames`)."""
        fe = self.encoder.feature_extractor
        return num_frames(num_samples, stride=fe.stride, receptive_field=fe.receptive_field)

    def _frame_limits(self, state: EncoderState) -> torch.Tensor:
        """(B,) long: frames of each stream known valid (all produced for open streams)."""
        return self._limits(state.cnn_frames, state.stream_ends)

    def _limits(self, produced: torch.Tensor, ends: Tuple[Optional[int], ...]) -> torch.Tensor:
        """(B,) long: valid frames per stream: all ``produced`` while open, those of its samples once ended."""
        ended = torch.tensor([0 if end is None else self._frames_for(end) for end in ends], device=produced.device)
        is_open = torch.tensor([end is None for end in ends], device=produced.device)
        return torch.where(is_open, produced, ended)

    def _consume(self, x: torch.Tensor, valid: torch.Tensor, state: EncoderState,
                 ends: Tuple[Optional[int], ...]) -> EncoderState:
        """Runs the front end on new samples (B, m) and queues the frames they complete."""
        h, frontend = self.encoder.extract_chunk(x.masked_fill(~valid, 0.0), state.frontend)  # (B, T', D)
        # frames past an ended stream's last frame are padding: zero, as in Encoder.extract
        first, n_frames = state.cnn_frames, h.shape[1]  # (B,) first new frame per stream
        limits = self._limits(first + n_frames, ends)
        pad = first[:, None] + torch.arange(n_frames, device=h.device)[None, :] >= limits[:, None]  # (B, T')
        h = h.masked_fill(pad[:, :, None], 0.0)
        return dataclasses.replace(state, frontend=frontend, stream_ends=ends,
                                   pending=torch.cat([state.pending, h], dim=1))

    def _emit(self, state: EncoderState) -> Tuple[torch.Tensor, torch.Tensor, EncoderState]:
        """Encodes every complete chunk of ``state.pending`` (all of it once every stream ended)."""
        C = self.streaming.chunk_size
        limits = self._frame_limits(state)
        outputs = []
        with parametrize.cached():  # the weight-normed positional conv weight, once per call
            while state.pending.shape[1] >= C or (state.finished and state.pending.shape[1] > 0):
                n = min(C, state.pending.shape[1])
                y, state = self._encode_chunk(state, n, limits)
                outputs.append(y)
        B, D = state.batch_size, self.encoder.embed_dim
        frames = torch.cat(outputs, dim=1) if outputs else state.pending.new_zeros(B, 0, D)
        first = state.frames - frames.shape[1]
        counts = (limits - first).clamp(min=0, max=frames.shape[1])
        return frames, counts, state

    def _encode_chunk(self, state: EncoderState, n: int, limits: torch.Tensor
                      ) -> Tuple[torch.Tensor, EncoderState]:
        """The next chunk: its ``n`` pending frames through the positional conv and the layers."""
        y, positional, layers = self.encoder.encode_chunk(state.pending[:, :n], state.positional, state.layers,
                                                          state.frames, limits, self.streaming)
        return y, dataclasses.replace(state, pending=state.pending[:, n:], positional=positional, layers=layers,
                                      frames=state.frames + n)
