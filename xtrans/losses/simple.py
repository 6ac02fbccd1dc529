"""The "simple" RNN-T loss of a trivial joiner, and prune ranges chosen from its lattice.

Pruned RNN-T training (Kuang et al., "Pruned RNN-T for fast, memory-efficient ASR training",
Interspeech 2022; k2's ``rnnt_loss_simple`` and ``get_rnnt_prune_ranges``) first scores the
lattice with a joiner that is just a sum of two linear projections to ``V``,

.. code-block:: text

    logits(t, u, k) = am(t, k) + lm(u, k)        am (B, T, V) from the encoder,
                                                 lm (B, U+1, V) from the predictor

and then evaluates the real joiner only on ``R`` label positions per frame, around where this
cheap lattice puts its probability mass (:mod:`xtrans.losses.pruned`).

The trivial joiner's log-normaliser never needs the (B, T, U+1, V) tensor:

.. code-block:: text

    N(t, u) = log sum_k exp(am(t, k) + lm(u, k))
            = am_max(t) + lm_max(u) + log (A @ L^T)(t, u),
    A = exp(am - am_max) (B, T, V),  L = exp(lm - lm_max) (B, U+1, V),

one batched matmul, with the maxima subtracted so that ``exp`` neither overflows nor (for
reasonable logits) underflows. The lattice itself (forward-backward) is the float64 one of
:func:`xtrans.losses.rnnt_loss`. The gradient is analytic: with node occupancy ``gamma`` and
``W = gamma / (A @ L^T)``, ``d loss / d am = A * (W @ L) - edge occupancies summed over u``, and
``d loss / d lm = L * (W^T @ A) - edge occupancies summed over t``.

Shape legend: ``B`` batch, ``T`` encoder frames, ``U`` target tokens, ``V`` vocabulary incl.
blank, ``R`` the prune range (label positions kept per frame).
"""

from typing import NamedTuple

import torch
from torch import Tensor

from xtrans.losses.rnnt import _FLOAT_DTYPES, _REDUCTIONS, _check_index_args, _occupancies

__all__ = ["simple_rnnt_loss", "prune_ranges"]


def simple_rnnt_loss(
    am: Tensor,
    lm: Tensor,
    targets: Tensor,
    logit_lengths: Tensor,
    target_lengths: Tensor,
    blank: int = 0,
    reduction: str = "mean",
) -> Tensor:
    r"""RNN-T negative log-likelihood of the trivial joiner ``am[:, :, None] + lm[:, None]``.

    Exactly :func:`xtrans.losses.rnnt_loss` of the logits ``am[:, :, None] + lm[:, None]``
    (B, T, U+1, V), computed without materialising them: the lattice log-probabilities are

    .. code-block:: text

        log p(k | t, u) = am(t, k) + lm(u, k) - N(t, u),
        N(t, u)         = am_max(t) + lm_max(u) + log sum_k exp(am(t,k) - am_max(t)) exp(lm(u,k) - lm_max(u))

    (the sum is a (T, V) x (V, U+1) matmul), and the recursion over them is the one of
    ``rnnt_loss``, in float64. Like k2's ``rnnt_loss_simple``, a normaliser whose sum underflows
    is floored at ``finfo.tiny`` (only for logits whose maxima over ``V`` sit far apart).

    Args:
        am: (B, T, V) float encoder-side scores (a linear projection of the encoder output).
        lm: (B, U+1, V) float predictor-side scores, same dtype as ``am``.
        targets: (B, U) int label ids; entries past ``target_lengths`` are ignored.
        logit_lengths: (B,) int, valid frames per utterance, ``1 <= T_b <= T``.
        target_lengths: (B,) int, labels per utterance, ``0 <= U_b <= U``.
        blank: Index of the blank symbol in ``[-V, V)``.
        reduction: ``"none"`` (B,) per-utterance losses, ``"sum"``, or ``"mean"`` over the batch.

    Returns:
        The loss in nats, (B,) or a scalar; float64 for float64 inputs, else float32.
        Differentiable w.r.t. ``am`` and ``lm`` (analytic gradient; zero beyond the lengths).

    Raises:
        ValueError: On a wrong shape, dtype, length, label id, ``blank`` or ``reduction``.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {_REDUCTIONS}, found {reduction!r}")
    blank = _validate_am_lm(am, lm, targets, logit_lengths, target_lengths, blank)
    labels, logit_lengths, target_lengths = _to_index(am.device, targets, logit_lengths,
                                                      target_lengths, blank)
    losses = _SimpleRNNTLoss.apply(am, lm, labels, logit_lengths, target_lengths, blank)
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.mean()
    return losses


def prune_ranges(
    am: Tensor,
    lm: Tensor,
    targets: Tensor,
    logit_lengths: Tensor,
    target_lengths: Tensor,
    prune_range: int,
    blank: int = 0,
) -> Tensor:
    r"""Per frame, ``R`` consecutive label positions that hold the trivial joiner's paths.

    ``ranges[b, t] = s_t, s_t + 1, .., s_t + R - 1``. The start ``s_t`` maximises the lattice
    occupancy ``gamma(t, u)`` (the posterior probability that a path of the simple lattice
    visits ``(t, u)``, from forward-backward in float64; k2 reads the same quantity from the
    simple loss's gradients) summed over the window, among the windows inside ``0 .. U_b``, and
    is then moved as little as needed to make the pruned lattice connected:

    .. code-block:: text

        s_0 = 0                                  the start node (0, 0) is in range
        s_t <= s_{t+1} <= s_t + R - 1            monotone; a path at the top of frame t's range
                                                 can go on by blank into frame t+1's range
        s_{T_b - 1} = max(0, U_b + 1 - R)        the end node (T_b - 1, U_b) is in range

    (clamp each start to the interval these allow, a running maximum, then a running maximum
    from the end of ``s_t - t (R - 1)``; k2's ``_adjust_pruning_lower_bound``). With
    ``R >= U_b + 1`` every ``s_t`` is 0 and the range runs past ``U_b``. Frames
    ``t >= T_b`` get ``s_t = max(0, U_b + 1 - R)``.

    Args:
        am: (B, T, V) float encoder-side scores of the simple loss (not differentiated).
        lm: (B, U+1, V) float predictor-side scores.
        targets: (B, U) int label ids.
        logit_lengths: (B,) int ``T_b``.
        target_lengths: (B,) int ``U_b``.
        prune_range: ``R >= 1``, label positions kept per frame.
        blank: blank id in ``[-V, V)``.

    Returns:
        (B, T, R) int64 label positions, ``0 <= ranges <= max(U_b, R - 1)``.

    Raises:
        ValueError: On bad arguments, or when ``T_b (R - 1) < U_b`` for some utterance: no
            path then fits in ``R`` positions per frame (increase ``prune_range``).
    """
    if isinstance(prune_range, bool) or not isinstance(prune_range, int) or prune_range < 1:
        raise ValueError(f"prune_range: expected an int >= 1, found {prune_range!r}")
    blank = _validate_am_lm(am, lm, targets, logit_lengths, target_lengths, blank)
    labels, logit_lengths, target_lengths = _to_index(am.device, targets, logit_lengths,
                                                      target_lengths, blank)
    R = prune_range
    short = logit_lengths * (R - 1) < target_lengths
    if bool(short.any()):
        b = int(short.nonzero()[0, 0])
        raise ValueError(
            f"prune_range: expected T_b * (R - 1) >= U_b for every utterance so that a path fits "
            f"in R = {R} label positions per frame, found T_b = {int(logit_lengths[b])}, "
            f"U_b = {int(target_lengths[b])} for utterance {b}; increase prune_range"
        )
    with torch.no_grad():
        terms = _trivial_joiner(am.detach(), lm.detach(), labels, blank)
        blank_occ, label_occ, _ = _occupancies(terms.blank_lp, terms.label_lp, logit_lengths,
                                               target_lengths)
    gamma = blank_occ  # (B, T, U+1) node occupancy: the probability of leaving (t, u) somehow
    gamma[:, :, :-1] += label_occ
    batch, frames, width = gamma.shape
    device = gamma.device

    # Occupancy of every window of min(R, U+1) positions: (B, T, num_starts).
    window = min(R, width)
    cumulative = torch.cat([gamma.new_zeros(batch, frames, 1), gamma.cumsum(dim=2)], dim=2)
    in_window = cumulative[:, :, window:] - cumulative[:, :, : width + 1 - window]
    last_start = (target_lengths + 1 - R).clamp(min=0)  # (B,) s_{T_b - 1}
    starts = torch.arange(in_window.shape[2], device=device)
    in_window = in_window.masked_fill(starts > last_start[:, None, None], float("-inf"))
    best = in_window.argmax(dim=2)  # (B, T), the first of equal windows

    # Clamp to the starts that can still be reached from s_0 = 0 and still reach the end.
    t = torch.arange(frames, device=device)
    step = R - 1
    high = torch.minimum(last_start[:, None], t * step)  # (B, T)
    low = (last_start[:, None] - (logit_lengths[:, None] - 1 - t) * step).clamp(min=0)
    low = torch.minimum(low, last_start[:, None])  # frames t >= T_b: low = high = last_start
    start = torch.maximum(torch.minimum(best, high), low)
    start = start.cummax(dim=1).values  # s_t <= s_{t+1}
    lifted = start - t * step  # s_t >= s_{t+1} - (R - 1)  <=>  lifted non-increasing
    lifted = lifted.flip(1).cummax(dim=1).values.flip(1)
    start = lifted + t * step
    return start[:, :, None] + torch.arange(R, device=device)


class _TrivialJoiner(NamedTuple):
    """The simple lattice's log-probabilities and what its gradient needs."""

    blank_lp: Tensor  # (B, T, U+1) float64 log p(blank | t, u)
    label_lp: Tensor  # (B, T, U) float64 log p(y_{u+1} | t, u)
    am_probs: Tensor  # (B, T, V) exp(am - am_max), compute dtype
    lm_probs: Tensor  # (B, U+1, V) exp(lm - lm_max)
    log_sum: Tensor  # (B, T, U+1) log (am_probs @ lm_probs^T) = N - am_max - lm_max


def _trivial_joiner(am: Tensor, lm: Tensor, labels: Tensor, blank: int) -> _TrivialJoiner:
    """Log-probabilities of the joiner ``am + lm`` at the blank and the next label."""
    compute_dtype = torch.float64 if am.dtype == torch.float64 else torch.float32
    am_c, lm_c = am.to(compute_dtype), lm.to(compute_dtype)
    am_max = am_c.amax(dim=2, keepdim=True)  # (B, T, 1)
    lm_max = lm_c.amax(dim=2, keepdim=True)  # (B, U+1, 1)
    am_probs = (am_c - am_max).exp_()
    lm_probs = (lm_c - lm_max).exp_()
    # (B, T, V) @ (B, V, U+1) -> (B, T, U+1)
    log_sum = torch.matmul(am_probs, lm_probs.transpose(1, 2)).clamp_min_(
        torch.finfo(compute_dtype).tiny).log_()
    log_norm = log_sum.double() + am_max.double() + lm_max.double().transpose(1, 2)
    am64, lm64 = am.double(), lm.double()
    blank_lp = am64[:, :, blank, None] + lm64[:, None, :, blank] - log_norm  # (B, T, U+1)
    frames, max_labels = am.shape[1], labels.shape[1]
    am_label = am64.gather(2, labels[:, None, :].expand(-1, frames, -1))  # (B, T, U)
    lm_label = lm64[:, :max_labels].gather(2, labels[:, :, None]).squeeze(2)  # (B, U)
    label_lp = am_label + lm_label[:, None, :] - log_norm[:, :, :max_labels]
    return _TrivialJoiner(blank_lp, label_lp, am_probs, lm_probs, log_sum)


class _SimpleRNNTLoss(torch.autograd.Function):
    """Per-utterance simple loss (B,) with the analytic gradient w.r.t. am and lm."""

    @staticmethod
    def forward(ctx, am, lm, labels, logit_lengths, target_lengths, blank):
        terms = _trivial_joiner(am, lm, labels, blank)
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        blank_occ, label_occ, log_like = _occupancies(
            terms.blank_lp, terms.label_lp, logit_lengths, target_lengths, need_grad
        )
        ctx.blank = blank
        ctx.dtypes = (am.dtype, lm.dtype)
        ctx.save_for_backward(labels, terms.am_probs, terms.lm_probs, terms.log_sum, blank_occ,
                              label_occ)
        return (-log_like).to(terms.am_probs.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_losses):
        labels, am_probs, lm_probs, log_sum, blank_occ, label_occ = ctx.saved_tensors
        scale = grad_losses.to(torch.float64)[:, None, None]  # (B, 1, 1)
        blank_occ = blank_occ * scale  # (B, T, U+1)
        label_occ = label_occ * scale  # (B, T, U)
        gamma = blank_occ.clone()
        gamma[:, :, :-1] += label_occ
        # softmax(t, u)[k] = am_probs(t, k) lm_probs(u, k) / exp(log_sum(t, u))
        weight = (gamma * torch.exp(-log_sum.double())).to(am_probs.dtype)  # (B, T, U+1)
        grad_am = am_probs * torch.matmul(weight, lm_probs)  # (B, T, V)
        grad_lm = lm_probs * torch.matmul(weight.transpose(1, 2), am_probs)  # (B, U+1, V)
        frames, max_labels = am_probs.shape[1], labels.shape[1]
        grad_am[:, :, ctx.blank] -= blank_occ.sum(dim=2).to(grad_am.dtype)
        grad_am.scatter_add_(2, labels[:, None, :].expand(-1, frames, -1),
                             -label_occ.to(grad_am.dtype))
        grad_lm[:, :, ctx.blank] -= blank_occ.sum(dim=1).to(grad_lm.dtype)
        grad_lm[:, :max_labels].scatter_add_(2, labels[:, :, None],
                                             -label_occ.sum(dim=1).to(grad_lm.dtype)[:, :, None])
        am_dtype, lm_dtype = ctx.dtypes
        return grad_am.to(am_dtype), grad_lm.to(lm_dtype), None, None, None, None


def _validate_am_lm(am, lm, targets, logit_lengths, target_lengths, blank) -> int:
    """Checks the arguments of the simple loss; returns ``blank`` in ``[0, V)``."""
    for name, value in (("am", am), ("lm", lm), ("targets", targets),
                        ("logit_lengths", logit_lengths), ("target_lengths", target_lengths)):
        if not isinstance(value, Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, found {type(value).__name__}")
    if am.dim() != 3:
        raise ValueError(f"am: expected shape (B, T, V), found {tuple(am.shape)}")
    if lm.dim() != 3:
        raise ValueError(f"lm: expected shape (B, U+1, V), found {tuple(lm.shape)}")
    if am.dtype not in _FLOAT_DTYPES or lm.dtype != am.dtype:
        raise ValueError(f"am, lm: expected one float dtype, found {am.dtype} and {lm.dtype}")
    if am.shape[0] != lm.shape[0] or am.shape[2] != lm.shape[2]:
        raise ValueError(
            f"lm: expected shape (B, U+1, V) with B, V of am (B, T, V) = {tuple(am.shape)}, "
            f"found {tuple(lm.shape)}"
        )
    if 0 in am.shape or 0 in lm.shape:
        raise ValueError(f"am, lm: expected no empty dimension, found {tuple(am.shape)} and "
                         f"{tuple(lm.shape)}")
    batch, frames, vocab = am.shape
    return _check_index_args(
        targets, logit_lengths, target_lengths, blank,
        batch=batch, max_frames=frames, max_labels=lm.shape[1] - 1, vocab=vocab,
        device=am.device, scores=f"lm (B, U+1, V) = {tuple(lm.shape)}",
    )


def _to_index(device, targets, logit_lengths, target_lengths, blank):
    """int64 copies on ``device``; targets past their lengths replaced by ``blank``."""
    targets = targets.to(device=device, dtype=torch.int64)
    logit_lengths = logit_lengths.to(device=device, dtype=torch.int64)
    target_lengths = target_lengths.to(device=device, dtype=torch.int64)
    positions = torch.arange(targets.shape[1], device=device)
    labels = torch.where(positions < target_lengths[:, None], targets, blank)
    return labels, logit_lengths, target_lengths
