"""Exact RNN-T (transducer) loss in pure PyTorch, on CPU and CUDA.

The loss is the negative log-likelihood of the transducer of Graves (2012), "Sequence
Transduction with Recurrent Neural Networks", arXiv:1211.3711, computed exactly (no pruning)
with the forward-backward algorithm over the (T, U+1) lattice. It is the quantity computed by
``torchaudio.functional.rnnt_loss`` with its defaults ``clamp=-1`` and
``fused_log_softmax=True``.

Implementation, shape legend ``B`` batch, ``T`` encoder frames, ``U`` target tokens,
``V`` vocabulary incl. blank:

* ``log_softmax`` is never materialised. One pass over the logits, in row blocks, gives the
  normaliser ``logsumexp`` (B, T, U+1); only the blank and target log-probabilities are
  gathered, into (B, T, U+1) and (B, T, U) tensors.
* alpha and beta are computed in float64 on those small tensors. One lattice direction is
  a loop, the other is a single ``logcumsumexp`` (see ``_lattice_logsumexp``), so the loop
  runs ``min(T, U+1)`` times. beta is the same forward recursion on the lattice of each
  utterance reversed in time and label position, which makes padding harmless.
* The gradient w.r.t. the logits is analytic (``softmax * occupancy - edge occupancies``) and
  is written straight into the one (B, T, U+1, V) tensor the backward pass returns. Between
  forward and backward only (B, T, U+1)-sized tensors are kept (plus the logits themselves).
* Exponents are floored where ``exp`` would underflow below the smallest normal float
  (``_exp_floor``); this changes values by less than ``finfo.tiny`` and keeps CPU ``exp`` on
  its fast path for very peaked (large) logits.
"""

import logging
import math
from typing import Optional, Tuple

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["rnnt_loss"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INDEX_DTYPES = (torch.int16, torch.int32, torch.int64, torch.uint8)
_REDUCTIONS = ("none", "sum", "mean")
_BACKENDS = ("auto", "torch", "torchaudio")
# Rows of V logits handled per block in the passes over the full (B, T, U+1, V) tensor; bounds
# the size of the temporaries to about this many elements.
_BLOCK_ELEMENTS = 1 << 20


def rnnt_loss(
    logits: Tensor,
    targets: Tensor,
    logit_lengths: Tensor,
    target_lengths: Tensor,
    blank: int = 0,
    reduction: str = "mean",
    backend: str = "auto",
) -> Tensor:
    r"""RNN-T negative log-likelihood (Graves, 2012), exact, with an analytic gradient.

    For utterance ``b`` with ``T_b = logit_lengths[b]`` frames and ``U_b = target_lengths[b]``
    labels ``y_1 .. y_{U_b}``, let ``log p(k | t, u) = log_softmax(logits[b, t, u])[k]``. The
    forward variables over the lattice ``0 <= t < T_b``, ``0 <= u <= U_b`` are

    .. code-block:: text

        alpha(0, 0) = 0
        alpha(t, u) = logaddexp( alpha(t-1, u) + log p(blank   | t-1, u),     # t > 0
                                 alpha(t, u-1) + log p(y_u     | t,   u-1) )  # u > 0
        loss_b      = -( alpha(T_b - 1, U_b) + log p(blank | T_b - 1, U_b) )

    (a missing term is ``-inf``). Every path emits all ``U_b`` labels and ends with one blank
    at the last frame. The backward variables ``beta`` run the same recursion from the end,
    and the gradient is ``d loss_b / d logits[b, t, u, k] = gamma(t, u) softmax_k - e_k`` with
    ``gamma(t, u) = exp(alpha(t, u) + beta(t, u) + loss_b)`` the lattice occupancy and ``e_k``
    the occupancies of the blank edge (``k = blank``) and label edge (``k = y_{u+1}``) leaving
    ``(t, u)`` (Graves, 2012, eq. 16-17). Positions beyond an utterance's lengths get zero
    gradient; their logits must still be finite.

    Args:
        logits: (B, T, U+1, V) float16, bfloat16, float32 or float64 unnormalised joiner
            outputs (log-softmax is applied here). Half precision is computed in float32.
        targets: (B, U) int label ids; entries past ``target_lengths`` are ignored (any value).
        logit_lengths: (B,) int, valid frames per utterance, ``1 <= T_b <= T``.
        target_lengths: (B,) int, labels per utterance, ``0 <= U_b <= U``.
        blank: Index of the blank symbol in ``[-V, V)``; negative counts from the end.
        reduction: ``"none"`` gives the (B,) per-utterance losses, ``"sum"`` their sum and
            ``"mean"`` their mean over the batch (as torchaudio: not divided by lengths).
        backend: ``"auto"`` or ``"torch"`` use this pure-PyTorch implementation,
            ``"torchaudio"`` calls ``torchaudio.functional.rnnt_loss`` (must be importable).

    Returns:
        The loss in nats: (B,) for ``reduction="none"``, else a scalar. dtype is that of
        ``logits``, but float32 for half-precision logits.

    Raises:
        ValueError: On a wrong shape, dtype, length, label id, ``blank``, ``reduction`` or
            ``backend``; the message names the argument.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, found {reduction!r}")
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, found {backend!r}")
    blank = _validate(logits, targets, logit_lengths, target_lengths, blank)
    device = logits.device
    targets = targets.to(device=device, dtype=torch.int64)
    logit_lengths = logit_lengths.to(device=device, dtype=torch.int64)
    target_lengths = target_lengths.to(device=device, dtype=torch.int64)

    if backend == "torchaudio":
        return _torchaudio_rnnt_loss(
            logits, targets, logit_lengths, target_lengths, blank, reduction
        )

    losses = _RNNTLoss.apply(logits, targets, logit_lengths, target_lengths, blank)
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.mean()
    return losses


def _validate(
    logits: Tensor,
    targets: Tensor,
    logit_lengths: Tensor,
    target_lengths: Tensor,
    blank: int,
) -> int:
    """Checks the arguments of ``rnnt_loss``; returns ``blank`` as an index in ``[0, V)``."""
    for name, value in (
        ("logits", logits),
        ("targets", targets),
        ("logit_lengths", logit_lengths),
        ("target_lengths", target_lengths),
    ):
        if not isinstance(value, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, found {type(value).__name__}")
    if logits.dim() != 4:
        raise ValueError(
            f"logits must have shape (B, T, U+1, V), found {tuple(logits.shape)}"
        )
    if logits.dtype not in _FLOAT_DTYPES:
        raise ValueError(
            f"logits must be float16, bfloat16, float32 or float64, found {logits.dtype}"
        )
    batch, max_frames, max_labels_plus_1, vocab = logits.shape
    if batch == 0 or max_frames == 0 or max_labels_plus_1 == 0 or vocab == 0:
        raise ValueError(f"logits: expected no empty dimension, found shape {tuple(logits.shape)}")
    return _check_index_args(
        targets,
        logit_lengths,
        target_lengths,
        blank,
        batch=batch,
        max_frames=max_frames,
        max_labels=max_labels_plus_1 - 1,
        vocab=vocab,
        device=logits.device,
        scores=f"logits (B, T, U+1, V) = {tuple(logits.shape)}",
    )


def _check_index_args(
    targets: Tensor,
    logit_lengths: Tensor,
    target_lengths: Tensor,
    blank: int,
    *,
    batch: int,
    max_frames: int,
    max_labels: int,
    vocab: int,
    device: torch.device,
    scores: str,
) -> int:
    """Checks targets, lengths and ``blank`` against the sizes B, T, U, V of the scores.

    Shared by the transducer losses; ``scores`` describes the score tensor(s) the sizes come
    from, for the messages. Returns ``blank`` as an index in ``[0, V)``.
    """
    if targets.dim() != 2:
        raise ValueError(f"targets must have shape (B, U), found {tuple(targets.shape)}")
    if targets.dtype not in _INDEX_DTYPES:
        raise ValueError(f"targets must have an integer dtype, found {targets.dtype}")
    if targets.shape != (batch, max_labels):
        raise ValueError(
            f"targets must have shape (B, U) = ({batch}, {max_labels}) to match "
            f"{scores}, found {tuple(targets.shape)}"
        )
    for name, lengths in (("logit_lengths", logit_lengths), ("target_lengths", target_lengths)):
        if lengths.shape != (batch,):
            raise ValueError(
                f"{name} must have shape (B,) = ({batch},), found {tuple(lengths.shape)}"
            )
        if lengths.dtype not in _INDEX_DTYPES:
            raise ValueError(f"{name} must have an integer dtype, found {lengths.dtype}")
    if not -vocab <= blank < vocab:
        raise ValueError(f"blank must be in [-V, V) = [{-vocab}, {vocab}), found {blank}")
    blank = blank % vocab

    # One host synchronisation for all data-dependent checks.
    logit_lengths = logit_lengths.to(device=device, dtype=torch.int64)
    target_lengths = target_lengths.to(device=device, dtype=torch.int64)
    positions = torch.arange(max_labels, device=device)
    in_use = positions < target_lengths[:, None]
    used = targets.to(device=device, dtype=torch.int64)[in_use]
    stats = torch.stack([
        logit_lengths.min(),
        logit_lengths.max(),
        target_lengths.min(),
        target_lengths.max(),
        used.min() if used.numel() else torch.zeros((), dtype=torch.int64, device=device),
        used.max() if used.numel() else torch.zeros((), dtype=torch.int64, device=device),
        (used == blank).sum(),
    ]).tolist()
    min_t, max_t, min_u, max_u, min_label, max_label, num_blank = stats
    if min_t < 1 or max_t > max_frames:
        raise ValueError(
            f"logit_lengths must lie in [1, T] = [1, {max_frames}], found values in "
            f"[{min_t}, {max_t}]"
        )
    if min_u < 0 or max_u > max_labels:
        raise ValueError(
            f"target_lengths must lie in [0, U] = [0, {max_labels}], found values in "
            f"[{min_u}, {max_u}]"
        )
    if min_label < 0 or max_label >= vocab:
        raise ValueError(
            f"targets must be label ids in [0, V) = [0, {vocab}) within target_lengths, found "
            f"values in [{min_label}, {max_label}]"
        )
    if num_blank:
        raise ValueError(
            f"targets must not contain the blank id {blank} within target_lengths, "
            f"found it {num_blank} time(s)"
        )
    return blank


def _torchaudio_rnnt_loss(
    logits: Tensor,
    targets: Tensor,
    logit_lengths: Tensor,
    target_lengths: Tensor,
    blank: int,
    reduction: str,
) -> Tensor:
    """Delegates to ``torchaudio.functional.rnnt_loss`` (int32 indices, lattice cropped)."""
    try:
        import torchaudio.functional as taf
    except Exception as exc:  # ImportError, or an ABI mismatch raising OSError/RuntimeError
        raise ValueError(
            f"backend='torchaudio' needs an importable torchaudio: {type(exc).__name__}: {exc}"
        ) from exc
    # torchaudio requires T == max(logit_lengths) and U == max(target_lengths).
    max_t = int(logit_lengths.max())
    max_u = int(target_lengths.max())
    if (max_t, max_u + 1) != tuple(logits.shape[1:3]):
        logits = logits[:, :max_t, : max_u + 1].contiguous()
    return taf.rnnt_loss(
        logits,
        targets[:, :max_u].to(torch.int32).contiguous(),
        logit_lengths.to(torch.int32),
        target_lengths.to(torch.int32),
        blank=blank,
        reduction=reduction,
        clamp=-1,
        fused_log_softmax=True,
    )


class _RNNTLoss(torch.autograd.Function):
    """Per-utterance RNN-T loss (B,) with the analytic gradient w.r.t. the logits."""

    @staticmethod
    def forward(ctx, logits, targets, logit_lengths, target_lengths, blank):
        compute_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        max_labels = targets.shape[1]
        # Label ids with padding replaced by the blank, so that every gather index is valid.
        positions = torch.arange(max_labels, device=logits.device)
        labels = torch.where(positions < target_lengths[:, None], targets, blank)

        log_norm = _logsumexp_last(logits, compute_dtype)  # (B, T, U+1)
        blank_lp = logits[..., blank].to(torch.float64) - log_norm  # (B, T, U+1)
        label_lp = (  # (B, T, U)
            logits[:, :, :max_labels]
            .gather(-1, labels[:, None, :, None].expand(-1, logits.shape[1], -1, 1))
            .squeeze(-1)
            .to(torch.float64)
            - log_norm[:, :, :max_labels]
        )
        blank_occ, label_occ, log_like = _occupancies(
            blank_lp, label_lp, logit_lengths, target_lengths, ctx.needs_input_grad[0]
        )
        ctx.blank = blank
        ctx.save_for_backward(logits, labels, log_norm, blank_occ, label_occ)
        return (-log_like).to(compute_dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_losses):
        logits, labels, log_norm, blank_occ, label_occ = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        scale = grad_losses.to(torch.float64)[:, None, None]  # (B, 1, 1)
        blank_occ = blank_occ * scale  # (B, T, U+1)
        label_occ = label_occ * scale  # (B, T, U)
        node_occ = blank_occ.clone()  # (B, T, U+1)
        node_occ[:, :, :-1] += label_occ

        # grad = softmax(logits) * node_occ - edge occupancies
        grad = _scaled_softmax(logits, log_norm, node_occ)
        grad[..., ctx.blank] -= blank_occ.to(grad.dtype)
        max_labels = labels.shape[1]
        grad[:, :, :max_labels].scatter_add_(
            -1,
            labels[:, None, :, None].expand(-1, logits.shape[1], -1, 1),
            -label_occ.to(grad.dtype)[..., None],
        )
        return grad, None, None, None, None


def _scaled_softmax(logits: Tensor, log_norm: Tensor, occupancy: Tensor) -> Tensor:
    """``softmax(logits) * occupancy``, written block by block into one new tensor.

    Args:
        logits: (..., V) scores, any float dtype.
        log_norm: (...) their ``logsumexp`` over V in the compute dtype (float32 or float64).
        occupancy: (...) the weight of each row.

    Returns:
        (..., V) in the dtype of ``logits``: the only tensor of that size allocated here.
    """
    compute_dtype = log_norm.dtype
    grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)
    flat_grad = grad.view(-1, vocab)
    flat_norm = log_norm.reshape(-1, 1)
    flat_occ = occupancy.to(compute_dtype).reshape(-1, 1)
    floor = _exp_floor(compute_dtype)
    rows = max(1, _BLOCK_ELEMENTS // vocab)
    for start in range(0, flat_logits.shape[0], rows):
        block = slice(start, start + rows)
        if logits.dtype == compute_dtype:
            out = torch.sub(flat_logits[block], flat_norm[block], out=flat_grad[block])
        else:  # half precision: compute in float32
            out = flat_logits[block].to(compute_dtype).sub_(flat_norm[block])
        out.clamp_min_(floor).exp_().mul_(flat_occ[block])
        if logits.dtype != compute_dtype:
            flat_grad[block] = out
    return grad


def _exp_floor(dtype: torch.dtype) -> float:
    """A floor for exponents: exp(floor) is a normal number of ``dtype``.

    Exponents below it only produce values under ``finfo(dtype).tiny``; clamping them changes
    no result visibly and avoids the slow scalar path that vectorised ``exp`` takes on CPU for
    results that underflow (up to 10x slower, e.g. for logits of magnitude ~50).
    """
    return math.log(torch.finfo(dtype).tiny) + 1.0


def _logsumexp_last(logits: Tensor, compute_dtype: torch.dtype) -> Tensor:
    """logsumexp over V of (B, T, U+1, V) logits, in row blocks -> (B, T, U+1) compute_dtype."""
    vocab = logits.shape[-1]
    flat = logits.reshape(-1, vocab)
    out = torch.empty(flat.shape[0], dtype=compute_dtype, device=logits.device)
    floor = _exp_floor(compute_dtype)
    rows = max(1, _BLOCK_ELEMENTS // vocab)
    for start in range(0, flat.shape[0], rows):
        block = flat[start : start + rows].to(compute_dtype)
        peak = block.amax(dim=-1, keepdim=True)  # (rows, 1)
        shifted = torch.sub(block, peak).clamp_min_(floor).exp_()
        out[start : start + rows] = shifted.sum(dim=-1).log_().add_(peak.squeeze(-1))
    return out.view(logits.shape[:-1])


def _occupancies(
    blank_lp: Tensor,
    label_lp: Tensor,
    logit_lengths: Tensor,
    target_lengths: Tensor,
    need_occupancies: bool = True,
) -> Tuple[Optional[Tensor], Optional[Tensor], Tensor]:
    """Forward-backward on the lattice.

    Args:
        blank_lp: (B, T, U+1) float64 ``log p(blank | t, u)``.
        label_lp: (B, T, U) float64 ``log p(y_{u+1} | t, u)``.
        logit_lengths: (B,) int64 ``T_b``.
        target_lengths: (B,) int64 ``U_b``.
        need_occupancies: If False, only the forward pass runs and the occupancies are None.

    Returns:
        ``(blank_occ (B, T, U+1), label_occ (B, T, U), log_like (B,))``: the posterior
        probability of taking the blank edge and the label edge leaving ``(t, u)``, zero
        outside each utterance's lattice, and ``log P(y | x)``.
    """
    batch, max_frames, width = blank_lp.shape
    device = blank_lp.device
    pad_col = blank_lp.new_zeros(batch, max_frames, 1)
    label_lp_full = torch.cat([label_lp, pad_col], dim=2)  # (B, T, U+1), last column unused

    # alpha(t, u) = logaddexp(alpha(t-1, u) + blank_lp(t-1, u), alpha(t, u-1) + label_lp(t, u-1))
    down = torch.cat([blank_lp.new_zeros(batch, 1, width), blank_lp[:, :-1]], dim=1)
    right = torch.cat([pad_col, label_lp], dim=2)
    alpha = _lattice_logsumexp(down, right)  # (B, T, U+1)
    batch_index = torch.arange(batch, device=device)
    last_t = logit_lengths - 1
    log_like_no_final = alpha[batch_index, last_t, target_lengths]  # (B,)
    log_like = log_like_no_final + blank_lp[batch_index, last_t, target_lengths]
    if not need_occupancies:
        return None, None, log_like

    # beta without the final blank, on the reversed lattice t' = T_b-1-t, u' = U_b-u:
    # rbeta(t', u') = logaddexp(rbeta(t'-1, u') + blank_lp(t, u), rbeta(t', u'-1) + label_lp(t, u)),
    # the same recursion as alpha. Index maps are clamped; cells outside the lattice are junk
    # that no cell inside reads, and are masked below.
    frames = torch.arange(max_frames, device=device)
    labels = torch.arange(width, device=device)
    src_t = (logit_lengths[:, None] - 1 - frames).clamp_(min=0)  # (B, T)
    src_u = (target_lengths[:, None] - labels).clamp_(min=0)  # (B, U+1)
    flat_index = (src_t[:, :, None] * width + src_u[:, None, :]).view(batch, -1)  # (B, T*(U+1))
    rev_blank = blank_lp.reshape(batch, -1).gather(1, flat_index).view_as(blank_lp)
    rev_label = label_lp_full.reshape(batch, -1).gather(1, flat_index).view_as(blank_lp)
    rbeta = _lattice_logsumexp(rev_blank, rev_label)
    # The map (t, u) <-> (t', u') is an involution on each lattice, so the same index undoes it.
    beta = rbeta.reshape(batch, -1).gather(1, flat_index).view_as(blank_lp)  # (B, T, U+1)
    inside = (frames[None, :, None] < logit_lengths[:, None, None]) & (
        labels[None, None, :] <= target_lengths[:, None, None]
    )
    beta = beta.masked_fill(~inside, float("-inf"))

    # Edge occupancy = exp(alpha(source) + edge log-prob + beta(destination) - log_like'),
    # where beta and log_like' both exclude the final blank.
    norm = log_like_no_final[:, None, None]
    beta_down = torch.cat([beta[:, 1:], beta.new_full((batch, 1, width), float("-inf"))], dim=1)
    blank_occ = torch.exp(alpha + blank_lp + beta_down - norm)
    blank_occ[batch_index, last_t, target_lengths] = 1.0  # every path ends with this blank
    label_occ = torch.exp(alpha[:, :, :-1] + label_lp + beta[:, :, 1:] - norm)
    return blank_occ, label_occ, log_like


def _lattice_logsumexp(down: Tensor, right: Tensor) -> Tensor:
    """Log-semiring forward recursion over a (T, U+1) lattice.

    ``x(0, 0) = 0`` and ``x(t, u) = logaddexp(x(t-1, u) + down(t, u), x(t, u-1) + right(t, u))``
    (missing terms are ``-inf``). Along one axis the recursion is linear, so with the prefix sum
    ``S(t, u) = sum_{j=1..u} right(t, j)`` a row is
    ``x(t, :) = S(t, :) + logcumsumexp(x(t-1, :) + down(t, :) - S(t, :))``: the loop runs over
    the shorter axis and the longer one is a single ``logcumsumexp``.

    Args:
        down: (B, T, U+1) float64 weights of the edges arriving from ``(t-1, u)``.
        right: (B, T, U+1) float64 weights of the edges arriving from ``(t, u-1)``.

    Returns:
        (B, T, U+1) float64 ``x``.
    """
    if down.shape[2] < down.shape[1]:  # loop over u instead: the recursion is symmetric
        return _lattice_logsumexp(right.transpose(1, 2), down.transpose(1, 2)).transpose(1, 2)
    batch, rows, cols = down.shape
    prefix = right.clone()
    prefix[:, :, 0] = 0.0
    prefix = prefix.cumsum(dim=2)  # (B, R, C) S(r, c)
    # With y(r) = x(r) - S(r): y(0) = 0, y(r) = logcumsumexp(y(r-1) + S(r-1) + down(r) - S(r)).
    step = (down[:, 1:] + prefix[:, :-1] - prefix[:, 1:]).transpose(0, 1).contiguous()
    y = down.new_empty(rows, batch, cols)  # (R, B, C)
    y[0] = 0.0
    buffer = down.new_empty(batch, cols)
    for r in range(1, rows):
        torch.add(y[r - 1], step[r - 1], out=buffer)
        torch.logcumsumexp(buffer, dim=1, out=y[r])
    return y.transpose(0, 1) + prefix
