#!/usr/bin/env python3
"""Draw streaming attention masks (chunks, left context, attention sinks) as PNG images.

Usage::

    python tools/plot_masks.py --seq_len 100 --chunk_size 16 --left_context 25 --sink_size 4 \\
        [--outdir attention_sink_plots]
    python tools/plot_masks.py --seq_len_ms 2000 --chunk_ms 320 --left_ms 640 --sink_size 4
    python tools/plot_masks.py ... --multi_chunk 16,32,64 --multi_left 64 --num_samples 6 [--seed 0]

Sizes are in 20 ms frames, or in milliseconds with the ``*_ms`` options (multiples of 20);
``none`` for the chunk means full attention, for the left context unlimited. Writes into
``--outdir``:

    mask.png         the mask with query (rows) and key (columns) axes, chunk boundaries and a
                     legend of the configuration; keys visible only as sinks in their own colour
    mask_raw.png     one pixel per cell: white = may attend, black = masked (row = query frame)
    multi_chunk.png  a sheet of masks drawn by the stage-4 multi-chunk sampler (``--multi_chunk``;
                     ``none`` to skip)

Every image comes from :func:`xtrans.masks.chunk_attention_mask` (True = may attend), the rule
of docs/streaming.md: query ``i`` in chunk ``c = i // C`` sees key ``j`` when
``j < (c + 1) C and (j >= c C - L or j < S)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.image import imsave
from matplotlib.patches import Patch

from xtrans.masks import FRAME_MS, StreamingConfig, chunk_attention_mask, ms_to_frames
from xtrans.train.multichunk import MultiChunkConfig, sample_configs

MASKED, VISIBLE, SINK = 0, 1, 2
"""Cell values of the drawn image: masked, visible through chunk/left context, visible only as a sink."""

COLORS = ListedColormap(["#f4f4f4", "#2b6cb0", "#e07b00"])
LABELS = ("masked", "may attend (chunk, left context)", "may attend (attention sink)")


def mask_image(num_frames: int, config: StreamingConfig) -> np.ndarray:
    """(T, T) int array of :data:`MASKED` / :data:`VISIBLE` / :data:`SINK`; ``> 0`` equals
    ``chunk_attention_mask(T, C, L, S)`` exactly, ``SINK`` marks keys visible only through ``j < S``."""
    mask = chunk_attention_mask(num_frames, config.chunk_size, config.left_context, config.num_sinks)
    without_sinks = chunk_attention_mask(num_frames, config.chunk_size, config.left_context, 0)
    image = np.zeros((num_frames, num_frames), dtype=np.int64)
    image[without_sinks.numpy()] = VISIBLE
    image[(mask & ~without_sinks).numpy()] = SINK
    return image


def _frames_label(frames: Optional[int], unlimited: str) -> str:
    return unlimited if frames is None else f"{frames} frames ({frames * FRAME_MS} ms)"


def draw_mask(ax, num_frames: int, config: StreamingConfig, title: Optional[str] = None,
              legend: bool = True, boundaries: bool = True):
    """Draws the mask on ``ax`` with ``imshow(interpolation='nearest')``: cell ``(i, j)`` (query
    ``i`` = row from the top, key ``j`` = column) spans data coordinates ``[j-0.5, j+0.5] x [i-0.5, i+0.5]``.

    Returns:
        the ``AxesImage``; its array is :func:`mask_image`.
    """
    image = mask_image(num_frames, config)
    im = ax.imshow(image, cmap=COLORS, vmin=0, vmax=2, interpolation="nearest", origin="upper",
                   aspect="equal")
    C = config.chunk_size
    if boundaries and C is not None and C < num_frames:
        for b in range(C, num_frames, C):  # chunk boundaries lie on cell edges
            ax.axhline(b - 0.5, color="black", linewidth=0.4, alpha=0.5)
    ax.set_xlabel("key frame j")
    ax.set_ylabel("query frame i")
    ax.set_title(title if title is not None else config.describe(), fontsize="medium")
    if legend:
        handles = [Patch(facecolor=COLORS(k), edgecolor="grey", label=LABELS[k]) for k in (VISIBLE, SINK, MASKED)]
        text = (f"T = {num_frames} frames ({num_frames * FRAME_MS} ms)\n"
                f"chunk C = {_frames_label(C, 'full attention')}\n"
                f"left L = {_frames_label(config.left_context, 'unlimited')}\n"
                f"sinks S = {config.num_sinks} frames")
        handles.append(Patch(visible=False, label=text))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small",
                  title="configuration", borderaxespad=0.0)
    return im


def mask_figure(num_frames: int, config: StreamingConfig) -> Figure:
    """A figure with one mask and its legend (Agg canvas, no pyplot)."""
    fig = Figure(figsize=(9.5, 6.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    draw_mask(ax, num_frames, config)
    fig.subplots_adjust(left=0.08, right=0.62, top=0.92, bottom=0.1)
    return fig


def multi_chunk_figure(num_frames: int, configs: Sequence[StreamingConfig], seed: int) -> Figure:
    """A sheet of the masks of ``configs`` (e.g. the multi-chunk sampler's first draws)."""
    n = len(configs)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(4.0 * cols, 4.0 * rows + 0.6))
    FigureCanvasAgg(fig)
    for k, cfg in enumerate(configs):
        ax = fig.add_subplot(rows, cols, k + 1)
        draw_mask(ax, num_frames, cfg, title=f"draw {k + 1}: {cfg.describe()}", legend=False)
    fig.suptitle(f"multi-chunk sampler (seed {seed}), T = {num_frames} frames")
    fig.tight_layout()
    return fig


def save_raw(num_frames: int, config: StreamingConfig, path: Path) -> None:
    """One pixel per cell: white (255) = may attend, black (0) = masked; row = query, column = key."""
    mask = chunk_attention_mask(num_frames, config.chunk_size, config.left_context, config.num_sinks)
    imsave(path, mask.numpy().astype(np.uint8) * 255, cmap="gray", vmin=0, vmax=255)


def _frames_arg(frames: Optional[str], ms: Optional[str], name: str) -> Optional[int]:
    """``--<name>`` (frames) or ``--<name>_ms``; ``none`` = unlimited."""
    if frames is not None and ms is not None:
        raise ValueError(f"{name}: give it in frames or in ms, not both")
    value, in_ms = (ms, True) if ms is not None else (frames, False)
    if value is None or value.lower() == "none":
        return None
    number = float(value)
    return ms_to_frames(number) if in_ms else int(number)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/plot_masks.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seq_len", "--seq-len", default=None, help="frames T (default 100)")
    p.add_argument("--seq_len_ms", "--seq-len-ms", default=None, help="T in ms")
    p.add_argument("--chunk_size", "--chunk-size", default=None, help="chunk C in frames, or none (default 16)")
    p.add_argument("--chunk_ms", "--chunk-ms", default=None, help="chunk in ms, or none")
    p.add_argument("--left_context", "--left-context", default=None,
                   help="left context L in frames, or none = unlimited (default 25)")
    p.add_argument("--left_ms", "--left-ms", default=None, help="left context in ms, or none")
    p.add_argument("--sink_size", "--sink-size", type=int, default=4, help="attention-sink frames S")
    p.add_argument("--outdir", default="attention_sink_plots")
    p.add_argument("--multi_chunk", "--multi-chunk", default="16,32,64",
                   help="chunk sizes (frames) of the multi-chunk sheet, or none")
    p.add_argument("--multi_left", "--multi-left", default="64", help="left context of the sheet, or none")
    p.add_argument("--num_samples", "--num-samples", type=int, default=6, help="masks on the sheet")
    p.add_argument("--seed", type=int, default=0, help="multi-chunk sampler seed")
    p.add_argument("--dpi", type=int, default=100)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        T = _frames_arg(args.seq_len, args.seq_len_ms, "seq_len")
        T = 100 if T is None and args.seq_len is None and args.seq_len_ms is None else T
        if T is None or T < 1:
            raise ValueError(f"seq_len: expected >= 1 frame, found {T}")
        chunk_default = "16" if args.chunk_size is None and args.chunk_ms is None else None
        C = _frames_arg(args.chunk_size or chunk_default, args.chunk_ms, "chunk_size")
        left_default = "25" if args.left_context is None and args.left_ms is None else None
        L = _frames_arg(args.left_context or left_default, args.left_ms, "left_context")
        config = StreamingConfig(C, L, args.sink_size)
        multi = None
        if args.multi_chunk.lower() != "none":
            if args.num_samples < 1:
                raise ValueError(f"num_samples: expected >= 1, found {args.num_samples}")
            multi = MultiChunkConfig(chunk_sizes=tuple(int(c) for c in args.multi_chunk.split(",")),
                                     left_context=_frames_arg(args.multi_left, None, "multi_left"),
                                     num_sinks=args.sink_size)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written = [outdir / "mask.png", outdir / "mask_raw.png"]
    mask_figure(T, config).savefig(written[0], dpi=args.dpi)
    save_raw(T, config, written[1])
    if multi is not None:
        written.append(outdir / "multi_chunk.png")
        configs = sample_configs(multi, args.num_samples, seed=args.seed)
        multi_chunk_figure(T, configs, args.seed).savefig(written[-1], dpi=args.dpi)
    print(f"{config.describe()}, T = {T} frames: " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
