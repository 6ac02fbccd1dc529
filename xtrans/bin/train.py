"""Train one stage of the XLSR-Transducer (recipe stages 6-10).

    python -m xtrans.bin.train --config conf/train_stage2a.yaml --init exp/stage1/best.pt \
        --outdir exp/stage2/2a --stage_log exp/stage2/train.log [--resume [CKPT]] \
        [--ngpu N | --nproc N] [--set optim.head_lr=5e-4 training.max_updates=1000 ...]

``--init`` is a transducer checkpoint (all weights), an encoder-only file or a pretrained
wav2vec2 directory / fairseq checkpoint (the encoder), or ``none``. ``--resume`` without a
path continues from ``<outdir>/latest.txt`` (or starts afresh when there is no checkpoint yet);
it continues exactly: same batches, random draws, schedule.

Multiple processes (DistributedDataParallel): ``--ngpu N`` (N GPUs of this machine, NCCL) or
``--nproc N`` (N CPU processes, gloo) re-executes this command through ``torch.distributed.run``;
equivalently ``torchrun --standalone --nproc_per_node N -m xtrans.bin.train ...``. Several
machines: on each, ``torchrun --nnodes M --node_rank R --nproc_per_node N --rdzv_backend c10d
--rdzv_endpoint HOST:29400 -m xtrans.bin.train ...``. Batches are split across ranks by the
sampler; the loss is normalised by the utterances of the whole update, so the gradient does
not depend on the number of processes (see :mod:`xtrans.train.trainer`).

Logs: ``<outdir>/train.log`` (and ``--stage_log``, appended, for ``tail -f exp/stage<N>/train.log``),
``<outdir>/steps.jsonl`` (one JSON line per update), ``<outdir>/tensorboard/``; a progress bar on
the console.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from xtrans.config import ConfigError, load_config, load_overrides, parse_overrides

if TYPE_CHECKING:
    import torch

    from xtrans.train.runtime import DistInfo
    from xtrans.train.trainer import Trainer

logger = logging.getLogger("xtrans.bin.train")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the stage's YAML config")
    p.add_argument("--outdir", required=True, help="run directory (checkpoints and logs)")
    p.add_argument("--init", default="none",
                   help="transducer checkpoint, encoder file or pretrained wav2vec2 model to start from; 'none'")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue from CKPT, or from the latest checkpoint in --outdir when no path is given")
    p.add_argument("--ngpu", type=int, default=None,
                   help="GPUs (= processes) to train on; 0 = CPU; default: 1 GPU when CUDA is available")
    p.add_argument("--nproc", type=int, default=1, help="CPU processes (gloo DDP), for CPU machines and tests")
    p.add_argument("--stage_log", "--stage-log", dest="stage_log", default=None,
                   help="a second log the trainer appends to (e.g. exp/stage2/train.log for all variants)")
    p.add_argument("--variant", default=None,
                   help="a YAML file of dotted-key overrides applied before --set, e.g. another encoder "
                        "for every stage (a recipe's conf/variants/wavlm_large.yaml)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="config overrides, dotted keys, YAML values (training.max_updates=100)")
    p.add_argument("--no_progress", "--no-progress", dest="progress", action="store_false",
                   help="no progress bar")
    return p


class _TqdmHandler(logging.Handler):
    """Console log lines that do not break the progress bar."""

    def emit(self, record):
        from tqdm import tqdm
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def setup_logging(outdir: Path, stage_log: Optional[str], rank: int) -> None:
    """``<outdir>/train.log`` and the stage log (rank 0; flushed per line) and the console."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
    name = outdir.name
    fmt = logging.Formatter(f"%(asctime)s [{name}] %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    console = _TqdmHandler()
    console.setFormatter(fmt)
    console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    root.addHandler(console)
    if rank != 0:
        return
    outdir.mkdir(parents=True, exist_ok=True)
    paths = [outdir / "train.log"]
    if stage_log is not None and Path(stage_log).resolve() != paths[0].resolve():  # stage 1: the same file
        Path(stage_log).parent.mkdir(parents=True, exist_ok=True)
        paths.append(Path(stage_log))
    for path in paths:
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")  # flushes every record
        handler.setFormatter(fmt)
        root.addHandler(handler)


def _relaunch(nproc: int, cpu: bool) -> int:
    """Runs this command in ``nproc`` processes through ``torch.distributed.run``.

    ``--nproc``/``--ngpu`` are not passed on (torchrun's parser would take ``--nproc`` for an
    abbreviation of its own option); the children get ``--ngpu 0`` on CPU, ``--ngpu N`` on GPU.
    """
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a in ("--nproc", "--ngpu"):
            skip = True
            continue
        if a.startswith(("--nproc=", "--ngpu=")):
            continue
        args.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "xtrans.bin.train", *args, "--ngpu", "0" if cpu else str(nproc)]
    import subprocess
    return subprocess.call(cmd)


def choose_device(args: argparse.Namespace, info: "DistInfo") -> Optional["torch.device"]:
    """This rank's device: the CPU for ``--ngpu 0`` or ``--nproc N``, its GPU for ``--ngpu N``,
    else its GPU when CUDA is available; ``None`` when ``--ngpu N`` finds no CUDA device."""
    import torch
    from xtrans.train.runtime import default_device

    if args.ngpu == 0:
        return torch.device("cpu")
    if args.ngpu is not None and args.ngpu > 0:
        return torch.device(f"cuda:{info.local_rank}") if torch.cuda.is_available() else None
    if args.nproc > 1:
        return torch.device("cpu")
    return default_device(info)


def resume_path(resume: Optional[str], outdir: Path) -> Optional[str]:
    """``--resume``'s checkpoint: the path given, or for ``auto`` the latest in ``outdir`` (``None``
    when there is none yet, with a warning: the run starts afresh)."""
    from xtrans.train.checkpoint import find_latest

    if resume != "auto":
        return resume
    latest = find_latest(outdir)
    if latest is None:
        logger.warning("--resume: no checkpoint in %s yet; starting from the beginning", outdir)
    return None if latest is None else str(latest)


def fit_with_progress(trainer: "Trainer", progress: bool) -> None:
    """Runs ``trainer.fit`` with a progress bar of updates (epoch and loss beside it) when ``progress``."""
    if not progress:
        trainer.fit()
        return
    from tqdm import tqdm

    cfg = trainer.cfg
    with tqdm(total=cfg.training.max_updates, initial=trainer.state.step, unit="upd", dynamic_ncols=True) as bar:
        def on_update(rec):
            if not rec.skipped:
                bar.update(1)
                bar.set_postfix(epoch=rec.epoch + 1, loss=f"{rec.loss:.3f}")

        trainer.fit(on_update)


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    nproc = args.ngpu if args.ngpu else args.nproc
    if nproc > 1 and "LOCAL_RANK" not in os.environ:
        if argv is not None:
            raise ValueError("--ngpu/--nproc > 1: run through the command line (python -m xtrans.bin.train)")
        return _relaunch(nproc, cpu=not args.ngpu)

    import torch
    import torch.distributed as dist
    from xtrans.train.config import TrainConfig
    from xtrans.train.runtime import DistInfo
    from xtrans.train.trainer import Trainer

    info = DistInfo.from_env()
    outdir = Path(args.outdir)
    setup_logging(outdir, args.stage_log, info.rank)
    try:
        variant = load_overrides(args.variant) if args.variant else {}
        cfg = load_config(args.config, TrainConfig, overrides={**variant, **parse_overrides(args.overrides)})
    except ConfigError as err:
        logger.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        return 2
    device = choose_device(args, info)
    if device is None:
        print("error: --ngpu > 0 but no CUDA device is visible; use --ngpu 0 (CPU)", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if info.world_size > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    resume = resume_path(args.resume, outdir)
    init = None if args.init in (None, "", "none", "None") else args.init
    logger.info("command: %s", " ".join([os.path.basename(sys.executable), "-m", "xtrans.bin.train",
                                          *(argv if argv is not None else sys.argv[1:])]))
    try:
        trainer = Trainer(cfg, outdir, init=init, resume=resume, dist_info=info, device=device)
        fit_with_progress(trainer, args.progress and info.rank == 0)
    finally:
        if info.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
