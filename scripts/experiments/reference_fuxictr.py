"""FuxiCTR's side of the reference-parity runs (scripts/experiments/reference.py): its virtual environment, its
configs written from a Recipe, and one run of its zoo's `DeepFM` or `APG_DeepFM` through fuxictr_launch.py.

    python -m scripts.experiments.reference_fuxictr setup     # .venv-fuxictr (fuxictr 2.3.10, torch 2.13.0, polars)
    python -m scripts.experiments.reference_fuxictr check

The mapping of a Recipe onto FuxiCTR's keys is `model_config`; what FuxiCTR's own code fixes beyond it (its
initialisation, the first-order term's pooling, gradient clipping) is listed in the report (RECIPE_DIFFERENCES).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from scripts import venvs

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO / ".venv-fuxictr"
# fuxictr 2.3.10's CSV reader calls polars' scan_csv(dtypes=...), which polars 2 removed; torch from the local wheel
PINS = ("fuxictr==2.3.10", "polars==1.44.2", "torch==2.13.0")
SETUP = "python -m scripts.experiments.reference_fuxictr setup"
ZOO_MODELS = {"base": ("DeepFM", "model_zoo/DeepFM/DeepFM_torch"), "self": ("APG_DeepFM", "model_zoo/APG")}
DATASET_ID = "apg_ml1m_split0"
LAUNCH = Path(__file__).with_name("fuxictr_launch.py")
_CHECK = (
    "import json, fuxictr, polars, torch; print(json.dumps({'fuxictr': fuxictr.__version__, "
    "'polars': polars.__version__, 'torch': torch.__version__}))"
)


def require_venv(venv: Path) -> Path:
    python = Path(venv) / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(f"FuxiCTR runs in its own virtual environment, and {venv} has none: `{SETUP}`")
    return python


def check(venv: Path) -> dict[str, str]:
    run = subprocess.run([str(require_venv(venv)), "-c", _CHECK], capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{venv} cannot import fuxictr, polars and torch:\n{run.stderr[-2000:]}")
    versions = json.loads(run.stdout.strip().splitlines()[-1])
    for pin in PINS:
        name, want = pin.split("==")
        if not versions[name].startswith(want):
            raise RuntimeError(f"{venv} has {name} {versions[name]}, the runs pin {want}: run `{SETUP}` again")
    return versions


def setup(venv: Path) -> dict[str, str]:
    venvs.make(venv, PINS)
    return check(venv)


def check_zoo(zoo: Path | None) -> Path:
    """The user's FuxiCTR checkout: both zoo models' folders must be there."""
    if zoo is None:
        raise ValueError("--fuxictr-zoo PATH is needed: a checkout of github.com/reczoo/FuxiCTR (commit 0245987)")
    missing = [d for _, d in ZOO_MODELS.values() if not (Path(zoo) / d / "src" / "__init__.py").exists()]
    if missing:
        raise ValueError(f"{zoo} is not a FuxiCTR checkout with its model zoo: {', '.join(missing)} missing")
    return Path(zoo).resolve()


def model_config(arm: str, recipe, seed: int, model_root: Path) -> dict:
    """FuxiCTR's model_config.yaml (its Base block and one experiment) for the recipe: the same widths, dropout,
    BatchNorm, batch, learning rate, epochs and patience as ours; no regularisers (ours has none but Adam's
    weight decay 1e-6); APG: rank_k, a hypernetwork with one hidden layer of cond_hidden (none: linear), no
    over-parameterisation, generate_bias."""
    name, _ = ZOO_MODELS[arm]
    expid = f"{name}_{arm}_s{seed}"
    exp = {
        "model": name,
        "dataset_id": DATASET_ID,
        "loss": "binary_crossentropy",
        "metrics": ["logloss", "AUC"],
        "task": "binary_classification",
        "optimizer": "adam",
        "hidden_units": list(recipe.hidden),
        "hidden_activations": "relu",
        "net_regularizer": 0,
        "embedding_regularizer": 0,
        "learning_rate": float(recipe.lr),
        "batch_norm": bool(recipe.batch_norm),
        "net_dropout": float(recipe.dropout),
        "batch_size": int(recipe.batch_size),
        "embedding_dim": int(recipe.embed_dim),
        "epochs": int(recipe.epochs),
        "shuffle": True,
        "seed": int(seed),
        "monitor": "AUC",
        "monitor_mode": "max",
    }
    if arm == "self":
        exp |= {
            "hypernet_config": {
                "hidden_units": [recipe.cond_hidden] if recipe.cond_hidden else [],
                "hidden_activations": "relu",
                "dropout_rates": 0,
            },
            "condition_features": [],
            "condition_mode": "self-wise",
            "new_condition_emb": False,
            "rank_k": int(recipe.rank),
            "overparam_p": None,
            "generate_bias": bool(recipe.generate_bias),
        }
    base = {
        "model_root": str(model_root),
        "num_workers": 1,
        "verbose": 0,
        "early_stop_patience": int(recipe.patience),
        "save_best_only": True,
        "eval_steps": None,
        "group_id": None,
        "use_features": None,
        "feature_specs": None,
    }
    return {"Base": base, expid: exp}


def write_configs(folder: Path, dataset: dict, model: dict) -> str:
    """The two YAML files FuxiCTR's config loader reads; returns the experiment id."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset_config.yaml").write_text(yaml.safe_dump(dataset, sort_keys=False))
    (folder / "model_config.yaml").write_text(yaml.safe_dump(model, sort_keys=False))
    return next(k for k in model if k != "Base")


def exported(plan, root: Path) -> tuple[Path, dict]:
    """Our ML-1M split (the study's: split seed 0) exported and checked value by value; its dataset config."""
    from model.data import load_dataset
    from scripts.experiments.reference_data import check, dataset_config, export

    data = load_dataset("ml-1m", split="random", seed=0, cache=True)
    out = root / "export"
    manifest = export(data, out)
    marker = out / "checked.json"
    if not marker.exists() or json.loads(marker.read_text()).get("files") != manifest["files"]:
        rows = check(data, out)
        marker.write_text(json.dumps({"files": manifest["files"], "rows_compared": rows}))
    return out, dataset_config(data.schema, out, DATASET_ID, root / "data")


def run_fuxictr(plan, arm: str, recipe, seed: int) -> dict:
    """One FuxiCTR run of the recipe (its zoo's model for the arm) on our split: the record's metrics."""
    zoo = check_zoo(plan.zoo)
    versions = check(plan.venv)
    root = (plan.runs / "fuxictr").resolve()
    _, dataset = exported(plan, root)
    tag = "-".join(f"{k}{v}" for k, v in sorted(recipe.point().items())) or "default"
    folder = root / "configs" / f"{arm}-{tag}-s{seed}"
    expid = write_configs(folder, dataset, model_config(arm, recipe, seed, root / "checkpoints"))
    result = folder / "result.json"
    result.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env |= {"OMP_NUM_THREADS": str(plan.threads), "RAY_TMPDIR": str(root / "ray")}
    command = [str(require_venv(plan.venv)), str(LAUNCH), "--model-dir", str(zoo / ZOO_MODELS[arm][1])]
    command += ["--config", str(folder), "--expid", expid, "--shuffle-seed", str(seed), "--out", str(result)]
    command += ["--threads", str(plan.threads)]
    with (folder / "run.log").open("w") as log:
        done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0 or not result.exists():
        tail = (folder / "run.log").read_text()[-3000:]
        raise RuntimeError(f"FuxiCTR's {expid} failed (exit {done.returncode}); {folder / 'run.log'} ends:\n{tail}")
    return {**json.loads(result.read_text()), "source": f"fuxictr {versions['fuxictr']} zoo {zoo}"}


def main(argv: list[str] | None = None) -> int:
    return venvs.command(argv, "python -m scripts.experiments.reference_fuxictr", __doc__, DEFAULT_VENV, setup, check)


if __name__ == "__main__":
    sys.exit(main())
