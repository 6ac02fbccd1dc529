"""Runs a command-line module in a process where ``import torch`` fails, for the runtime's tests.

::

    python -m xtrans.testing.torch_free xtrans.bin.transcribe --onnx exp/onnx a.wav

runs ``python -m xtrans.bin.transcribe --onnx exp/onnx a.wav`` with a meta-path finder in front of
every other that refuses ``torch`` and its submodules (``ModuleNotFoundError``, as where torch is
not installed). At exit, a module of torch found in ``sys.modules`` all the same (put there by
another route) fails the run with :data:`LEAKED`. So a run's exit status says both what the tool
says and whether its path is torch-free; a deployment install of ``xtrans[runtime]`` has no torch
to import, and the main test environment has one, so this makes the latter behave like the former.
"""

from __future__ import annotations

import importlib.abc
import runpy
import sys
from typing import List, Optional, Sequence

LEAKED = 97
"""Exit status of a run that imported torch although the finder refused it."""


class TorchBlocker(importlib.abc.MetaPathFinder):
    """Refuses ``torch`` and ``torch.*``; remembers who asked (:attr:`refused`)."""

    def __init__(self):
        self.refused: List[str] = []

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            self.refused.append(name)
            raise ModuleNotFoundError(f"No module named {name!r} (refused by xtrans.testing.torch_free)", name=name)
        return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        print("usage: python -m xtrans.testing.torch_free MODULE [ARG ...]", file=sys.stderr)
        return 2
    blocker = TorchBlocker()
    sys.meta_path.insert(0, blocker)
    sys.argv = argv
    status = 0
    try:
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    except SystemExit as done:
        status = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if not isinstance(done.code, (int, type(None))):
            print(done.code, file=sys.stderr)
    leaked = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    if leaked:
        print(f"torch_free: {argv[0]} imported {leaked[:5]}", file=sys.stderr)
        return LEAKED
    if blocker.refused:  # the tool may go on without it; say so, for a test's error message
        print(f"torch_free: refused import of {sorted(set(blocker.refused))}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
