"""The `apg` console script: building its parser imports no tooling, `apg serve` imports neither torch nor the tools,
and every subcommand's --help names itself and shows its defaults."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from scripts import cli, model_commands

REPO = Path(__file__).resolve().parents[2]
TOOLING = ("torch", "httpx", "model", "scripts.bench", "scripts.loadtest", "scripts.experiments")
SUBCOMMANDS = [
    ["data"],
    ["data", "synth"],
    ["data", "convert"],
    ["train"],
    ["export"],
    ["serve"],
    ["items", "sync"],
    ["loadtest"],
    ["bench"],
    ["bench", "training"],
    ["experiment"],
    *([["experiment", name] for name in (*cli.EXPERIMENTS, "complexity", "study", "control", "report")]),
]


def modules_after(code: str) -> set[str]:
    """sys.modules at the end of `code`, run in a fresh interpreter."""
    script = f"import sys\ntry:\n    {code}\nexcept SystemExit:\n    pass\nprint('MODULES', *sys.modules)"
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    return set(run.stdout.rsplit("MODULES", 1)[1].split())


def tooling_in(modules: set[str]) -> set[str]:
    return {m for m in modules if any(m == t or m.startswith(t + ".") for t in TOOLING)}


@pytest.mark.parametrize(
    "code",
    [
        "import scripts.cli; scripts.cli.build_parser()",
        "import scripts.cli; scripts.cli.build_parser().parse_args(['serve'])",
        "import scripts.cli; scripts.cli.main(['serve', '--help'])",
        "import scripts.cli; scripts.cli.main(['--help'])",
        "import scripts.cli; scripts.cli.main(['--version'])",
    ],
)
def test_building_the_parser_imports_no_tooling(code):
    modules = modules_after(code)
    assert "scripts.cli" in modules and tooling_in(modules) == set()


def test_apg_serve_imports_the_service_but_no_tooling(tmp_path):
    # a missing bundle stops `apg serve` after the serving path is imported, before uvicorn listens
    modules = modules_after(f"import scripts.cli; sys.exit(scripts.cli.main(['serve', '--bundle', '{tmp_path}']))")
    assert "service.server" in modules and "uvicorn" in modules
    assert tooling_in(modules) == set()


def test_apg_items_sync_imports_no_torch_or_model():
    modules = modules_after("import scripts.cli; scripts.cli.main(['items', 'sync', '--help'])")
    assert "scripts.items.sync" in modules and "torch" not in modules and "model" not in modules


def test_a_subcommand_imports_its_own_module_only():
    modules = modules_after("import scripts.cli; scripts.cli.main(['loadtest', '--help'])")
    assert "scripts.loadtest.args" in modules and tooling_in(modules) == {"scripts.loadtest", "scripts.loadtest.args"}


@pytest.mark.parametrize("argv", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_help_names_itself_and_shows_defaults(argv, capsys):
    try:
        code = cli.main([*argv, "--help"])
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    if code == 2 and not _torch_imports():  # a serving-only install: the extra to install, not a traceback
        assert argv[0] in ("data", "train", "experiment") and "needs the 'train' extra" in captured.err
        return
    out = captured.out
    assert code == 0
    assert out.startswith(f"usage: apg {' '.join(argv)} ")
    assert "(default: " in out or argv in (["experiment"], ["export"])  # (no option of theirs has a default)
    assert "(default: (" not in out and "(default: [" not in out  # a list as typed (1,8,64), not a Python tuple


def test_version_is_the_distributions(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert exc.value.code == 0 and capsys.readouterr().out == f"apg {version}\n"


def test_a_missing_extra_is_named():
    code = "import sys; sys.modules['httpx'] = None; import scripts.cli; sys.exit(scripts.cli.main(['loadtest']))"
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)  # serve-only install
    assert run.returncode == 2 and "apg loadtest: this command needs the 'loadtest' extra" in run.stderr


def test_errors_name_the_subcommand(capsys):
    assert cli.main(["loadtest", "--url", "http://example.invalid"]) == 2
    assert capsys.readouterr().err.startswith("apg loadtest: error: refusing to load non-loopback host")


def test_train_options_build_the_configs():
    pytest.importorskip("torch")
    from model.apg import APGConfig
    from model.train import TrainConfig
    from model.zoo import ModelConfig

    argv = [
        "train",
        "--model",
        "dnn",
        "--apg",
        "mix",
        "--mix-fields",
        "user_id,gender",
        "--hidden",
        "64,32",
        "--generate-bias",
        "--epochs",
        "3",
        "--limit",
        "500",
        "--out",
        "runs/x",
    ]
    model, train = model_commands.train_configs(cli.build_parser().parse_args(argv))
    apg = APGConfig("mix", mix_fields=("user_id", "gender"), generate_bias=True)
    assert model == ModelConfig("dnn", hidden=(64, 32), apg=apg)
    assert train == TrainConfig(epochs=3, limit=500)
    assert model_commands.train_configs(cli.build_parser().parse_args(["train", "--out", "x"])) == (
        ModelConfig(),
        TrainConfig(),
    )


def test_an_option_named_run_reaches_its_command(tmp_path, capsys):
    pytest.importorskip("torch")  # apg export is the training side
    assert cli.main(["export", str(tmp_path / "no-run"), "--out", str(tmp_path / "bundle")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("apg export: error:") and "no-run" in err


def _torch_imports() -> bool:
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True
