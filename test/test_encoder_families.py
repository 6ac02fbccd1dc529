"""HuBERT, WavLM, data2vec-audio, XLS-R and MMS: parity with transformers, every checkpoint layout, presets.

Random tiny models of every family (every weight perturbed, offline) saved with
``save_pretrained``: the encoder loaded from the directory must give transformers' last hidden
state (<= 1e-4 relative) on a padded batch of unequal lengths. fairseq HuBERT and data2vec and
unilm WavLM files, fabricated from the same weights under the original names and configs (neither
fairseq nor unilm is installed), must load to the same state. The presets, built on the meta
device, must have the parameter count of the transformers model of the published config.
"""

import dataclasses
import logging

import pytest
import torch

transformers = pytest.importorskip("transformers")

from xtrans.models.arch import EncoderArch, ModelArch  # noqa: E402
from xtrans.models.config import encoder_defaults  # noqa: E402
from xtrans.models.wav2vec2 import Wav2Vec2Encoder, load_pretrained, presets  # noqa: E402
from xtrans.models.wav2vec2.import_hf import encoder_kwargs_from_hf_config  # noqa: E402
from xtrans.models.wav2vec2.pretrained import ARCHITECTURE_KEYS, CheckpointMismatchError  # noqa: E402
from xtrans.testing.pretrained_fixtures import (  # noqa: E402
    fairseq_model_cfg, hf_to_fairseq_state_dict, random_hf_model, save_fairseq_checkpoint, save_hf_dir,
    save_unilm_checkpoint)

TOL = 1e-4
VARIANTS = [("hubert", "xlsr"), ("hubert", "base"), ("wavlm", "xlsr"), ("wavlm", "base"), ("data2vec-audio", "xlsr")]
"""(family, layout): layer-norm CNN + pre-LN ("xlsr") and group-norm CNN + post-LN ("base") where the family has
both; data2vec-audio has one (layer-norm CNN, post-LN)."""


@pytest.fixture(scope="module", params=VARIANTS, ids=lambda v: "-".join(v))
def hf_model(request):
    family, layout = request.param
    return random_hf_model(layout, seed=20 + VARIANTS.index(request.param), family=family)


def _batch(lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    wav = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wav[i, :n] = 0.3 * torch.randn(n, generator=gen)
    return wav, torch.tensor(lengths)


def _relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def _max_error_to_hf(encoder, model, lengths=(12000, 7000, 4321), seed=1):
    """Largest relative error of the padded batch's valid frames against HF on each utterance alone."""
    wav, lens = _batch(list(lengths), seed)
    with torch.no_grad():
        out, out_lengths = encoder(wav, lens)
        errors = []
        for i, n in enumerate(lengths):
            ref = model(wav[i:i + 1, :n]).last_hidden_state[0]
            assert ref.shape[0] == out_lengths[i] == (n - 400) // 320 + 1
            errors.append(_relative_error(out[i, :out_lengths[i]], ref))
            assert out[i, out_lengths[i]:].abs().max().item() == 0.0 if out_lengths[i] < out.shape[1] else True
    return max(errors)


# --------------------------------------------------------------------------------------------
# Hugging Face directories


def test_hf_parity_on_a_padded_batch(hf_model, tmp_path):
    encoder = load_pretrained(save_hf_dir(hf_model, tmp_path, do_normalize=False))
    cfg = hf_model.config
    assert isinstance(encoder, Wav2Vec2Encoder) and not encoder.training
    n_hf = sum(p.numel() for n, p in hf_model.named_parameters() if n != "masked_spec_embed")
    assert sum(p.numel() for p in encoder.parameters()) == n_hf
    assert (encoder.rel_pos_bias is not None) == (cfg.model_type == "wavlm")
    assert encoder.pos_conv.num_layers == (3 if cfg.model_type == "data2vec-audio" else 1)
    assert _max_error_to_hf(encoder, hf_model) <= TOL


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_hf_attention_mask_path_agrees(family, tmp_path):
    """For a layer-norm CNN, transformers' own padded batch (attention_mask) gives the same frames."""
    model = random_hf_model("xlsr", seed=31, family=family)
    encoder = load_pretrained(save_hf_dir(model, tmp_path, do_normalize=False))
    wav, lens = _batch([11000, 6000, 9500], seed=2)
    mask = (torch.arange(wav.shape[1])[None] < lens[:, None]).long()
    with torch.no_grad():
        out, out_lengths = encoder(wav, lens)
        ref = model(wav, attention_mask=mask).last_hidden_state
    for i in range(3):
        assert _relative_error(out[i, :out_lengths[i]], ref[i, :out_lengths[i]]) <= TOL


def test_data2vec_padding_changes_nothing(tmp_path):
    """The original stack of positional convs reads its own outputs over a batch's padding; ours zeroes the
    padding before every layer, so a padded utterance gives what it gives alone (the reference above)."""
    model = random_hf_model("xlsr", seed=32, family="data2vec-audio")
    encoder = load_pretrained(save_hf_dir(model, tmp_path, do_normalize=False))
    wav, lens = _batch([12000, 5000], seed=3)
    mask = (torch.arange(wav.shape[1])[None] < lens[:, None]).long()
    with torch.no_grad():
        out, n = encoder(wav, lens)
        alone, _ = encoder(wav[1:, :5000])
        padded_hf = model(wav, attention_mask=mask).last_hidden_state
        alone_hf = model(wav[1:, :5000]).last_hidden_state
    assert (out[1, :n[1]] - alone[0]).abs().max().item() <= 1e-5
    assert _relative_error(alone[0], alone_hf[0]) <= TOL
    # transformers' padded path differs from its own single-utterance output: the test can tell
    assert _relative_error(padded_hf[1, :n[1]], alone_hf[0]) > 100 * TOL


@pytest.mark.parametrize("family,model_class", [("hubert", "HubertForCTC"), ("wavlm", "WavLMForCTC"),
                                                ("data2vec-audio", "Data2VecAudioForCTC")])
def test_hf_task_wrappers(family, model_class, tmp_path, caplog):
    """``hubert.`` / ``wavlm.`` / ``data2vec_audio.`` prefixes; the CTC head dropped with an INFO log only."""
    wrapper = random_hf_model("xlsr", seed=33, model_class=model_class, family=family)
    with caplog.at_level(logging.INFO):
        encoder = load_pretrained(save_hf_dir(wrapper, tmp_path, do_normalize=False))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "lm_head.weight" in caplog.text
    base = getattr(wrapper, {"hubert": "hubert", "wavlm": "wavlm", "data2vec-audio": "data2vec_audio"}[family])
    assert _max_error_to_hf(encoder, base, lengths=(7000,)) <= TOL


def test_hubert_without_feature_projection_norm(tmp_path):
    model = random_hf_model("base", seed=34, family="hubert", feat_proj_layer_norm=False)
    encoder = load_pretrained(save_hf_dir(model, tmp_path, do_normalize=False))
    assert encoder.feature_projection.layer_norm is None and encoder.arch.feat_proj_layer_norm is False
    assert _max_error_to_hf(encoder, model, lengths=(9000, 4000)) <= TOL


def test_wavlm_weights_are_named_and_shared(tmp_path):
    model = random_hf_model("xlsr", seed=35, family="wavlm")
    encoder = load_pretrained(save_hf_dir(model, tmp_path))
    own = encoder.state_dict()
    assert torch.equal(own["rel_pos_bias.embedding.weight"],
                       model.state_dict()["encoder.layers.0.attention.rel_attn_embed.weight"])
    assert "layers.1.attention.gru_rel_pos_const" in own and not any("rel_attn" in k for k in own)
    arch = encoder.arch
    assert (arch.rel_pos_buckets, arch.rel_pos_max_distance, arch.rel_pos_gated) == (32, 64, True)


# --------------------------------------------------------------------------------------------
# fairseq HuBERT / data2vec and unilm WavLM files


def _fairseq_file(model, path, **kwargs):
    state = hf_to_fairseq_state_dict(model.state_dict(), model.config)
    kwargs.setdefault("normalize", False)
    return save_fairseq_checkpoint(path, state, fairseq_model_cfg(model.config), **kwargs)


def _same_state(a: Wav2Vec2Encoder, b: Wav2Vec2Encoder) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for name, value in sa.items():
        assert torch.equal(value, sb[name]), name
    assert a.arch == b.arch


@pytest.mark.parametrize("family,layout", [("hubert", "xlsr"), ("hubert", "base"), ("data2vec-audio", "xlsr")])
@pytest.mark.parametrize("style", ["dict", "namespace"])
@pytest.mark.parametrize("fine_tuned", [False, True], ids=["pretrained", "finetuned"])
def test_fairseq_files_load_the_hf_state(family, layout, style, fine_tuned, tmp_path, caplog):
    model = random_hf_model(layout, seed=40, family=family)
    path = _fairseq_file(model, tmp_path / "ckpt.pt", style=style, fine_tuned=fine_tuned)
    with caplog.at_level(logging.INFO):
        encoder = load_pretrained(path)
    # label_embs_concat / final_proj / _ema / mask_emb dropped quietly
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "_ema" not in caplog.text and "label_embs" not in caplog.text
    _same_state(encoder, load_pretrained(save_hf_dir(model, tmp_path / "hf", do_normalize=False)))
    assert _max_error_to_hf(encoder, model, lengths=(8000, 5000)) <= TOL


def test_fairseq_data2vec_reads_the_stack_from_pos_conv_depth(tmp_path):
    model = random_hf_model("xlsr", seed=41, family="data2vec-audio")
    cfg = fairseq_model_cfg(model.config)
    assert (cfg["conv_pos"], cfg["pos_conv_depth"]) == (15, 3)  # kernel 15 // 3 = 5 per layer, as fairseq builds it
    encoder = load_pretrained(_fairseq_file(model, tmp_path / "d.pt", normalize=True))
    arch = encoder.arch
    assert (arch.pos_conv_kernel, arch.pos_conv_layers, arch.pos_conv_norm) == (5, 3, "layer")
    assert arch.layer_norm_first is False and encoder.waveform_norm == "utterance"


@pytest.mark.parametrize("layout", ["xlsr", "base"])
def test_unilm_wavlm_file_loads_the_hf_state(layout, tmp_path, caplog):
    model = random_hf_model(layout, seed=42, family="wavlm")
    path = save_unilm_checkpoint(tmp_path / "WavLM-Tiny.pt", model, normalize=layout == "xlsr")
    with caplog.at_level(logging.INFO):
        encoder = load_pretrained(path)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert encoder.waveform_norm == ("utterance" if layout == "xlsr" else "none")
    reference = load_pretrained(save_hf_dir(model, tmp_path / "hf", do_normalize=layout == "xlsr"))
    _same_state(encoder, reference)
    assert _max_error_to_hf(load_pretrained(path, waveform_norm="none"), model, lengths=(9000, 3000)) <= TOL


def test_unilm_wavlm_missing_gate_weights_are_named(tmp_path):
    model = random_hf_model("xlsr", seed=43, family="wavlm")
    state = hf_to_fairseq_state_dict(model.state_dict(), model.config)
    del state["encoder.layers.1.self_attn.grep_a"]
    from xtrans.testing.pretrained_fixtures import unilm_wavlm_cfg
    torch.save({"cfg": unilm_wavlm_cfg(model.config, False), "model": state}, tmp_path / "w.pt")
    with pytest.raises(CheckpointMismatchError, match=r"missing weights \['layers\.1\.attention\.gru_rel_pos_const'\]"):
        load_pretrained(tmp_path / "w.pt")


# --------------------------------------------------------------------------------------------
# refused configurations


@pytest.mark.parametrize("config,match", [
    (dict(model_type="sew"), r"model_type 'sew' is not supported; expected one of \['wav2vec2', 'hubert'"),
    (dict(model_type="hubert", conv_pos_batch_norm=True), "conv_pos_batch_norm=true is not supported"),
    (dict(model_type="wavlm", hidden_act="relu"), "hidden_act='relu' is not supported"),
])
def test_unsupported_hf_configs_are_refused(config, match):
    with pytest.raises(ValueError, match=match):
        encoder_kwargs_from_hf_config(config)


def test_unsupported_fairseq_and_unilm_configs_are_refused(tmp_path):
    model = random_hf_model("xlsr", seed=44, family="hubert")
    state = hf_to_fairseq_state_dict(model.state_dict(), model.config)
    cfg = dict(fairseq_model_cfg(model.config), _name="data2vec_multi")
    with pytest.raises(ValueError, match="fairseq model 'data2vec_multi' is not supported"):
        load_pretrained(save_fairseq_checkpoint(tmp_path / "a.pt", state, cfg, normalize=False))
    cfg = dict(fairseq_model_cfg(model.config), layer_type="conformer")
    with pytest.raises(ValueError, match="layer_type='conformer' is not supported"):
        load_pretrained(save_fairseq_checkpoint(tmp_path / "b.pt", state, cfg, normalize=False))
    torch.save({"cfg": {"relative_position_embedding": False, "gru_rel_pos": True}, "model": {}}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="gru_rel_pos=True without relative_position_embedding"):
        load_pretrained(tmp_path / "c.pt")


@pytest.mark.parametrize("kwargs,match", [
    (dict(pos_conv_layers=3), r"pos_conv_layers: expected 1 for pos_conv_norm='weight'.*found 3"),
    (dict(pos_conv_norm="batch"), r"pos_conv_norm: expected one of \('weight', 'layer'\), found 'batch'"),
    (dict(rel_pos_gated=True), "rel_pos_gated: expected False without a relative position bias"),
    (dict(rel_pos_buckets=-1), "rel_pos_buckets: expected >= 0"),
    (dict(rel_pos_buckets=2), "rel_pos_buckets: expected at least 4 buckets, found 2"),
    (dict(rel_pos_buckets=32, rel_pos_max_distance=8), r"rel_pos_max_distance: expected more than .* = 8, found 8"),
])
def test_bad_family_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        presets.tiny(**kwargs)


def test_family_options_are_fixed_by_the_checkpoint(tmp_path):
    path = save_hf_dir(random_hf_model("xlsr", seed=45, family="wavlm"), tmp_path / "wavlm")
    with pytest.raises(ValueError, match="rel_pos_buckets=0 changes the architecture"):
        load_pretrained(path, rel_pos_buckets=0)
    path = save_hf_dir(random_hf_model("xlsr", seed=45, family="wav2vec2"), tmp_path / "w2v")
    with pytest.raises(ValueError, match=r"pos_conv_layers=5 changes the architecture .*\(pos_conv_layers=1\)"):
        load_pretrained(path, pos_conv_layers=5)
    assert load_pretrained(path, rel_pos_buckets=0, pos_conv="chunk").pos_conv_mode == "chunk"  # the default: fine


# --------------------------------------------------------------------------------------------
# the architecture: old checkpoints read as wav2vec 2.0


def test_an_arch_without_the_family_options_reads_as_wav2vec2():
    encoder = presets.tiny(num_layers=1)
    plain = {k: v for k, v in encoder.arch.to_dict().items()
             if k not in ("feat_proj_layer_norm", "pos_conv_layers", "pos_conv_norm", "rel_pos_buckets",
                          "rel_pos_max_distance", "rel_pos_gated")}
    model = dict(encoder=plain, predictor={"kind": "stateless", "embed_dim": 8, "context_size": 2},
                 vocab_size=5, joiner_dim=8)
    arch = ModelArch.from_dict(model).encoder
    assert arch == encoder.arch and arch.rel_pos_buckets == 0 and arch.pos_conv_layers == 1
    wavlm = presets.tiny(num_layers=1, rel_pos_buckets=16, rel_pos_max_distance=40, rel_pos_gated=True)
    again = ModelArch.from_dict(dict(model, encoder=wavlm.arch.to_dict())).encoder
    assert again == wavlm.arch
    rebuilt = Wav2Vec2Encoder(**again.kwargs())
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in wavlm.state_dict().items()}
    assert dataclasses.fields(EncoderArch)[-1].name == "rel_pos_gated"


# --------------------------------------------------------------------------------------------
# presets: the parameter count of the published checkpoints' transformers models

_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
_CNN = dict(conv_dim=[512] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2])
_XLSR = dict(_CNN, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
             num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16)
PUBLISHED = {  # preset: (config class, the shapes of the checkpoint's config.json)
    "xls_r_300m": ("Wav2Vec2Config", dict(_XLSR, **_LARGE)),  # facebook/wav2vec2-xls-r-300m
    "xls_r_1b": ("Wav2Vec2Config", dict(_XLSR, hidden_size=1280, num_hidden_layers=48, num_attention_heads=16,
                                        intermediate_size=5120)),  # facebook/wav2vec2-xls-r-1b
    "xls_r_2b": ("Wav2Vec2Config", dict(_XLSR, hidden_size=1920, num_hidden_layers=48, num_attention_heads=16,
                                        intermediate_size=7680)),  # facebook/wav2vec2-xls-r-2b
    "mms_1b": ("Wav2Vec2Config", dict(_XLSR, hidden_size=1280, num_hidden_layers=48, num_attention_heads=16,
                                      intermediate_size=5120)),  # facebook/mms-1b
    "hubert_large": ("HubertConfig", dict(_XLSR, feat_proj_layer_norm=True, **_LARGE)),  # facebook/hubert-large-ll60k
    "wavlm_base_plus": ("WavLMConfig", dict(_CNN, feat_extract_norm="group", do_stable_layer_norm=False,
                                            conv_bias=False, num_conv_pos_embeddings=128,
                                            num_conv_pos_embedding_groups=16, num_buckets=320,
                                            max_bucket_distance=800, **_BASE)),  # microsoft/wavlm-base-plus
    "wavlm_large": ("WavLMConfig", dict(_XLSR, conv_bias=False, num_buckets=320, max_bucket_distance=800,
                                        **_LARGE)),  # microsoft/wavlm-large
    "data2vec_audio_large": ("Data2VecAudioConfig", dict(_CNN, conv_bias=False, conv_pos_kernel_size=19,
                                                         num_conv_pos_embeddings=5, num_conv_pos_embedding_groups=16,
                                                         **_LARGE)),  # facebook/data2vec-audio-large
}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if n != "masked_spec_embed")


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_preset_has_the_published_parameter_count(name):
    config_class, shapes = PUBLISHED[name]
    config = getattr(transformers, config_class)(**shapes)
    with torch.device("meta"):
        ours = getattr(presets, name)()
        theirs = getattr(transformers, config_class.replace("Config", "Model"))(config)
    assert next(ours.parameters()).is_meta
    assert _count(ours) == _count(theirs)
    # and the preset is what load_pretrained makes of that config.json
    imported = {**encoder_defaults(), **encoder_kwargs_from_hf_config(config.to_dict())}
    preset = {**encoder_defaults(), **presets.preset_kwargs(name)}
    for key in (*ARCHITECTURE_KEYS, "num_layers"):
        assert imported[key] == preset[key], key


def test_presets_are_exported_and_named():
    from xtrans.models import wav2vec2

    for name in ("xls_r_300m", "xls_r_1b", "xls_r_2b", "mms_1b", "hubert_large", "wavlm_base_plus", "wavlm_large",
                 "data2vec_audio_large"):
        assert getattr(wav2vec2, name) is getattr(presets, name) and name in presets.PRESETS
    assert presets.xls_r_1b_kwargs() == presets.mms_1b_kwargs()
    assert presets.wavlm_large_kwargs()["extractor_mode"] == "layer_norm"  # streamable front end
