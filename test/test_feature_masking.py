"""wav2vec 2.0 feature masking: spans inside valid frames, the mask embedding, its import, old checkpoints.

The properties: spans never touch padding (batches of unequal lengths); masked frames are exactly
``mask_emb``; the number of spans follows fairseq's ``mask_prob * n / mask_length`` with random
rounding and the masked fraction its overlap law ``1 - (1 - p/L)^L``; channel masks zero whole
channels of an utterance; ``eval()`` and streaming never mask; draws follow ``torch.manual_seed``
and a resumed run repeats them; the defaults change nothing; ``mask_emb`` comes from Hugging Face's
``masked_spec_embed`` and fairseq's ``mask_emb`` bit for bit, and files without it still load.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess

import pytest
import torch

from xtrans.masks import StreamingConfig
from xtrans.models.arch import ModelArch
from xtrans.models.config import EncoderConfig, ModelConfig, PredictorConfig, build_model, resolve_arch
from xtrans.models.wav2vec2 import Wav2Vec2Encoder, tiny
from xtrans.models.wav2vec2.feature_masking import MIN_TIME_MASKS, draw_span_starts, mask_features, span_mask
from xtrans.streaming import StreamingEncoder

MASKING = dict(mask_prob=0.65, mask_length=10, mask_channel_prob=0.5, mask_channel_length=16)


def tiny_encoder(seed: int = 0, **kw) -> Wav2Vec2Encoder:
    torch.manual_seed(seed)
    return tiny(**{"num_layers": 2, "pos_conv": "chunk", "waveform_norm": "cumulative", **kw})


def waveforms(lengths, seed: int = 1):
    """(B, S) noise, zero past each length, and the lengths (B,)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    wave = torch.randn(len(lengths), int(lengths.max()), generator=gen)
    return wave * (torch.arange(wave.shape[1]) < lengths[:, None]), lengths


def runs(row: torch.Tensor):
    """Maximal runs of True in a (T,) bool row as (start, end) pairs."""
    padded = torch.cat([torch.zeros(1, dtype=torch.long), row.long(), torch.zeros(1, dtype=torch.long)])
    edges = padded.diff()
    return list(zip((edges == 1).nonzero().flatten().tolist(), (edges == -1).nonzero().flatten().tolist()))


# --------------------------------------------------------------------------------------------
# the spans


def test_span_count_is_fairseq_random_rounding():
    """floor(p n / L + u): the floor or the ceiling of p n / L, on average p n / L; at least min_masks."""
    lengths = torch.tensor([400, 123, 57, 20])
    gen = torch.Generator().manual_seed(0)
    counts = torch.stack([draw_span_starts(lengths, 400, 0.65, 10, 0, gen).sum(1) for _ in range(2000)]).float()
    expected = 0.65 * lengths / 10  # 26, 7.995, 3.705, 1.3
    assert ((counts == expected.floor()) | (counts == expected.ceil())).all()
    assert torch.allclose(counts.mean(0), expected, atol=0.04)
    with_min = draw_span_starts(lengths, 400, 0.05, 10, MIN_TIME_MASKS, gen).sum(1)  # p n / L < 2 for all
    assert with_min.tolist() == [2, 2, 2, 2]


def test_spans_lie_inside_valid_frames_of_a_ragged_batch():
    """Padding is never masked; every masked run is whole spans; too-short rows get no span."""
    lengths = torch.tensor([300, 57, 10, 9, 0])
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        starts = draw_span_starts(lengths, 300, 0.65, 10, MIN_TIME_MASKS, gen)
        mask = span_mask(lengths, 300, 0.65, 10, MIN_TIME_MASKS, gen)
        position = torch.arange(300)
        assert not (starts & (position > lengths[:, None] - 10)).any()  # every span fits
        assert not (mask & (position >= lengths[:, None])).any()  # padding never masked
        for b in range(3):
            assert all(end - start >= 10 for start, end in runs(mask[b]))
        assert mask[2].tolist() == [True] * 10 + [False] * 290  # the one span that fits
        assert not mask[3:].any()  # shorter than a span (and empty): nothing masked


def test_span_mask_covers_exactly_the_spans_of_its_starts():
    lengths = torch.tensor([200, 90])
    starts = draw_span_starts(lengths, 200, 0.3, 7, 0, torch.Generator().manual_seed(5))
    mask = span_mask(lengths, 200, 0.3, 7, 0, torch.Generator().manual_seed(5))
    want = torch.zeros_like(mask)
    for b, t in starts.nonzero().tolist():
        want[b, t:t + 7] = True
    assert torch.equal(mask, want)


@pytest.mark.parametrize("p,length", [(0.65, 10), (0.1, 10), (0.3, 4)])
def test_masked_fraction_follows_the_overlap_law(p, length):
    """p is start frames x L / frames; overlapping spans mask 1 - (1 - p/L)^L of the frames."""
    lengths = torch.full((64,), 2000)
    mask = span_mask(lengths, 2000, p, length, MIN_TIME_MASKS, torch.Generator().manual_seed(2))
    assert abs(mask.float().mean().item() - (1 - (1 - p / length) ** length)) < 0.015


# --------------------------------------------------------------------------------------------
# in the encoder


def masked_input_of_pos_conv(encoder: Wav2Vec2Encoder, wave, lengths, seed: int):
    """What the positional convolution receives in a training forward pass (frames after masking)."""
    seen = []
    handle = encoder.pos_conv.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    torch.manual_seed(seed)
    encoder.train()(wave, lengths)
    handle.remove()
    return seen[0]


def test_masked_frames_are_the_mask_embedding_before_the_positional_conv():
    encoder = tiny_encoder(mask_prob=0.65, mask_length=5)
    wave, lengths = waveforms([16000, 9000, 4000])
    with torch.no_grad():
        clean, frame_lengths = encoder.extract(wave, lengths)
        masked = masked_input_of_pos_conv(encoder, wave, lengths, seed=3)
    torch.manual_seed(3)
    want = span_mask(frame_lengths, clean.shape[1], 0.65, 5, MIN_TIME_MASKS)  # the same draws
    assert want.any(dim=1).all()
    assert torch.equal(masked[want], encoder.mask_emb.detach().expand(int(want.sum()), -1))
    assert torch.equal(masked[~want], clean[~want])  # the rest untouched, padding still zero
    assert not masked[~(torch.arange(clean.shape[1]) < frame_lengths[:, None])].any()


def test_channel_masks_zero_whole_channels_per_utterance():
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(8, 50, 96, generator=gen) + 0.5  # no zeros of its own
    lengths = torch.tensor([50, 50, 40, 30, 50, 20, 50, 11])
    x = x * (torch.arange(50) < lengths[:, None])[:, :, None]
    y = mask_features(x, lengths, None, mask_prob=0.0, mask_length=10, mask_channel_prob=0.5,
                      mask_channel_length=16, generator=gen)
    zeroed = []
    for b in range(8):
        valid = y[b, :lengths[b]]
        channels = (valid == 0).all(dim=0)  # (D,)
        assert torch.equal((valid == 0), channels.expand_as(valid))  # whole channels, every frame
        assert torch.equal(valid[:, ~channels], x[b, :lengths[b]][:, ~channels])
        assert all(end - start >= 16 for start, end in runs(channels))
        zeroed.append(channels)
    assert len({tuple(c.tolist()) for c in zeroed}) == 8  # drawn per utterance
    assert not y[torch.arange(50)[None, :].expand(8, -1) >= lengths[:, None]].any()  # padding stays zero
    fraction = torch.stack(zeroed).float().mean().item()
    assert 0.15 < fraction < 0.55  # 1 - (1 - 0.5/16)^16 = 0.40, 8 x 96 channels only


def test_time_then_channel_masking_as_fairseq():
    """Channels are zeroed after time masking, in the mask embedding's frames too."""
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(2, 300, 64, generator=gen) + 0.5
    lengths = torch.tensor([300, 200])
    emb = torch.rand(64, generator=gen) + 0.5
    state = gen.get_state()
    y = mask_features(x, lengths, emb, mask_prob=0.5, mask_length=10, mask_channel_prob=0.3,
                      mask_channel_length=8, generator=gen)
    gen.set_state(state)
    time = span_mask(lengths, 300, 0.5, 10, MIN_TIME_MASKS, gen)
    channels = span_mask(torch.full((2,), 64), 64, 0.3, 8, 0, gen)
    want = torch.where(time[:, :, None], emb, x).masked_fill(channels[:, None, :], 0.0)
    assert time.any() and channels.any()
    assert torch.equal(y, want)


def test_eval_equals_the_unmasked_encoder_and_training_differs():
    plain = tiny_encoder(seed=7)
    masking = tiny_encoder(seed=7, **MASKING)
    shared = {k: v for k, v in masking.state_dict().items() if k != "mask_emb"}
    assert list(shared) == list(plain.state_dict())  # mask_emb is drawn last: the rest is identical
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in shared.items())
    wave, lengths = waveforms([12000, 7000])
    with torch.no_grad():
        want, _ = plain.eval()(wave, lengths)
        got, _ = masking.eval()(wave, lengths)
        trained, _ = masking.train()(wave, lengths)
        plain_trained, _ = plain.train()(wave, lengths)
    assert torch.equal(got, want)
    assert torch.equal(plain_trained, want)  # no dropout here: training = eval without masking
    assert (trained - want).abs().max() > 1e-2


def test_draws_follow_torch_manual_seed():
    encoder = tiny_encoder(**MASKING).train()
    wave, lengths = waveforms([12000, 7000])

    def run(seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            return encoder(wave, lengths)[0]

    assert torch.equal(run(11), run(11))
    assert not torch.equal(run(11), run(12))


def test_defaults_change_nothing():
    """No mask embedding, no random draw, no difference between training and evaluation."""
    encoder = tiny_encoder()
    assert encoder.mask_emb is None and "mask_emb" not in encoder.state_dict()
    assert (encoder.arch.mask_prob, encoder.arch.mask_length) == (0.0, 10)
    assert (encoder.arch.mask_channel_prob, encoder.arch.mask_channel_length) == (0.0, 64)
    wave, lengths = waveforms([12000, 7000])
    x = torch.randn(2, 30, 96)
    assert encoder.mask_features(x, lengths) is x
    rng = torch.get_rng_state()
    with torch.no_grad():
        trained, _ = encoder.train()(wave, lengths)
    assert torch.equal(torch.get_rng_state(), rng)
    with torch.no_grad():
        evaluated, _ = encoder.eval()(wave, lengths)
    assert torch.equal(trained, evaluated)
    zero = tiny_encoder(mask_prob=0.0, mask_channel_prob=0.0, mask_length=3, mask_channel_length=200)
    assert all(torch.equal(v, zero.state_dict()[k]) for k, v in tiny_encoder().state_dict().items())


def test_streaming_is_unchanged_and_equals_the_masked_full_pass_in_eval():
    encoder = tiny_encoder(**MASKING).eval()
    plain = tiny_encoder()
    cfg = StreamingConfig(8, 16, 0)
    wave, lengths = waveforms([20000])
    with torch.no_grad():
        ref, _ = encoder(wave, lengths, streaming=cfg)
        want, _ = plain.eval()(wave, lengths, streaming=cfg)
        streamer = StreamingEncoder(encoder, cfg)
        state = streamer.init_state(1)
        frames = []
        for start in range(0, 20000, 3000):
            y, _, state = streamer.forward_chunk(wave[:, start:start + 3000], state)
            frames.append(y)
        frames.append(streamer.finalize(state)[0])
    out = torch.cat(frames, dim=1)
    assert torch.equal(ref, want)
    assert out.shape == ref.shape and (out - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("kwargs,match", [
    (dict(mask_prob=1.5), "mask_prob"), (dict(mask_prob=-0.1), "mask_prob"),
    (dict(mask_length=0), "mask_length"), (dict(mask_channel_prob=2.0), "mask_channel_prob"),
    (dict(mask_channel_prob=-1.0), "mask_channel_prob"), (dict(mask_channel_length=0), "mask_channel_length"),
    (dict(mask_channel_prob=0.5, mask_channel_length=97), "mask_channel_length"),  # D = 96
])
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)


def test_bad_options_in_a_config_are_named():
    cfg = ModelConfig(encoder=EncoderConfig(preset="tiny", mask_prob=1.2))
    with pytest.raises(ValueError, match="mask_prob"):
        build_model(cfg, vocab_size=10)
    with pytest.raises(ValueError, match="mask_length"):
        span_mask(torch.tensor([10]), 10, 0.5, 0)


def test_options_flow_from_config_to_arch_and_back():
    enc = EncoderConfig(preset="tiny", num_layers=1, **MASKING)
    arch = resolve_arch(ModelConfig(encoder=enc), vocab_size=10)
    assert {k: getattr(arch.encoder, k) for k in MASKING} == MASKING
    model = build_model(arch)
    assert model.encoder.mask_emb.shape == (96,) and model.encoder.arch == arch.encoder
    assert ModelArch.from_dict(arch.to_dict()) == arch
    old = arch.to_dict()
    for key in MASKING:  # an arch stored before feature masking: the defaults, masking off
        del old["encoder"][key]
    assert ModelArch.from_dict(old).encoder.mask_prob == 0.0


# --------------------------------------------------------------------------------------------
# import of the mask embedding


@pytest.fixture(scope="module")
def hf_model():
    pytest.importorskip("transformers")
    from xtrans.testing.pretrained_fixtures import random_hf_model

    model = random_hf_model("xlsr", seed=30, mask_time_prob=0.05)  # HF keeps masked_spec_embed only then
    assert model.masked_spec_embed is not None
    return model


def test_mask_embedding_imported_from_hugging_face(hf_model, tmp_path, caplog):
    from xtrans.models.wav2vec2 import load_pretrained
    from xtrans.testing.pretrained_fixtures import save_hf_dir

    directory = save_hf_dir(hf_model, tmp_path / "hf", do_normalize=False)
    encoder = load_pretrained(directory, mask_prob=0.5, mask_channel_prob=0.25, mask_channel_length=16)
    assert torch.equal(encoder.mask_emb.detach(), hf_model.masked_spec_embed.detach())
    with caplog.at_level(logging.INFO):
        plain = load_pretrained(directory)  # masking off: the embedding is dropped quietly
    assert plain.mask_emb is None and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in caplog.records if r.name.endswith(".names") and r.levelno >= logging.INFO]
    for name, value in plain.state_dict().items():
        assert torch.equal(value, encoder.state_dict()[name]), name


def test_mask_embedding_reaches_a_transducer_from_a_config_and_from_init(hf_model, tmp_path):
    from xtrans.testing.pretrained_fixtures import save_hf_dir
    from xtrans.train.checkpoint import load_init

    directory = save_hf_dir(hf_model, tmp_path / "hf", do_normalize=False)
    cfg = ModelConfig(encoder=EncoderConfig(pretrained=str(directory), mask_prob=0.5),
                      predictor=PredictorConfig(embed_dim=16), joiner_dim=16)
    model = build_model(cfg, vocab_size=10)  # the recipe's import_encoder builds the encoder this way
    want = hf_model.masked_spec_embed.detach()
    assert torch.equal(model.encoder.mask_emb.detach(), want)
    with torch.no_grad():
        model.encoder.mask_emb.zero_()
    assert load_init(model, directory) == "encoder"  # --init <Hugging Face directory>
    assert torch.equal(model.encoder.mask_emb.detach(), want)


@pytest.mark.parametrize("fine_tuned", [False, True], ids=["pretrained", "finetuned"])
def test_mask_embedding_imported_from_fairseq(hf_model, tmp_path, fine_tuned):
    from xtrans.models.wav2vec2 import load_pretrained
    from xtrans.testing.pretrained_fixtures import (fairseq_model_cfg, hf_to_fairseq_state_dict,
                                                    save_fairseq_checkpoint)

    state = hf_to_fairseq_state_dict(hf_model.state_dict(), hf_model.config)
    path = save_fairseq_checkpoint(tmp_path / "ckpt.pt", state, fairseq_model_cfg(hf_model.config),
                                   normalize=False, fine_tuned=fine_tuned)
    encoder = load_pretrained(path, mask_prob=0.5)
    assert torch.equal(encoder.mask_emb.detach(), state["mask_emb"])
    assert torch.equal(state["mask_emb"], hf_model.masked_spec_embed.detach())


def test_file_without_mask_embedding_keeps_the_encoders_own(tmp_path, caplog):
    pytest.importorskip("transformers")
    from xtrans.models.wav2vec2 import load_pretrained
    from xtrans.testing.pretrained_fixtures import random_hf_model, save_hf_dir

    model = random_hf_model("xlsr", seed=31)  # mask_time_prob=0: no masked_spec_embed
    directory = save_hf_dir(model, tmp_path / "hf", do_normalize=False)
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO):
        encoder = load_pretrained(directory, mask_prob=0.5)
    assert encoder.mask_emb.shape == (64,) and ((0 <= encoder.mask_emb) & (encoder.mask_emb < 1)).all()
    assert "has no mask_emb" in caplog.text


# --------------------------------------------------------------------------------------------
# xtrans checkpoints from before feature masking


def small_model(**masking) -> torch.nn.Module:
    torch.manual_seed(0)
    enc = EncoderConfig(preset="tiny", num_layers=1, conv_channels=16, embed_dim=64, num_heads=4, ffn_dim=128,
                        **masking)
    return build_model(ModelConfig(encoder=enc, predictor=PredictorConfig(embed_dim=32), joiner_dim=32),
                       vocab_size=10)


def test_old_checkpoint_loads_and_initialises_a_masking_model(tmp_path, caplog):
    from xtrans.checkpoint import load_model, model_checkpoint
    from xtrans.train.checkpoint import load_init

    old = small_model()
    ckpt = model_checkpoint(old)
    for key in MASKING:  # as written before feature masking existed
        del ckpt["arch"]["encoder"][key]
    assert not any("mask_emb" in k for k in ckpt["model"])
    torch.save(ckpt, tmp_path / "old.pt")
    loaded, _ = load_model(tmp_path / "old.pt")
    assert loaded.encoder.mask_emb is None

    masking = small_model(**MASKING)
    own = masking.encoder.mask_emb.detach().clone()
    with caplog.at_level(logging.INFO):
        assert load_init(masking, tmp_path / "old.pt") == "transducer"
    assert "has no encoder.mask_emb" in caplog.text
    assert torch.equal(masking.encoder.mask_emb.detach(), own)  # its own initialisation kept
    for name, value in old.state_dict().items():
        assert torch.equal(masking.state_dict()[name], value), name

    torch.save({"encoder": old.encoder.state_dict(), "arch": old.encoder.arch.to_dict()}, tmp_path / "enc.pt")
    assert load_init(small_model(**MASKING), tmp_path / "enc.pt") == "encoder"  # an encoder-only file


def test_masked_checkpoint_initialises_a_model_without_masking(tmp_path):
    from xtrans.checkpoint import model_checkpoint
    from xtrans.train.checkpoint import load_init

    masked = small_model(**MASKING)
    torch.save(model_checkpoint(masked), tmp_path / "masked.pt")
    plain = small_model()
    assert load_init(plain, tmp_path / "masked.pt") == "transducer"
    assert plain.encoder.mask_emb is None
    for name, value in plain.state_dict().items():
        assert torch.equal(masked.state_dict()[name], value), name


# --------------------------------------------------------------------------------------------
# exact resume with masking on (the trainer run as a subprocess, killed half-way)


def test_resume_with_masking_continues_exactly(tmp_path):
    from xtrans.testing.crash import command
    from xtrans.testing.train_fixtures import make_tiny_corpus, tiny_train_config, write_yaml
    from xtrans.train.checkpoint import load_checkpoint

    corpus = make_tiny_corpus(tmp_path / "data", num_train=8, num_dev=2)
    cfg = tiny_train_config(corpus, model={"encoder": dict(MASKING, mask_length=3)},
                            training={"max_updates": 4}, checkpoint={"save_interval_updates": 2})
    conf = write_yaml(cfg, tmp_path / "conf.yaml")

    def run(outdir, *extra, kill_after_step=None):
        args = ["--config", str(conf), "--outdir", str(outdir), "--init", "none", "--no_progress", *extra]
        return subprocess.run(command("xtrans.bin.train", args, kill_after_step=kill_after_step),
                              env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                              timeout=300)

    def steps(outdir):
        return [json.loads(line) for line in (outdir / "steps.jsonl").read_text().splitlines()]

    ref = run(tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert run(tmp_path / "killed", kill_after_step=2).returncode == -signal.SIGKILL
    resumed = run(tmp_path / "killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert steps(tmp_path / "killed")[2:] == steps(tmp_path / "ref")[2:]
    want, got = (load_checkpoint(d / "ckpt_step4.pt")["model"] for d in (tmp_path / "ref", tmp_path / "killed"))
    assert "encoder.mask_emb" in want
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert not torch.equal(want["encoder.mask_emb"], load_checkpoint(tmp_path / "ref" / "ckpt_step2.pt")["model"]
                           ["encoder.mask_emb"])  # the embedding is trained
