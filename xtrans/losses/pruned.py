"""The pruned RNN-T loss: the exact transducer loss on R label positions per frame.

Kuang et al., "Pruned RNN-T for fast, memory-efficient ASR training", Interspeech 2022 (k2's
``do_rnnt_pruning`` and ``rnnt_loss_pruned``). Given per-frame ranges of ``R`` consecutive
label positions (:func:`xtrans.losses.prune_ranges`), the joiner runs on (B, T, R, *) inputs
only (:func:`prune_joiner_inputs`) instead of (B, T, U+1, *), and the loss is the RNN-T
negative log-likelihood of the paths that stay inside the pruned lattice.

Implementation (shape legend ``B`` batch, ``T`` frames, ``U`` labels, ``V`` vocabulary incl.
blank, ``R`` prune range): as :func:`xtrans.losses.rnnt_loss`, only the normaliser and the
blank and next-label log-probabilities (B, T, R) are taken from the logits; alpha and beta run
in float64 in the pruned coordinates ``(t, r)``, ``u = s_t + r``, one frame per step with the
within-frame label chain as one ``logcumsumexp``; beta is the same recursion on the lattice
reversed in time and label position. The gradient w.r.t. the logits is analytic
(``softmax * occupancy - edge occupancies``).
"""

from typing import Tuple

import torch
from torch import Tensor

from xtrans.losses.rnnt import (
    _FLOAT_DTYPES,
    _INDEX_DTYPES,
    _REDUCTIONS,
    _check_index_args,
    _logsumexp_last,
    _scaled_softmax,
)

__all__ = ["pruned_rnnt_loss", "prune_joiner_inputs"]


def prune_joiner_inputs(enc: Tensor, pred: Tensor, ranges: Tensor) -> Tuple[Tensor, Tensor]:
    """Joiner inputs at the pruned positions (k2's ``do_rnnt_pruning``).

    ``enc_pruned[b, t, r] = enc[b, t]`` and ``pred_pruned[b, t, r] = pred[b, ranges[b, t, r]]``,
    so that ``joiner(enc_pruned, pred_pruned)`` gives the (B, T, R, V) logits of
    :func:`pruned_rnnt_loss`. Positions past ``U`` (ranges may run past it when ``R > U + 1``)
    read ``pred[:, U]``; the loss ignores them.

    Args:
        enc: (B, T, D) encoder-side joiner input (typically already projected to the joiner dim).
        pred: (B, U+1, D_pred) predictor-side joiner input.
        ranges: (B, T, R) int label positions from :func:`xtrans.losses.prune_ranges`.

    Returns:
        ``enc_pruned`` (B, T, R, D), an expanded view, and ``pred_pruned`` (B, T, R, D_pred).

    Raises:
        ValueError: On mismatching shapes or a non-integer ``ranges``.
    """
    if enc.dim() != 3 or pred.dim() != 3 or pred.shape[0] != enc.shape[0]:
        raise ValueError(
            f"enc, pred: expected shapes (B, T, D) and (B, U+1, D_pred), found "
            f"{tuple(enc.shape)} and {tuple(pred.shape)}"
        )
    if ranges.dtype not in _INDEX_DTYPES or ranges.dim() != 3 or ranges.shape[:2] != enc.shape[:2]:
        raise ValueError(
            f"ranges: expected an integer (B, T, R) tensor with (B, T) = {tuple(enc.shape[:2])}, "
            f"found {ranges.dtype} {tuple(ranges.shape)}"
        )
    batch, frames, width = ranges.shape
    index = ranges.to(device=pred.device, dtype=torch.int64).clamp(0, pred.shape[1] - 1)
    # (B, U+1, D_pred) -> (B, T*R, D_pred) -> (B, T, R, D_pred)
    pred_pruned = pred.gather(1, index.reshape(batch, -1, 1).expand(-1, -1, pred.shape[2]))
    pred_pruned = pred_pruned.view(batch, frames, width, pred.shape[2])
    return enc[:, :, None, :].expand(-1, -1, width, -1), pred_pruned


def pruned_rnnt_loss(
    logits: Tensor,
    targets: Tensor,
    ranges: Tensor,
    logit_lengths: Tensor,
    target_lengths: Tensor,
    blank: int = 0,
    reduction: str = "mean",
) -> Tensor:
    r"""RNN-T negative log-likelihood of the paths inside a pruned lattice, exact.

    Frame ``t`` keeps the nodes ``u = ranges[b, t, r] = s_t + r``, ``r = 0 .. R-1``, and
    ``logits[b, t, r]`` are the joiner outputs there. With ``log p(k | t, u)`` their
    log-softmax, the recursion of :func:`xtrans.losses.rnnt_loss` runs over the kept nodes only:

    .. code-block:: text

        alpha(0, 0) = 0
        alpha(t, u) = logaddexp( alpha(t-1, u) + log p(blank | t-1, u),   # if s_{t-1} <= u < s_{t-1} + R
                                 alpha(t, u-1) + log p(y_u   | t,   u-1) ) # if u > s_t
        loss_b      = -( alpha(T_b - 1, U_b) + log p(blank | T_b - 1, U_b) )

    so with ``R = U + 1`` and ``ranges[b, t] = 0 .. U`` it equals ``rnnt_loss``; with fewer
    positions it sums fewer paths and is larger. Positions with ``u > U_b`` and frames
    ``t >= T_b`` lie outside the lattice: their logits are ignored (they must be finite) and
    get zero gradient.

    Args:
        logits: (B, T, R, V) float16, bfloat16, float32 or float64 joiner outputs at the
            pruned positions (half precision is computed in float32).
        targets: (B, U) int label ids; entries past ``target_lengths`` are ignored.
        ranges: (B, T, R) int label positions, consecutive in ``r``, as from
            :func:`xtrans.losses.prune_ranges`: ``s_0 = 0``, ``s_t <= s_{t+1} <= s_t + R - 1``
            and ``s_{T_b-1} <= U_b <= s_{T_b-1} + R - 1``.
        logit_lengths: (B,) int ``1 <= T_b <= T``.
        target_lengths: (B,) int ``0 <= U_b <= U``.
        blank: blank id in ``[-V, V)``.
        reduction: ``"none"`` (B,), ``"sum"`` or ``"mean"`` over the batch.

    Returns:
        The loss in nats, (B,) or a scalar, in the dtype of ``logits`` (float32 for half).

    Raises:
        ValueError: On a wrong shape, dtype, length, label id, ``blank``, ``reduction``, or
            ranges that break the conditions above.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {_REDUCTIONS}, found {reduction!r}")
    blank = _validate(logits, targets, ranges, logit_lengths, target_lengths, blank)
    device = logits.device
    targets = targets.to(device=device, dtype=torch.int64)
    ranges = ranges.to(device=device, dtype=torch.int64)
    logit_lengths = logit_lengths.to(device=device, dtype=torch.int64)
    target_lengths = target_lengths.to(device=device, dtype=torch.int64)
    positions = torch.arange(targets.shape[1], device=device)
    labels = torch.where(positions < target_lengths[:, None], targets, blank)
    losses = _PrunedRNNTLoss.apply(logits, labels, ranges, logit_lengths, target_lengths, blank)
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.mean()
    return losses


class _PrunedRNNTLoss(torch.autograd.Function):
    """Per-utterance pruned loss (B,) with the analytic gradient w.r.t. the logits."""

    @staticmethod
    def forward(ctx, logits, labels, ranges, logit_lengths, target_lengths, blank):
        compute_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        batch, frames, width, _ = logits.shape
        device = logits.device
        # Label of the edge leaving each position: y_{u+1}, blank (unused) at u >= U.
        padded = torch.cat([labels, labels.new_full((batch, 1), blank)], dim=1)  # (B, U+1)
        index = ranges.clamp(max=labels.shape[1]).view(batch, -1)
        next_label = padded.gather(1, index).view(batch, frames, width)  # (B, T, R)
        t_inside = (torch.arange(frames, device=device) < logit_lengths[:, None])[:, :, None]
        node_inside = t_inside & (ranges <= target_lengths[:, None, None])  # (B, T, R)
        label_inside = t_inside & (ranges < target_lengths[:, None, None])

        log_norm = _logsumexp_last(logits, compute_dtype)  # (B, T, R)
        blank_lp = logits[..., blank].to(torch.float64) - log_norm
        label_lp = logits.gather(-1, next_label[..., None]).squeeze(-1).to(torch.float64) - log_norm
        # Outside the lattice: finite placeholders that reach no node inside it.
        blank_lp = blank_lp.masked_fill(~node_inside, 0.0)
        label_lp = label_lp.masked_fill(~label_inside, 0.0)

        blank_occ, label_occ, log_like = _pruned_occupancies(
            blank_lp, label_lp, ranges[:, :, 0], logit_lengths, target_lengths,
            ctx.needs_input_grad[0],
        )
        if blank_occ is not None:
            blank_occ = blank_occ.masked_fill(~node_inside, 0.0)
            label_occ = label_occ.masked_fill(~label_inside, 0.0)
        ctx.blank = blank
        ctx.save_for_backward(logits, next_label, log_norm, blank_occ, label_occ)
        return (-log_like).to(compute_dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_losses):
        logits, next_label, log_norm, blank_occ, label_occ = ctx.saved_tensors
        scale = grad_losses.to(torch.float64)[:, None, None]  # (B, 1, 1)
        blank_occ = blank_occ * scale  # (B, T, R)
        label_occ = label_occ * scale
        grad = _scaled_softmax(logits, log_norm, blank_occ + label_occ)  # (B, T, R, V)
        grad[..., ctx.blank] -= blank_occ.to(grad.dtype)
        grad.scatter_add_(-1, next_label[..., None], -label_occ.to(grad.dtype)[..., None])
        return grad, None, None, None, None, None


def _pruned_occupancies(blank_lp, label_lp, start, logit_lengths, target_lengths, need_occupancies):
    """Forward-backward on the pruned lattice.

    Args:
        blank_lp: (B, T, R) float64 ``log p(blank | t, s_t + r)``.
        label_lp: (B, T, R) float64 ``log p(y_{s_t + r + 1} | t, s_t + r)``.
        start: (B, T) int64 ``s_t``.
        logit_lengths, target_lengths: (B,) int64 ``T_b``, ``U_b``.
        need_occupancies: if False only alpha is computed.

    Returns:
        ``(blank_occ (B, T, R), label_occ (B, T, R), log_like (B,))``: posterior probabilities of
        the blank and label edges leaving each node (not masked outside the lattice), and
        ``log P(y | x)`` over the pruned paths.
    """
    batch, frames, width = blank_lp.shape
    device = blank_lp.device
    neg_inf = float("-inf")
    cols = torch.arange(width, device=device)
    # shift[t] = s_t - s_{t-1}: node (t, r) is node (t-1, r + shift[t]) of the previous frame.
    shift = torch.cat([start.new_zeros(batch, 1), start.diff(dim=1)], dim=1).clamp_(0, width - 1)
    batch_index = torch.arange(batch, device=device)
    last_t = logit_lengths - 1
    end_r = target_lengths - start[batch_index, last_t]  # (B,) r of the end node (T_b-1, U_b)

    # alpha: the blank edge into (t, r) leaves (t-1, r + shift[t]) with that node's blank_lp;
    # the label edge into (t, r) leaves (t, r-1).
    source = (cols + shift[:, :, None]).clamp_(max=width - 1)  # (B, T, R)
    down = torch.cat([blank_lp.new_zeros(batch, 1, width), blank_lp[:, :-1]], dim=1)
    down = down.gather(2, source)
    right = torch.cat([blank_lp.new_zeros(batch, frames, 1), label_lp[:, :, :-1]], dim=2)
    alpha = _frame_recursion(down, right, shift, torch.zeros_like(end_r))
    log_like_no_final = alpha[batch_index, last_t, end_r]
    log_like = log_like_no_final + blank_lp[batch_index, last_t, end_r]
    if not need_occupancies:
        return None, None, log_like

    # beta: the same recursion on each utterance reversed, t' = T_b-1-t and r' = R-1-r, where
    # edge weights sit at the destination node and shift'[t'] = s_{t+1} - s_t = shift[T_b - t'].
    t_prime = torch.arange(frames, device=device)
    src_t = (logit_lengths[:, None] - 1 - t_prime).clamp_(min=0)  # (B, T), an involution
    rev_index = src_t[:, :, None].expand(-1, -1, width)
    rev_blank = blank_lp.gather(1, rev_index).flip(2)
    rev_label = label_lp.gather(1, rev_index).flip(2)
    rev_shift = shift.gather(1, (logit_lengths[:, None] - t_prime).clamp_(0, frames - 1))
    rev_shift[:, 0] = 0
    rbeta = _frame_recursion(rev_blank, rev_label, rev_shift, width - 1 - end_r)
    beta = rbeta.flip(2).gather(1, rev_index)  # (B, T, R), beta(T_b - 1, end_r) = 0
    beta = beta.masked_fill((t_prime[None, :] >= logit_lengths[:, None])[:, :, None], neg_inf)

    # Edge occupancy = exp(alpha(source) + edge log-prob + beta(destination) - log_like').
    norm = log_like_no_final[:, None, None]
    # The blank edge from (t, r) lands on (t+1, r - shift[t+1]) when that is >= 0.
    next_shift = torch.cat([shift[:, 1:], shift.new_zeros(batch, 1)], dim=1)
    dest = cols - next_shift[:, :, None]  # (B, T, R)
    beta_next = torch.cat([beta[:, 1:], beta.new_full((batch, 1, width), neg_inf)], dim=1)
    beta_down = beta_next.gather(2, dest.clamp(min=0)).masked_fill_(dest < 0, neg_inf)
    blank_occ = torch.exp(alpha + blank_lp + beta_down - norm)
    blank_occ[batch_index, last_t, end_r] = 1.0  # every path ends with this blank
    beta_right = torch.cat([beta[:, :, 1:], beta.new_full((batch, frames, 1), neg_inf)], dim=2)
    label_occ = torch.exp(alpha + label_lp + beta_right - norm)
    return blank_occ, label_occ, log_like


def _frame_recursion(down: Tensor, right: Tensor, shift: Tensor, first: Tensor) -> Tensor:
    """Log-semiring recursion over a lattice of R positions per frame.

    .. code-block:: text

        x(0, r) = 0 at r = first, else from the label chain (or -inf)
        x(t, r) = logaddexp( x(t-1, r + shift(t)) + down(t, r),    # if r + shift(t) < R
                             x(t, r-1)            + right(t, r) )  # if r > 0

    Within a frame the chain is linear: with ``S(t, r) = sum_{j=1..r} right(t, j)``,
    ``x(t, :) = S(t, :) + logcumsumexp(a(t, :) - S(t, :))`` where ``a`` is the first term.

    Args:
        down: (B, T, R) float64 weights of the edges arriving from the previous frame.
        right: (B, T, R) float64 finite weights of the edges arriving from ``r - 1``.
        shift: (B, T) int64 in ``[0, R)``; ``shift[:, 0]`` unused.
        first: (B,) int64 position of the start node in frame 0 (outside ``[0, R)``: no path).

    Returns:
        (B, T, R) float64 ``x``.
    """
    batch, frames, width = down.shape
    cols = torch.arange(width, device=down.device)
    prefix = right.clone()
    prefix[:, :, 0] = 0.0
    prefix = prefix.cumsum(dim=2)  # (B, T, R) S(t, r)
    source = cols + shift[:, :, None]  # (B, T, R)
    addend = (down - prefix).masked_fill_(source >= width, float("-inf"))
    addend = addend.transpose(0, 1).contiguous()  # (T, B, R)
    source = source.clamp_(max=width - 1).transpose(0, 1).contiguous()
    prefix_t = prefix.transpose(0, 1).contiguous()
    x = down.new_empty(frames, batch, width)  # (T, B, R)
    start = torch.where(cols == first[:, None], 0.0, float("-inf")).to(down.dtype)
    torch.logcumsumexp(start - prefix_t[0], dim=1, out=x[0])
    x[0] += prefix_t[0]
    buffer = down.new_empty(batch, width)
    for t in range(1, frames):
        torch.gather(x[t - 1], 1, source[t], out=buffer)
        buffer += addend[t]
        torch.logcumsumexp(buffer, dim=1, out=x[t])
        x[t] += prefix_t[t]
    return x.transpose(0, 1)


def _validate(logits, targets, ranges, logit_lengths, target_lengths, blank) -> int:
    """Checks the arguments of ``pruned_rnnt_loss``; returns ``blank`` in ``[0, V)``."""
    for name, value in (("logits", logits), ("targets", targets), ("ranges", ranges),
                        ("logit_lengths", logit_lengths), ("target_lengths", target_lengths)):
        if not isinstance(value, Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, found {type(value).__name__}")
    if logits.dim() != 4:
        raise ValueError(f"logits: expected shape (B, T, R, V), found {tuple(logits.shape)}")
    if logits.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"logits: expected a float dtype, found {logits.dtype}")
    if 0 in logits.shape:
        raise ValueError(f"logits: expected no empty dimension, found {tuple(logits.shape)}")
    batch, frames, width, vocab = logits.shape
    if ranges.dtype not in _INDEX_DTYPES or ranges.shape != logits.shape[:3]:
        raise ValueError(
            f"ranges: expected an integer tensor of shape (B, T, R) = {tuple(logits.shape[:3])}, "
            f"found {ranges.dtype} {tuple(ranges.shape)}"
        )
    if targets.dim() != 2:
        raise ValueError(f"targets: expected shape (B, U), found {tuple(targets.shape)}")
    blank = _check_index_args(
        targets, logit_lengths, target_lengths, blank,
        batch=batch, max_frames=frames, max_labels=targets.shape[1], vocab=vocab,
        device=logits.device, scores=f"logits (B, T, R, V) = {tuple(logits.shape)}",
    )
    # One host synchronisation for the checks on ranges.
    device = logits.device
    ranges = ranges.to(device=device, dtype=torch.int64)
    logit_lengths = logit_lengths.to(device=device, dtype=torch.int64)
    target_lengths = target_lengths.to(device=device, dtype=torch.int64)
    start = ranges[:, :, 0]  # (B, T)
    consecutive = ranges == start[:, :, None] + torch.arange(width, device=device)
    step = start.diff(dim=1)  # (B, T-1), step[t-1] = s_t - s_{t-1}
    step_inside = torch.arange(1, frames, device=device) < logit_lengths[:, None]
    last = start[torch.arange(batch, device=device), logit_lengths - 1]  # (B,)
    bad = torch.stack([
        (~consecutive).sum(),
        (start < 0).sum(),
        (start[:, 0] != 0).sum(),
        ((step < 0) & step_inside).sum(),
        ((step > width - 1) & step_inside).sum(),
        ((last > target_lengths) | (last + width - 1 < target_lengths)).sum(),
    ]).tolist()
    reasons = [
        "consecutive positions ranges[b, t, r] = ranges[b, t, 0] + r",
        "positions >= 0",
        "ranges[b, 0, 0] = 0 (the start node)",
        "non-decreasing starts s_t <= s_{t+1} within logit_lengths",
        "starts that move by at most R - 1 per frame within logit_lengths",
        "the last frame's range to hold U_b (the end node)",
    ]
    for count, reason in zip(bad, reasons):
        if count:
            raise ValueError(f"ranges: expected {reason}, found {count} violation(s)")
    return blank
