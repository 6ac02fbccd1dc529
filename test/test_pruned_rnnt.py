"""Tests of the pruned RNN-T losses against an independent float64 dynamic program.

The reference below shares no code with the library: one utterance and one lattice cell at a
time, on materialised (T, U+1, V) log-softmax scores, in float64 scalar torch ops so that
autograd through it gives the reference gradient. An optional mask of allowed nodes turns it
into the reference of the pruned lattice.
"""

import pytest
import torch

from xtrans.losses import (
    prune_joiner_inputs,
    prune_ranges,
    pruned_rnnt_loss,
    rnnt_loss,
    simple_rnnt_loss,
)


def reference_nll(logits, targets, num_frames, num_labels, blank, allowed=None):
    """-log of the summed probability of the RNN-T paths of one utterance (Graves, 2012).

    Args:
        logits: (T, U+1, V) float64, possibly padded.
        targets: (U,) label ids.
        num_frames, num_labels: T_b, U_b.
        blank: blank id.
        allowed: optional (T, U+1) bool; paths may only visit allowed nodes.
    """
    log_probs = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    ok = (lambda t, u: True) if allowed is None else (lambda t, u: bool(allowed[t, u]))
    minus_inf = torch.tensor(float("-inf"), dtype=torch.float64)
    alpha = {}
    for t in range(num_frames):
        for u in range(num_labels + 1):
            if not ok(t, u):
                alpha[t, u] = minus_inf
                continue
            if t == 0 and u == 0:
                alpha[t, u] = torch.zeros((), dtype=torch.float64)
                continue
            terms = [minus_inf]
            if t > 0 and ok(t - 1, u):
                terms.append(alpha[t - 1, u] + log_probs[t - 1, u, blank])
            if u > 0 and ok(t, u - 1):
                terms.append(alpha[t, u - 1] + log_probs[t, u - 1, int(targets[u - 1])])
            alpha[t, u] = torch.logsumexp(torch.stack(terms), dim=0)
    return -(alpha[num_frames - 1, num_labels] + log_probs[num_frames - 1, num_labels, blank])


def reference_losses(logits, targets, logit_lengths, target_lengths, blank, allowed=None):
    """(B,) reference losses of (B, T, U+1, V) float64 logits."""
    return torch.stack([
        reference_nll(logits[b], targets[b], int(logit_lengths[b]), int(target_lengths[b]), blank,
                      None if allowed is None else allowed[b])
        for b in range(logits.shape[0])
    ])


def unprune(pruned, ranges, max_labels):
    """Scatters (B, T, R, V) pruned logits to (B, T, U+1, V) and the (B, T, U+1) allowed mask."""
    batch, frames, width, vocab = pruned.shape
    keep = ranges <= max_labels
    b, t, r = keep.nonzero(as_tuple=True)
    u = ranges[b, t, r]
    full = torch.zeros(batch, frames, max_labels + 1, vocab, dtype=pruned.dtype)
    full = full.index_put((b, t, u), pruned[b, t, r])
    allowed = torch.zeros(batch, frames, max_labels + 1, dtype=torch.bool)
    allowed[b, t, u] = True
    return full, allowed


def make_batch(batch, frames, labels, vocab, blank=0, scale=1.0, seed=0, lengths=None):
    """Random float64 (am (B, T, V), lm (B, U+1, V), targets, logit_lengths, target_lengths)."""
    gen = torch.Generator().manual_seed(seed)
    am = scale * torch.randn(batch, frames, vocab, generator=gen, dtype=torch.float64)
    lm = scale * torch.randn(batch, labels + 1, vocab, generator=gen, dtype=torch.float64)
    non_blank = torch.tensor([k for k in range(vocab) if k != blank])
    targets = non_blank[torch.randint(len(non_blank), (batch, labels), generator=gen)]
    if lengths is None:
        logit_lengths = torch.randint(1, frames + 1, (batch,), generator=gen)
        target_lengths = torch.randint(0, labels + 1, (batch,), generator=gen)
        logit_lengths[0], target_lengths[-1] = frames, labels
    else:
        logit_lengths, target_lengths = (torch.tensor(x) for x in lengths)
    return am, lm, targets, logit_lengths, target_lengths


def grads(fn, *inputs, weights):
    """Losses (B,) of fn(*inputs) and the gradients of sum(weights * losses) w.r.t. inputs."""
    inputs = [x.detach().clone().requires_grad_(True) for x in inputs]
    losses = fn(*inputs)
    return (losses.detach(), *torch.autograd.grad((losses * weights).sum(), inputs))


def joiner_logits(am, lm, seed):
    """A non-trivial joiner on am/lm-sized inputs: (B, T, U+1, V) float64, differentiable."""
    gen = torch.Generator().manual_seed(seed)
    vocab = am.shape[-1]
    weight = torch.randn(vocab, vocab, generator=gen, dtype=torch.float64) / vocab**0.5
    return torch.tanh(am[:, :, None] + lm[:, None]) @ weight * 3.0


SIMPLE_CASES = {
    # name: (B, T, U, V, blank, scale)
    "unequal_lengths": (4, 7, 4, 6, 0, 1.0),
    "labels_longer_than_frames": (3, 3, 5, 5, 0, 1.0),
    "no_labels": (2, 5, 0, 4, 0, 1.0),
    "blank_last_large_logits": (3, 5, 3, 6, 5, 20.0),
}


@pytest.mark.parametrize("name", sorted(SIMPLE_CASES))
def test_simple_loss_and_gradients_match_float64_reference(name):
    batch, frames, labels, vocab, blank, scale = SIMPLE_CASES[name]
    am, lm, targets, logit_lengths, target_lengths = make_batch(
        batch, frames, labels, vocab, blank, scale, seed=len(name))
    weights = torch.rand(batch, dtype=torch.float64) + 0.5
    expected, expected_am, expected_lm = grads(
        lambda a, l: reference_losses(a[:, :, None] + l[:, None], targets, logit_lengths,
                                      target_lengths, blank),
        am, lm, weights=weights)
    actual, actual_am, actual_lm = grads(
        lambda a, l: simple_rnnt_loss(a, l, targets, logit_lengths, target_lengths, blank=blank,
                                      reduction="none"),
        am, lm, weights=weights)
    assert actual.shape == (batch,) and actual.dtype == torch.float64
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(actual_am, expected_am, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(actual_lm, expected_lm, rtol=1e-8, atol=1e-10)


def test_simple_loss_equals_rnnt_loss_of_materialised_joiner_float32():
    am, lm, targets, logit_lengths, target_lengths = make_batch(3, 9, 4, 11, seed=21, scale=3.0)
    weights = torch.rand(3, dtype=torch.float64)
    expected, expected_am, expected_lm = grads(
        lambda a, l: rnnt_loss(a[:, :, None] + l[:, None], targets, logit_lengths, target_lengths,
                               reduction="none"),
        am, lm, weights=weights)
    actual, actual_am, actual_lm = grads(
        lambda a, l: simple_rnnt_loss(a, l, targets, logit_lengths, target_lengths, reduction="none"),
        am.float(), lm.float(), weights=weights.float())
    assert actual.dtype == actual_am.dtype == actual_lm.dtype == torch.float32
    torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(actual_am.double(), expected_am, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(actual_lm.double(), expected_lm, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_simple_loss_reductions(reduction):
    am, lm, targets, logit_lengths, target_lengths = make_batch(3, 5, 3, 5, seed=7)
    per_utt = simple_rnnt_loss(am, lm, targets, logit_lengths, target_lengths, reduction="none")
    expected = {"none": per_utt, "sum": per_utt.sum(), "mean": per_utt.mean()}[reduction]
    actual = simple_rnnt_loss(am, lm, targets, logit_lengths, target_lengths, reduction=reduction)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    assert simple_rnnt_loss(am, lm, targets, logit_lengths, target_lengths).shape == ()


def test_simple_loss_constant_per_frame_and_per_label_position_changes_nothing():
    am, lm, targets, logit_lengths, target_lengths = make_batch(2, 6, 3, 7, seed=3)
    shifted_am, shifted_lm = am.clone(), lm.clone()
    shifted_am[0, 2] += 40.0  # every vocabulary entry of one frame
    shifted_lm[1, 1] -= 25.0  # ... of one label position
    fn = lambda a, l: simple_rnnt_loss(a, l, targets, logit_lengths, target_lengths, reduction="none")  # noqa: E731
    weights = torch.ones(2, dtype=torch.float64)
    base = grads(fn, am, lm, weights=weights)
    moved = grads(fn, shifted_am, shifted_lm, weights=weights)
    for x, y in zip(moved, base):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-10)
    # Beyond the lengths the gradient is zero.
    _, grad_am, grad_lm = base
    frames = torch.arange(6)[None, :]
    assert torch.all(grad_am[frames >= logit_lengths[:, None]] == 0)
    labels = torch.arange(4)[None, :]
    assert torch.all(grad_lm[labels > target_lengths[:, None]] == 0)


def test_pruned_loss_on_the_whole_lattice_equals_rnnt_loss():
    am, lm, targets, logit_lengths, target_lengths = make_batch(4, 7, 4, 6, seed=5)
    logits = joiner_logits(am, lm, seed=5)  # (B, T, U+1, V)
    ranges = torch.arange(5).expand(4, 7, 5)
    weights = torch.rand(4, dtype=torch.float64) + 0.5
    expected, expected_grad = grads(
        lambda x: rnnt_loss(x, targets, logit_lengths, target_lengths, reduction="none"),
        logits, weights=weights)
    actual, actual_grad = grads(
        lambda x: pruned_rnnt_loss(x, targets, ranges, logit_lengths, target_lengths,
                                   reduction="none"),
        logits, weights=weights)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(actual_grad, expected_grad, rtol=1e-10, atol=1e-12)


PRUNED_CASES = {
    # name: (B, T, U, V, R, blank, lengths or None)
    "unequal_lengths_r2": (4, 7, 4, 6, 2, 0, ([7, 5, 3, 6], [4, 2, 0, 3])),
    "unequal_lengths_r3_blank_middle": (4, 6, 5, 7, 3, 3, None),
    "labels_close_to_frames": (2, 5, 4, 5, 2, 0, ([5, 4], [4, 4])),
    "labels_longer_than_frames": (2, 3, 5, 6, 3, 0, ([3, 3], [5, 6 - 2])),
    "range_past_labels": (3, 5, 2, 5, 4, 0, ([5, 3, 2], [2, 1, 0])),
}


@pytest.mark.parametrize("name", sorted(PRUNED_CASES))
def test_pruned_loss_matches_reference_on_the_pruned_lattice(name):
    batch, frames, labels, vocab, width, blank, lengths = PRUNED_CASES[name]
    am, lm, targets, logit_lengths, target_lengths = make_batch(
        batch, frames, labels, vocab, blank, seed=len(name), lengths=lengths)
    ranges = prune_ranges(am, lm, targets, logit_lengths, target_lengths, width, blank=blank)
    enc, pred = prune_joiner_inputs(am, lm, ranges)
    pruned = torch.tanh(enc + pred) @ torch.randn(
        vocab, vocab, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2.0
    weights = torch.rand(batch, dtype=torch.float64) + 0.5

    def reference(x):
        full, allowed = unprune(x, ranges, labels)
        return reference_losses(full, targets, logit_lengths, target_lengths, blank, allowed)

    expected, expected_grad = grads(reference, pruned, weights=weights)
    actual, actual_grad = grads(
        lambda x: pruned_rnnt_loss(x, targets, ranges, logit_lengths, target_lengths, blank=blank,
                                   reduction="none"),
        pruned, weights=weights)
    assert torch.isfinite(expected).all()
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(actual_grad, expected_grad, rtol=1e-9, atol=1e-11)


def test_pruned_loss_is_at_least_the_full_loss_and_equal_when_nothing_is_cut():
    am, lm, targets, logit_lengths, target_lengths = make_batch(
        4, 8, 5, 6, seed=11, lengths=([8, 6, 3, 5], [5, 2, 3, 0]))
    full_logits = joiner_logits(am, lm, seed=2)  # (B, T, U+1, V)
    full = rnnt_loss(full_logits, targets, logit_lengths, target_lengths, reduction="none")
    for width in (2, 3, 6, 8):
        ranges = prune_ranges(am, lm, targets, logit_lengths, target_lengths, width)
        index = ranges.clamp(max=5)[..., None].expand(-1, -1, -1, 6)
        logits = full_logits.gather(2, index)  # the same joiner at the kept positions
        pruned = pruned_rnnt_loss(logits, targets, ranges, logit_lengths, target_lengths,
                                  reduction="none")
        if width >= 6:
            torch.testing.assert_close(pruned, full, rtol=1e-12, atol=1e-10)
        else:
            assert torch.all(pruned >= full - 1e-10)
            assert torch.any(pruned > full + 1e-6)


def test_prune_ranges_follow_a_dominant_alignment():
    # A simple lattice built to favour one alignment: frame t's am puts a large score on the
    # labels emitted at t, blank gets a large score elsewhere (half of it on emitting frames).
    # The ranges must hold every node of that alignment, and keep almost all the probability,
    # far more than evenly spread ranges of the same size.
    emit = [[1, 2, 2, 3, 9], [7, 8, 8]]  # frame of each label
    logit_lengths, target_lengths = torch.tensor([12, 10]), torch.tensor([5, 3])
    width, big = 3, 12.0
    gen = torch.Generator().manual_seed(0)
    am = 0.1 * torch.randn(2, 12, 8, generator=gen, dtype=torch.float64)
    lm = 0.1 * torch.randn(2, 6, 8, generator=gen, dtype=torch.float64)
    targets = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 5, 1, 1]])
    am[:, :, 0] += big
    for b, frames in enumerate(emit):
        for u, t in enumerate(frames):
            am[b, t, targets[b, u]] += big
            am[b, t, 0] = big / 2
    ranges = prune_ranges(am, lm, targets, logit_lengths, target_lengths, width)
    for b, frames in enumerate(emit):
        for t in range(int(logit_lengths[b])):
            first = sum(f < t for f in frames)  # the alignment visits first .. last at frame t
            last = sum(f <= t for f in frames)
            assert int(ranges[b, t, 0]) <= first and last <= int(ranges[b, t, -1]), (b, t, ranges[b, t])

    full = simple_rnnt_loss(am, lm, targets, logit_lengths, target_lengths, reduction="none")
    logits_full = am[:, :, None] + lm[:, None]

    def kept(ranges):
        logits = logits_full.gather(2, ranges.clamp(max=5)[..., None].expand(-1, -1, -1, 8))
        pruned = pruned_rnnt_loss(logits, targets, ranges, logit_lengths, target_lengths,
                                  reduction="none")
        return torch.exp(full - pruned)  # fraction of the probability on the kept paths

    t = torch.arange(12)[None, :]
    last_start = (target_lengths + 1 - width).clamp(min=0)[:, None]
    diagonal_start = torch.minimum(t * last_start // (logit_lengths[:, None] - 1), last_start)
    diagonal = kept(diagonal_start[..., None] + torch.arange(width))
    chosen = kept(ranges)
    assert torch.all(chosen > 0.99), chosen
    assert torch.all(diagonal < 0.5), diagonal


RANGE_CASES = {
    # name: (B, T, U, V, R, lengths or None)
    "unequal_lengths": (6, 12, 6, 7, 3, None),
    "no_labels": (3, 5, 0, 4, 3, None),
    "no_labels_r1": (2, 4, 0, 4, 1, ([4, 2], [0, 0])),
    "labels_close_to_frames": (3, 6, 5, 6, 2, ([6, 5, 6], [5, 5, 6 - 1])),
    "labels_at_the_limit": (2, 4, 8, 6, 3, ([4, 4], [8, 7])),  # T_b (R - 1) = U_b
    "range_past_labels": (4, 6, 3, 5, 7, None),
    "range_equals_labels_plus_one": (3, 6, 4, 5, 5, None),
}


@pytest.mark.parametrize("name", sorted(RANGE_CASES))
def test_prune_ranges_are_valid(name):
    batch, frames, labels, vocab, width, lengths = RANGE_CASES[name]
    am, lm, targets, logit_lengths, target_lengths = make_batch(
        batch, frames, labels, vocab, scale=2.0, seed=len(name), lengths=lengths)
    ranges = prune_ranges(am, lm, targets, logit_lengths, target_lengths, width)
    assert ranges.shape == (batch, frames, width) and ranges.dtype == torch.int64
    start = ranges[:, :, 0]
    assert torch.equal(ranges, start[:, :, None] + torch.arange(width))
    assert torch.all(start[:, 0] == 0)
    assert torch.all(ranges >= 0)
    for b in range(batch):
        t_b, u_b = int(logit_lengths[b]), int(target_lengths[b])
        s = start[b, :t_b]
        assert torch.all(s.diff() >= 0) and torch.all(s.diff() <= width - 1), s
        assert int(s[-1]) <= u_b <= int(s[-1]) + width - 1, (s, u_b)
        assert int(s[-1]) == max(0, u_b + 1 - width)
        # padded frames still hold valid positions
        assert torch.all(ranges[b] <= max(u_b, width - 1))
    # and the pruned lattice has paths: the loss is finite
    enc, pred = prune_joiner_inputs(am, lm, ranges)
    loss = pruned_rnnt_loss(enc + pred, targets, ranges, logit_lengths, target_lengths,
                            reduction="none")
    assert torch.isfinite(loss).all()


def test_ignored_positions_get_zero_gradient_and_change_nothing():
    am, lm, targets, logit_lengths, target_lengths = make_batch(
        3, 6, 3, 5, seed=9, lengths=([6, 4, 2], [3, 1, 0]))
    ranges = prune_ranges(am, lm, targets, logit_lengths, target_lengths, 3)
    logits = torch.randn(3, 6, 3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    inside = (torch.arange(6)[None, :, None] < logit_lengths[:, None, None]) & (
        ranges <= target_lengths[:, None, None])
    assert not inside.all()
    garbage = logits.clone()
    garbage[~inside] = 1e3 * torch.randn(int((~inside).sum()), 5, dtype=torch.float64)
    garbage_targets = targets.masked_fill(torch.arange(3)[None, :] >= target_lengths[:, None], 0)
    weights = torch.ones(3, dtype=torch.float64)
    loss, grad = grads(
        lambda x: pruned_rnnt_loss(x, targets, ranges, logit_lengths, target_lengths, reduction="none"),
        logits, weights=weights)
    loss_g, grad_g = grads(
        lambda x: pruned_rnnt_loss(x, garbage_targets, ranges, logit_lengths, target_lengths,
                                   reduction="none"),
        garbage, weights=weights)
    assert torch.all(grad[~inside] == 0) and torch.all(grad_g[~inside] == 0)
    torch.testing.assert_close(loss_g, loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_g, grad, rtol=1e-10, atol=1e-12)


def test_pruned_loss_float32_and_half_agree_with_float64():
    am, lm, targets, logit_lengths, target_lengths = make_batch(3, 8, 4, 9, seed=13)
    ranges = prune_ranges(am, lm, targets, logit_lengths, target_lengths, 3)
    enc, pred = prune_joiner_inputs(am, lm, ranges)
    logits = torch.tanh(enc + pred) * 4.0
    weights = torch.ones(3, dtype=torch.float64)
    fn = lambda x: pruned_rnnt_loss(x, targets, ranges, logit_lengths, target_lengths, reduction="none")  # noqa: E731
    expected, expected_grad = grads(fn, logits, weights=weights)
    actual, actual_grad = grads(fn, logits.float(), weights=weights.float())
    assert actual.dtype == actual_grad.dtype == torch.float32
    torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(actual_grad.double(), expected_grad, rtol=1e-4, atol=1e-6)
    half, half_grad = grads(fn, logits.bfloat16(), weights=weights.float())
    assert half.dtype == torch.float32 and half_grad.dtype == torch.bfloat16
    torch.testing.assert_close(half.double(), fn(logits.bfloat16().double()), rtol=1e-5, atol=1e-5)


def test_prune_joiner_inputs_gathers_the_kept_positions():
    am, lm, _, _, _ = make_batch(2, 5, 3, 4, seed=1)
    ranges = torch.tensor([0, 0, 1, 2, 3])[None, :, None] + torch.arange(3)  # runs past U = 3
    ranges = ranges.expand(2, -1, -1)
    enc, pred = prune_joiner_inputs(am, lm, ranges)
    assert enc.shape == pred.shape == (2, 5, 3, 4)
    for b, t, r in [(0, 0, 0), (1, 2, 2), (0, 4, 0), (1, 4, 2)]:
        assert torch.equal(enc[b, t, r], am[b, t])
        assert torch.equal(pred[b, t, r], lm[b, min(int(ranges[b, t, r]), 3)])


def _args(**changes):
    am, lm, targets, logit_lengths, target_lengths = make_batch(
        2, 4, 3, 5, seed=0, lengths=([4, 4], [3, 3]))
    args = dict(am=am, lm=lm, targets=targets, logit_lengths=logit_lengths,
                target_lengths=target_lengths)
    args.update(changes)
    return args


SIMPLE_BAD = {
    "am_2d": (dict(am=torch.zeros(2, 4)), r"am: expected shape \(B, T, V\)"),
    "lm_2d": (dict(lm=torch.zeros(2, 5)), r"lm: expected shape \(B, U\+1, V\)"),
    "lm_other_vocab": (dict(lm=torch.zeros(2, 4, 6, dtype=torch.float64)), r"lm: expected shape .* with B, V of am"),
    "dtype_mismatch": (dict(lm=torch.zeros(2, 4, 5)), "am, lm: expected one float dtype"),
    "targets_wrong_u": (dict(targets=torch.ones(2, 2, dtype=torch.int64)), r"targets must have shape \(B, U\) = \(2, 3\)"),
    "targets_blank": (dict(targets=torch.tensor([[1, 0, 2], [1, 2, 3]])), "must not contain the blank id 0"),
    "logit_lengths_long": (dict(logit_lengths=torch.tensor([5, 4])), r"logit_lengths must lie in \[1, T\] = \[1, 4\]"),
    "am_not_tensor": (dict(am=[[0.0]]), "am: expected a torch.Tensor"),
}


@pytest.mark.parametrize("name", sorted(SIMPLE_BAD))
def test_simple_loss_and_prune_ranges_bad_inputs_raise(name):
    changes, message = SIMPLE_BAD[name]
    with pytest.raises(ValueError, match=message):
        simple_rnnt_loss(**_args(**changes))
    with pytest.raises(ValueError, match=message):
        prune_ranges(**_args(**changes), prune_range=2)


@pytest.mark.parametrize("prune_range, message", [
    (0, r"prune_range: expected an int >= 1, found 0"),
    (2.0, r"prune_range: expected an int >= 1"),
    (True, r"prune_range: expected an int >= 1"),
    (1, r"prune_range: expected T_b \* \(R - 1\) >= U_b .* found T_b = 4, U_b = 3 for utterance 0"),
])
def test_prune_ranges_bad_range_raises(prune_range, message):
    with pytest.raises(ValueError, match=message):
        prune_ranges(**_args(), prune_range=prune_range)


def test_simple_loss_bad_reduction_raises():
    with pytest.raises(ValueError, match="reduction: expected one of"):
        simple_rnnt_loss(**_args(), reduction="avg")


def _pruned_args(**changes):
    args = _args()
    ranges = torch.tensor([0, 0, 1, 1])[None, :, None] + torch.arange(3)
    args = dict(logits=torch.zeros(2, 4, 3, 5), targets=args["targets"],
                ranges=ranges.expand(2, -1, -1).clone(), logit_lengths=args["logit_lengths"],
                target_lengths=args["target_lengths"])
    args.update(changes)
    return args


def _ranges_with(starts):
    return (torch.tensor(starts)[:, :, None] + torch.arange(3)).clone()


PRUNED_BAD = {
    "logits_3d": (dict(logits=torch.zeros(2, 4, 5)), r"logits: expected shape \(B, T, R, V\)"),
    "logits_int": (dict(logits=torch.zeros(2, 4, 3, 5, dtype=torch.int64)), "logits: expected a float dtype"),
    "ranges_shape": (dict(ranges=torch.zeros(2, 4, 2, dtype=torch.int64)), r"ranges: expected an integer tensor of shape \(B, T, R\) = \(2, 4, 3\)"),
    "ranges_float": (dict(ranges=torch.zeros(2, 4, 3)), "ranges: expected an integer tensor"),
    "ranges_not_consecutive": (dict(ranges=torch.zeros(2, 4, 3, dtype=torch.int64)), "ranges: expected consecutive positions"),
    "ranges_start": (dict(ranges=_ranges_with([[1, 1, 1, 1], [0, 0, 1, 1]])), r"ranges: expected ranges\[b, 0, 0\] = 0"),
    "ranges_decreasing": (dict(ranges=_ranges_with([[0, 1, 0, 1], [0, 0, 1, 1]])), "ranges: expected non-decreasing starts"),
    "ranges_jump": (dict(ranges=_ranges_with([[0, 0, 3, 3], [0, 0, 1, 1]])), "ranges: expected starts that move by at most R - 1"),
    "ranges_miss_end": (dict(ranges=_ranges_with([[0, 0, 0, 0], [0, 0, 1, 1]])), "ranges: expected the last frame's range to hold U_b"),
    "ranges_negative": (dict(ranges=_ranges_with([[0, 0, 1, 1], [0, 0, 1, -1]])), "ranges: expected positions >= 0"),
    "targets_wrong_b": (dict(targets=torch.ones(3, 3, dtype=torch.int64)), r"targets must have shape \(B, U\)"),
    "target_lengths_long": (dict(target_lengths=torch.tensor([4, 3])), r"target_lengths must lie in \[0, U\] = \[0, 3\]"),
    "reduction": (dict(reduction="avg"), "reduction: expected one of"),
}


@pytest.mark.parametrize("name", sorted(PRUNED_BAD))
def test_pruned_loss_bad_inputs_raise(name):
    changes, message = PRUNED_BAD[name]
    assert torch.isfinite(pruned_rnnt_loss(**_pruned_args()))  # the unchanged arguments are fine
    with pytest.raises(ValueError, match=message):
        pruned_rnnt_loss(**_pruned_args(**changes))


def test_prune_joiner_inputs_bad_shapes_raise():
    am, lm, _, _, _ = make_batch(2, 5, 3, 4, seed=1)
    with pytest.raises(ValueError, match=r"enc, pred: expected shapes \(B, T, D\) and \(B, U\+1, D_pred\)"):
        prune_joiner_inputs(am, lm[:1], torch.zeros(2, 5, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"ranges: expected an integer \(B, T, R\) tensor with \(B, T\) = \(2, 5\)"):
        prune_joiner_inputs(am, lm, torch.zeros(2, 4, 2, dtype=torch.int64))


# ---------------------------------------------------------------- the model with the pruned loss


def _tiny_model(**loss):
    from xtrans.models.config import EncoderConfig, LossConfig, ModelConfig, PredictorConfig, build_model

    torch.manual_seed(0)
    cfg = ModelConfig(encoder=EncoderConfig(preset="tiny", conv_channels=32, embed_dim=64, num_layers=2,
                                            num_heads=4, ffn_dim=128),
                      predictor=PredictorConfig(kind="stateless", embed_dim=32), joiner_dim=48,
                      loss=LossConfig(**loss))
    return build_model(cfg, vocab_size=7)


def _tiny_batch():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([8000, 6400, 4800])  # 0.5, 0.4, 0.3 s -> 24, 19, 14 frames
    wave = 0.3 * torch.randn(3, 8000, generator=gen)
    wave[torch.arange(8000)[None, :] >= lengths[:, None]] = 0.0
    targets = torch.tensor([[1, 2, 3, 4, 5, 6], [2, 2, 5, 1, 1, 1], [6, 3, 1, 1, 1, 1]])
    return wave, lengths, targets, torch.tensor([6, 3, 2])


def test_pruned_loss_scales_follow_icefalls_warmup():
    from xtrans.models.transducer import pruned_loss_scales

    assert pruned_loss_scales(0, 0.5, 100) == (1.0, 0.1)
    simple, pruned = pruned_loss_scales(50, 0.5, 100)
    assert simple == pytest.approx(0.75) and pruned == pytest.approx(0.55)
    assert pruned_loss_scales(100, 0.5, 100) == pruned_loss_scales(10**6, 0.5, 100) == (0.5, 1.0)
    assert pruned_loss_scales(None, 0.25, 100) == pruned_loss_scales(0, 0.25, 0) == (0.25, 1.0)


def test_full_loss_model_is_unchanged_and_pruned_model_round_trips():
    from xtrans.models.arch import LossArch
    from xtrans.models.config import build_model

    full = _tiny_model()
    assert full.arch.loss == LossArch(kind="full") and not hasattr(full, "simple_am_proj")
    assert not any(k.startswith("simple_") for k in full.state_dict())
    pruned = _tiny_model(kind="pruned", prune_range=3, warmup_updates=10)
    assert pruned.arch.loss == LossArch(kind="pruned", prune_range=3, simple_loss_scale=0.5, warmup_updates=10)
    assert pruned.simple_am_proj.out_features == pruned.simple_lm_proj.out_features == 7
    rebuilt = build_model(pruned.arch)
    rebuilt.load_state_dict(pruned.state_dict())  # strict: the same parameters
    assert rebuilt.loss_kind == "pruned" and rebuilt.prune_range == 3 and rebuilt.warmup_updates == 10


def test_pruned_model_with_a_wide_range_gives_the_full_nll():
    model = _tiny_model(kind="pruned", prune_range=8).eval()  # R > U + 1: nothing is pruned
    wave, lengths, targets, target_lengths = _tiny_batch()
    with torch.no_grad():
        out = model(wave, lengths, targets, target_lengths)
        enc, enc_lengths = model.encode(wave, lengths)
        pred = model.predictor(targets)
        full = rnnt_loss(model.joiner(enc[:, :, None], pred[:, None]), targets, enc_lengths, target_lengths,
                         reduction="none")
    torch.testing.assert_close(out.rnnt, full, rtol=1e-5, atol=1e-4)
    assert out.simple is not None and torch.isfinite(out.simple)
    torch.testing.assert_close(out.loss, 0.5 * out.simple + out.rnnt.mean(), rtol=1e-6, atol=1e-6)


def test_tiny_model_trains_with_the_pruned_loss():
    model = _tiny_model(kind="pruned", prune_range=3, warmup_updates=0)
    wave, lengths, targets, target_lengths = _tiny_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(8):
        out = model(wave, lengths, targets, target_lengths, updates=step)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert all(map(lambda x: x == x, losses))
    assert losses[-1] < 0.7 * losses[0], losses


def test_loss_config_refuses_unknown_keys_and_bad_values():
    from xtrans.config import ConfigError, from_dict
    from xtrans.models.config import ModelConfig

    cfg = from_dict(ModelConfig, {"loss": {"kind": "pruned", "prune_range": 4}}, source="m.yaml")
    assert cfg.loss.kind == "pruned" and cfg.loss.prune_range == 4 and cfg.loss.simple_loss_scale == 0.5
    assert from_dict(ModelConfig, {}).loss.kind == "full"
    with pytest.raises(ConfigError, match=r"m.yaml: key 'loss.prune_rnage': unknown key"):
        from_dict(ModelConfig, {"loss": {"prune_rnage": 4}}, source="m.yaml")
    with pytest.raises(ConfigError, match=r"key 'loss.prune_range': wrong type"):
        from_dict(ModelConfig, {"loss": {"prune_range": "5"}}, source="m.yaml")
    with pytest.raises(ConfigError, match=r"kind: expected 'full' or 'pruned', found 'fast'"):
        from_dict(ModelConfig, {"loss": {"kind": "fast"}}, source="m.yaml")
    with pytest.raises(ConfigError, match=r"prune_range: expected >= 2, found 1"):
        from_dict(ModelConfig, {"loss": {"prune_range": 1}}, source="m.yaml")
