"""What `docker build` would work with, emulated for the tests: the build context and a stage's COPYs.

- `project_packages` / `package_data` / `project_files`: what pyproject.toml makes a wheel from.
- `context_files`: the files of the build context (.dockerignore applied with `deploy_files.dockerignored`).
- `copy_stage`: a stage's COPY and WORKDIR instructions replayed into a directory standing in for `/`.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
from pathlib import Path, PurePosixPath

from deploy_files import Dockerfile, Stage, dockerignored


# ------------------------------------------------------------------------------------------ pyproject.toml
def project_packages(pyproject: dict, root: Path) -> list[str]:
    """Top-level folders of the packages `[tool.setuptools.packages.find] include` selects ("features*" -> features)."""
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    folders = [p.name for p in root.iterdir() if p.is_dir()]
    out = set()
    for pattern in include:
        found = fnmatch.filter(folders, pattern.split(".")[0])  # as setuptools matches package names
        assert found, f"pyproject.toml includes {pattern!r}: no such folder in {root}"
        out.update(found)
    return sorted(out)


def package_data(pyproject: dict) -> list[str]:
    """`[tool.setuptools.package-data]` as path globs ({"model": ["schemas/*.json"]} -> model/schemas/*.json)."""
    data = pyproject["tool"]["setuptools"].get("package-data", {})
    return [f"{package.replace('.', '/')}/{glob}" for package, globs in data.items() for glob in globs]


def project_files(pyproject: dict) -> list[str]:
    """Files a wheel build reads besides the packages: pyproject.toml, the readme, declared license files."""
    project = pyproject["project"]
    readme = project.get("readme")
    readme = readme.get("file") if isinstance(readme, dict) else readme
    return ["pyproject.toml", *([readme] if readme else []), *project.get("license-files", [])]


# ------------------------------------------------------------------------------------------ build context
def context_files(root: Path, patterns: list[tuple[bool, str]]) -> list[str]:
    """The build context's files ('/'-separated, relative to root), as Docker sends them.

    Each file goes by `dockerignored` (last match wins, parents count). Like Docker, the walk skips an excluded
    folder unless an exception (`!pattern`) could match something inside it.
    """
    out = []
    for folder, dirs, files in os.walk(root):
        rel = Path(folder).relative_to(root).as_posix()
        prefix = "" if rel == "." else f"{rel}/"
        dirs[:] = [d for d in dirs if not _skipped(f"{prefix}{d}", patterns)]
        out += [f"{prefix}{f}" for f in files if not dockerignored(f"{prefix}{f}", patterns)]
    return sorted(out)


def copy_context(root: Path, patterns: list[tuple[bool, str]], dest: Path) -> list[str]:
    """The build context of `root` copied to `dest`; returns its files."""
    files = context_files(root, patterns)
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dest / rel)
    return files


def _skipped(folder: str, patterns: list[tuple[bool, str]]) -> bool:
    if not dockerignored(folder, patterns):
        return False
    parts = folder.split("/")
    return not any(negated and _may_match_below(parts, pattern) for negated, pattern in patterns)


def _may_match_below(parts: list[str], pattern: str) -> bool:
    for part, glob in zip(parts, pattern.split("/"), strict=False):
        if glob == "**":
            return True
        if not fnmatch.fnmatchcase(part, glob):
            return False
    return True


# ------------------------------------------------------------------------------------------------ stages
def installs_from_source(stage: Stage) -> bool:
    """Whether a RUN of the stage builds or installs the project from its source tree (`pip wheel .`, '.[x]')."""
    for run in stage.all("RUN"):
        for command in re.split(r"&&|;", run.args):
            words = shlex.split(command)
            if any(w == "pip" or w.endswith("/pip") for w in words) and {"install", "wheel"} & set(words):
                if any(w in {".", "./"} or w.startswith(".[") for w in words):
                    return True
    return False


def installs_wheel(stage: Stage) -> bool:
    """Whether a RUN of the stage installs the project's wheel (built in another stage)."""
    return any("apg_ctr-" in run.args and ".whl" in run.args for run in stage.all("RUN"))


def source_stages(dockerfile: Dockerfile) -> list[Stage]:
    return [s for s in dockerfile.stages if installs_from_source(s)]


def copy_stage(stage: Stage, context: Path, root: Path) -> Path:
    """Replay the stage's COPYs from `context` (not --from) into `root` (its `/`); returns the final WORKDIR.

    Docker's rules for what lands where: a folder's contents go into the destination, a file goes into a
    destination ending in '/' (or one of several sources), else becomes it; relative paths start at WORKDIR.
    A source missing in the context fails the build, as it does in Docker.
    """
    workdir = PurePosixPath("/")
    for ins in stage.instructions:
        if ins.keyword == "WORKDIR":
            workdir = workdir / ins.args
        if ins.keyword != "COPY" or "--from=" in ins.args:
            continue
        *sources, dest = [w for w in shlex.split(ins.args) if not w.startswith("--")]
        target = root / str(workdir / dest).lstrip("/")
        for source in sources:
            path = context / source
            if not path.exists():
                raise FileNotFoundError(f"COPY {source}: not in the build context (line {ins.line})")
            if path.is_dir():
                shutil.copytree(path, target, dirs_exist_ok=True)
            elif dest.endswith("/") or len(sources) > 1:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    return root / str(workdir).lstrip("/")
