"""fairseq checkpoint import, the restricted unpickler, and load_pretrained's errors and overrides.

fairseq checkpoints are fabricated offline (``xtrans.testing.pretrained_fixtures``) from the
weights of a random Hugging Face model, in the layouts fairseq writes: ``cfg`` as a dict,
``args`` as an ``argparse.Namespace``, ``cfg`` as a pickled omegaconf ``DictConfig`` (neither
fairseq nor omegaconf is installed), pretrained or fine-tuned. Each must give the output of the
HF model. Hostile pickles must be refused without running their payload.
"""

import logging
import sys

import pytest
import torch

pytest.importorskip("transformers")

from xtrans.masks import StreamingConfig  # noqa: E402
from xtrans.models.wav2vec2 import StreamingNotSupportedError, load_pretrained  # noqa: E402
from xtrans.models.wav2vec2.pretrained import (  # noqa: E402
    CheckpointMismatchError, parse_conv_feature_layers)
from xtrans.models.wav2vec2.safe_pickle import (  # noqa: E402
    UnsafeCheckpointError, load_checkpoint, to_plain)
from xtrans.testing.pretrained_fixtures import (  # noqa: E402
    fairseq_model_cfg, fake_omegaconf, hf_to_fairseq_state_dict, random_hf_model, save_fairseq_checkpoint,
    save_hf_dir, save_malicious_checkpoint)

TOL = 1e-4


@pytest.fixture(scope="module", params=["xlsr", "base"])
def hf_model(request):
    return random_hf_model(request.param, seed=10 + (request.param == "base"))


@pytest.fixture(scope="module")
def xlsr_model():
    return random_hf_model("xlsr", seed=12)


def _fairseq_file(model, path, **kwargs):
    state = hf_to_fairseq_state_dict(model.state_dict(), model.config)
    kwargs.setdefault("normalize", False)
    return save_fairseq_checkpoint(path, state, fairseq_model_cfg(model.config), **kwargs)


def _max_diff_to_hf(encoder, model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    wav = 0.3 * torch.randn(2, 7000, generator=gen)
    with torch.no_grad():
        ours, _ = encoder(wav)
        ref = model(wav).last_hidden_state
    return (ours - ref).abs().max().item()


# --------------------------------------------------------------------------------------------
# fairseq layouts


@pytest.mark.parametrize("style", ["dict", "namespace", "dictconfig"])
@pytest.mark.parametrize("fine_tuned", [False, True], ids=["pretrained", "finetuned"])
def test_fairseq_checkpoint_matches_hf(hf_model, tmp_path, style, fine_tuned, caplog):
    path = _fairseq_file(hf_model, tmp_path / "ckpt.pt", style=style, fine_tuned=fine_tuned)
    with caplog.at_level(logging.INFO):
        encoder = load_pretrained(path)
    # quantizer / project_q / final_proj / mask_emb dropped quietly; only the CTC head is mentioned
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert ("w2v_encoder.proj.weight" in caplog.text) == fine_tuned
    assert "quantizer" not in caplog.text
    cfg = hf_model.config
    mode = "layer_norm" if cfg.feat_extract_norm == "layer" else "group_norm"
    assert encoder.feature_extractor.mode == mode
    assert encoder.layer_norm_first == cfg.do_stable_layer_norm
    assert encoder.waveform_norm == "none"
    assert _max_diff_to_hf(encoder, hf_model) <= TOL

    hf_dir = save_hf_dir(hf_model, tmp_path / "hf", do_normalize=False)
    same = load_pretrained(hf_dir).state_dict()
    for name, value in encoder.state_dict().items():
        assert torch.equal(value, same[name]), name


@pytest.mark.parametrize("style", ["dict", "namespace", "dictconfig"])
def test_fairseq_normalize_flag(xlsr_model, tmp_path, style):
    encoder = load_pretrained(_fairseq_file(xlsr_model, tmp_path / "n.pt", style=style, normalize=True))
    assert encoder.waveform_norm == "utterance"


def test_fairseq_legacy_serialization(xlsr_model, tmp_path):
    path = _fairseq_file(xlsr_model, tmp_path / "legacy.pt", style="namespace", legacy_format=True)
    assert _max_diff_to_hf(load_pretrained(path), xlsr_model) <= TOL


def test_dictconfig_checkpoint_without_omegaconf(xlsr_model, tmp_path):
    """The pickled DictConfig really names omegaconf classes, and loads with omegaconf absent."""
    path = _fairseq_file(xlsr_model, tmp_path / "oc.pt", style="dictconfig", fine_tuned=True)
    assert "omegaconf" not in sys.modules
    with pytest.raises(Exception, match="omegaconf|Unsupported global"):
        torch.load(path, weights_only=True)
    ckpt = load_checkpoint(str(path))
    cfg = to_plain(ckpt["cfg"])
    assert cfg["model"]["_name"] == "wav2vec_ctc"
    assert cfg["model"]["normalize"] is False  # "${task.normalize}" resolved
    assert cfg["model"]["w2v_args"]["model"]["extractor_mode"] == "layer_norm"  # an enum member
    assert cfg["optimization"]["lr"] == [0.005]  # a ListConfig
    assert "omegaconf" not in sys.modules


def test_fairseq_without_post_extract_proj(tmp_path):
    """fairseq has no post_extract_proj when the CNN's channels equal the model dimension."""
    model = random_hf_model("xlsr", seed=13, hidden_size=32, num_attention_heads=4, intermediate_size=64)
    with torch.no_grad():
        model.feature_projection.projection.weight.copy_(torch.eye(32))
        model.feature_projection.projection.bias.zero_()
    state = hf_to_fairseq_state_dict(model.state_dict(), model.config)
    del state["post_extract_proj.weight"], state["post_extract_proj.bias"]
    path = save_fairseq_checkpoint(tmp_path / "p.pt", state, fairseq_model_cfg(model.config), normalize=False)
    assert _max_diff_to_hf(load_pretrained(path), model) <= TOL


def test_fairseq_missing_weights_are_named(xlsr_model, tmp_path):
    state = hf_to_fairseq_state_dict(xlsr_model.state_dict(), xlsr_model.config)
    del state["encoder.layers.1.fc2.weight"], state["encoder.pos_conv.0.weight_g"]
    cfg = fairseq_model_cfg(xlsr_model.config)
    path = save_fairseq_checkpoint(tmp_path / "m.pt", state, cfg, normalize=False)
    expected = (r"missing weights .*layers\.1\.feed_forward\.output_dense\.weight"
                r".*pos_conv\.conv\.parametrizations")
    with pytest.raises(CheckpointMismatchError, match=expected) as info:
        load_pretrained(path)
    assert info.value.missing == ["layers.1.feed_forward.output_dense.weight",
                                  "pos_conv.conv.parametrizations.weight.original0"]


def test_fairseq_unexpected_weights(xlsr_model, tmp_path, caplog):
    state = hf_to_fairseq_state_dict(xlsr_model.state_dict(), xlsr_model.config)
    state["encoder.layers.0.self_attn.rel_pos_bias.weight"] = torch.zeros(3)
    cfg = fairseq_model_cfg(xlsr_model.config)
    path = save_fairseq_checkpoint(tmp_path / "u.pt", state, cfg, normalize=False)
    with pytest.raises(CheckpointMismatchError, match=r"unexpected weights .*rel_pos_bias"):
        load_pretrained(path)
    with caplog.at_level(logging.WARNING):
        encoder = load_pretrained(path, strict=False)
    assert "rel_pos_bias" in caplog.text
    assert _max_diff_to_hf(encoder, xlsr_model) <= TOL


def test_fairseq_unsupported_architecture(xlsr_model, tmp_path):
    state = hf_to_fairseq_state_dict(xlsr_model.state_dict(), xlsr_model.config)
    cfg = dict(fairseq_model_cfg(xlsr_model.config), activation_fn="relu")
    path = save_fairseq_checkpoint(tmp_path / "a.pt", state, cfg, normalize=False)
    with pytest.raises(ValueError, match="activation_fn='relu'"):
        load_pretrained(path)


def test_not_a_fairseq_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="no fairseq checkpoint"):
        load_pretrained(tmp_path / "x.pt")
    (tmp_path / "y.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        load_pretrained(tmp_path / "y.pt")


# --------------------------------------------------------------------------------------------
# hostile pickles


@pytest.mark.parametrize("kind,container,refused", [
    ("os.system", "zip", "posix.system"),
    ("eval", "zip", "builtins.eval"),
    ("subprocess", "zip", "subprocess.call"),
    ("os.system", "legacy", "posix.system"),
    ("os.system", "pickle", "posix.system"),
])
def test_malicious_pickle_is_refused(tmp_path, kind, container, refused):
    marker = tmp_path / "pwned"
    path = save_malicious_checkpoint(tmp_path / "evil.pt", marker, kind=kind, container=container)
    expected = rf"refusing to unpickle '{refused}' in .*evil\.pt"
    with pytest.raises(UnsafeCheckpointError, match=expected) as info:
        load_pretrained(path)
    assert info.value.global_name == refused and info.value.path == str(path)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(str(path))
    assert not marker.exists()


def test_malicious_fixture_really_runs_code(tmp_path):
    """The refusal above is meaningful: unrestricted unpickling of the same file runs the payload."""
    marker = tmp_path / "pwned"
    path = save_malicious_checkpoint(tmp_path / "evil.pt", marker, kind="eval")
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_allowlist_refuses_dangerous_globals():
    from xtrans.models.wav2vec2.safe_pickle import resolve_global

    for module, name in [("builtins", "getattr"), ("builtins", "__import__"), ("importlib", "import_module"),
                         ("torch", "load"), ("torch.storage", "_load_from_bytes"), ("numpy", "load"),
                         ("collections", "OrderedDict.fromkeys"), ("torch", "Tensor.__subclasses__")]:
        with pytest.raises(UnsafeCheckpointError, match=f"'{module}.{name}'"):
            resolve_global(module, name)


# --------------------------------------------------------------------------------------------
# conv_feature_layers parsing


def test_parse_conv_feature_layers():
    xlsr = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
    assert parse_conv_feature_layers("[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2") == xlsr
    assert parse_conv_feature_layers("[(64, 10, 5), (64, 3, 2)]") == ((64, 10, 5), (64, 3, 2))


@pytest.mark.parametrize("spec", ["__import__('os').system('true')", "[(512, 10, 5)] * 10 ** 9",
                                  "[(a, 10, 5)]", "[(512, 10)]", "[]", "[(512, 10, 5)] +", "open('x')"])
def test_parse_conv_feature_layers_refuses(spec):
    with pytest.raises(ValueError, match="conv_feature_layers"):
        parse_conv_feature_layers(spec)


# --------------------------------------------------------------------------------------------
# paths, overrides


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(tmp_path / "nowhere.pt")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(tmp_path)


def test_hub_name_offline(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("outgoing traffic has been disabled")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match="facebook/wav2vec2-large-xlsr-53.*hub.*offline"):
        load_pretrained("facebook/wav2vec2-large-xlsr-53")


def test_hf_unexpected_weight_is_an_error(xlsr_model, tmp_path):
    path = save_hf_dir(xlsr_model, tmp_path, weights="bin")
    state = torch.load(path / "pytorch_model.bin", weights_only=True)
    state["encoder.pos_conv_embed.batch_norm.weight"] = torch.ones(64)
    torch.save(state, path / "pytorch_model.bin")
    with pytest.raises(CheckpointMismatchError, match="unexpected weights.*batch_norm"):
        load_pretrained(path)


def test_overrides_apply_on_top(xlsr_model, tmp_path):
    path = save_hf_dir(xlsr_model, tmp_path, do_normalize=True)
    encoder = load_pretrained(path, pos_conv="chunk", waveform_norm="cumulative", layer_drop=0.1,
                              dropout=0.05)
    assert encoder.pos_conv_mode == "chunk" and encoder.waveform_norm == "cumulative"
    assert encoder.layer_drop == 0.1 and encoder.dropout.p == 0.05
    out, lengths = encoder(torch.randn(1, 8000), streaming=StreamingConfig(chunk_size=4, left_context=8))
    assert out.shape == (1, 24, 64) and lengths.tolist() == [24]

    first = load_pretrained(path, num_layers=1)
    assert len(first.layers) == 1
    assert torch.equal(first.layers[0].feed_forward.output_dense.weight,
                       encoder.layers[0].feed_forward.output_dense.weight)


def test_bad_overrides(xlsr_model, tmp_path):
    path = save_hf_dir(xlsr_model, tmp_path)
    with pytest.raises(ValueError, match="'pos_conv_mode' is no encoder option"):
        load_pretrained(path, pos_conv_mode="chunk")
    with pytest.raises(ValueError, match="embed_dim=128 changes the architecture"):
        load_pretrained(path, embed_dim=128)
    with pytest.raises(ValueError, match=r"num_layers=3 must be in \[1, 2\]"):
        load_pretrained(path, num_layers=3)


def test_group_norm_checkpoint_refuses_streaming(tmp_path):
    model = random_hf_model("base", seed=14)
    encoder = load_pretrained(save_hf_dir(model, tmp_path), pos_conv="chunk")
    with pytest.raises(StreamingNotSupportedError, match="group_norm"):
        encoder(torch.randn(1, 8000), streaming=StreamingConfig(chunk_size=4))


def test_fake_omegaconf_does_not_leak():
    with fake_omegaconf():
        assert "omegaconf.dictconfig" in sys.modules
    assert "omegaconf" not in sys.modules and "fairseq" not in sys.modules
