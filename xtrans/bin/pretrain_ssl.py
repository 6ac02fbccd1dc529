"""Pretrain an encoder HuBERT-style on unlabelled audio (masked prediction of k-means clusters).

    # iteration 1: targets are k-means clusters of log-mel frames; the encoder of a recipe's stage
    python -m xtrans.bin.pretrain_ssl --data data/train --config conf/train_stage1.yaml \\
        --outdir exp/ssl/iter1 --num_clusters 100 --max_updates 20000
    # or a preset and encoder options
    python -m xtrans.bin.pretrain_ssl --data data/train --preset mini --set extractor_mode=layer_norm \\
        --outdir exp/ssl/iter1
    # iteration 2: clusters of layer 3 of the iteration-1 model
    python -m xtrans.bin.pretrain_ssl --data data/train --preset mini --outdir exp/ssl/iter2 \\
        --iteration 2 --features_from exp/ssl/iter1/encoder.pt --layer 3 --num_clusters 500
    # continue a run exactly (the latest checkpoint in --outdir, or the one given)
    python -m xtrans.bin.pretrain_ssl ... --resume [CKPT]

The encoder is a recipe config's ``model.encoder`` section (``--config``, with ``--variant``
overrides), or ``--preset`` with ``--set`` options (``EncoderConfig`` keys: ``num_layers=2``,
``conv_channels=32``, ...); ``--init`` starts from another encoder's weights (an ``encoder.pt``,
a checkpoint, a Hugging Face directory). Its time masking becomes ``--mask_prob`` x
``--mask_length`` (HuBERT: 0.8 x 10). Every setting of ``xtrans.ssl.config.PretrainConfig`` is
an option of the same name. ``--data`` needs ``wav.scp`` (``utt2num_samples`` or ``utt2dur``
spare a pass over the audio to measure it).

In ``--outdir``: ``ckpt_step<N>.pt`` (resumes exactly), ``latest.txt``, ``steps.jsonl`` (one
JSON line per update: loss, masked accuracy, learning rate, ...), ``metrics.jsonl`` (at each
checkpoint; the dev loss with ``--dev``), ``loss.png``, ``train.log``, ``config.yaml``, and at the
end ``encoder.pt`` (for ``python -m xtrans.bin.train --init``; any encoder), ``hf/`` (a Hugging
Face directory that ``load_pretrained`` reads back exactly, for encoders a ``config.json`` can
describe; see ``xtrans.ssl.export``) and ``pretrain_summary.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import re
import sys
import typing
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import yaml

from xtrans.config import ConfigError, from_dict, load_config, load_overrides, parse_overrides, to_dict
from xtrans.ssl.config import PretrainConfig

logger = logging.getLogger("xtrans.bin.pretrain_ssl")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xtrans.bin.pretrain_ssl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="Kaldi data directory of the unlabelled audio (wav.scp)")
    p.add_argument("--outdir", required=True, help="run directory")
    p.add_argument("--dev", default=None, help="held-out audio (Kaldi data dir): masked prediction loss at checkpoints")
    enc = p.add_argument_group("the encoder (a new run; a resumed run takes its own from the checkpoint)")
    enc.add_argument("--config", default=None, help="a training config whose model.encoder section to pretrain")
    enc.add_argument("--variant", default=None, help="with --config: a YAML file of its dotted-key overrides")
    enc.add_argument("--preset", default=None, help="an encoder preset (tiny, mini, xlsr_53, hubert_base, ...)")
    enc.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="encoder_options",
                     help="with --preset: encoder options (YAML values), e.g. num_layers=2 pos_conv=causal")
    enc.add_argument("--init", default=None, help="start from this encoder's weights (encoder.pt, checkpoint, "
                                                  "Hugging Face directory)")
    run = p.add_argument_group("the run")
    run.add_argument("--resume", nargs="?", const="auto", default=None,
                     help="continue from CKPT, or from the latest checkpoint in --outdir when no path is given")
    run.add_argument("--hf_model_type", choices=("hubert", "wav2vec2"), default="hubert",
                     help="model_type of the Hugging Face directory written at the end")
    run.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when available)")
    run.add_argument("--num_threads", type=int, default=None, help="torch CPU threads")
    run.add_argument("--no_progress", "--no-progress", dest="progress", action="store_false", help="no progress bar")
    cfg = p.add_argument_group("pretraining settings (xtrans.ssl.config.PretrainConfig; YAML values)")
    described = _attribute_docs(PretrainConfig)
    for f in dataclasses.fields(PretrainConfig):
        cfg.add_argument(f"--{f.name}", default=None, metavar=_metavar(f),
                         help=f"{described.get(f.name, '')} (default {f.default!r})".lstrip())
    return p


def _metavar(f: dataclasses.Field) -> str:
    hint = typing.get_type_hints(PretrainConfig)[f.name]
    if typing.get_origin(hint) is tuple:
        return "[A,B]"
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return getattr(args[0] if args else hint, "__name__", "VALUE").upper()


def _attribute_docs(cls: type) -> Dict[str, str]:
    """``{field: its description}`` from the ``Attributes:`` section of ``cls``'s docstring
    (``a, b: text`` describes both)."""
    out: Dict[str, str] = {}
    names: List[str] = []
    section = (cls.__doc__ or "").split("Attributes:", 1)[-1]
    for line in section.splitlines():
        m = re.match(r"^\s{8}([a-z_, ]+):\s*(.*)$", line)
        if m:
            names = [n.strip() for n in m.group(1).split(",")]
            for n in names:
                out[n] = m.group(2)
        elif line.strip() and names:
            for n in names:
                out[n] += " " + line.strip()
    return out


def given_settings(args: argparse.Namespace) -> Dict[str, Any]:
    """The PretrainConfig fields set on the command line, parsed as YAML (``--betas "[0.9, 0.98]"``)."""
    hints = typing.get_type_hints(PretrainConfig)
    out = {}
    for f in dataclasses.fields(PretrainConfig):
        value = getattr(args, f.name)
        if value is None:
            continue
        value = yaml.safe_load(value)
        if isinstance(value, str) and float in (hints[f.name], *typing.get_args(hints[f.name])):
            try:  # YAML 1.1 reads 2e-3 (no dot) as a string
                value = float(value)
            except ValueError:
                pass
        out[f.name] = value
    return out


def encoder_to_pretrain(args: argparse.Namespace, cfg: PretrainConfig):
    """(arch, initial weights or None, source) of a new run's encoder, its masking set to ``cfg``'s."""
    from xtrans.models.config import EncoderConfig, ModelConfig, build_model, resolve_arch
    from xtrans.models.wav2vec2.names import fit_optional_weights
    from xtrans.ssl.checkpoint import load_encoder
    from xtrans.train.config import TrainConfig

    if args.config and args.preset:
        raise ValueError("--config, --preset: expected one of them, found both")
    if args.variant and not args.config:
        raise ValueError("--variant: expected together with --config (it overrides that config)")
    if args.encoder_options and not args.preset:
        raise ValueError("--set: expected with --preset (give a config's options in its model.encoder section)")
    enc_cfg = None
    if args.config:
        variant = load_overrides(args.variant) if args.variant else {}
        enc_cfg = load_config(args.config, TrainConfig, overrides=variant).model.encoder
    elif args.preset:
        enc_cfg = from_dict(EncoderConfig, {"preset": args.preset, **parse_overrides(args.encoder_options)},
                            "--preset/--set")
    if enc_cfg is None and not args.init:
        raise ValueError("encoder: expected --config, --preset or --init for a new run, found none")
    if enc_cfg is not None:
        # the pretraining's masking, so that a pretrained file's mask embedding comes along
        enc_cfg = dataclasses.replace(enc_cfg, mask_prob=cfg.mask_prob, mask_length=cfg.mask_length)
    init, source = None, ""
    if enc_cfg is not None and enc_cfg.pretrained is not None:
        encoder = build_model(ModelConfig(encoder=enc_cfg), vocab_size=2).encoder
        arch, init, source = encoder.arch, encoder.state_dict(), enc_cfg.pretrained
    elif enc_cfg is not None:
        arch = resolve_arch(ModelConfig(encoder=enc_cfg), vocab_size=2).encoder
        source = f"random:{enc_cfg.preset}:seed{cfg.seed}"
    if args.init:
        encoder = load_encoder(args.init)
        if enc_cfg is None:
            arch = dataclasses.replace(encoder.arch, mask_prob=cfg.mask_prob, mask_length=cfg.mask_length)
        init, source = encoder.state_dict(), str(args.init)
        from xtrans.models.wav2vec2 import Wav2Vec2Encoder

        own = Wav2Vec2Encoder(**arch.kwargs()).state_dict()
        init = fit_optional_weights(own, init, str(args.init))
        bad = sorted(set(own) ^ set(init)) or [k for k in own if own[k].shape != init[k].shape]
        if bad:
            raise ValueError(f"--init: {args.init} does not fit the encoder of the config (first mismatch: "
                             f"{bad[0]}); give --init alone to pretrain its own architecture")
    return arch, init, source


class _TqdmHandler(logging.Handler):
    """Console log lines that do not break the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def run_logging(outdir: Path) -> Iterator[None]:
    """INFO lines to the console and ``<outdir>/train.log`` while the run lasts (handlers removed
    afterwards, so that ``main`` can be called more than once in a process)."""
    outdir.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter(f"%(asctime)s [{outdir.name}] %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers: List[logging.Handler] = [_TqdmHandler(), logging.FileHandler(outdir / "train.log", encoding="utf-8")]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    try:
        yield
    finally:
        for h in handlers:
            root.removeHandler(h)
            h.close()
        root.setLevel(level)


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    with run_logging(Path(args.outdir)):
        return run(args)


def run(args: argparse.Namespace) -> int:
    """What ``main`` does once the options are parsed and the logs open: build, fit, write."""
    import torch

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    trainer = build_pretrainer(args)
    if trainer is None:
        return 2
    fit(trainer, args.progress)
    write_outputs(trainer, args)
    return 0


def build_pretrainer(args: argparse.Namespace):
    """The :class:`~xtrans.ssl.trainer.SslPretrainer` the options ask for (resumed or new), or
    ``None`` after printing why the options cannot be used."""
    import torch

    from xtrans.checkpoint import CheckpointError
    from xtrans.data.kaldi_dir import DataDirError, read_data_dir
    from xtrans.ssl.trainer import SslPretrainer

    outdir = Path(args.outdir)
    bars: Dict[str, Any] = {}

    def on_progress(what: str, n: int) -> None:
        if not args.progress:
            return
        from tqdm import tqdm
        if what not in bars:
            bars[what] = tqdm(desc=what, unit="", file=sys.stderr, dynamic_ncols=True)
        bars[what].update(n - bars[what].n)

    try:
        given = given_settings(args)
        cfg = from_dict(PretrainConfig, given, "the command line")
        data = read_data_dir(args.data)
        dev = read_data_dir(args.dev) if args.dev else None
        device = torch.device(args.device) if args.device else None
        resuming = args.resume is not None and (args.resume != "auto" or _has_checkpoint(outdir))
        if resuming:
            if args.config or args.preset or args.init:
                logger.info("--resume: the encoder comes from the checkpoint; --config/--preset/--init are ignored")
            return SslPretrainer(cfg, data, outdir, resume=args.resume, given=given, dev=dev, device=device,
                                 on_progress=on_progress)
        arch, init, source = encoder_to_pretrain(args, cfg)
        return SslPretrainer(cfg, data, outdir, arch=arch, init=init, source=source, dev=dev, device=device,
                             on_progress=on_progress)
    except (ValueError, FileNotFoundError, ConfigError, DataDirError, CheckpointError) as err:
        print(f"pretrain_ssl: {err}", file=sys.stderr)
        return None
    finally:
        for bar in bars.values():
            bar.close()


def fit(trainer, progress: bool) -> None:
    """Trains to ``max_updates``, with a progress bar of loss and masked accuracy when asked."""
    if not progress:
        trainer.fit()
        return
    from tqdm import tqdm

    with tqdm(total=trainer.cfg.max_updates, initial=trainer.state.step, unit="upd", dynamic_ncols=True,
              desc="masked prediction") as bar:
        def on_update(rec):
            if not rec.skipped:
                bar.update(1)
                bar.set_postfix(loss=f"{rec.loss:.3f}", acc=f"{rec.masked_accuracy:.2f}")

        trainer.fit(on_update)


def write_outputs(trainer, args: argparse.Namespace) -> None:
    """``encoder.pt``, the Hugging Face directory (where the encoder can be described there), the
    loss curve and ``pretrain_summary.json``; prints what was written and how to load it."""
    from xtrans.ssl.export import NotExportableError, save_hf_encoder
    from xtrans.ssl.plots import plot_pretraining_curve

    outdir, cfg = Path(args.outdir), trainer.cfg
    encoder_file = trainer.save_encoder(outdir / "encoder.pt")
    encoder = trainer.model.encoder.cpu().eval()
    hf_dir, overrides, not_exportable = outdir / "hf", None, None
    try:
        overrides = save_hf_encoder(encoder, hf_dir, args.hf_model_type)
    except (NotExportableError, ImportError) as err:
        not_exportable, hf_dir = str(err), None
    plot = plot_pretraining_curve(outdir, outdir / "loss.png", cfg.num_clusters)
    steps = [json.loads(line) for line in (outdir / "steps.jsonl").read_text(encoding="utf-8").splitlines()]
    losses = [s["loss"] for s in steps if not s["skipped"]][-20:]
    accuracy = [s["masked_accuracy"] for s in steps if not s["skipped"]][-20:]
    summary = {"updates": trainer.state.step, "train_loss_last20": sum(losses) / max(len(losses), 1),
               "masked_accuracy_last20": sum(accuracy) / max(len(accuracy), 1),
               "encoder": str(encoder_file), "hf_dir": None if hf_dir is None else str(hf_dir),
               "load_pretrained_overrides": overrides, "not_exportable": not_exportable,
               "loss_png": None if plot is None else str(plot), "targets": trainer.targets.info,
               "config": to_dict(cfg)}
    (outdir / "pretrain_summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")

    print(f"{outdir}: {trainer.state.step} updates; masked prediction loss {summary['train_loss_last20']:.3f} "
          f"(ln K = {math.log(cfg.num_clusters):.3f}), masked accuracy "
          f"{summary['masked_accuracy_last20']:.3f} (last {len(losses)} updates)")
    print(f"encoder: {encoder_file}  (python -m xtrans.bin.train --init {encoder_file})")
    if hf_dir is not None:
        call = ", ".join([repr(str(hf_dir))] + [f"{k}={v!r}" for k, v in overrides.items()])
        print(f"Hugging Face directory: {hf_dir}  (load_pretrained({call}) gives this encoder exactly)")
    else:
        print(f"no Hugging Face directory: {not_exportable}", file=sys.stderr)


def _has_checkpoint(outdir: Path) -> bool:
    from xtrans.train.checkpoint import find_latest

    return find_latest(outdir) is not None


if __name__ == "__main__":
    sys.exit(main())
