"""HuBERT-style pretraining (xtrans.ssl, python -m xtrans.bin.pretrain_ssl): k-means against a float64
Lloyd reference, targets framed like the encoder, the masked pass against the encoder's own, the
loss against a float64 reference, determinism, exact resume after SIGKILL, and the Hugging Face
directory read back by load_pretrained to exactly the trained weights."""

import json
import math
import os
import signal
import subprocess

import numpy as np
import pytest
import torch

from xtrans.frames import num_frames
from xtrans.models.wav2vec2 import Wav2Vec2Encoder, load_pretrained, preset_kwargs
from xtrans.ssl.export import NotExportableError, save_hf_encoder
from xtrans.ssl.kmeans import kmeans, kmeans_plusplus, lloyd
from xtrans.ssl.model import MaskedPredictionModel
from xtrans.ssl.targets import IGNORE, FeatureSpec, FrameTargets, frame_features, layer_output, log_mel_spec
from xtrans.testing.crash import command
from xtrans.testing.train_fixtures import make_tiny_corpus

UPDATES, SAVE = 36, 12  # the reference run; the interrupted one dies writing its 2nd checkpoint
TINY_ENCODER = ["--preset", "tiny", "--set", "conv_channels=16", "embed_dim=32", "num_layers=1", "num_heads=4",
                "ffn_dim=64", "pos_conv_kernel=16", "pos_conv_groups=4", "dropout=0.1"]
SETTINGS = ["--num_clusters", "8", "--n_mels", "20", "--mask_prob", "0.5", "--mask_length", "3",
            "--proj_dim", "16", "--max_seconds", "3.0", "--warmup_updates", "4", "--lr", "3.0e-3",
            "--decay", "constant", "--seed", "3"]


def tiny_encoder(seed=0, **overrides):
    """An XLSR-shaped encoder of 16 channels and D=32 with time masking (random weights)."""
    kwargs = preset_kwargs("tiny", conv_layers=tuple((16, k, s) for _, k, s in preset_kwargs("tiny")["conv_layers"]),
                           embed_dim=32, num_layers=2, num_heads=4, ffn_dim=64, pos_conv_kernel=16,
                           pos_conv_groups=4, mask_prob=0.5, mask_length=3)
    kwargs.update(overrides)
    torch.manual_seed(seed)
    return Wav2Vec2Encoder(**kwargs)


def batch(lengths=(12000, 7000, 4100), seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    wave = 0.3 * torch.randn(len(lengths), int(lengths.max()), generator=g)
    return wave.masked_fill(torch.arange(wave.shape[1])[None, :] >= lengths[:, None], 0.0), lengths


def run_cli(outdir, *extra, data, kill_in_save=None, check=True):
    """``python -m xtrans.bin.pretrain_ssl`` in a subprocess (one thread), maybe SIGKILLed in a save."""
    args = ["--data", str(data), "--outdir", str(outdir), *TINY_ENCODER, *SETTINGS, "--max_updates", str(UPDATES),
            "--save_interval_updates", str(SAVE), "--num_threads", "1", "--no_progress", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(command("xtrans.bin.pretrain_ssl", args, kill_in_save=kill_in_save), env=env,
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def steps(outdir):
    return [json.loads(line) for line in (outdir / "steps.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_tiny_corpus(tmp_path_factory.mktemp("ssl") / "data", num_train=12, num_dev=3)


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ssl_ref") / "run"
    run_cli(out, data=corpus.train_dir)
    return out


# ------------------------------------------------------------------------------------------- k-means

def blobs(n=300, k=6, dim=5, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4.0, size=(k, dim))
    return torch.from_numpy(centres[rng.integers(k, size=n)] + spread * rng.normal(size=(n, dim)))  # float64


def reference_lloyd(x, init, max_iter=100):
    """Textbook Lloyd's iteration in float64: direct differences, until no assignment changes."""
    c = init.clone()
    a = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
    for it in range(1, max_iter + 1):
        c = torch.stack([x[a == j].mean(0) for j in range(c.shape[0])])
        new = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        if torch.equal(new, a):
            return c, a, it
        a = new
    return c, a, max_iter


def test_kmeans_matches_reference_lloyd():
    x = blobs(spread=2.5)  # overlapping blobs: several iterations
    init = kmeans_plusplus(x, 6, np.random.default_rng(0))
    got = lloyd(x, init, max_iter=100, tol=0.0)
    c, a, iterations = reference_lloyd(x, init)
    assert got.converged and got.iterations == iterations > 2
    assert torch.equal(got.assignments, a)
    torch.testing.assert_close(got.centroids, c, rtol=0, atol=1e-12)
    assert got.inertia == pytest.approx(float(((x - c[a]) ** 2).sum()), rel=1e-12)
    assert torch.bincount(a, minlength=6).min() > 0  # the reference has no empty-cluster rule


def test_kmeans_matches_scipy():
    vq = pytest.importorskip("scipy.cluster.vq")
    x = blobs(spread=2.5, seed=1)
    init = kmeans_plusplus(x, 6, np.random.default_rng(1))
    got = lloyd(x, init, max_iter=100, tol=0.0)
    centroids, labels = vq.kmeans2(x.numpy(), init.numpy(), iter=got.iterations, minit="matrix")
    np.testing.assert_allclose(got.centroids.numpy(), centroids, rtol=0, atol=1e-10)
    assert np.array_equal(got.assignments.numpy(), labels)


def test_kmeans_plusplus_seeding():
    x = blobs(n=400, k=5, spread=0.01, seed=2)  # five tight, far-apart blobs
    a = kmeans_plusplus(x, 5, np.random.default_rng(7))
    assert torch.equal(a, kmeans_plusplus(x, 5, np.random.default_rng(7)))  # seeded
    assert not torch.equal(a, kmeans_plusplus(x, 5, np.random.default_rng(8)))
    assert all(bool((x == row).all(1).any()) for row in a)  # data points
    blob_of = ((x[:, None, :] - a[None]) ** 2).sum(-1).argmin(1)
    assert torch.bincount(blob_of, minlength=5).min() > 0  # D^2 sampling picked one seed per blob
    assert kmeans(x, 5, seed=7).inertia < 1e-3 * kmeans(x, 5, seed=7, max_iter=0).inertia + 1.0


def test_kmeans_refills_an_empty_cluster_and_refuses_too_few_frames():
    x = blobs(n=60, k=3, spread=0.5, seed=3)
    init = torch.stack([x[0], x[0], x[1]])  # two equal centroids: one of them ends up empty
    got = lloyd(x, init, max_iter=50)
    assert got.centroids.shape == (3, 5) and torch.bincount(got.assignments, minlength=3).min() > 0
    with pytest.raises(ValueError, match="at least num_clusters=61 frames"):
        kmeans(x, 61)
    with pytest.raises(ValueError, match="finite"):
        kmeans(torch.full((10, 2), float("nan")), 2)


# ------------------------------------------------------------------------------------------- targets

@pytest.mark.parametrize("preset", ["tiny", "mini"])
def test_targets_have_the_encoders_frame_count(preset):
    encoder = Wav2Vec2Encoder(**preset_kwargs(preset, mask_prob=0.5)).eval()
    spec = log_mel_spec(encoder, n_mels=12)
    assert (spec.window, spec.hop, spec.waveform_norm) == (400, 320, "cumulative")
    wave, lengths = batch((12345, 720, 719, 400, 399))
    feats, frames = frame_features(spec, wave, lengths)
    with torch.no_grad():
        enc, enc_frames = encoder(wave, lengths)
    assert feats.shape[:2] == enc.shape[:2] == (5, num_frames(12345))
    assert frames.tolist() == enc_frames.tolist() == [num_frames(int(n)) for n in lengths] == [38, 2, 1, 1, 0]
    S = torch.arange(4000)  # every length up to 12 frames
    assert torch.equal(encoder.output_lengths(S), num_frames(S))
    targets = FrameTargets(spec, feats[0, :10].mean(0), torch.ones(12), feats[0, :4].clone())
    labels, label_frames = targets(wave, lengths)
    assert labels.shape == enc.shape[:2] and torch.equal(label_frames, frames)
    valid = torch.arange(labels.shape[1])[None, :] < frames[:, None]
    assert (labels[~valid] == IGNORE).all() and ((labels[valid] >= 0) & (labels[valid] < 4)).all()
    alone, _ = targets(wave[1:2, :720], lengths[1:2])
    assert torch.equal(alone[0], labels[1, :2])  # padding changes no frame's target


def test_layer_targets_frame_like_the_encoder():
    teacher = tiny_encoder(seed=1).eval()
    wave, lengths = batch()
    out, frames = layer_output(teacher, 1, wave, lengths)
    with torch.no_grad():
        enc, enc_frames = teacher(wave, lengths)
    assert out.shape == enc.shape and torch.equal(frames, enc_frames)
    spec = FeatureSpec(kind="layer", features_from="teacher", layer=2)
    feats, _ = frame_features(spec, wave, lengths, teacher)
    valid = torch.arange(enc.shape[1])[None, :, None] < frames[:, None, None]
    with torch.no_grad():  # pre-LN: the encoder's output is the last layer's output after the final norm
        torch.testing.assert_close(teacher.layer_norm(feats).masked_fill(~valid, 0.0), enc, rtol=0, atol=0)
    with pytest.raises(ValueError, match="layer: expected 1..2"):
        layer_output(teacher, 3, wave, lengths)


# ------------------------------------------------------------------------------------------- the model

def test_masked_pass_is_the_encoders_own_masking():
    encoder = tiny_encoder(dropout=0.1, mask_channel_prob=0.2, mask_channel_length=4).train()
    model = MaskedPredictionModel(encoder=encoder, num_clusters=8, proj_dim=16).train()
    wave, lengths = batch()
    torch.manual_seed(5)
    want, want_frames = encoder(wave, lengths)
    torch.manual_seed(5)
    got, frames, time = model.encode_masked(wave, lengths)
    assert torch.equal(got, want) and torch.equal(frames, want_frames)
    valid = torch.arange(time.shape[1])[None, :] < frames[:, None]
    assert time.any(1).all() and not (time & ~valid).any()  # >= 2 spans each, none in padding


def test_loss_is_masked_cross_entropy_of_cosine_logits():
    encoder = tiny_encoder().eval()
    model = MaskedPredictionModel(encoder=encoder, num_clusters=8, proj_dim=16, temperature=0.1,
                                  unmasked_weight=0.3).eval()
    wave, lengths = batch()
    targets = torch.randint(0, 8, (3, num_frames(12000)), generator=torch.Generator().manual_seed(0))
    out = model(wave, lengths, targets, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        h, frames, time = model.encode_masked(wave, lengths, generator=torch.Generator().manual_seed(9))
        proj, emb = model.final_proj(h).double(), model.label_embs.double()
    logits = (proj @ emb.T) / proj.norm(dim=-1, keepdim=True) / emb.norm(dim=-1)[None, None, :] / 0.1  # (B, T, K)
    logp = logits.log_softmax(-1).gather(-1, targets[..., None])[..., 0]
    valid = torch.arange(time.shape[1])[None, :] < frames[:, None]
    masked, unmasked = -logp[time & valid].mean(), -logp[valid & ~time].mean()
    assert out.masked_frames == int((time & valid).sum()) and out.unmasked_frames == int((valid & ~time).sum())
    assert out.masked_loss == pytest.approx(float(masked), rel=1e-5)
    assert float(out.loss.detach()) == pytest.approx(float(masked + 0.3 * unmasked), rel=1e-5)
    with pytest.raises(ValueError, match=r"targets: expected \(B, T\) = \(3, 37\)"):
        model(wave, lengths, targets[:, :-1])
    with pytest.raises(ValueError, match="mask_prob > 0"):
        MaskedPredictionModel(encoder=tiny_encoder(mask_prob=0.0), num_clusters=8)


# ------------------------------------------------------------------------------------------- runs

def test_pretraining_is_deterministic(corpus, tmp_path):
    from xtrans.bin.pretrain_ssl import main

    args = ["--data", str(corpus.train_dir), *TINY_ENCODER, *SETTINGS, "--max_updates", "5", "--no_progress"]
    assert main([*args, "--outdir", str(tmp_path / "a")]) == 0
    assert main([*args, "--outdir", str(tmp_path / "b")]) == 0
    assert steps(tmp_path / "a") == steps(tmp_path / "b")
    a, b = (torch.load(tmp_path / r / "encoder.pt", weights_only=True)["encoder"] for r in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_loss_decreases(reference):
    got = steps(reference)
    assert [s["step"] for s in got] == list(range(1, UPDATES + 1)) and not any(s["skipped"] for s in got)
    first, last = (sum(s["loss"] for s in part) / len(part) for part in (got[:6], got[-6:]))
    assert first > math.log(8) * 0.9  # about uniform over the 8 clusters at the start
    assert last < 0.7 * first, (first, last)
    assert got[-1]["epoch"] > 0  # several epochs
    summary = json.loads((reference / "pretrain_summary.json").read_text())
    assert summary["updates"] == UPDATES and (reference / "loss.png").stat().st_size > 1000


def test_resume_after_sigkill_continues_exactly(reference, corpus, tmp_path):
    out = tmp_path / "killed"
    proc = run_cli(out, data=corpus.train_dir, kill_in_save=2, check=False)  # dies writing ckpt_step24.pt
    assert proc.returncode == -signal.SIGKILL
    assert (out / f"ckpt_step{2 * SAVE}.pt.tmp").is_file() and not (out / f"ckpt_step{2 * SAVE}.pt").exists()
    assert (out / "latest.txt").read_text().strip() == f"ckpt_step{SAVE}.pt"
    assert steps(out) == steps(reference)[:2 * SAVE]  # the same run so far
    run_cli(out, "--resume", data=corpus.train_dir)
    assert steps(out) == steps(reference)  # losses, accuracies, gradient norms, rates: identical
    want = torch.load(reference / "encoder.pt", weights_only=True)
    got = torch.load(out / "encoder.pt", weights_only=True)
    assert got["arch"] == want["arch"] and all(torch.equal(got["encoder"][k], v) for k, v in want["encoder"].items())
    a, b = (torch.load(r / f"ckpt_step{UPDATES}.pt", weights_only=True) for r in (reference, out))
    assert all(torch.equal(a["head"][k], b["head"][k]) for k in a["head"])


def test_resume_refuses_other_settings_and_files(reference, corpus, tmp_path, capsys):
    from xtrans.bin.pretrain_ssl import main
    from xtrans.ssl.trainer import resume_config

    stored = torch.load(reference / f"ckpt_step{UPDATES}.pt", weights_only=True)["config"]
    assert resume_config(stored, {"max_updates": 50}, "ckpt").max_updates == 50
    with pytest.raises(ValueError, match="lr: the run in ckpt has lr=0.003, found 0.001"):
        resume_config(stored, {"lr": 1e-3}, "ckpt")
    args = ["--data", str(corpus.train_dir), "--outdir", str(tmp_path), "--no_progress", "--resume"]
    assert main([*args, str(reference / "encoder.pt")]) == 2
    assert "not a pretraining checkpoint of xtrans.bin.pretrain_ssl" in capsys.readouterr().err
    assert main([*args, str(reference / f"ckpt_step{UPDATES}.pt"), "--lr", "1.0e-3"]) == 2
    assert "a resumed run keeps its settings" in capsys.readouterr().err


def test_second_iteration_clusters_a_layer(reference, corpus, tmp_path, capsys):
    from xtrans.bin.pretrain_ssl import main

    out, init = tmp_path / "iter2", reference / "encoder.pt"
    args = ["--data", str(corpus.train_dir), "--outdir", str(out), *TINY_ENCODER, *SETTINGS, "--max_updates", "2",
            "--init", str(init), "--no_progress"]
    assert main([*args, "--iteration", "2", "--features_from", str(init), "--layer", "1"]) == 0
    ckpt = torch.load(out / "ckpt_step2.pt", weights_only=True)
    assert ckpt["targets"]["spec"]["kind"] == "layer" and ckpt["targets"]["spec"]["layer"] == 1
    assert ckpt["targets"]["centroids"].shape == (8, 32)  # D of the teacher
    start = torch.load(init, weights_only=True)
    torch.manual_seed(3)  # the run's seed: what a start without --init would have been
    fresh = Wav2Vec2Encoder(**{**start["arch"], "conv_layers": tuple(map(tuple, start["arch"]["conv_layers"]))})

    def distance(a, b):
        return max(float((a[k] - v).abs().max()) for k, v in b.items())

    assert ckpt["source"] == str(init)  # started from the iteration-1 weights: two small updates away from them
    assert distance(ckpt["encoder"], start["encoder"]) < 0.01 < 0.05 < distance(fresh.state_dict(), start["encoder"])
    capsys.readouterr()
    assert main([*args, "--iteration", "2"]) == 2
    assert "features_from, layer: expected both with iteration 2" in capsys.readouterr().err


def test_encoder_from_a_recipe_config(corpus, tmp_path):
    """``--config``: the model.encoder section of a training config (frozen CNN, chunked positional conv)."""
    from xtrans.bin.pretrain_ssl import main
    from xtrans.testing.train_fixtures import tiny_train_config, write_yaml

    conf = write_yaml(tiny_train_config(corpus), tmp_path / "conf.yaml")
    out = tmp_path / "run"
    assert main(["--data", str(corpus.train_dir), "--outdir", str(out), "--config", str(conf), *SETTINGS,
                 "--max_updates", "2", "--no_progress"]) == 0
    saved = torch.load(out / "encoder.pt", weights_only=True)
    arch = saved["arch"]
    assert (arch["embed_dim"], arch["pos_conv"], arch["freeze_feature_extractor"]) == (64, "chunk", True)
    assert (arch["mask_prob"], arch["mask_length"]) == (0.5, 3)  # the pretraining's masking
    torch.manual_seed(3)  # the run's seed: the same initial weights, so the frozen CNN is unchanged
    initial = Wav2Vec2Encoder(**{**arch, "conv_layers": tuple(map(tuple, arch["conv_layers"]))}).state_dict()
    cnn = [k for k in initial if k.startswith("feature_extractor.")]
    assert cnn and all(torch.equal(saved["encoder"][k], initial[k]) for k in cnn)
    assert not torch.equal(saved["encoder"]["layers.0.feed_forward.intermediate_dense.weight"],
                           initial["layers.0.feed_forward.intermediate_dense.weight"])
    overrides = json.loads((out / "pretrain_summary.json").read_text())["load_pretrained_overrides"]
    assert overrides["pos_conv"] == "chunk" and overrides["freeze_feature_extractor"] is True
    from xtrans.ssl.checkpoint import load_encoder

    assert_same_encoder(load_pretrained(out / "hf", **overrides), load_encoder(out / "encoder.pt"))


# ------------------------------------------------------------------------------------------- export

def assert_same_encoder(loaded, encoder):
    own = encoder.state_dict()
    assert loaded.arch == encoder.arch
    assert list(loaded.state_dict()) == list(own)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, own[k]), k


def test_trained_encoder_reads_back_exactly(reference):
    from xtrans.ssl.checkpoint import load_encoder

    trained = load_encoder(reference / "encoder.pt")
    summary = json.loads((reference / "pretrain_summary.json").read_text())
    hf = reference / "hf"
    config = json.loads((hf / "config.json").read_text())
    assert config["model_type"] == "hubert" and summary["hf_dir"] == str(hf)
    overrides = summary["load_pretrained_overrides"]
    # the run's encoder: cumulative waveform normalisation (not in config.json), masking, dropout
    assert overrides == {"waveform_norm": "cumulative", "dropout": 0.1, "mask_prob": 0.5, "mask_length": 3}
    assert_same_encoder(load_pretrained(hf, **overrides), trained)  # mask_emb included
    plain = load_pretrained(hf)  # as a published model: no masking, so no mask embedding
    assert "mask_emb" not in plain.state_dict()
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in plain.state_dict().items())


@pytest.mark.parametrize("model_type", ["hubert", "wav2vec2"])
def test_fully_described_encoder_needs_only_its_masking(tmp_path, model_type):
    encoder = tiny_encoder(waveform_norm="utterance")
    with torch.no_grad():
        encoder.mask_emb.normal_()
    overrides = save_hf_encoder(encoder, tmp_path, model_type)
    assert overrides == {"mask_prob": 0.5, "mask_length": 3}  # everything else is in config.json
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["do_normalize"] is True
    assert_same_encoder(load_pretrained(tmp_path, **overrides), encoder)


@pytest.mark.parametrize("family, options", [
    ("wavlm", dict(rel_pos_buckets=8, rel_pos_max_distance=32, rel_pos_gated=True)),
    ("data2vec-audio", dict(pos_conv_layers=2, pos_conv_norm="layer", pos_conv_kernel=5, layer_norm_first=False,
                            waveform_norm="none")),
    ("hubert", dict(extractor_mode="group_norm", conv_bias=False, layer_norm_first=False, feat_proj_layer_norm=False,
                    waveform_norm="none", pos_conv="causal")),
])
def test_other_families_read_back_exactly(tmp_path, family, options):
    encoder = tiny_encoder(**options)
    overrides = save_hf_encoder(encoder, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == family
    assert_same_encoder(load_pretrained(tmp_path, **overrides), encoder)


def test_transformers_loads_the_directory(tmp_path):
    transformers = pytest.importorskip("transformers")
    encoder = tiny_encoder(waveform_norm="none").eval()
    save_hf_encoder(encoder, tmp_path)
    hf = transformers.HubertModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(hf.masked_spec_embed.detach(), encoder.mask_emb.detach(), rtol=0, atol=0)
    wave, _ = batch((8000,))
    with torch.no_grad():
        want, _ = encoder(wave)
        got = hf(wave).last_hidden_state
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("options, match", [
    (dict(extractor_mode="cumulative_norm"), "extractor_mode='cumulative_norm'"),
    (dict(extractor_mode="batch_norm"), "extractor_mode='batch_norm'"),
])
def test_front_ends_without_a_hugging_face_counterpart_are_refused(tmp_path, options, match):
    with pytest.raises(NotExportableError, match=match):
        save_hf_encoder(tiny_encoder(**options), tmp_path)
    assert not (tmp_path / "model.safetensors").exists()
    with pytest.raises(NotExportableError, match=r"feat_proj_layer_norm=False \(a wav2vec2 config.json gives True\)"):
        save_hf_encoder(tiny_encoder(feat_proj_layer_norm=False), tmp_path, "wav2vec2")
