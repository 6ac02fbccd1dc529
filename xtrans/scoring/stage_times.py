"""The wall time of each recipe stage, as ``asr.sh`` measures it, for ``RESULTS.md``.

``asr.sh`` appends a line ``<stage>\\t<seconds>\\t<what>`` to ``exp/stage_times.tsv`` at the end of
each stage it runs (a rerun of a stage replaces its line); :func:`stage_times_section` turns the
file into a Markdown table with the total and the machine it ran on.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import List, NamedTuple

STAGE_TIMES_TSV = "stage_times.tsv"


class StageTime(NamedTuple):
    stage: int
    seconds: int
    what: str


def read_stage_times(path: str | os.PathLike) -> List[StageTime]:
    """The lines of ``exp/stage_times.tsv``, ordered by stage.

    Raises:
        ValueError: for a line that is not ``<int>\\t<int>\\t<text>`` (naming the file and line).
    """
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        try:
            rows.append(StageTime(int(parts[0]), int(parts[1]), parts[2] if len(parts) > 2 else ""))
        except (ValueError, IndexError):
            raise ValueError(f"{path}:{number}: expected '<stage>\\t<seconds>\\t<what>', found {line!r}") from None
    return sorted(rows)


def cpu_description() -> str:
    """``"2 CPU cores (Intel(R) Xeon(R) Processor)"``: where the times were measured."""
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} CPU cores" + (f" ({model})" if model else "")


def stage_times_section(rows: List[StageTime]) -> str:
    """A ``## Wall time`` section: one row per stage, minutes and seconds, and the total."""
    def fmt(seconds: int) -> str:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    lines = ["## Wall time", "",
             f"Each recipe stage's wall time as `asr.sh` measured it (`exp/{STAGE_TIMES_TSV}`; stages run "
             f"again replace their line), on {cpu_description()}. A run from a fresh clone also spends the "
             "install (`make install`) before stage 1.", "",
             "| stage | what | wall time | seconds |", "|---|---|---|---|"]
    lines += [f"| {r.stage} | {r.what} | {fmt(r.seconds)} | {r.seconds} |" for r in rows]
    total = sum(r.seconds for r in rows)
    lines.append(f"| all | stages {', '.join(str(r.stage) for r in rows)} | {fmt(total)} | {total} |")
    return "\n".join(lines) + "\n"
