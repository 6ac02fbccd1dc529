"""Print the decodings of recipe stage 11 for one model, one per line: ``<tag> <decode args>``.

    python -m xtrans.bin.decode_plan --train_config conf/train_stage4.yaml --decode_config conf/decode.yaml

To look at the plan, or to edit it: the output is a ``--plan`` file of ``xtrans.bin.decode``. Stage
11 itself passes the two configs to ``xtrans.bin.decode``, which calls the planner directly. See
:mod:`xtrans.recipes.decode_plan` for the rules.
"""

from __future__ import annotations

import argparse
import sys

from xtrans.config import ConfigError
from xtrans.recipes.decode_plan import plan


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train_config", required=True)
    p.add_argument("--decode_config", required=True)
    args = p.parse_args(argv)
    try:
        jobs = plan(args.train_config, args.decode_config)
    except (ConfigError, OSError) as err:
        print(f"decode_plan: {err}", file=sys.stderr)
        return 2
    for job in jobs:
        print(job.tag, job.args())
    return 0


if __name__ == "__main__":
    sys.exit(main())
