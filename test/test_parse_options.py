"""egs/TEMPLATE/asr1/utils/parse_options.sh: Kaldi-style --name value options in a small script
run under `set -euo pipefail` (values, dashes, booleans, unknown options, --help, positionals)."""

import shutil
import subprocess
from pathlib import Path

import pytest

PARSE_OPTIONS = Path(__file__).resolve().parents[1] / "egs" / "TEMPLATE" / "asr1" / "utils" / "parse_options.sh"

SCRIPT = """#!/usr/bin/env bash
set -euo pipefail
stage=1            # first recipe stage
stop_stage=12      # last recipe stage
debug=false        # print every command
name="a b"
nj=4
help_message="Usage: $0 [options] <data>"
. {parse_options}
echo "stage=$stage stop_stage=$stop_stage debug=$debug name=$name nj=$nj"
echo "args=$# $*"
"""

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "run.sh"
    path.write_text(SCRIPT.format(parse_options=PARSE_OPTIONS))
    return path


def run(script, *args):
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=30)


def test_values_dashes_and_positionals(script):
    p = run(script, "--stage", "6", "--stop-stage", "10", "--debug", "true", "--name", "x y", "--nj=2",
            "data/test", "--not-an-option")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["stage=6 stop_stage=10 debug=true name=x y nj=2",
                                     "args=2 data/test --not-an-option"]


def test_defaults_and_double_dash(script):
    p = run(script, "--", "--stage", "3")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["stage=1 stop_stage=12 debug=false name=a b nj=4", "args=2 --stage 3"]


@pytest.mark.parametrize("args, message", [
    (["--bogus", "1"], "unknown option --bogus"),
    (["--stage-typo", "1"], "unknown option --stage-typo"),
    (["--PATH", "/tmp"], "unknown option --PATH"),  # set in the environment, but not an option
    (["--help_message", "x"], "unknown option --help_message"),
    (["--debug", "maybe"], "--debug is boolean: expected true or false, found 'maybe'"),
    (["--stage"], "--stage needs a value"),
])
def test_errors(script, args, message):
    p = run(script, *args)
    assert p.returncode != 0
    assert message in p.stderr
    assert "stage=" not in p.stdout  # the script stopped


def test_help_lists_options_with_defaults(script):
    p = run(script, "--stage", "2", "--help")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == f"Usage: {script} [options] <data>"
    options = [line.split() for line in lines if line.startswith("  --")]
    assert [o[0] for o in options] == ["--stage", "--stop_stage", "--debug", "--name", "--nj"]
    text = p.stdout
    assert "--stage" in text and "[2]  first recipe stage" in text  # the value so far
    assert "[12]  last recipe stage" in text and "[false]  print every command" in text
    assert "[a b]" in text


def test_an_early_option_of_a_long_list_is_always_found(tmp_path):
    """CI once saw `unknown option --frontend_config` from a recipe that declares it: the name list was
    piped to `grep -q`, which leaves at the first match while bash still writes the rest a line at a
    time, and under pipefail the writer's SIGPIPE failed the check whenever grep left before the last
    write. A list longer than a pipe's buffer (64 KiB: 20000 names) makes that happen every time; the
    check must not depend on the scheduler."""
    names = [f"option_{i}" for i in range(20000)]
    path = tmp_path / "many.sh"
    path.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + "".join(f"{n}=0\n" for n in names)
                    + f". {PARSE_OPTIONS}\necho \"$option_0 $option_19999\"\n")
    for _ in range(5):
        p = run(path, "--option_0", "7", "--option_19999", "8")
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == "7 8"
