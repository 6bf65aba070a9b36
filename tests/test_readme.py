"""The README's journeys: every command block parses with the CLI as written, and (full form) runs.

The blocks are the ```` ```sh ```` fences of the README's "Journeys" section.
The reduced form parses every ``deltarnn`` line with the command line's own
parser, so that a renamed or removed option fails here. The full form runs
every block from the repository root, in order, as the README says a user
would after ``make test``; the board block, the one that needs hardware, must
end in the one-line error of a missing port where no board is attached.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from deltarnn.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def journey_blocks() -> list[list[str]]:
    """The command lines of each ``sh`` block of the README's "Journeys" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Journeys\n", 1)[1].split("\n## ", 1)[0]
    return [[line for line in block.splitlines() if line.strip()]
            for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S)]


def deltarnn_lines() -> list[str]:
    return [line for block in journey_blocks() for line in block if line.startswith("deltarnn ")]


def test_the_journeys_have_their_blocks():
    blocks = journey_blocks()
    assert len(blocks) >= 7
    commands = {shlex.split(line)[1] for line in deltarnn_lines()}
    assert {"quantize", "emulate", "study", "cosim", "build", "run"} <= commands


@pytest.mark.parametrize("line", deltarnn_lines())
def test_every_journey_command_parses_as_written(line):
    try:
        args = build_parser().parse_args(shlex.split(line)[1:])
    except SystemExit as e:  # argparse's way of refusing a line
        pytest.fail(f"the README's `{line}` does not parse (exit {e.code})")
    assert callable(args.func)


def _run_block(lines: list[str], env: dict) -> None:
    background = []
    try:
        for line in lines:
            if line.endswith("&"):
                background.append(subprocess.Popen(line[:-1], shell=True, cwd=ROOT, env=env,
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                   start_new_session=True))
                continue
            r = subprocess.run(line, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
            if "--port /dev/ttyUSB0" in line and not Path("/dev/ttyUSB0").exists():
                assert r.returncode == 2, r.stderr
                assert r.stderr.strip().count("\n") == 0 and "/dev/ttyUSB0" in r.stderr, r.stderr
                continue
            assert r.returncode == 0, f"`{line}` failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    finally:
        for p in background:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=30)


@pytest.mark.full
@pytest.mark.slow
def test_the_journeys_run_as_written():
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for block in journey_blocks():
        _run_block(block, env)
