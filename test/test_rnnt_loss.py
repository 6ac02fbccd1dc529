"""Tests of xtrans.losses.rnnt_loss against an independent float64 dynamic program.

The reference below shares no code with the library: one utterance at a time, one lattice
cell at a time, with float64 scalar torch ops so that autograd through it gives the reference
gradient. It is itself checked against brute-force enumeration of all alignments.
"""

import itertools
import math

import pytest
import torch

from xtrans.losses import rnnt_loss


def reference_nll(logits, targets, num_frames, num_labels, blank):
    """-log P(y | x) of one utterance by the plain alpha recursion (Graves, 2012).

    Args:
        logits: (T, U+1, V) float64, possibly padded beyond ``num_frames``/``num_labels``.
        targets: (U,) int label ids.
        num_frames: valid frames T_b.
        num_labels: valid labels U_b.
        blank: blank id in [0, V).
    """
    log_probs = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    alpha = {}
    for t in range(num_frames):
        for u in range(num_labels + 1):
            if t == 0 and u == 0:
                alpha[t, u] = torch.zeros((), dtype=torch.float64)
                continue
            terms = []
            if t > 0:
                terms.append(alpha[t - 1, u] + log_probs[t - 1, u, blank])
            if u > 0:
                terms.append(alpha[t, u - 1] + log_probs[t, u - 1, int(targets[u - 1])])
            alpha[t, u] = torch.logsumexp(torch.stack(terms), dim=0)
    return -(alpha[num_frames - 1, num_labels] + log_probs[num_frames - 1, num_labels, blank])


def reference_losses(logits, targets, logit_lengths, target_lengths, blank):
    """(B,) reference losses; logits (B, T, U+1, V) float64."""
    return torch.stack([
        reference_nll(logits[b], targets[b], int(logit_lengths[b]), int(target_lengths[b]), blank)
        for b in range(logits.shape[0])
    ])


def brute_force_nll(logits, targets, blank):
    """-log of the sum over every alignment, enumerated; logits (T, U+1, V) unpadded."""
    num_frames, width, _ = logits.shape
    num_labels = width - 1
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    total = 0.0
    # An alignment is the set of positions, among T-1+U steps, where a label is emitted; the
    # remaining T-1 steps are blanks, and a final blank at (T-1, U) closes every path.
    for label_steps in itertools.combinations(range(num_frames - 1 + num_labels), num_labels):
        t = u = 0
        score = 0.0
        for step in range(num_frames - 1 + num_labels):
            if step in label_steps:
                score += float(log_probs[t, u, int(targets[u])])
                u += 1
            else:
                score += float(log_probs[t, u, blank])
                t += 1
        score += float(log_probs[t, u, blank])
        total += math.exp(score)
    return -math.log(total)


def make_batch(batch, frames, labels, vocab, blank, scale=1.0, seed=0, full=False):
    """Random (logits float64, targets, logit_lengths, target_lengths), unequal lengths."""
    gen = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(batch, frames, labels + 1, vocab, generator=gen, dtype=torch.float64)
    non_blank = torch.tensor([k for k in range(vocab) if k != blank])
    targets = non_blank[torch.randint(len(non_blank), (batch, labels), generator=gen)]
    logit_lengths = torch.randint(1, frames + 1, (batch,), generator=gen)
    target_lengths = torch.randint(0, labels + 1, (batch,), generator=gen)
    logit_lengths[0] = frames  # the padded sizes are always used by someone
    target_lengths[-1] = labels
    if full:
        logit_lengths.fill_(frames)
        target_lengths.fill_(labels)
    return logits, targets, logit_lengths, target_lengths


def value_and_grad(fn, logits, weights):
    """Losses (B,) of fn(logits) and the gradient of sum(weights * losses) w.r.t. logits."""
    logits = logits.detach().clone().requires_grad_(True)
    losses = fn(logits)
    (grad,) = torch.autograd.grad((losses * weights).sum(), logits)
    return losses.detach(), grad


CASES = {
    # name: (B, T, U, V, blank, scale)
    "unequal_lengths": (4, 7, 4, 6, 0, 1.0),
    "long_labels": (3, 4, 6, 5, 0, 1.0),  # U+1 > T: the other loop orientation
    "no_labels": (3, 5, 0, 4, 0, 1.0),
    "one_frame": (3, 1, 3, 5, 0, 1.0),
    "one_frame_no_labels": (2, 1, 0, 3, 0, 1.0),
    "large_logits": (3, 6, 3, 7, 0, 50.0),
    "blank_last": (3, 5, 3, 6, 5, 1.0),
    "blank_middle": (3, 5, 3, 6, 2, 3.0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_reference_float64(name):
    batch, frames, labels, vocab, blank, scale = CASES[name]
    logits, targets, logit_lengths, target_lengths = make_batch(
        batch, frames, labels, vocab, blank, scale, seed=len(name)
    )
    weights = torch.rand(batch, dtype=torch.float64) + 0.5
    expected, expected_grad = value_and_grad(
        lambda x: reference_losses(x, targets, logit_lengths, target_lengths, blank),
        logits,
        weights,
    )
    actual, actual_grad = value_and_grad(
        lambda x: rnnt_loss(x, targets, logit_lengths, target_lengths, blank=blank, reduction="none"),
        logits,
        weights,
    )
    assert actual.shape == (batch,) and actual.dtype == torch.float64
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(actual_grad, expected_grad, rtol=1e-9, atol=1e-10)


def test_reference_matches_brute_force():
    logits, targets, _, _ = make_batch(1, 4, 3, 5, blank=0, seed=3, full=True)
    expected = brute_force_nll(logits[0], targets[0], blank=0)
    assert float(reference_nll(logits[0], targets[0], 4, 3, 0)) == pytest.approx(expected, rel=1e-12)
    assert float(rnnt_loss(logits, targets, torch.tensor([4]), torch.tensor([3]))) == pytest.approx(
        expected, rel=1e-12
    )


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_reductions(reduction):
    logits, targets, logit_lengths, target_lengths = make_batch(3, 5, 3, 5, blank=0, seed=7)
    reduce = {"none": lambda x: x, "sum": torch.sum, "mean": torch.mean}[reduction]
    x_ref = logits.clone().requires_grad_(True)
    expected = reduce(reference_losses(x_ref, targets, logit_lengths, target_lengths, 0))
    x = logits.clone().requires_grad_(True)
    actual = rnnt_loss(x, targets, logit_lengths, target_lengths, reduction=reduction)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)
    upstream = torch.randn(expected.shape, dtype=torch.float64)  # negative values too
    (expected_grad,) = torch.autograd.grad(expected, x_ref, upstream)
    (actual_grad,) = torch.autograd.grad(actual, x, upstream)
    torch.testing.assert_close(actual_grad, expected_grad, rtol=1e-9, atol=1e-10)


def test_default_reduction_is_batch_mean():
    logits, targets, logit_lengths, target_lengths = make_batch(3, 4, 2, 4, blank=0, seed=1)
    per_utt = rnnt_loss(logits, targets, logit_lengths, target_lengths, reduction="none")
    torch.testing.assert_close(rnnt_loss(logits, targets, logit_lengths, target_lengths), per_utt.mean())


def test_float32_matches_float64_reference():
    logits, targets, logit_lengths, target_lengths = make_batch(3, 6, 3, 8, blank=0, seed=11)
    weights = torch.ones(3, dtype=torch.float64)
    expected, expected_grad = value_and_grad(
        lambda x: reference_losses(x, targets, logit_lengths, target_lengths, 0), logits, weights
    )
    actual, actual_grad = value_and_grad(
        lambda x: rnnt_loss(x, targets, logit_lengths, target_lengths, reduction="none"),
        logits.float(),
        weights.float(),
    )
    assert actual.dtype == torch.float32 and actual_grad.dtype == torch.float32
    torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(actual_grad.double(), expected_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_float32(dtype):
    logits, targets, logit_lengths, target_lengths = make_batch(2, 5, 3, 6, blank=0, seed=5)
    half = logits.to(dtype)
    expected, expected_grad = value_and_grad(
        lambda x: reference_losses(x, targets, logit_lengths, target_lengths, 0),
        half.double(),  # the same rounded inputs, exactly
        torch.ones(2, dtype=torch.float64),
    )
    actual, actual_grad = value_and_grad(
        lambda x: rnnt_loss(x, targets, logit_lengths, target_lengths, reduction="none"),
        half,
        torch.ones(2, dtype=torch.float32),
    )
    assert actual.dtype == torch.float32 and actual_grad.dtype == dtype
    torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(actual_grad.double(), expected_grad, rtol=0, atol=1e-2)


def test_constant_per_frame_label_shift_changes_nothing():
    logits, targets, logit_lengths, target_lengths = make_batch(3, 5, 3, 6, blank=0, seed=2)
    shifted = logits.clone()
    shifted[0, 1, 2] += 37.5  # every vocabulary logit of one (t, u)
    shifted[1, 0, 0] -= 12.0
    weights = torch.rand(3, dtype=torch.float64)

    def fn(x):
        return rnnt_loss(x, targets, logit_lengths, target_lengths, reduction="none")

    loss, grad = value_and_grad(fn, logits, weights)
    loss_shifted, grad_shifted = value_and_grad(fn, shifted, weights)
    torch.testing.assert_close(loss_shifted, loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_shifted, grad, rtol=1e-10, atol=1e-12)
    # and the gradient of each (t, u) row sums to zero over the vocabulary
    torch.testing.assert_close(grad.sum(-1), torch.zeros_like(grad.sum(-1)), rtol=0, atol=1e-12)


def test_padding_gets_zero_gradient_and_changes_nothing():
    logits, targets, logit_lengths, target_lengths = make_batch(4, 6, 4, 5, blank=0, seed=9)
    logit_lengths = torch.tensor([6, 3, 1, 4])
    target_lengths = torch.tensor([2, 4, 1, 0])
    frames = torch.arange(6)[None, :, None]
    labels = torch.arange(5)[None, None, :]
    inside = (frames < logit_lengths[:, None, None]) & (labels <= target_lengths[:, None, None])
    garbage = logits.clone()
    garbage[~inside] = 1e3 * torch.randn(int((~inside).sum()), 5, dtype=torch.float64)
    garbage_targets = targets.clone()
    garbage_targets[torch.arange(4)[None, :] >= target_lengths[:, None]] = 0  # blank: ignored
    weights = torch.ones(4, dtype=torch.float64)
    loss, grad = value_and_grad(
        lambda x: rnnt_loss(x, targets, logit_lengths, target_lengths, reduction="none"),
        logits,
        weights,
    )
    loss_g, grad_g = value_and_grad(
        lambda x: rnnt_loss(x, garbage_targets, logit_lengths, target_lengths, reduction="none"),
        garbage,
        weights,
    )
    assert torch.all(grad[~inside] == 0) and torch.all(grad_g[~inside] == 0)
    torch.testing.assert_close(loss_g, loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_g, grad, rtol=1e-10, atol=1e-12)
    # each utterance alone, unpadded, gives the same loss
    for b in range(4):
        t, u = int(logit_lengths[b]), int(target_lengths[b])
        alone = rnnt_loss(
            logits[b : b + 1, :t, : u + 1],
            targets[b : b + 1, :u],
            logit_lengths[b : b + 1],
            target_lengths[b : b + 1],
            reduction="sum",
        )
        torch.testing.assert_close(alone, loss[b], rtol=1e-12, atol=1e-12)


def test_gradcheck():
    logits, targets, logit_lengths, target_lengths = make_batch(2, 3, 2, 4, blank=1, seed=4)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: rnnt_loss(x, targets, logit_lengths, target_lengths, blank=1, reduction="none"),
        (logits,),
    )


def test_negative_blank_counts_from_the_end():
    logits, targets, logit_lengths, target_lengths = make_batch(2, 4, 2, 5, blank=4, seed=6)
    torch.testing.assert_close(
        rnnt_loss(logits, targets, logit_lengths, target_lengths, blank=-1),
        rnnt_loss(logits, targets, logit_lengths, target_lengths, blank=4),
    )


def test_int32_indices_and_lengths_on_another_dtype():
    logits, targets, logit_lengths, target_lengths = make_batch(2, 4, 2, 5, blank=0, seed=8)
    torch.testing.assert_close(
        rnnt_loss(logits, targets.int(), logit_lengths.int(), target_lengths.int()),
        rnnt_loss(logits, targets, logit_lengths, target_lengths),
    )


def _bad(**changes):
    logits, targets, logit_lengths, target_lengths = make_batch(2, 4, 3, 5, blank=0, seed=0, full=True)
    args = dict(
        logits=logits, targets=targets, logit_lengths=logit_lengths, target_lengths=target_lengths
    )
    args.update(changes)
    return args


BAD_INPUTS = {
    "logits_3d": (dict(logits=torch.zeros(2, 4, 5)), r"logits must have shape \(B, T, U\+1, V\)"),
    "logits_int": (dict(logits=torch.zeros(2, 4, 4, 5, dtype=torch.int64)), "logits must be float"),
    "logits_not_tensor": (dict(logits=[[0.0]]), "logits must be a torch.Tensor"),
    "targets_wrong_u": (dict(targets=torch.ones(2, 2, dtype=torch.int64)), r"targets must have shape \(B, U\) = \(2, 3\)"),
    "targets_wrong_b": (dict(targets=torch.ones(3, 3, dtype=torch.int64)), r"targets must have shape \(B, U\)"),
    "targets_1d": (dict(targets=torch.ones(3, dtype=torch.int64)), r"targets must have shape \(B, U\)"),
    "targets_float": (dict(targets=torch.ones(2, 3)), "targets must have an integer dtype"),
    "targets_blank": (dict(targets=torch.tensor([[1, 0, 2], [1, 2, 3]])), "must not contain the blank id 0"),
    "targets_too_big": (dict(targets=torch.tensor([[1, 5, 2], [1, 2, 3]])), r"targets must be label ids in \[0, V\) = \[0, 5\)"),
    "targets_negative": (dict(targets=torch.tensor([[1, -1, 2], [1, 2, 3]])), "targets must be label ids"),
    "logit_lengths_shape": (dict(logit_lengths=torch.tensor([4])), r"logit_lengths must have shape \(B,\)"),
    "logit_lengths_float": (dict(logit_lengths=torch.tensor([4.0, 4.0])), "logit_lengths must have an integer dtype"),
    "logit_lengths_zero": (dict(logit_lengths=torch.tensor([0, 4])), r"logit_lengths must lie in \[1, T\] = \[1, 4\]"),
    "logit_lengths_long": (dict(logit_lengths=torch.tensor([5, 4])), r"logit_lengths must lie in \[1, T\]"),
    "target_lengths_long": (dict(target_lengths=torch.tensor([4, 3])), r"target_lengths must lie in \[0, U\] = \[0, 3\]"),
    "target_lengths_negative": (dict(target_lengths=torch.tensor([-1, 3])), r"target_lengths must lie in \[0, U\]"),
    "target_lengths_shape": (dict(target_lengths=torch.tensor([[3, 3]])), r"target_lengths must have shape \(B,\)"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_inputs_raise(name):
    changes, message = BAD_INPUTS[name]
    with pytest.raises(ValueError, match=message):
        rnnt_loss(**_bad(**changes))


def test_targets_past_length_may_be_anything():
    args = _bad(targets=torch.tensor([[1, 0, -7], [1, 2, 3]]), target_lengths=torch.tensor([1, 3]))
    assert torch.isfinite(rnnt_loss(**args))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(blank=5), r"blank must be in \[-V, V\) = \[-5, 5\)"),
        (dict(blank=-6), r"blank must be in \[-V, V\)"),
        (dict(reduction="avg"), "reduction must be one of"),
        (dict(backend="warp"), "backend must be one of"),
    ],
)
def test_bad_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rnnt_loss(**_bad(), **kwargs)


def _torchaudio_importable():
    try:
        import torchaudio.functional  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _torchaudio_importable(), reason="torchaudio not importable")
def test_torchaudio_backend_agrees():
    logits, targets, logit_lengths, target_lengths = make_batch(3, 6, 3, 7, blank=0, seed=12)
    logits = logits.float()
    weights = torch.rand(3)
    ours, ours_grad = value_and_grad(
        lambda x: rnnt_loss(x, targets, logit_lengths, target_lengths, reduction="none"), logits, weights
    )
    theirs, theirs_grad = value_and_grad(
        lambda x: rnnt_loss(
            x, targets, logit_lengths, target_lengths, reduction="none", backend="torchaudio"
        ),
        logits,
        weights,
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(_torchaudio_importable(), reason="torchaudio is importable")
def test_torchaudio_backend_without_torchaudio_raises():
    with pytest.raises(ValueError, match="backend='torchaudio' needs an importable torchaudio"):
        rnnt_loss(**_bad(), backend="torchaudio")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    logits, targets, logit_lengths, target_lengths = make_batch(3, 7, 4, 9, blank=0, seed=13)
    weights = torch.rand(3, dtype=torch.float64)

    def fn(x):
        return rnnt_loss(x, targets, logit_lengths, target_lengths, reduction="none")

    cpu, cpu_grad = value_and_grad(fn, logits, weights)
    cuda, cuda_grad = value_and_grad(fn, logits.cuda(), weights.cuda())
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(cuda_grad.cpu(), cpu_grad, rtol=1e-9, atol=1e-10)


def test_no_grad_forward_gives_the_same_loss():
    logits, targets, logit_lengths, target_lengths = make_batch(3, 5, 3, 6, blank=0, seed=14)
    expected = reference_losses(logits, targets, logit_lengths, target_lengths, 0)
    with torch.no_grad():
        actual = rnnt_loss(logits, targets, logit_lengths, target_lengths, reduction="none")
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def test_empty_dimension_is_refused():
    args = _bad(logits=torch.zeros(2, 4, 4, 0), targets=torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"logits: expected no empty dimension, found shape \(2, 4, 4, 0\)"):
        rnnt_loss(**args)
