"""The LibriSpeech recipe's encoder variants (conf/variants/*.yaml): WavLM large and MMS 1B.

A variant is a file of dotted-key overrides applied to every training stage's conf
(``run.sh --conf_variant NAME`` passes it to ``xtrans.bin.import_encoder`` and ``xtrans.bin.train``
as ``--variant``). Every stage conf must load with it, keep its streaming settings, and describe
exactly the encoder that ``load_pretrained`` makes of the published checkpoint's config.json
with the conf's options, so that stage 4's import initialises stage 1.
"""

from pathlib import Path

import pytest

from xtrans.config import ConfigError, load_config, load_overrides
from xtrans.models.arch import encoder_arch
from xtrans.models.config import resolve_arch
from xtrans.models.wav2vec2.import_hf import encoder_kwargs_from_hf_config
from xtrans.models.wav2vec2.pretrained import _apply_overrides
from xtrans.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs" / "librispeech" / "asr1"
STAGES = ["1", "2a", "2b", "2c", "2d", "3a", "3b", "3c", "4", "5a", "5b"]

_CNN = dict(conv_dim=[512] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
            feat_extract_norm="layer", do_stable_layer_norm=True, num_conv_pos_embeddings=128,
            num_conv_pos_embedding_groups=16, layer_norm_eps=1e-5)
PUBLISHED = {  # the variant: the shapes of its checkpoint's config.json
    "wavlm_large": dict(_CNN, model_type="wavlm", conv_bias=False, hidden_size=1024, num_hidden_layers=24,
                        num_attention_heads=16, intermediate_size=4096, num_buckets=320,
                        max_bucket_distance=800),  # microsoft/wavlm-large
    "mms_1b": dict(_CNN, model_type="wav2vec2", conv_bias=True, hidden_size=1280, num_hidden_layers=48,
                   num_attention_heads=16, intermediate_size=5120),  # facebook/mms-1b
}


def test_the_recipe_has_the_documented_variants():
    assert sorted(p.stem for p in (RECIPE / "conf" / "variants").glob("*.yaml")) == sorted(PUBLISHED)
    run_sh = (RECIPE / "run.sh").read_text()
    for name in PUBLISHED:
        assert f"--conf_variant {name}" in run_sh


@pytest.mark.parametrize("name", list(PUBLISHED))
@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_builds_the_published_encoder(name, stage):
    variant = load_overrides(RECIPE / "conf" / "variants" / f"{name}.yaml")
    base = load_config(RECIPE / "conf" / f"train_stage{stage}.yaml", TrainConfig)
    cfg = load_config(RECIPE / "conf" / f"train_stage{stage}.yaml", TrainConfig, overrides=variant)
    enc = cfg.model.encoder
    assert enc.preset == name
    # only the encoder and the batch change: the stage's mask, streaming settings and schedule stay
    assert cfg.mask == base.mask and cfg.optim == base.optim and cfg.training == base.training
    assert (enc.pos_conv, enc.waveform_norm) == (base.model.encoder.pos_conv, "cumulative")
    assert cfg.data.max_seconds < base.data.max_seconds
    arch = resolve_arch(cfg.model, vocab_size=500).encoder
    # what stage 4 imports: the published checkpoint with the conf's options
    imported = encoder_arch(_apply_overrides(encoder_kwargs_from_hf_config(PUBLISHED[name]),
                                             enc.overrides()))
    assert arch == imported
    assert arch.extractor_mode == "layer_norm"  # a streamable front end


def test_load_overrides_refuses_what_is_not_a_flat_mapping(tmp_path):
    nested = tmp_path / "nested.yaml"
    nested.write_text("model:\n  encoder:\n    preset: wavlm_large\n")
    with pytest.raises(ConfigError, match=r"nested\.yaml: key 'model': expected a dotted key"):
        load_overrides(nested)
    listed = tmp_path / "list.yaml"
    listed.write_text("- model.encoder.preset: wavlm_large\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: key '<root>': expected a mapping of dotted keys"):
        load_overrides(listed)
    unknown = tmp_path / "typo.yaml"
    unknown.write_text("model.encoder.prest: wavlm_large\n")
    with pytest.raises(ConfigError, match="prest"):
        load_config(RECIPE / "conf" / "train_stage1.yaml", TrainConfig, overrides=load_overrides(unknown))


def test_import_encoder_applies_a_variant(tmp_path, capsys):
    import torch

    from xtrans.bin.import_encoder import main

    variant = tmp_path / "small.yaml"
    variant.write_text("model.encoder.num_layers: 1\nmodel.encoder.embed_dim: 64\n")
    conf = ROOT / "egs" / "mini_synth" / "asr1" / "conf" / "train_stage1.yaml"
    out = tmp_path / "encoder.pt"
    assert main(["--config", str(conf), "--variant", str(variant), "--out", str(out)]) == 0
    arch = torch.load(out, weights_only=True)["arch"]
    assert (arch["num_layers"], arch["embed_dim"]) == (1, 64)
    assert main(["--variant", str(variant), "--out", str(out)]) == 2
    assert "--variant: expected together with --config" in capsys.readouterr().err


def test_train_refuses_a_bad_variant_before_training(tmp_path, capsys):
    from xtrans.bin.train import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("model.encoder.preset_name: wavlm_large\n")
    code = main(["--config", str(RECIPE / "conf" / "train_stage1.yaml"), "--variant", str(bad),
                 "--outdir", str(tmp_path / "run"), "--ngpu", "0", "--no_progress"])
    assert code == 2 and "preset_name" in capsys.readouterr().err
