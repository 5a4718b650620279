"""Reference parity (issue 24, item 1): our DeepFM and self-wise APG against FuxiCTR's own `DeepFM` and `APG_DeepFM`,
on our exact ML-1M split, with one configuration grid for both libraries.

    python -m scripts.experiments.reference_venv setup          # .venv-fuxictr: fuxictr 2.3.10, torch 2.13.0, polars
    git clone https://github.com/reczoo/FuxiCTR && git -C FuxiCTR checkout 0245987   # its model_zoo (not copied here)
    apg experiment reference run --fuxictr-zoo FuxiCTR --seeds 1,2,3,4,5
    apg experiment reference report                             # docs/results/reference-ml-1m.md

FuxiCTR's wheel has no model zoo: `DeepFM` (model_zoo/DeepFM/DeepFM_torch) and `APG_DeepFM` (model_zoo/APG) live in
its source repository, which the user checks out; they are run from there by their own `run_expid.py`, in a virtual
environment of their own. Our split is exported as our encoded indices (scripts/experiments/reference_data.py),
checked value by value against the encoded cache, so both libraries train on the same rows and the same information.
Each grid point is a `Recipe` (a shared setting: widths, dropout, BatchNorm, APG's rank and G); each library picks
its best point per arm on validation with seed 0 (where the grid has more than one point), then trains the chosen
point on the test seeds. Resumable: each finished run is a line of docs/results/reference/ml-1m.jsonl keyed by
(library, arm, recipe, seed); a run already there is skipped. Our runs at the study's own recipe are the study's
runs (docs/results/study/ml-1m.jsonl: the same code path, configuration and budget), not trained twice.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from scripts.experiments.paired import fmt, paired

RESULTS = Path("docs/results")
RUNS = Path("runs/reference")
LIBS = ("ours", "fuxictr")
ARMS = ("base", "self")
DATA = "ml-1m"


@dataclass(frozen=True)
class Recipe:
    """One setting shared by both libraries (FuxiCTR's names in comments). Defaults: the study's recipe."""

    embed_dim: int = 16  # embedding_dim
    hidden: tuple[int, ...] = (256, 128)  # hidden_units
    dropout: float = 0.0  # net_dropout
    batch_norm: bool = False  # batch_norm
    batch_size: int = 1024
    lr: float = 1e-3  # learning_rate (both reduce it x0.1 on a validation plateau)
    epochs: int = 10
    patience: int = 2  # early_stop_patience
    rank: int = 16  # rank_k
    cond_hidden: int = 32  # hypernet_config.hidden_units: [cond_hidden], or [] (a linear G) at 0
    generate_bias: bool = False  # generate_bias
    init: str = "default"  # ours only (ModelConfig.init): FuxiCTR always initialises its own way (xavier, std 1e-4)

    OURS_ONLY = ("init",)

    def point(self) -> dict:
        """What differs from the default recipe (the name of a grid point)."""
        base = asdict(Recipe())
        return {k: v for k, v in asdict(self).items() if v != base[k]}


def parse_grid(text: str) -> list[Recipe]:
    """'batch_norm=0,1;dropout=0,0.2' -> the Recipes of every combination (the default recipe for '')."""
    points = [Recipe()]
    types = {f.name: f.type for f in fields(Recipe)}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, values = part.partition("=")
        name = name.strip()
        if name not in types:
            raise ValueError(f"unknown recipe knob {name!r} in --grid (knobs: {', '.join(types)})")
        parsed = [_value(name, v.strip(), getattr(Recipe(), name)) for v in values.split(",") if v.strip()]
        if not parsed:
            raise ValueError(f"--grid {part!r} names no value")
        points = [replace(p, **{name: v}) for p in points for v in parsed]
    return points


def _value(name: str, text: str, default):
    if isinstance(default, bool):
        if text.lower() not in ("0", "1", "true", "false"):
            raise ValueError(f"--grid {name} takes 0/1 or true/false, got {text!r}")
        return text.lower() in ("1", "true")
    if isinstance(default, tuple):
        return tuple(int(w) for w in text.split("x"))  # hidden=400x400x400
    return type(default)(text)


@dataclass(frozen=True)
class Plan:
    grid: tuple[Recipe, ...] = (Recipe(),)
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    libs: tuple[str, ...] = LIBS
    arms: tuple[str, ...] = ARMS
    zoo: Path | None = None  # the FuxiCTR checkout
    venv: Path = Path(".venv-fuxictr")
    results: Path = RESULTS
    runs: Path = RUNS
    threads: int = 1
    device: str = "cpu"
    extra: dict = field(default_factory=dict)


def store_path(results: Path) -> Path:
    return results / "reference" / f"{DATA}.jsonl"


def key(lib: str, arm: str, recipe: Recipe, seed: int) -> str:
    """What identifies a run; a knob only our library has is not part of FuxiCTR's runs' identity."""
    if lib != "ours":
        recipe = replace(recipe, **{k: getattr(Recipe(), k) for k in Recipe.OURS_ONLY})
    return json.dumps({"lib": lib, "arm": arm, "recipe": asdict(recipe), "seed": seed}, sort_keys=True)


def read_store(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {key(r["lib"], r["arm"], recipe_of(r), r["seed"]): r for r in records}


def recipe_of(record: dict) -> Recipe:
    r = dict(record["recipe"])
    r["hidden"] = tuple(r["hidden"])
    return Recipe(**r)


def chosen(plan: Plan, done: dict[str, dict], lib: str, arm: str) -> Recipe | None:
    """The grid point with the best validation AUC on seed 0 (the only point of a one-point grid); None until
    every point has its seed-0 run."""
    if len(plan.grid) == 1:
        return plan.grid[0]
    runs = [done.get(key(lib, arm, r, 0)) for r in plan.grid]
    if any(r is None for r in runs):
        return None
    return max(zip(plan.grid, runs, strict=True), key=lambda pr: pr[1]["valid"]["auc"])[0]


def run(plan: Plan, say=print) -> dict[str, dict]:
    """Train what the store lacks, one run at a time: the grid on seed 0 (when it has more than one point), then
    each library's chosen point per arm on the test seeds. Returns the store."""
    path = store_path(plan.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = read_store(path)

    def one(lib: str, arm: str, recipe: Recipe, seed: int) -> None:
        if key(lib, arm, recipe, seed) in done:
            return
        say(f"reference: {lib} {arm} {recipe.point() or 'default recipe'} seed {seed}")
        record = train(plan, lib, arm, recipe, seed)
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        done[key(lib, arm, recipe, seed)] = record
        say(f"  valid AUC {record['valid']['auc']:.4f}, test AUC {record['test']['auc']:.4f} ({record['source']})")

    if len(plan.grid) > 1:
        for lib in plan.libs:
            for arm in plan.arms:
                for recipe in plan.grid:
                    one(lib, arm, recipe, 0)
    for lib in plan.libs:
        for arm in plan.arms:
            for seed in plan.seeds:
                one(lib, arm, chosen(plan, done, lib, arm), seed)
    return done


def train(plan: Plan, lib: str, arm: str, recipe: Recipe, seed: int) -> dict:
    record = {"lib": lib, "arm": arm, "seed": seed, "recipe": asdict(recipe), "data": DATA}
    if lib == "ours":
        return {**record, **ours(plan, arm, recipe, seed)}
    from scripts.experiments.reference_fuxictr import run_fuxictr

    return {**record, **run_fuxictr(plan, arm, recipe, seed)}


def ours_configs(arm: str, recipe: Recipe, seed: int, plan: Plan):
    """Our ModelConfig and TrainConfig for the recipe; every other setting at the study's defaults."""
    from model.apg import APGConfig
    from model.train import TrainConfig
    from model.zoo import ModelConfig

    apg = APGConfig("self", rank=recipe.rank, cond_hidden=recipe.cond_hidden, generate_bias=recipe.generate_bias)
    model = ModelConfig(
        "deepfm",
        embed_dim=recipe.embed_dim,
        hidden=recipe.hidden,
        dropout=recipe.dropout,
        batch_norm=recipe.batch_norm,
        init=recipe.init,
        apg=apg if arm == "self" else APGConfig(),
    )
    train = TrainConfig(
        data=DATA,
        seed=seed,
        epochs=recipe.epochs,
        patience=recipe.patience,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        threads=plan.threads,
        device=plan.device,
    )
    return model, train


def ours(plan: Plan, arm: str, recipe: Recipe, seed: int) -> dict:
    """Our run of the recipe: the study's stored run where the recipe is the study's own (same configuration and
    budget), else trained here through `apg train`'s code path."""
    from scripts.experiments import study

    model_cfg, cfg = ours_configs(arm, recipe, seed, plan)
    study_plan = study.Plan(data=DATA, models=("deepfm",), arms=(arm,), seeds=(seed,), train=cfg)
    same = study.arm_configs(study_plan, "deepfm", arm, seed)[0] == model_cfg
    stored = study.read_store(study.store_path(plan.results, DATA)).get(study.run_key(study_plan, "deepfm", arm, seed))
    if same and stored is not None:
        keep = ("valid", "test", "params", "train_seconds", "best_epoch", "epochs_run", "adaptation")
        return {**{k: stored[k] for k in keep}, "source": f"study store {study.store_path(plan.results, DATA)}"}
    from model.train import train_run

    m = train_run(model_cfg, cfg, plan.runs / "ours" / f"{arm}-{_slug(recipe)}-s{seed}", progress=False)
    keep = ("valid", "test", "params", "train_seconds", "best_epoch", "adaptation")
    return {**{k: m.get(k) for k in keep}, "epochs_run": len(m["history"]), "source": "trained"}


def _slug(recipe: Recipe) -> str:
    point = recipe.point()
    if not point:
        return "default"
    return "-".join(f"{k}{'x'.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in sorted(point.items()))


# What FuxiCTR's code fixes beyond the shared recipe (FuxiCTR 2.3.10 as installed, zoo at 0245987), against ours
RECIPE_DIFFERENCES = (
    ("embedding init", "normal, std 1e-4 (row 0, padding, zero and frozen)", "normal, std 0.01"),
    (
        "other layers' init",
        "xavier normal, bias 0 (MLP, hypernetwork, APG's U and V)",
        "PyTorch's defaults; G's output layer zero (S = I at the start)",
    ),
    (
        "first-order term",
        "a width-1 embedding per field (normal, std 1e-4) and a global bias; multi-valued fields sum-pooled",
        "a width-1 embedding per field (zeros at the start), multi-valued fields mean-pooled; the bias is the "
        "output layer's",
    ),
    ("multi-valued field in FM and tower", "masked average pooling", "masked mean pooling"),
    ("loss", "binary cross-entropy, batch mean", "binary cross-entropy, batch mean"),
    ("regularisation", "none here (embedding_regularizer 0, net_regularizer 0)", "Adam weight decay 1e-6"),
    ("gradient clipping", "global norm 10 every step", "none"),
    (
        "learning rate",
        "x0.1 after an epoch without a validation AUC gain >= 1e-6",
        "x0.1 after an epoch without a better validation AUC",
    ),
    ("early stopping", "patience epochs without a gain, the best checkpoint reloaded", "the same"),
    ("training shuffle", "Ray's global shuffle, seeded here by the launcher (seed + epoch)", "a seeded permutation"),
)


def summarise(plan: Plan, done: dict[str, dict]) -> dict:
    """Per library and arm: the chosen point and its test runs; per library the paired APG lift; across libraries
    the difference of lifts and of bases (Welch: the libraries' seeds do not pair)."""
    from scripts.experiments.paired import welch

    out: dict = {"libs": {}}
    for lib in plan.libs:
        arms = {}
        for arm in plan.arms:
            recipe = chosen(plan, done, lib, arm)
            runs = {
                s: done[key(lib, arm, recipe, s)] for s in plan.seeds if recipe and key(lib, arm, recipe, s) in done
            }
            arms[arm] = {"recipe": recipe, "runs": runs}
        base, apg = arms.get("base", {}).get("runs", {}), arms.get("self", {}).get("runs", {})
        seeds = sorted(set(base) & set(apg))
        lift = paired([apg[s]["test"]["auc"] - base[s]["test"]["auc"] for s in seeds])
        out["libs"][lib] = {
            "arms": arms,
            "lift": lift,
            "lift_by_seed": {s: apg[s]["test"]["auc"] - base[s]["test"]["auc"] for s in seeds},
        }
    if all(lib in out["libs"] for lib in LIBS):
        ours, ref = out["libs"]["ours"], out["libs"]["fuxictr"]
        out["lift_difference"] = welch(list(ours["lift_by_seed"].values()), list(ref["lift_by_seed"].values()), 0.90)
        bases = [[r["test"]["auc"] for r in x["arms"]["base"]["runs"].values()] for x in (ours, ref)]
        out["base_difference"] = welch(bases[0], bases[1], 0.95)
    return out


def report(plan: Plan) -> str:
    s = summarise(plan, read_store(store_path(plan.results)))
    grid = "; ".join(str(r.point() or "the study's recipe") for r in plan.grid)
    lines = [
        "# Reference parity: our DeepFM and self-wise APG against FuxiCTR's, on our ML-1M split",
        "",
        f"Generated by `apg experiment reference report` from `{store_path(plan.results)}`; runs by "
        f"`apg experiment reference run --fuxictr-zoo PATH --seeds {','.join(map(str, plan.seeds))}"
        + (f" --grid '{plan.extra.get('grid_text')}'" if plan.extra.get("grid_text") else "")
        + "` (FuxiCTR 2.3.10 in its own virtual environment, its model zoo at commit 0245987). One split (the "
        "study's, split seed 0) exported as our encoded indices and checked value by value; grid: "
        f"{grid} (each library's point per arm chosen on validation, seed 0, where the grid has more than one). "
        f"The shared recipe: {asdict(Recipe())} (a point overrides some of it). AUC in points; a library's lift is "
        "paired on its seeds (95 % t interval); across libraries the seeds do not pair, so differences are Welch "
        "intervals (the lift difference at 90 %, the base difference at 95 %).",
        "",
        "To re-run: `python -m scripts.experiments.reference_fuxictr setup` (FuxiCTR's virtual environment, "
        "`.venv-fuxictr`), `git clone https://github.com/reczoo/FuxiCTR && git -C FuxiCTR checkout 0245987` (its "
        "model zoo: this project does not copy it), then the command above with `--fuxictr-zoo FuxiCTR`. FuxiCTR's "
        "models run from that checkout through scripts/experiments/fuxictr_launch.py, which seeds its training "
        "shuffle (2.3.10 shuffles unseeded, so two runs of one seed differ).",
        "",
        "| library | arm | point | seeds | test AUC | valid AUC | logloss | params | epochs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for lib, row in s["libs"].items():
        for arm, a in row["arms"].items():
            runs = list(a["runs"].values())
            if not runs:
                continue
            lines.append(
                f"| {lib} | {arm} | {_point_name(lib, a['recipe'])} | "
                f"{','.join(map(str, a['runs']))} | {_mean(runs, 'auc') * 100:.2f} | "
                f"{_mean(runs, 'auc', 'valid') * 100:.2f} | "
                f"{_mean(runs, 'logloss'):.4f} | {runs[0].get('params', '–')} | "
                f"{sum(r.get('epochs_run', 0) for r in runs) / len(runs):.1f} |"
            )
    lines += ["", "Self-wise APG minus the base, paired on seeds (AUC points):", ""]
    lines += [f"- {lib}: {fmt(row['lift'])}" for lib, row in s["libs"].items() if row["lift"]["n"]]
    if "lift_difference" in s and s["lift_difference"]["n"]:
        d, b = s["lift_difference"], s["base_difference"]
        lines += [
            f"- our lift minus FuxiCTR's: {_interval(d)} (target: within ±0.10)",
            f"- our base minus FuxiCTR's base: {_interval(b)} (target: ≥ −0.05)",
        ]
    lines += ["", "What FuxiCTR's code fixes beyond the shared recipe:", "", "| | FuxiCTR | ours |", "|---|---|---|"]
    lines += [f"| {what} | {theirs} | {mine} |" for what, theirs, mine in RECIPE_DIFFERENCES]
    return "\n".join(lines) + "\n"


def _point_name(lib: str, recipe: Recipe | None) -> str:
    """The grid point as it applies to the library (FuxiCTR's rows without the knobs only ours has)."""
    if recipe is None:
        return "–"
    point = {k: v for k, v in recipe.point().items() if lib == "ours" or k not in Recipe.OURS_ONLY}
    return str(point) if point else "recipe"


def _mean(runs: list[dict], metric: str, part: str = "test") -> float:
    return sum(r[part][metric] for r in runs) / len(runs)


def _interval(r: dict) -> str:
    lo, hi = r["ci"]
    return (
        f"{r['mean'] * 100:+.2f} [{lo * 100:+.2f}, {hi * 100:+.2f}] ({round(r['level'] * 100)} % Welch, p {r['p']:.2g})"
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = Plan()
    p.add_argument(
        "what",
        choices=["run", "report", "export"],
        help="train the missing runs (then report), write the report, or only export and check the split",
    )
    p.add_argument("--fuxictr-zoo", type=Path, help="a checkout of github.com/reczoo/FuxiCTR (commit 0245987)")
    p.add_argument(
        "--venv",
        type=Path,
        default=d.venv,
        help="FuxiCTR's virtual environment (python -m scripts.experiments.reference_fuxictr setup)",
    )
    p.add_argument(
        "--grid",
        help="recipe points, e.g. 'batch_norm=0,1;dropout=0,0.2' (default: the study's recipe only)",
    )
    p.add_argument("--seeds", default="1,2,3,4,5", help="test seeds (seed 0 chooses the grid point)")
    p.add_argument("--libs", default=",".join(LIBS), help="comma list of ours, fuxictr")
    p.add_argument("--results", type=Path, default=d.results, help="where the store and the report go")
    p.add_argument("--runs", type=Path, default=d.runs, help="run directories, the export, FuxiCTR's data")
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads per run")


def run_from_args(args) -> int:
    libs = tuple(x for x in args.libs.split(",") if x)
    if set(libs) - set(LIBS):
        raise ValueError(f"unknown libraries {sorted(set(libs) - set(LIBS))} (known: {', '.join(LIBS)})")
    plan = Plan(
        grid=tuple(parse_grid(args.grid or "")),
        seeds=tuple(int(s) for s in args.seeds.split(",") if s),
        libs=libs,
        zoo=args.fuxictr_zoo,
        venv=args.venv,
        results=args.results,
        runs=args.runs,
        threads=args.threads,
        extra={"grid_text": args.grid},
    )
    if args.what == "export":
        from scripts.experiments.reference_fuxictr import exported

        out, _ = exported(plan, (plan.runs / "fuxictr").resolve())
        print(f"exported and checked: {out} ({json.loads((out / 'checked.json').read_text())['rows_compared']} rows)")
        return 0
    if args.what == "run":
        if "fuxictr" in plan.libs:
            from scripts.experiments.reference_fuxictr import check, check_zoo

            check_zoo(plan.zoo)
            check(plan.venv)
        run(plan)
    text = report(plan)
    name = "" if plan.grid == (Recipe(),) else "-" + (_slug(plan.grid[0]) if len(plan.grid) == 1 else "grid")
    (plan.results / f"reference-{DATA}{name}.md").write_text(text)
    print(text)
    return 0
