"""The encoder loaded from a Hugging Face directory computes what ``transformers.Wav2Vec2Model`` computes.

Random tiny models of both layouts (XLSR: layer-norm CNN with bias, pre-LN; base: group-norm CNN
without bias, post-LN), every weight perturbed, offline. With ``pos_conv="full"`` and no
streaming the last hidden states must agree within 1e-4, for single utterances and for padded
batches (each utterance's valid frames against HF run on that utterance alone, and against HF's
own ``attention_mask`` path for the layer-norm model).
"""

import pytest
import torch

pytest.importorskip("transformers")

from xtrans.models.wav2vec2 import Wav2Vec2Encoder, load_pretrained  # noqa: E402
from xtrans.testing.pretrained_fixtures import random_hf_model, save_hf_dir  # noqa: E402

TOL = 1e-4
LAYOUTS = ["xlsr", "base"]


@pytest.fixture(scope="module", params=LAYOUTS)
def hf_model(request):
    return random_hf_model(request.param, seed=LAYOUTS.index(request.param))


def _waveforms(lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    wav = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wav[i, :n] = 0.3 * torch.randn(n, generator=gen)
    return wav, torch.tensor(lengths)


def _hf(model, wav, attention_mask=None):
    with torch.no_grad():
        return model(wav, attention_mask=attention_mask).last_hidden_state


def _ours(encoder, wav, lengths=None):
    with torch.no_grad():
        return encoder(wav, lengths)


def test_loaded_architecture(hf_model, tmp_path):
    encoder = load_pretrained(save_hf_dir(hf_model, tmp_path, do_normalize=False))
    cfg = hf_model.config
    assert isinstance(encoder, Wav2Vec2Encoder) and not encoder.training
    mode = "layer_norm" if cfg.feat_extract_norm == "layer" else "group_norm"
    assert encoder.feature_extractor.mode == mode
    assert encoder.layer_norm_first == cfg.do_stable_layer_norm
    assert len(encoder.layers) == cfg.num_hidden_layers and encoder.embed_dim == cfg.hidden_size
    assert encoder.pos_conv_mode == "full" and encoder.waveform_norm == "none"
    n_hf = sum(p.numel() for n, p in hf_model.named_parameters() if n != "masked_spec_embed")
    assert sum(p.numel() for p in encoder.parameters()) == n_hf


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_single_utterance_parity(hf_model, tmp_path, weights):
    encoder = load_pretrained(save_hf_dir(hf_model, tmp_path, weights=weights, do_normalize=False))
    wav, _ = _waveforms([9000])
    ref = _hf(hf_model, wav)
    out, out_lengths = _ours(encoder, wav)
    assert out.shape == ref.shape == (1, 27, hf_model.config.hidden_size)
    assert out_lengths.tolist() == [27]
    assert (out - ref).abs().max().item() <= TOL


def test_padded_batch_parity(hf_model, tmp_path):
    encoder = load_pretrained(save_hf_dir(hf_model, tmp_path, do_normalize=False))
    lengths = [12000, 7000, 4321]
    wav, lens = _waveforms(lengths, seed=1)
    out, out_lengths = _ours(encoder, wav, lens)
    assert out_lengths.tolist() == [(n - 400) // 320 + 1 for n in lengths]
    for i, n in enumerate(lengths):
        ref = _hf(hf_model, wav[i:i + 1, :n])[0]
        assert ref.shape[0] == out_lengths[i]
        assert (out[i, :out_lengths[i]] - ref).abs().max().item() <= TOL
        assert out[i, out_lengths[i]:].abs().max().item() == 0.0 if out_lengths[i] < out.shape[1] else True
    if hf_model.config.feat_extract_norm == "layer":  # HF's own padding path (per-frame CNN norm)
        mask = (torch.arange(wav.shape[1])[None] < lens[:, None]).long()
        ref = _hf(hf_model, wav, attention_mask=mask)
        for i in range(len(lengths)):
            assert (out[i, :out_lengths[i]] - ref[i, :out_lengths[i]]).abs().max().item() <= TOL


def test_utterance_normalisation_matches_hf_feature_extractor(hf_model, tmp_path):
    from transformers import Wav2Vec2FeatureExtractor

    encoder = load_pretrained(save_hf_dir(hf_model, tmp_path, do_normalize=True))
    assert encoder.waveform_norm == "utterance"
    lengths = [8000, 5000]
    wav, lens = _waveforms(lengths, seed=2)
    wav = 3.0 * wav + 0.5 * (wav != 0)  # non-zero mean, non-unit variance
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                  return_attention_mask=True)
    out, out_lengths = _ours(encoder, wav, lens)
    for i, n in enumerate(lengths):
        inputs = fe(wav[i, :n].numpy(), sampling_rate=16000, return_tensors="pt")
        ref = _hf(hf_model, inputs.input_values)[0]
        assert (out[i, :out_lengths[i]] - ref).abs().max().item() <= TOL


def test_default_waveform_norm_without_preprocessor_config(hf_model, tmp_path):
    encoder = load_pretrained(save_hf_dir(hf_model, tmp_path))
    expected = "utterance" if hf_model.config.feat_extract_norm == "layer" else "none"
    assert encoder.waveform_norm == expected


@pytest.mark.parametrize("model_class", ["Wav2Vec2ForCTC", "Wav2Vec2ForPreTraining"])
def test_prefixed_checkpoints(tmp_path, model_class, caplog):
    """``wav2vec2.``-prefixed keys; CTC head / pretraining weights dropped, nothing warned."""
    wrapper = random_hf_model("xlsr", seed=3, model_class=model_class)
    encoder = load_pretrained(save_hf_dir(wrapper, tmp_path, do_normalize=False))
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    wav, _ = _waveforms([6400], seed=3)
    ref = _hf(wrapper.wav2vec2, wav)
    assert (_ours(encoder, wav)[0] - ref).abs().max().item() <= TOL


def test_old_weight_norm_names_and_weights_file_path(tmp_path):
    """Older HF files store the positional conv as ``weight_g``/``weight_v``; a path to the
    weights file (config.json beside it) works like the directory."""
    model = random_hf_model("base", seed=4)
    model.config.save_pretrained(tmp_path)
    state = {k.replace("parametrizations.weight.original0", "weight_g")
              .replace("parametrizations.weight.original1", "weight_v"): v
             for k, v in model.state_dict().items()}
    assert "encoder.pos_conv_embed.conv.weight_g" in state
    torch.save(state, tmp_path / "pytorch_model.bin")
    encoder = load_pretrained(tmp_path / "pytorch_model.bin")
    wav, _ = _waveforms([7000], seed=4)
    assert (_ours(encoder, wav)[0] - _hf(model, wav)).abs().max().item() <= TOL


def test_layer_norm_eps_from_config(tmp_path):
    model = random_hf_model("xlsr", seed=5, layer_norm_eps=1e-3)
    encoder = load_pretrained(save_hf_dir(model, tmp_path, do_normalize=False))
    assert encoder.layers[0].layer_norm.eps == 1e-3 and encoder.layer_norm.eps == 1e-3
    assert encoder.feature_extractor.conv_layers[0].norm.eps == 1e-5  # HF's CNN norms keep the default
    wav, _ = _waveforms([6000], seed=5)
    assert (_ours(encoder, wav)[0] - _hf(model, wav)).abs().max().item() <= TOL
