"""Recipe stage 4: the encoder a recipe starts from, as an encoder-only file.

    # a published model: Hugging Face directory, fairseq .pt, or a hub name when online
    python -m xtrans.bin.import_encoder --pretrained /path/xlsr_53_56k.pt --out exp/pretrained/encoder.pt
    # no pretrained weights (the embedded demo): a randomly initialised preset, seeded
    python -m xtrans.bin.import_encoder --preset tiny --set waveform_norm=cumulative --out exp/pretrained/encoder.pt

The file holds ``{"encoder": state_dict, "arch": encoder keyword arguments, "source": ...}``;
``python -m xtrans.bin.train --init`` loads it into the encoder of stage 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import yaml

from xtrans.models.wav2vec2 import Wav2Vec2Encoder, load_pretrained, preset_kwargs


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrained", default=None, help="HF directory, fairseq checkpoint or hub name")
    p.add_argument("--preset", default="tiny", help="preset for a random encoder (without --pretrained)")
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
        if args.pretrained:
            encoder = load_pretrained(args.pretrained, **overrides)
            source = args.pretrained
        else:
            torch.manual_seed(args.seed)
            encoder = Wav2Vec2Encoder(**preset_kwargs(args.preset, **overrides))
            source = f"random:{args.preset}:seed{args.seed}"
    except (ValueError, FileNotFoundError) as err:
        print(f"import_encoder: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    torch.save({"encoder": encoder.state_dict(), "arch": encoder.arch, "source": source}, tmp)
    os.replace(tmp, out)
    params = sum(p.numel() for p in encoder.parameters())
    arch = encoder.arch
    print(f"{out}: {source}, {params / 1e6:.2f}M parameters, {arch['num_layers']} layers x {arch['embed_dim']}, "
          f"extractor {arch['extractor_mode']}, pos_conv {arch['pos_conv']}, waveform_norm {arch['waveform_norm']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
