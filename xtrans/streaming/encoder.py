"""Chunk-by-chunk streaming inference of the wav2vec 2.0 / XLSR encoder.

Reproduces the masked full-utterance pass ``Wav2Vec2Encoder.forward(waveform, lengths,
streaming=cfg)`` while audio arrives in pieces of any size, at a cost per chunk that does not
grow with the stream when the left context is bounded (Kumar et al., "XLSR-Transducer:
Streaming ASR for Self-Supervised Pretrained Models", ICASSP 2025). Shape legend: ``B`` batch,
``S`` samples (16 kHz), ``T`` frames (20 ms), ``D`` model dim, ``H`` heads, ``C`` chunk frames.

What each part of the encoder needs to stream (DESIGN.md, "Streaming rule"):

- waveform normalisation ``cumulative``: three running sums (count, sum, sum of squares).
- CNN: frame ``k`` reads samples ``[320k, 320k + 400)``; every conv layer carries the input
  positions it has not consumed yet and runs only on those plus the new ones
  (:mod:`xtrans.streaming.frontend`; the ``cumulative_norm`` extractor carries its sums).
- positional convolution ``chunk``/``causal``: the last ``pos_conv.history`` projected frames
  (64 / 127); in ``chunk`` mode the frames after the chunk read as zeros, so a chunk's
  embedding is computable as soon as its last frame is.
- attention: chunk ``c`` (frames ``cC .. cC+C-1``) attends::

      keys = [sink frames 0..S-1 not already in the window] + [frames cC-L .. cC-1] + [chunk]

  which is exactly the set ``j < (c+1)C and (j >= cC - L or j < S)`` of the rule: every
  cached key is visible to every query of the chunk, so no rule mask is needed, only a key
  padding mask for streams that have ended. Per layer the state keeps the keys/values of the
  sinks (at most ``S`` frames) and of the last ``L`` frames (all frames when ``L`` is None).

A chunk is complete, and emitted, once samples up to ``320 (c+1) C + 80`` have arrived.

Batched streams run in lockstep: every open stream receives the same number of samples per
call; a stream ends at the first call that gives it fewer samples than the others (``lengths``)
or at :meth:`StreamingEncoder.finalize`. An ended stream behaves as a padded utterance of the
masked full pass (its frames past its end are zero and never attended), so a batch streamed to
the end equals ``encoder(padded_waveform, lengths, streaming=cfg)`` frame for frame. Chunks
are emitted for the whole batch together, so an ended stream's last partial chunk comes out
with the batch's next chunk (or at ``finalize``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from xtrans.masks import StreamingConfig
from xtrans.models.wav2vec2.model import Wav2Vec2Encoder
from xtrans.streaming.frontend import FrontendState, StreamingFrontend


@dataclass(frozen=True)
class LayerCache:
    """Keys and values one transformer layer keeps between chunks, each (B, H, T', D/H).

    Attributes:
        sink_keys: keys of the sink frames ``0 .. min(S, N) - 1`` (N frames emitted so far).
        sink_values: their values.
        left_keys: keys of the last ``min(L, N)`` frames emitted (all ``N`` when ``L`` is None).
        left_values: their values.
    """

    sink_keys: torch.Tensor
    sink_values: torch.Tensor
    left_keys: torch.Tensor
    left_values: torch.Tensor


@dataclass(frozen=True)
class EncoderState:
    """Everything the streaming encoder carries between calls (created by ``init_state``).

    Attributes:
        frontend: waveform-normalisation sums and the CNN layers' carry-over
            (:class:`~xtrans.streaming.frontend.FrontendState`).
        pending: (B, T', D) projected CNN frames not yet emitted (``T' < C`` while a stream is open).
        pos_history: (B, P, D) the ``P = pos_conv.history`` projected frames before ``pending``
            (zeros before the stream starts).
        layers: one :class:`LayerCache` per transformer layer.
        num_frames: frames emitted so far, i.e. the first frame of the next chunk.
        stream_ends: per stream, ``None`` while it is open, its total samples once it has ended.
    """

    frontend: FrontendState
    pending: torch.Tensor
    pos_history: torch.Tensor
    layers: Tuple[LayerCache, ...]
    num_frames: int
    stream_ends: Tuple[Optional[int], ...]

    @property
    def batch_size(self) -> int:
        return self.pending.shape[0]

    @property
    def num_samples(self) -> int:
        """Samples received by the longest stream (every open stream has this many)."""
        return self.frontend.num_samples

    @property
    def cnn_frames(self) -> int:
        """Frames the CNN has produced so far (emitted + pending)."""
        return self.num_frames + self.pending.shape[1]

    @property
    def finished(self) -> bool:
        """True when every stream has ended (after ``finalize``, nothing is left to emit)."""
        return all(end is not None for end in self.stream_ends)

    def tensors(self) -> List[torch.Tensor]:
        """Every tensor of the state (for sizes and device moves)."""
        out = [*self.frontend.tensors(), self.pending, self.pos_history]
        for cache in self.layers:
            out += [cache.sink_keys, cache.sink_values, cache.left_keys, cache.left_values]
        return out

    def num_bytes(self) -> int:
        """Memory held by the state's tensors."""
        return sum(t.numel() * t.element_size() for t in self.tensors())


class StreamingEncoder:
    """Real chunk-by-chunk inference of a :class:`Wav2Vec2Encoder` under a streaming rule.

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
        ValueError: when ``streaming.chunk_size`` is None (full attention cannot stream).
        StreamingNotSupportedError: when the encoder cannot obey the rule (group-norm CNN,
            ``waveform_norm='utterance'``, ``pos_conv='full'``).
    """

    def __init__(self, encoder: Wav2Vec2Encoder, streaming: StreamingConfig):
        if not isinstance(streaming, StreamingConfig):
            raise TypeError(f"streaming: expected a StreamingConfig, found {type(streaming).__name__}")
        if streaming.chunk_size is None:
            raise ValueError("streaming.chunk_size: expected a chunk size in frames for streaming "
                             "inference, found None (full attention needs the whole utterance; "
                             "use encoder(waveform, lengths) instead)")
        encoder.check_streaming(streaming)
        self.encoder = encoder
        self.streaming = streaming
        self.frontend = StreamingFrontend(encoder)

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
        attn = enc.layers[0].attention if len(enc.layers) else None
        H, Dh = (attn.num_heads, attn.head_dim) if attn is not None else (1, enc.embed_dim)
        D = enc.embed_dim

        def empty(*shape, dt=dtype):
            return torch.zeros(*shape, device=device, dtype=dt)

        layers = tuple(LayerCache(empty(batch_size, H, 0, Dh), empty(batch_size, H, 0, Dh),
                                  empty(batch_size, H, 0, Dh), empty(batch_size, H, 0, Dh))
                       for _ in enc.layers)
        return EncoderState(
            frontend=self.frontend.init_state(batch_size, device, dtype), pending=empty(batch_size, 0, D),
            pos_history=empty(batch_size, enc.pos_conv.history, D), layers=layers,
            num_frames=0, stream_ends=(None,) * batch_size)

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
        ends = tuple(end if end is not None or new[b] == n else state.num_samples + new[b]
                     for b, end in enumerate(state.stream_ends))
        m = max(new)  # the new extent of the longest stream
        valid = torch.arange(m, device=samples.device)[None, :] < torch.tensor(new, device=samples.device)[:, None]
        state = self._consume(samples[:, :m].to(state.pending.dtype), valid, state, ends)
        return self._emit(state)

    @torch.no_grad()
    def finalize(self, state: EncoderState) -> Tuple[torch.Tensor, torch.Tensor, EncoderState]:
        """Ends every open stream and emits the remaining frames (the short last chunk).

        The last chunk is computed as the masked full pass computes it at the end of an
        utterance: the positional convolution sees zeros after the end. Returns like
        :meth:`forward_chunk`; the returned state is finished.
        """
        self._check_eval()
        ends = tuple(state.num_samples if end is None else end for end in state.stream_ends)
        return self._emit(dataclasses.replace(state, stream_ends=ends))

    # ------------------------------------------------------------------ internals
    def _check_eval(self) -> None:
        if self.encoder.training:
            raise ValueError("encoder: expected eval mode for streaming inference (dropout and layer "
                             "drop differ between calls); call encoder.eval() first")

    def _frames_for(self, num_samples: int) -> int:
        """CNN frames of ``num_samples`` samples: ``(S - 400) // 320 + 1``, 0 below 400."""
        fe = self.encoder.feature_extractor
        return 0 if num_samples < fe.receptive_field else (num_samples - fe.receptive_field) // fe.stride + 1

    def _frame_limits(self, state: EncoderState) -> torch.Tensor:
        """(B,) long: frames of each stream known valid (all produced for open streams)."""
        limits = [state.cnn_frames if end is None else self._frames_for(end) for end in state.stream_ends]
        return torch.tensor(limits, device=state.pending.device)

    def _consume(self, x: torch.Tensor, valid: torch.Tensor, state: EncoderState,
                 ends: Tuple[Optional[int], ...]) -> EncoderState:
        """Runs the front end on new samples (B, m) and queues the frames they complete."""
        h, frontend = self.frontend.forward_chunk(x, valid, state.frontend)  # (B, T', D)
        # frames past an ended stream's last frame are padding: zero, as in Wav2Vec2Encoder.extract
        first, n_frames = state.cnn_frames, h.shape[1]
        limits = torch.tensor([first + n_frames if end is None else self._frames_for(end) for end in ends],
                              device=h.device)
        pad = torch.arange(first, first + n_frames, device=h.device)[None, :] >= limits[:, None]  # (B, T')
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
        first = state.num_frames - frames.shape[1]
        counts = (limits - first).clamp(min=0, max=frames.shape[1])
        return frames, counts, state

    def _positional(self, h: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Positional embedding (B, n, D) of a chunk's frames ``h`` given the frames before it."""
        pc = self.encoder.pos_conv
        if pc.mode == "none":
            return torch.zeros_like(h)
        window = torch.cat([history, h], dim=1).transpose(1, 2)  # (B, P + n, D) -> (B, D, P + n)
        if pc.mode == "chunk":  # frames after the chunk read as zero
            window = F.pad(window, (0, pc.kernel // 2 - 1))
        return F.gelu(pc.conv(window)).transpose(1, 2)  # (B, D, n) -> (B, n, D)

    def _encode_chunk(self, state: EncoderState, n: int, limits: torch.Tensor
                      ) -> Tuple[torch.Tensor, EncoderState]:
        """The next chunk: its ``n`` pending frames through the positional conv and the layers."""
        enc, cfg = self.encoder, self.streaming
        S, L = cfg.num_sinks, cfg.left_context
        start = state.num_frames
        h, pending = state.pending[:, :n], state.pending[:, n:]

        x = h + self._positional(h, state.pos_history)
        pos_history = torch.cat([state.pos_history, h], dim=1)[:, n:]  # keeps the last P frames
        if not enc.layer_norm_first:
            x = enc.layer_norm(x)

        # keys: the sinks not inside the left-context window, the window, the chunk
        num_left = state.layers[0].left_keys.shape[2] if state.layers else 0
        num_sinks = 0 if L is None else min(S, max(0, start - L))
        key_pos = torch.cat([torch.arange(num_sinks), torch.arange(start - num_left, start + n)]).to(limits.device)
        query_valid = torch.arange(start, start + n, device=limits.device)[None, :] < limits[:, None]  # (B, n)
        mask = None
        if not bool(query_valid.all()):  # an ended stream: never attend its padding frames
            key_valid = key_pos[None, :] < limits[:, None]  # (B, Tk)
            mask = key_valid[:, None, None, :] | ~query_valid[:, None, :, None]  # (B, 1, n, Tk)

        caches = []
        for layer, cache in zip(enc.layers, state.layers):
            k, v = layer.attention.project_kv(layer.attention_input(x))  # (B, H, n, D/H)
            keys = torch.cat([cache.sink_keys[:, :, :num_sinks], cache.left_keys, k], dim=2)
            values = torch.cat([cache.sink_values[:, :, :num_sinks], cache.left_values, v], dim=2)
            x = layer.forward_with_kv(x, keys, values, mask)
            caches.append(self._update_cache(cache, k, v))
        if enc.layer_norm_first:
            x = enc.layer_norm(x)
        x = x.masked_fill(~query_valid[:, :, None], 0.0)
        return x, dataclasses.replace(state, pending=pending, pos_history=pos_history,
                                      layers=tuple(caches), num_frames=start + n)

    def _update_cache(self, cache: LayerCache, k: torch.Tensor, v: torch.Tensor) -> LayerCache:
        """Adds a chunk's keys/values (B, H, n, D/H): sinks fill up to S, the window keeps L."""
        S, L = self.streaming.num_sinks, self.streaming.left_context
        sink_k, sink_v = cache.sink_keys, cache.sink_values
        if sink_k.shape[2] < S:
            take = S - sink_k.shape[2]
            sink_k = torch.cat([sink_k, k[:, :, :take]], dim=2)
            sink_v = torch.cat([sink_v, v[:, :, :take]], dim=2)
        left_k = torch.cat([cache.left_keys, k], dim=2)
        left_v = torch.cat([cache.left_values, v], dim=2)
        if L is not None:
            drop = max(0, left_k.shape[2] - L)
            left_k, left_v = left_k[:, :, drop:], left_v[:, :, drop:]
        return LayerCache(sink_k, sink_v, left_k, left_v)
