"""The Dockerfile, parsed (no Docker engine here): stages, serving-image rules, pinning, the build context."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib

import pytest
from deploy_files import REPO, dockerignore_patterns, dockerignored, parse_dockerfile, parse_healthcheck
from live_server import stop
from packaging.specifiers import SpecifierSet

SERVING = ("serve", "serve-gpu")
CONSTRAINTS = "deploy/constraints.txt"


@pytest.fixture(scope="module")
def dockerfile():
    return parse_dockerfile((REPO / "Dockerfile").read_text())


def runs(stage) -> list[str]:
    return [i.args for i in stage.all("RUN")]


def pip_installs(stage) -> list[str]:
    """Every `pip install ...` command of the stage's RUN lines (split at &&)."""
    out = []
    for run in runs(stage):
        for command in re.split(r"&&|;", run):
            if re.search(r"\bpip3?\b.*\binstall\b", command) and " uninstall " not in f" {command} ":
                out.append(command.strip())
    return out


def test_parser_reads_stages_in_order(dockerfile):
    assert dockerfile.names() == ["build", "train", "bundle", "bundle-image", "loadtest", "serve-gpu", "serve"]
    assert dockerfile.stages[-1].name == "serve", "the default target (last stage) must be the CPU serving image"


@pytest.mark.parametrize("name", SERVING)
def test_serving_stage_runs_as_non_root(dockerfile, name):
    user = dockerfile.stage(name).last("USER")
    assert user is not None, f"{name}: no USER (would run as root)"
    uid = user.args.split(":")[0]
    assert uid not in {"root", "0"}, f"{name}: USER {user.args}"
    assert uid.isdigit(), "a numeric uid lets Kubernetes verify runAsNonRoot"
    assert any(uid in run for run in runs(dockerfile.stage(name))), f"{name}: user {uid} is never created"


@pytest.mark.parametrize("name", SERVING)
def test_serving_stage_healthcheck_is_readiness_via_python(dockerfile, name):
    stage = dockerfile.stage(name)
    ins = stage.last("HEALTHCHECK")
    assert ins is not None, f"{name}: no HEALTHCHECK"
    check = parse_healthcheck(ins)
    assert check.command is not None, f"{name}: HEALTHCHECK must be exec form: {check.raw}"
    assert check.command[0] == "python" and "urllib" in " ".join(check.command), "python's urllib, no curl"
    url = _resolved(" ".join(check.command), stage.env())
    assert "/readyz" in url, f"{name}: the healthcheck must hit /readyz, resolves to {url!r}"
    assert {"interval", "timeout", "start-period", "retries"} <= check.options.keys()


@pytest.mark.parametrize("name", SERVING)
def test_serving_stage_entrypoint_is_exec_form_apg_serve(dockerfile, name):
    stage = dockerfile.stage(name)
    entrypoint, cmd = stage.last("ENTRYPOINT"), stage.last("CMD")
    assert entrypoint is not None and entrypoint.exec_form == ["apg", "serve"], "exec form: signals reach apg"
    assert cmd is not None and cmd.exec_form is not None, "CMD must be exec form"
    args = cmd.exec_form
    assert args[args.index("--host") + 1] == "0.0.0.0"
    port = args[args.index("--port") + 1]
    assert stage.last("EXPOSE").args.split("/")[0] == port == "8000"
    env = stage.env()
    assert env["APG_BUNDLE"].startswith("/"), "the bundle is mounted at an absolute path"
    assert f":{port}/readyz" in env["APG_HEALTHCHECK_URL"]


@pytest.mark.parametrize("name", SERVING)
def test_serving_stage_data_dir_is_a_volume_the_user_owns(dockerfile, name):
    # issue 25: with no APG_DATA_DIR the click store went to ./var under a read-only root, and the service crash-looped
    stage = dockerfile.stage(name)
    data = stage.env()["APG_DATA_DIR"]
    assert data.startswith("/"), "an absolute path (the working directory is /)"
    volumes = [v for ins in stage.all("VOLUME") for v in (ins.exec_form or ins.args.split())]
    assert data in volumes, f"{name}: APG_DATA_DIR {data} is not a VOLUME"
    uid = stage.last("USER").args.split(":")[0]
    created = [run for run in runs(stage) if f"mkdir -p {data}" in run and f"chown {uid}" in run]
    assert created, f"{name}: {data} must be created and owned by {uid} before the VOLUME (writable by the service)"
    volume_line = stage.all("VOLUME")[-1].line
    assert all(i.line < volume_line for i in stage.all("RUN") if data in i.args), "changes after VOLUME are lost"


@pytest.mark.parametrize("name", SERVING)
def test_serving_images_install_only_the_serve_extra(dockerfile, name):
    stages = dockerfile.closure(name)
    assert {s.name for s in stages} <= {name, "build"}, "serving images must not build on the train stage"
    installs = [cmd for s in stages for cmd in pip_installs(s)]
    assert any("[serve]" in cmd for cmd in installs), installs
    text = " ".join(run for s in stages for run in runs(s))
    assert "torch" not in text and "[train" not in text and ",train" not in text, "no torch in a serving image"
    for compiler in ("gcc", "g++", "build-essential", "clang", "-dev "):
        assert compiler not in text, f"{name}: no compilers in a serving image ({compiler})"
    base = dockerfile.stage(name).base
    assert "devel" not in base, f"{name}: runtime base image, not {base}"


def test_gpu_stage_uses_onnxruntime_gpu_on_cuda_runtime(dockerfile):
    stage = dockerfile.stage("serve-gpu")
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-cudnn\d*-runtime-ubuntu\d+\.\d+", stage.base), stage.base
    installs = pip_installs(stage)
    assert any(re.search(r"\bonnxruntime-gpu\b", cmd) for cmd in installs), installs
    # `.[serve]` brings the CPU onnxruntime: it must be removed before onnxruntime-gpu goes in (same module)
    text = " && ".join(runs(stage))
    assert text.index("uninstall -q -y onnxruntime") < text.index("install -q -c /tmp/constraints.txt onnxruntime-gpu")
    assert stage.env()["APG_PROVIDERS"] == "cuda", "fail fast without CUDA instead of silently running on the CPU"


def test_cuda_major_matches_the_onnxruntime_gpu_build(dockerfile):
    # onnxruntime-gpu 1.19 … 1.2x on PyPI are CUDA 12 builds, 1.31 is a CUDA 13 build (its `cuda` extra asks for
    # nvidia-cuda-runtime~=13.0); keep the base image's CUDA major in step when bumping either pin.
    pins = _constraints()
    major_minor = tuple(int(x) for x in pins["onnxruntime-gpu"].split(".")[:2])
    cuda_major = int(dockerfile.stage("serve-gpu").base.split(":")[1].split(".")[0])
    assert cuda_major == (13 if major_minor >= (1, 31) else 12), (pins["onnxruntime-gpu"], cuda_major)


def test_training_stage_builds_the_default_bundle(dockerfile):
    stage = dockerfile.stage("train")
    text = " && ".join(runs(stage))
    for step in (
        "scripts.cli data",
        "scripts.cli train",
        "--out /runs/default",
        "export /runs/default --out /bundles/default",
    ):
        assert step in text, step
    train_args = next(i.args for i in stage.all("ARG") if i.args.startswith("TRAIN_ARGS="))
    assert "--model deepfm --apg self" in train_args
    assert dockerfile.stage("bundle").base == "scratch"
    assert "bundle" in dockerfile.stage("bundle-image").copy_from()


def test_base_images_are_pinned_by_tag(dockerfile):
    stage_names = set(dockerfile.names())
    for stage in dockerfile.stages:
        if stage.base in stage_names or stage.base == "scratch":
            continue
        assert "$" not in stage.base, f"unexpanded ARG in FROM {stage.base}"
        image, _, tag = stage.base.partition(":")
        assert "@sha256:" in stage.base or (tag and tag != "latest" and re.search(r"\d", tag)), stage.base


def test_every_pip_install_is_constrained(dockerfile):
    for stage in dockerfile.stages:
        copied = " ".join(i.args for i in stage.all("COPY"))
        for cmd in pip_installs(stage):
            assert "-c /tmp/constraints.txt" in cmd, f"{stage.name}: unpinned install: {cmd}"
            assert f"{CONSTRAINTS} /tmp/constraints.txt" in copied, f"{stage.name}: constraints file not copied"


def test_constraints_pin_every_line_and_cover_the_serve_extra():
    pins = _constraints()
    assert "torch" in pins and pins["torch"] == _pyproject_pin("train", "torch")
    for requirement in _extra("serve"):
        name, spec = _split_requirement(requirement)
        assert name in pins, f"{name} (pyproject's serve extra) is not pinned in {CONSTRAINTS}"
        assert SpecifierSet(spec).contains(pins[name]), f"{name}=={pins[name]} violates pyproject's {requirement}"
    assert "onnxruntime-gpu" in pins


def test_dockerignore_keeps_data_and_secrets_out_of_the_context(dockerfile):
    patterns = dockerignore_patterns((REPO / ".dockerignore").read_text())
    for path in (
        ".venv/bin/python",
        ".data/ml-100k/ml-100k.inter",
        "runs/default/model.pt",
        "bundles/default/model.onnx",
        ".git/HEAD",
        ".pytest_cache/v/cache",
        ".ruff_cache/x",
        "model/__pycache__/apg.cpython-311.pyc",
        "service/.env",
        "apg_ctr.egg-info/PKG-INFO",
        "tests/conftest.py",
        "docs/DEPLOY.md",
    ):
        assert dockerignored(path, patterns), f"{path} would be sent to the Docker daemon"
    sources = [
        word
        for stage in dockerfile.stages
        for ins in stage.all("COPY")
        if "--from=" not in ins.args
        for word in shlex.split(ins.args)[:-1]
    ]
    assert sources, "no COPY from the build context?"
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: missing in the repo"
        assert not dockerignored(source.rstrip("/"), patterns), f"COPY {source} is excluded by .dockerignore"
        for path in (REPO / source).rglob("*.py") if (REPO / source).is_dir() else []:
            rel = path.relative_to(REPO).as_posix()
            assert not dockerignored(rel, patterns), f"{rel} would be missing in the image"


def test_dockerignore_matcher_semantics():
    patterns = dockerignore_patterns("*\n!keep/\n**/__pycache__\n")
    assert dockerignored("x.txt", patterns) and dockerignored("deep/x.txt", patterns)
    assert not dockerignored("keep/a.py", patterns) and not dockerignored("keep/sub/b.py", patterns)
    assert dockerignored("keep/sub/__pycache__/b.pyc", patterns)


def test_healthcheck_command_against_a_closed_port_fails(dockerfile):
    """The exact HEALTHCHECK command exits non-zero when nothing answers (the live test checks the 0)."""
    command, env = _healthcheck_command(dockerfile, "serve", "http://127.0.0.1:9/readyz")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert process.wait(timeout=30) != 0
    finally:
        stop(process)


def test_healthcheck_command_against_live_server(dockerfile, apg_server):
    command, env = _healthcheck_command(dockerfile, "serve", f"{apg_server.url}/readyz")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------------------------ helpers
def _healthcheck_command(dockerfile, name: str, url: str) -> tuple[list[str], dict[str, str]]:
    stage = dockerfile.stage(name)
    command = parse_healthcheck(stage.last("HEALTHCHECK")).command
    assert command[0] == "python"
    return [sys.executable, *command[1:]], {**stage.env(), "APG_HEALTHCHECK_URL": url, "PATH": "/usr/bin:/bin"}


def _resolved(text: str, env: dict[str, str]) -> str:
    """Replace os.environ['X'] / os.environ.get('X', ...) references by the stage's ENV values."""
    return re.sub(r"os\.environ(?:\.get\()?\[?['\"](\w+)['\"][^)\]]*[)\]]", lambda m: env.get(m.group(1), ""), text)


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / CONSTRAINTS).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][A-Za-z0-9.+!-]*", line), (
            f"{CONSTRAINTS}: not name==version: {line}"
        )
        name, version = line.split("==")
        assert _norm(name) not in pins, f"{CONSTRAINTS}: {name} twice"
        pins[_norm(name)] = version
    return pins


def _extra(name: str) -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"][name]


def _pyproject_pin(extra: str, package: str) -> str:
    for requirement in _extra(extra):
        name, spec = _split_requirement(requirement)
        if name == package:
            return spec.removeprefix("==")
    raise KeyError(package)


def _split_requirement(requirement: str) -> tuple[str, str]:
    m = re.fullmatch(r"([A-Za-z0-9._-]+)(?:\[[^\]]*\])?\s*(.*)", requirement.strip())
    return _norm(m.group(1)), m.group(2).strip()


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_loadtest_stage_has_the_generator_but_no_model_runtime(dockerfile):
    stage = dockerfile.stage("loadtest")
    installs = " ".join(pip_installs(stage))
    assert "[loadtest]" in installs and "onnxruntime" not in installs and "torch" not in installs
    assert stage.last("ENTRYPOINT").exec_form == ["apg", "loadtest"]
    assert stage.last("USER").args.split(":")[0] == "10001"
