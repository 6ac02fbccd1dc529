"""Recipe stage 4: the encoder a recipe starts from, as an encoder-only file.

    # the encoder of training stage 1's config, with a published model's weights (Hugging Face
    # directory, fairseq .pt, or a hub name when online)
    python -m xtrans.bin.import_encoder --config conf/train_stage1.yaml \
        --pretrained /path/xlsr_53_56k.pt --out exp/pretrained/encoder.pt
    # another family: the config with a variant's overrides (conf/variants/<name>.yaml), its weights
    python -m xtrans.bin.import_encoder --config conf/train_stage1.yaml --variant conf/variants/wavlm_large.yaml \
        --pretrained microsoft/wavlm-large --out exp/pretrained/encoder.pt
    # no pretrained weights (the embedded demo): the config's preset, randomly initialised (seeded)
    python -m xtrans.bin.import_encoder --config conf/train_stage1.yaml --out exp/pretrained/encoder.pt
    # without a config: a preset and options
    python -m xtrans.bin.import_encoder --preset tiny --set pos_conv=chunk --out encoder.pt

With ``--config``, the architecture is the config's ``model.encoder`` section (the single source
of truth for the recipe), so the file fits the model that stage 1 builds. The file holds ``{"encoder": state_dict, "arch": encoder keyword arguments, "source": ...}``;
``python -m xtrans.bin.train --init`` loads it into the encoder of stage 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import torch
import yaml

from xtrans.config import ConfigError, load_config, load_overrides
from xtrans.models.config import ModelConfig, build_model
from xtrans.models.wav2vec2 import Wav2Vec2Encoder, load_pretrained, preset_kwargs
from xtrans.train.config import TrainConfig


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="a training config whose model.encoder section to build")
    p.add_argument("--variant", default=None,
                   help="with --config: a YAML file of dotted-key overrides of it (conf/variants/<name>.yaml)")
    p.add_argument("--pretrained", default=None,
                   help="HF directory (wav2vec2, HuBERT, WavLM, data2vec-audio), fairseq or unilm checkpoint, "
                        "or hub name")
    p.add_argument("--preset", default="tiny", help="preset for a random encoder (without --config/--pretrained)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="encoder options (YAML values), e.g. pos_conv=chunk num_layers=4")
    p.add_argument("--seed", type=int, default=0, help="seed of a random initialisation")
    p.add_argument("--out", required=True, help="the encoder-only file to write")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    overrides = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"import_encoder: --set expects KEY=VALUE, found {item!r}", file=sys.stderr)
            return 2
        value = yaml.safe_load(value)
        overrides[key] = tuple(tuple(v) for v in value) if key == "conv_layers" else value
    try:
        if args.variant and not args.config:
            raise ValueError("--variant: expected together with --config (it overrides that config), found no --config")
        if args.config:
            if overrides:
                raise ValueError("--set: give encoder options in the config's model.encoder section instead")
            variant = load_overrides(args.variant) if args.variant else {}
            cfg = load_config(args.config, TrainConfig, overrides=variant).model.encoder
            if args.pretrained:
                cfg = dataclasses.replace(cfg, pretrained=args.pretrained)
            torch.manual_seed(args.seed)
            encoder = build_model(ModelConfig(encoder=cfg), vocab_size=2).encoder  # the encoder stage 1 builds
            source = cfg.pretrained or f"random:{cfg.preset}:seed{args.seed}"
        elif args.pretrained:
            encoder = load_pretrained(args.pretrained, **overrides)
            source = args.pretrained
        else:
            torch.manual_seed(args.seed)
            encoder = Wav2Vec2Encoder(**preset_kwargs(args.preset, **overrides))
            source = f"random:{args.preset}:seed{args.seed}"
    except (ValueError, FileNotFoundError, ConfigError) as err:
        print(f"import_encoder: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    torch.save({"encoder": encoder.state_dict(), "arch": encoder.arch.to_dict(), "source": source}, tmp)
    os.replace(tmp, out)
    params = sum(p.numel() for p in encoder.parameters())
    arch = encoder.arch
    print(f"{out}: {source}, {params / 1e6:.2f}M parameters, {arch.num_layers} layers x {arch.embed_dim}, "
          f"extractor {arch.extractor_mode}, pos_conv {arch.pos_conv}, waveform_norm {arch.waveform_norm}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
