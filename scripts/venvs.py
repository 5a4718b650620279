"""The outside projects' own virtual environments (KServe's, MLServer's and FuxiCTR's): created with their pins,
checked before use, each behind the same `python -m MODULE setup | check [--venv DIR]` command line.

    make(venv, ["kserve==0.21.0", ...])        # create it if absent, then pip install the pins into it
    return command(argv, prog, doc, DEFAULT_VENV, setup, check)   # a peer module's main()
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def make(venv: Path, requirements: Sequence[str]) -> None:
    """The environment at ``venv`` (created with this interpreter if absent) with ``requirements`` installed."""
    venv = Path(venv)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    subprocess.run([*pip, *requirements], check=True)


def command(
    argv: list[str] | None,
    prog: str,
    doc: str,
    default_venv: Path,
    setup: Callable[[Path], dict[str, str]],
    check: Callable[[Path], dict[str, str]],
) -> int:
    """`setup` creates or updates the environment, `check` prints its versions; exit 2 with one line on failure."""
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    p.add_argument("action", choices=["setup", "check"], help="setup: create/update the environment; check: versions")
    p.add_argument("--venv", type=Path, default=default_venv, help="the virtual environment")
    args = p.parse_args(argv)
    try:
        versions = setup(args.venv) if args.action == "setup" else check(args.venv)
    except (FileNotFoundError, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"{prog.rsplit('.', 1)[-1]}: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.venv}: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return 0
