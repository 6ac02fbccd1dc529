"""tools/plot_masks.py: the raw PNG, the drawn image's data and its rendered pixels all equal
chunk_attention_mask; the CLI in frames and in milliseconds; the multi-chunk sheet."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from xtrans.masks import StreamingConfig, chunk_attention_mask
from xtrans.train.multichunk import MultiChunkConfig, sample_configs

TOOL = Path(__file__).resolve().parents[1] / "tools" / "plot_masks.py"


@pytest.fixture(scope="module")
def plot_masks():
    """The tool loaded as a module from its file (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("plot_masks", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rendered_cells(fig, ax, T):
    """RGBA (0-255) of the rendered figure at the centre of every (query, key) cell -> (T, T, 4)."""
    fig.canvas.draw()
    buf = np.asarray(fig.canvas.buffer_rgba())
    height = buf.shape[0]
    jj, ii = np.meshgrid(np.arange(T), np.arange(T))
    xy = ax.transData.transform(np.stack([jj.ravel(), ii.ravel()], axis=1).astype(float))
    cols = np.floor(xy[:, 0]).astype(int)
    rows = np.floor(height - xy[:, 1]).astype(int)
    return buf[rows, cols].reshape(T, T, 4)


@pytest.mark.parametrize("T, C, L, S", [(100, 16, 25, 4), (40, 8, None, 0), (37, 5, 3, 2), (30, None, None, 0)])
def test_image_data_and_pixels_match_mask(plot_masks, T, C, L, S):
    cfg = StreamingConfig(C, L, S)
    mask = chunk_attention_mask(T, C, L, S).numpy()
    fig = plot_masks.mask_figure(T, cfg)
    ax = fig.axes[0]
    (im,) = ax.images
    data = np.asarray(im.get_array())
    assert data.shape == (T, T)
    assert np.array_equal(data > 0, mask)
    sink_only = mask & ~chunk_attention_mask(T, C, L, 0).numpy()
    assert np.array_equal(data == plot_masks.SINK, sink_only)
    assert im.get_interpolation() == "nearest"
    assert ax.get_xlabel().startswith("key") and ax.get_ylabel().startswith("query")
    legend = "\n".join(t.get_text() for t in ax.get_legend().get_texts())
    assert f"T = {T} frames" in legend and f"sinks S = {S} frames" in legend

    # every rendered cell centre shows the colour of its value (nearest palette colour: the
    # frame and chunk lines are anti-aliased into a few border pixels)
    pixels = _rendered_cells(fig, ax, T)[..., :3].astype(float)
    palette = np.asarray(plot_masks.COLORS(np.arange(3)))[:, :3] * 255
    nearest = np.argmin(((pixels[..., None, :] - palette) ** 2).sum(-1), axis=-1)
    assert np.array_equal(nearest, data)
    assert np.median(np.abs(pixels - palette[data]).max(-1)) <= 1


def test_cli_frames_writes_exact_raw_png(tmp_path):
    out = tmp_path / "plots"
    proc = subprocess.run([sys.executable, str(TOOL), "--seq_len", "100", "--chunk_size", "16",
                           "--left_context", "25", "--sink_size", "4", "--outdir", str(out),
                           "--num_samples", "4"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    raw = imread(out / "mask_raw.png")
    assert raw.shape[:2] == (100, 100)
    assert np.array_equal(raw[..., 0] > 0.5, chunk_attention_mask(100, 16, 25, 4).numpy())
    assert np.array_equal(raw[..., 0], raw[..., 1])  # grey: white = may attend, black = masked
    for name in ("mask.png", "multi_chunk.png"):
        img = imread(out / name)
        assert img.shape[0] > 300 and np.ptp(img) > 0


def test_cli_milliseconds_and_errors(plot_masks, tmp_path, capsys):
    assert plot_masks.main(["--seq_len_ms", "1000", "--chunk_ms", "200", "--left_ms", "none",
                            "--sink_size", "0", "--multi_chunk", "none", "--outdir", str(tmp_path)]) == 0
    raw = imread(tmp_path / "mask_raw.png")
    assert np.array_equal(raw[..., 0] > 0.5, chunk_attention_mask(50, 10, None, 0).numpy())
    assert not (tmp_path / "multi_chunk.png").exists()
    assert "chunk 200 ms, left unlimited" in capsys.readouterr().out

    assert plot_masks.main(["--chunk_ms", "30", "--outdir", str(tmp_path)]) == 2
    assert "multiple of 20 ms" in capsys.readouterr().err
    assert plot_masks.main(["--chunk_size", "16", "--chunk_ms", "320", "--outdir", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err


def test_multi_chunk_sheet_shows_sampler_draws(plot_masks):
    configs = sample_configs(MultiChunkConfig(chunk_sizes=(16, 32, 64), left_context=64), 5, seed=3)
    fig = plot_masks.multi_chunk_figure(80, configs, seed=3)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 5
    for ax, cfg in zip(drawn, configs):
        data = np.asarray(ax.images[0].get_array())
        assert np.array_equal(data > 0, chunk_attention_mask(80, cfg.chunk_size, cfg.left_context).numpy())
        assert cfg.describe() in ax.get_title()
