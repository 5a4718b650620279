"""The Docker build context and the stages that install the project hold all of it: every package pyproject.toml
installs (derived from it, never listed here), its package data, and the files a wheel build reads. The slow test
builds the wheel from the context as the Dockerfile's build stage does, installs it and runs it outside the repo.
"""

from __future__ import annotations

import fnmatch
import os
import site
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from build_context import (
    context_files,
    copy_context,
    copy_stage,
    installs_from_source,
    installs_wheel,
    package_data,
    project_files,
    project_packages,
    source_stages,
)
from deploy_files import REPO, dockerignore_patterns, parse_dockerfile


@pytest.fixture(scope="module")
def dockerfile():
    return parse_dockerfile((REPO / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def patterns():
    return dockerignore_patterns((REPO / ".dockerignore").read_text())


def test_packages_and_package_data_come_from_pyproject(pyproject):
    packages = project_packages(pyproject, REPO)
    assert packages, "pyproject.toml installs no package?"
    for package in packages:
        assert (REPO / package / "__init__.py").is_file(), package
    for glob in package_data(pyproject):
        assert list(REPO.glob(glob)), f"package data {glob} matches nothing"


def test_every_stage_that_installs_the_project_copies_all_of_it(dockerfile, pyproject, tmp_path):
    stages = source_stages(dockerfile)
    assert stages, "no stage builds the project from its sources?"
    for stage in dockerfile.stages:
        if installs_wheel(stage) and not installs_from_source(stage):
            built_by = {s.name for s in dockerfile.closure(stage.name)} & {s.name for s in stages}
            assert built_by, f"{stage.name} installs a wheel that no stage it copies from builds"
    for stage in stages:
        workdir = copy_stage(stage, REPO, tmp_path / stage.name)
        for rel in project_files(pyproject):
            assert (workdir / rel).is_file(), f"{stage.name}: {rel} is not copied (the wheel build reads it)"
        for package in project_packages(pyproject, REPO):
            assert (workdir / package / "__init__.py").is_file(), (
                f"{stage.name}: pyproject.toml installs {package}/ but the stage does not COPY it"
            )
        for glob in package_data(pyproject):
            for path in REPO.glob(glob):
                rel = path.relative_to(REPO)
                assert (workdir / rel).is_file(), f"{stage.name}: package data {rel} is not copied"


def test_dockerignore_lets_the_whole_project_into_the_context(pyproject, patterns):
    files = set(context_files(REPO, patterns))
    wanted = [*project_files(pyproject)]
    for package in project_packages(pyproject, REPO):
        wanted += [p.relative_to(REPO).as_posix() for p in (REPO / package).rglob("*.py")]
    for glob in package_data(pyproject):
        wanted += [p.relative_to(REPO).as_posix() for p in REPO.glob(glob)]
    missing = sorted(set(wanted) - files)
    assert not missing, f".dockerignore leaves out of the build context: {missing[:10]}"


def test_context_walk_follows_docker_rules(tmp_path):
    for rel in ("a.txt", "keep/a.py", "keep/sub/b.pyc", "keep/sub/c.pyc", "skip/x.py", "skip/deep/k.md", ".venv/x.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    patterns = dockerignore_patterns("*\n!keep/\n**/*.pyc\n!keep/sub/b.pyc\n!skip/**/*.md\n")
    # the last matching pattern wins; an exception reaches into an excluded folder
    assert context_files(tmp_path, patterns) == ["keep/a.py", "keep/sub/b.pyc", "skip/deep/k.md"]


@pytest.mark.slow
def test_wheel_from_the_build_context_installs_and_runs(dockerfile, pyproject, patterns, tmp_path):
    """The build stage's COPYs from the context as Docker builds it, then its `pip wheel`; the wheel in a fresh venv."""
    copy_context(REPO, patterns, tmp_path / "context")
    src = copy_stage(dockerfile.stage("build"), tmp_path / "context", tmp_path / "root")
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "wheel", "-q", "--no-index", "--no-deps", "--no-build-isolation", "-w", wheels, src])
    (wheel,) = wheels.glob("apg_ctr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for package in project_packages(pyproject, REPO):
        assert f"{package}/__init__.py" in names, f"the wheel has no {package} package"
    for glob in package_data(pyproject):
        assert fnmatch.filter(names, glob), f"the wheel has no {glob}"

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", venv])
    python, apg = venv / "bin" / "python", venv / "bin" / "apg"
    # pip runs in the new venv (--python), so it sees none of this interpreter's installs (the repo's editable one)
    _run([*pip, "--python", python, "install", "-q", "--no-index", "--no-deps", "--ignore-installed", wheel])
    # --system-site-packages reaches the base interpreter, not a venv the tests run in: add this interpreter's
    # site-packages as plain path lines, whose .pth files (the repo's editable install) are not run
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (purelib / "test_interpreter.pth").write_text("".join(f"{p}\n" for p in site.getsitepackages()))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    assert "usage: apg serve" in _run([apg, "serve", "--help"], cwd=elsewhere, env=env).stdout
    code = "import service.app, features; print(service.app.__file__); print(features.__file__)"
    for path in _run([python, "-c", code], cwd=elsewhere, env=env).stdout.split():
        assert Path(path).is_relative_to(purelib), f"imported from {path}, not from the installed wheel"


def _run(args: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, **kwargs)
    assert result.returncode == 0, f"{args[0]} … {args[-1]}: exit {result.returncode}\n{result.stderr[-3000:]}"
    return result
