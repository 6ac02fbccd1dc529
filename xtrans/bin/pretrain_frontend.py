"""Recipe stage 4 without pretrained weights: fit the encoder's CNN to log-mel features.

    python -m xtrans.bin.pretrain_frontend --config conf/pretrain_frontend.yaml \\
        --encoder exp/pretrained/encoder.pt [--train_dir dump/train] [--dev_dir dump/dev] \\
        [--set max_updates=50] [--out exp/pretrained/encoder.pt] [--num_threads 2]

Reads the encoder-only file of ``xtrans.bin.import_encoder``, trains its CNN front end as
:mod:`xtrans.train.frontend_pretrain` describes, and writes the file back (``--out``, default the
input). Beside it: ``frontend_pretrain.json`` (the loss of every update, the dev loss, the
config) and ``frontend_pretrain.png`` (the curve).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from xtrans.config import ConfigError, load_config, to_dict
from xtrans.data.kaldi_dir import DataDirError, read_data_dir
from xtrans.models.arch import encoder_arch
from xtrans.models.config import encoder_defaults
from xtrans.models.wav2vec2 import Wav2Vec2Encoder
from xtrans.train.frontend_pretrain import FrontendPretrainConfig, pretrain_frontend


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xtrans.bin.pretrain_frontend", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML of FrontendPretrainConfig")
    p.add_argument("--encoder", required=True, help="encoder-only file (xtrans.bin.import_encoder)")
    p.add_argument("--out", default=None, help="where to write the encoder (default: --encoder)")
    p.add_argument("--train_dir", "--train-dir", default=None, help="overrides the config's train_dir")
    p.add_argument("--dev_dir", "--dev-dir", default=None, help="held-out audio to report the final loss on")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="config overrides (YAML values), e.g. max_updates=50")
    p.add_argument("--num_threads", "--num-threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def load_encoder(path: str | os.PathLike) -> tuple[Wav2Vec2Encoder, dict]:
    """The encoder of an ``import_encoder`` file and the file's contents.

    Raises:
        ValueError: when the file is not an encoder-only file with ``encoder`` and ``arch``.
    """
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or not {"encoder", "arch"} <= set(obj):
        raise ValueError(f"{path}: expected an encoder-only file of xtrans.bin.import_encoder "
                         f"(keys 'encoder' and 'arch'), found {sorted(obj) if isinstance(obj, dict) else type(obj)}")
    # files of older versions hold only the arguments known then: the others take their defaults
    encoder = Wav2Vec2Encoder(**encoder_arch({**encoder_defaults(), **obj["arch"]}, f"{path}: arch").kwargs())
    encoder.load_state_dict(obj["encoder"])
    return encoder, obj


def plot_curve(history: list, path: Path, dev_loss: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([h["update"] for h in history], [h["loss"] for h in history], lw=1, label="training batches")
    if dev_loss is not None:
        ax.plot([history[-1]["update"]], [dev_loss], "o", color="C3", label=f"held-out data: {dev_loss:.3f}")
    ax.legend(loc="upper right")
    ax.set_xlabel("update")
    ax.set_ylabel("MSE (standardised log-mel)")
    ax.set_ylim(0, max(1.2, min(3.0, max(h["loss"] for h in history))))
    ax.grid(alpha=0.3)
    ax.set_title("front-end pretraining: CNN -> log-mel")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    try:
        overrides = {}
        for item in args.overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set expects KEY=VALUE, found {item!r}")
            overrides[key] = yaml.safe_load(value)
        if args.train_dir:
            overrides["train_dir"] = args.train_dir
        cfg = load_config(args.config, FrontendPretrainConfig, overrides)
        encoder, saved = load_encoder(args.encoder)
        data = read_data_dir(cfg.train_dir)
        dev = read_data_dir(args.dev_dir) if args.dev_dir else None
    except (ValueError, FileNotFoundError, ConfigError, DataDirError) as err:
        print(f"pretrain_frontend: {err}", file=sys.stderr)
        return 2

    bar = tqdm(total=cfg.max_updates, desc="front end -> log-mel", unit="upd", file=sys.stderr,
               disable=args.no_progress)

    def on_update(update: int, loss: float) -> None:
        bar.update()
        if update % 10 == 0:
            bar.set_postfix(loss=f"{loss:.3f}")

    start = time.perf_counter()
    result = pretrain_frontend(encoder, data, cfg, dev=dev, on_update=on_update)
    bar.close()
    seconds = time.perf_counter() - start

    out = Path(args.out or args.encoder)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    source = f"{saved.get('source', args.encoder)}+frontend_logmel{cfg.n_mels}:{cfg.max_updates}"
    torch.save({**saved, "encoder": encoder.state_dict(), "source": source}, tmp)
    os.replace(tmp, out)
    tail = result.history[-20:]
    train_loss = sum(h["loss"] for h in tail) / len(tail)
    report = {"config": to_dict(cfg), "encoder": str(out), "seconds": seconds,
              "train_loss_last20": train_loss, "dev_dir": args.dev_dir, "dev_loss": result.dev_loss,
              "history": result.history}
    (out.parent / "frontend_pretrain.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    plot_curve(result.history, out.parent / "frontend_pretrain.png", result.dev_loss)
    dev_text = "" if result.dev_loss is None else f", dev {result.dev_loss:.3f}"
    print(f"{out}: CNN fitted to {cfg.n_mels} log-mel filters in {cfg.max_updates} updates ({seconds:.0f} s); "
          f"MSE on standardised targets: training {train_loss:.3f}{dev_text} (1.0 = predicting the mean)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
