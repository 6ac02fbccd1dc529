"""Runs a command-line module and SIGKILLs it at a chosen moment, for the crash tests.

::

    python -m xtrans.testing.crash --kill-in-save 2 -- xtrans.bin.train --config conf.yaml ...
    python -m xtrans.testing.crash --kill-after-step 4 -- xtrans.bin.train --config conf.yaml ...

``--kill-in-save N`` kills the process half-way through writing its N-th checkpoint file: the
N-th ``torch.save`` into a ``*.tmp`` file (how :func:`xtrans.checkpoint.atomic_save` writes)
goes through a file that sends SIGKILL once 4096 bytes have reached the disk.
``--kill-after-step N`` kills it right after :meth:`xtrans.train.trainer.Trainer.save` of
update N has returned (checkpoint, ``latest.txt``, ``best.pt`` written; ranks synchronised).

The library has no hook for this: the patches are made here, in the process that then runs the
module as ``__main__`` (:func:`runpy.run_module`).
"""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import sys
from typing import List, Optional, Sequence

KILL_AFTER_BYTES = 4096


class KillHalfway:
    """File wrapper: SIGKILLs the process once ``limit`` bytes written through it reached the disk."""

    def __init__(self, f, limit: int = KILL_AFTER_BYTES):
        self.f, self.limit, self.written = f, limit, 0

    def write(self, data) -> int:
        n = self.f.write(data)
        self.written += n
        if self.written >= self.limit:
            self.f.flush()
            os.fsync(self.f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return n

    def flush(self) -> None:
        self.f.flush()


def kill_in_save(n: int) -> None:
    """Patches ``torch.save`` so that the ``n``-th save into a ``*.tmp`` file dies half-way."""
    import torch

    real_save = torch.save
    started = 0

    def save(obj, f, *args, **kwargs):
        nonlocal started
        if str(getattr(f, "name", "")).endswith(".tmp"):
            started += 1
            if started == n:
                f = KillHalfway(f)
        return real_save(obj, f, *args, **kwargs)

    torch.save = save


def kill_after_step(n: int) -> None:
    """Patches :meth:`Trainer.save` so that the process dies right after the checkpoint of update ``n``."""
    from xtrans.train.trainer import Trainer

    real_save = Trainer.save

    def save(self, metrics):
        real_save(self, metrics)
        if self.state.step == n:
            os.kill(os.getpid(), signal.SIGKILL)

    Trainer.save = save


def command(module: str, args: Sequence[str], *, kill_in_save: Optional[int] = None,
            kill_after_step: Optional[int] = None) -> List[str]:
    """The command line that runs ``python -m module *args`` under these kills (none: unchanged)."""
    if kill_in_save is None and kill_after_step is None:
        return [sys.executable, "-m", module, *args]
    cmd = [sys.executable, "-m", "xtrans.testing.crash"]
    if kill_in_save is not None:
        cmd += ["--kill-in-save", str(kill_in_save)]
    if kill_after_step is not None:
        cmd += ["--kill-after-step", str(kill_after_step)]
    return [*cmd, "--", module, *args]


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m xtrans.testing.crash", description=__doc__.split("\n\n")[0])
    p.add_argument("--kill-in-save", type=int, default=None, metavar="N")
    p.add_argument("--kill-after-step", type=int, default=None, metavar="N")
    p.add_argument("module", help="the module to run as __main__, e.g. xtrans.bin.train")
    p.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    args = p.parse_args(argv)
    if args.kill_in_save is not None:
        kill_in_save(args.kill_in_save)
    if args.kill_after_step is not None:
        kill_after_step(args.kill_after_step)
    sys.argv = [args.module, *args.args]
    runpy.run_module(args.module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
