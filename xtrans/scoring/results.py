"""Collects decoding results of an experiment tree and writes ``RESULTS.md``.

Recipe stage 11 writes one folder per decoding (``xtrans.bin.decode``)::

    exp/stage2/2a/decode_test_clean_streaming_chunk640_left640_sinks4_greedy/
        decode.json   the configuration, RTF, per-chunk latency (streaming)
        text, hyp.trn hypotheses;  ref, ref.trn  references
        wer.json, result.txt      written by ``xtrans.bin.score``

and stage 12 (``python -m xtrans.bin.score --results exp --out RESULTS.md``) turns every such
folder into one row of a table: stage, variant, test set, chunk/left context (ms), sinks,
positional convolution, simulated or real streaming, search, WER, RTF and chunk latency.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from xtrans.scoring.wer import format_result, read_text, score

logger = logging.getLogger(__name__)

DECODE_JSON = "decode.json"
WER_JSON = "wer.json"

_STAGE_RE = re.compile(r"^stage(\d+)$")
_VARIANT_RE = re.compile(r"^(\d+)([a-z])$")


def stage_variant(path: Union[str, os.PathLike]) -> Tuple[Optional[int], Optional[str]]:
    """Training stage and variant named by a path: ``exp/stage2/2a/best.pt`` -> ``(2, "a")``,
    ``exp/stage1/best.pt`` -> ``(1, None)``, a path without ``stage<N>`` -> ``(None, None)``."""
    parts = Path(path).parts
    for k, part in enumerate(parts):
        m = _STAGE_RE.match(part)
        if m:
            stage = int(m.group(1))
            if k + 1 < len(parts):
                v = _VARIANT_RE.match(parts[k + 1])
                if v and int(v.group(1)) == stage:
                    return stage, v.group(2)
            return stage, None
    return None, None


@dataclass
class ResultRow:
    """One decoding: its configuration and scores (see the module docstring)."""

    decode_dir: str
    stage: Optional[int]
    variant: Optional[str]
    data: str
    mode: str
    chunk_ms: Optional[int]
    left_ms: Optional[int]
    sinks: int
    pos_conv: Optional[str]
    search: str
    beam: Optional[int]
    wer: Optional[float]
    errors: Dict[str, int] = field(default_factory=dict)
    rtf: Optional[float] = None
    latency_mean_ms: Optional[float] = None
    latency_p95_ms: Optional[float] = None

    def sort_key(self):
        big = math.inf
        return (self.stage if self.stage is not None else big, self.variant or "", self.data,
                self.mode, self.search, self.chunk_ms if self.chunk_ms is not None else big,
                self.left_ms if self.left_ms is not None else big, self.sinks, self.decode_dir)


def score_decode_dir(decode_dir: Union[str, os.PathLike]) -> Optional[Dict[str, Any]]:
    """Scores ``decode_dir/text`` against ``decode_dir/ref``; writes ``result.txt`` and ``wer.json``.

    Returns:
        the summary (``N C S D I WER ...``), or None when there is no ``ref`` (nothing to score).
    """
    d = Path(decode_dir)
    if not (d / "ref").is_file():
        logger.warning("%s: no ref file, not scored", d)
        return None
    result = score(read_text(d / "ref"), read_text(d / "text") if (d / "text").is_file() else {})
    (d / "result.txt").write_text(format_result(result), encoding="utf-8")
    summary = result.summary()
    (d / WER_JSON).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _load_json(path: Path) -> Optional[Dict[str, Any]]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        logger.warning("%s: unreadable (%s), skipped", path, err)
        return None
    return value if isinstance(value, dict) else None


def collect_results(exp_dir: Union[str, os.PathLike], rescore: bool = False) -> List[ResultRow]:
    """Rows for every ``exp_dir/**/decode_*/decode.json``, sorted by stage, variant, test set, mode,
    search and streaming configuration. Folders without ``wer.json`` (or all, with ``rescore``)
    are scored first; a folder that cannot be scored gets ``wer=None``."""
    rows = []
    for path in sorted(Path(exp_dir).glob(f"**/decode_*/{DECODE_JSON}")):
        d = path.parent
        info = _load_json(path)
        if info is None:
            continue
        wer = _load_json(d / WER_JSON) if (d / WER_JSON).is_file() and not rescore else None
        if wer is None:
            wer = score_decode_dir(d)
        stage, variant = info.get("stage"), info.get("variant")
        if stage is None:
            stage, variant = stage_variant(info.get("model") or d)
        latency = info.get("latency_ms") or {}
        rows.append(ResultRow(
            decode_dir=str(d), stage=stage, variant=variant,
            data=Path(str(info.get("data", "?"))).name, mode=info.get("mode", "?"),
            chunk_ms=info.get("chunk_ms"), left_ms=info.get("left_ms"), sinks=int(info.get("sinks") or 0),
            pos_conv=info.get("pos_conv"), search=info.get("search", "?"), beam=info.get("beam"),
            wer=None if wer is None else wer.get("WER"),
            errors={} if wer is None else {k: int(wer[k]) for k in ("N", "S", "D", "I") if k in wer},
            rtf=info.get("rtf"), latency_mean_ms=latency.get("mean"), latency_p95_ms=latency.get("p95")))
    rows.sort(key=ResultRow.sort_key)
    return rows


def _fmt(value: Optional[float], digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


HEADER = ("stage", "variant", "test set", "chunk ms", "left ms", "sinks", "pos_conv", "mode", "search",
          "WER %", "S / D / I (N)", "RTF", "chunk latency ms (mean / p95)")


def format_table(rows: Sequence[ResultRow], relative_to: Optional[Path] = None) -> str:
    """The Markdown table of :data:`HEADER` (one row per decoding)."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        search = r.search + (f" {r.beam}" if r.search == "beam" and r.beam else "")
        err = r.errors
        err_s = f"{err['S']} / {err['D']} / {err['I']} ({err['N']})" if len(err) == 4 else "-"
        latency = ("-" if r.latency_mean_ms is None
                   else f"{_fmt(r.latency_mean_ms, 1)} / {_fmt(r.latency_p95_ms, 1)}")
        cells = ["-" if r.stage is None else str(r.stage), r.variant or "-", r.data,
                 "full" if r.chunk_ms is None else str(r.chunk_ms),
                 ("unlimited" if r.chunk_ms is not None else "-") if r.left_ms is None else str(r.left_ms),
                 str(r.sinks), r.pos_conv or "-", r.mode, search, _fmt(r.wer), err_s, _fmt(r.rtf, 3), latency]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results_md(rows: Sequence[ResultRow], out: Union[str, os.PathLike],
                     plots: Sequence[Union[str, os.PathLike]] = (), title: str = "Results",
                     sections: Sequence[str] = ()) -> Path:
    """Writes ``RESULTS.md``: the table of ``rows``, links to ``plots`` (paths relative to it), then
    further Markdown ``sections`` (e.g. :func:`xtrans.scoring.level.results_section`)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = [f"# {title}\n",
            "WER of every decoding under `exp/` (`python -m xtrans.bin.score --results exp`). Mode "
            "`simulated` is the masked full-utterance pass under the streaming rule, `streaming` the "
            "real chunk-by-chunk decoder. RTF = processing time / audio duration; chunk latency = "
            "compute time per streamed chunk.\n",
            format_table(rows) if rows else "_No decoding results found._\n"]
    for p in plots:
        rel = os.path.relpath(p, out.parent)
        text.append(f"![{Path(p).stem}]({rel})\n")
    text += list(sections)
    out.write_text("\n".join(text), encoding="utf-8")
    return out
