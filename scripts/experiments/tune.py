"""Equal tuning budget per arm (issue 11, item 4): one Optuna search per (dataset, model, arm), every arm with the same
number of trials and the same sampler seed, scored on validation AUC only.

    apg experiment tune run --data ml-1m --models dnn,deepfm --arms base,static,self,group --trials 20
    apg experiment tune report --data ml-1m              # docs/results/tune-ml-1m.md
    apg experiment study run --data ml-1m --tuned docs/results/tune/ml-1m.json --seeds 1,2,3,4,5

Every trial trains with initialisation seed 0 (the seed kept for choices; the study reports seeds 1+) on the study's
fixed split and scores the validation split after each epoch; from epoch `--prune-from` on, Optuna's median pruner
stops a trial whose validation AUC trails the median of the arm's earlier trials at that epoch. The test split is
never scored. Each search's first trial is the arm untuned (the study's defaults), so a tuned arm is never worse on
validation than the untuned one.

Every arm tunes the learning rate, the batch size (one choice unless `--batch-sizes` lists more), the embedding
width, dropout and the tower widths; APG arms also the rank K, the over-parameterisation P (a multiple of K), G's
hidden width (0: linear G), a generated bias and the std of G's output layer at init (the identity offset,
S = I + G(z), is always on in model/apg.py); group-wise arms also the group (the activity bucket, a user-profile
field, the item's popularity or the user) and a LayerNorm on z. model/apg.py has one K for all layers, so K is tuned
once per model.

Resumable: the searches live in one SQLite file (runs/tune/<data>.sqlite3, `--storage`); a killed search continues
where it stopped, the trial it was in tried again with the same values (TPE is reseeded with the sampler seed plus
the count of trials begun, so a resumed search draws new values rather than repeating its first process's, and they
differ from those an uninterrupted search would have drawn). Every finished trial is also written, after each trial,
to docs/results/tune/<data>[-<space>]-trials.json, which is committed: a search runs for many sessions, and a fresh
clone (or a lost SQLite file) continues from that record, its trials put back into the store without training them
again. When an arm has its trials, its best configuration goes into docs/results/tune/<data>[-<space>].json, the file
`apg experiment study run --tuned` trains the final runs with.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from model.train import TrainConfig
from model.zoo import ModelConfig
from scripts.experiments.study import ARMS, RESULTS

STORAGE = Path("runs/tune")
SEED = 0  # every trial's initialisation seed: kept for choices, never reported by the study
SHARED = ("lr", "batch_size", "embed_dim", "dropout", "hidden", "batch_norm", "emb_reg", "init")  # every arm
APG_KNOBS = ("rank", "rank_schedule", "overparam", "cond_hidden", "generate_bias", "gen_init_std")  # APG arms only
GROUP_KNOBS = ("group_field", "cond_norm")  # group-wise arms only: which group, and LayerNorm on its z
LATER_KNOBS = ("batch_norm", "emb_reg", "init", "rank_schedule", "start")  # added with the strong recipe


def knobs(apg) -> tuple[str, ...]:
    """The knobs an arm (its APGConfig) searches."""
    return (*SHARED, *(APG_KNOBS if apg.enabled else ()), *(GROUP_KNOBS if apg.condition == "group" else ()))


@dataclass(frozen=True)
class Space:
    """Each knob's choices (lr: log-uniform between two bounds). A search is identified by its space."""

    lr: tuple[float, float] = (1e-4, 1e-2)
    batch_size: tuple[int, ...] = (1024,)
    embed_dim: tuple[int, ...] = (8, 16, 32)
    dropout: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3)
    hidden: tuple[str, ...] = ("128,64", "256,128", "400,400", "256,128,64")  # tower widths
    batch_norm: tuple[bool, ...] = (False,)
    emb_reg: tuple[float, ...] = (0.0,)  # TrainConfig.emb_reg
    init: tuple[str, ...] = ("default",)  # ModelConfig.init
    rank: tuple[int, ...] = (4, 8, 16, 32)  # K
    rank_schedule: tuple[str, ...] = ("same",)  # per-layer K: the same in every layer, or halving (K, K/2, ...)
    overparam: tuple[int, ...] = (0, 2, 4)  # P = this × K (0: off)
    cond_hidden: tuple[int, ...] = (0, 32, 64)  # 0: linear G
    generate_bias: tuple[bool, ...] = (False, True)
    gen_init_std: tuple[float, ...] = (0.0, 0.01)
    # richer groups than the activity bucket: a user-profile field, the item's popularity, the user itself (z from
    # the group's own embedding table, cond_embed, as the group arms have); the first is the arm's default
    group_field: tuple[str, ...] = ("user_activity", "occupation", "age", "item_popularity", "user_id")
    cond_norm: tuple[bool, ...] = (False, True)
    start: str = "defaults"  # the first trial: the study's defaults, or "first" (every knob's first choice, lr 1e-3)

    def identity(self) -> dict:
        """What names the space in a search's identity: knobs added after searches were stored only when they
        differ from their single default, so those searches keep their names."""
        default = Space()
        return {k: v for k, v in asdict(self).items() if k not in LATER_KNOBS or v != getattr(default, k)}

    def suggest(self, trial, apg) -> dict:
        """One trial's values (an optuna Trial) for an arm (its APGConfig): the shared knobs, the APG ones for an
        APG arm, and the group ones for a group-wise arm."""
        params = {"lr": trial.suggest_float("lr", *self.lr, log=True)}
        for name in knobs(apg)[1:]:
            params[name] = trial.suggest_categorical(name, getattr(self, name))
        return params

    def untuned(self, arm: str, lr: float) -> dict:
        """The search's first trial: the arm as the untuned study trains it (ModelConfig's and the arm's defaults),
        or, for a space that starts from its "first" choices (the strong recipe), each knob's first choice."""
        if self.start == "first":
            params = {"lr": lr} | {k: getattr(self, k)[0] for k in knobs(ARMS[arm])[1:]}
            return params
        m, a = ModelConfig(), ARMS[arm]
        params = {
            "lr": lr,
            "batch_size": self.batch_size[0],
            "embed_dim": m.embed_dim,
            "dropout": m.dropout,
            "hidden": ",".join(map(str, m.hidden)),
            "batch_norm": m.batch_norm,
            "emb_reg": TrainConfig.emb_reg,
            "init": m.init,
        }
        if a.enabled:
            params |= {
                "rank": a.rank,
                "rank_schedule": "same",
                "overparam": a.overparam // a.rank,
                "cond_hidden": a.cond_hidden,
                "generate_bias": a.generate_bias,
                "gen_init_std": a.gen_init_std,
            }
        if a.condition == "group":
            params |= {"group_field": a.group_field, "cond_norm": a.cond_norm}
        return params


# The strong shared recipe (issue 24): BARS's MovieLens choices first (embedding regularisation 0.01, BatchNorm,
# dropout 0.3, a [400, 400, 400] tower; FuxiCTR's xavier initialisation) and APG's known-good knobs first (a linear
# G, generated bias, halving per-layer K, over-parameterisation); the first trial is every knob's first choice.
STRONG = Space(
    lr=(1e-4, 1e-2),
    embed_dim=(16, 32),
    dropout=(0.3, 0.2, 0.1, 0.0),
    hidden=("400,400,400", "256,128", "1024,512"),
    batch_norm=(True, False),
    emb_reg=(0.01, 0.001, 0.0),
    init=("xavier", "default"),
    rank=(32, 16, 8),
    rank_schedule=("halving", "same"),
    overparam=(2, 0, 4),
    cond_hidden=(0, 32, 128),
    generate_bias=(True, False),
    gen_init_std=(0.0, 0.01),
    start="first",
)
SPACES = {"default": Space(), "strong": STRONG}
# Each space's epoch budget (the most a trial or a study run trains; early stopping ends most runs before). The strong
# recipe's validation AUC climbs slowly until a plateau cuts its learning rate, a step of about 2 points: at 10 epochs
# all 10 stored DeepFM runs used every epoch, two never met that plateau and four met it only in their last; at 30
# early stopping ends every run (DeepFM's at 14-17 epochs, DNN's at 12-18, the tuned DeepFM's at 11-19).
EPOCHS = {"default": 10, "strong": 30}
UNTUNED = {  # what each space's first trial is
    "default": "the study's defaults",
    "strong": "BARS's MovieLens recipe with APG's known-good knobs, as `apg experiment tune first --space strong` "
    "writes it",
}


@dataclass(frozen=True)
class TunePlan:
    data: str = "ml-1m"
    models: tuple[str, ...] = ("dnn", "deepfm")
    arms: tuple[str, ...] = ("base", "static", "self", "group")
    trials: int = 20  # per arm
    sampler_seed: int = 0
    prune_from: int = 2  # the first epoch the median pruner may stop a trial at (0: no pruning)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10, patience=2, batch_size=1024))
    space: Space = field(default_factory=Space)
    space_name: str = "default"  # SPACES' name: where the best configurations go (best_path)

    def budget(self) -> dict:
        """What identifies a search: not its trial count (which may grow), device or threads."""
        from model.train import identity

        # the seed is SEED; lr and batch are searched
        train = identity(replace(self.train, data=self.data), leave=("seed", "device", "threads", "lr", "batch_size"))
        return {
            "train": train,
            "space": self.space.identity(),
            "sampler_seed": self.sampler_seed,
            "prune_from": self.prune_from,
        }

    def study_name(self, model: str, arm: str) -> str:
        digest = hashlib.sha256(json.dumps(self.budget(), sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.data}/{model}/{arm}/{digest}"


def configs(plan: TunePlan, params: dict, model: str, arm: str) -> tuple[ModelConfig, TrainConfig]:
    """What a trial's values train: the arm's APGConfig with the APG knobs set, and the plan's TrainConfig. (A
    search stored before a knob existed has no value for it: the knob's default.)"""
    apg = ARMS[arm]
    hidden = tuple(int(w) for w in params["hidden"].split(","))
    if apg.enabled:
        k = params["rank"]
        halving = params.get("rank_schedule", "same") == "halving"
        apg = replace(
            apg,
            rank=k,
            ranks=tuple(max(1, k >> i) for i in range(len(hidden))) if halving else (),
            overparam=params["overparam"] * k,
            cond_hidden=params["cond_hidden"],
            generate_bias=params["generate_bias"],
            gen_init_std=params["gen_init_std"],
        )
    if apg.condition == "group":
        apg = replace(apg, group_field=params["group_field"], cond_norm=params["cond_norm"])
    model_cfg = ModelConfig(
        model,
        embed_dim=params["embed_dim"],
        hidden=hidden,
        dropout=params["dropout"],
        batch_norm=params.get("batch_norm", False),
        init=params.get("init", "default"),
        apg=apg,
    )
    cfg = replace(plan.train, data=plan.data, seed=SEED, lr=params["lr"], batch_size=params["batch_size"])
    cfg = replace(cfg, emb_reg=params.get("emb_reg", 0.0))
    return model_cfg, cfg


# ---------------------------------------------------------------- the objective
@functools.cache
def dataset(data: str, schema: str | None, split: str, split_seed: int, limit: int | None):
    """The encoded dataset, loaded once per process (every trial of a search shares its split)."""
    from model.data import load_dataset

    return load_dataset(data, schema, split, split_seed, limit, cache=True)


def train_trial(model_cfg: ModelConfig, cfg: TrainConfig, report: Callable[[int, float], None]) -> float:
    """The best epoch's validation AUC of one training run; `report(epoch, valid_auc)` after each epoch (it may
    raise to stop the run). Reads the training and validation splits only."""
    from model.train import fit, seed_everything
    from model.zoo import build_model

    data = dataset(cfg.data, cfg.schema, cfg.split, cfg.split_seed, cfg.limit)
    seed_everything(cfg.seed, cfg.threads)
    net = build_model(data.schema, model_cfg)
    history = fit(net, data, cfg, progress=False, on_epoch=lambda h: report(h["epoch"], h["valid_auc"]))["history"]
    return max(h["valid_auc"] for h in history)


def objective(plan: TunePlan, model: str, arm: str) -> Callable:
    import optuna

    def run_trial(trial: optuna.Trial) -> float:
        model_cfg, cfg = configs(plan, plan.space.suggest(trial, ARMS[arm]), model, arm)

        def report(epoch: int, auc: float) -> None:
            trial.report(auc, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation AUC {auc:.4f} at epoch {epoch} is below the median")

        return train_trial(model_cfg, cfg, report)

    return run_trial


# ---------------------------------------------------------------- the searches
def open_study(plan: TunePlan, storage, model: str, arm: str, logged: list[dict] = ()) -> tuple:
    """The arm's search, created or loaded, with the finished trials of its record (`logged`, see `trials_path`)
    that the store lacks put back (returned: how many); the trial a killed (running) or interrupted (failed) search
    was in is queued again with its values, once per failure."""
    import optuna
    from optuna.trial import TrialState

    pruner = optuna.pruners.MedianPruner(n_warmup_steps=plan.prune_from) if plan.prune_from else None
    study = optuna.create_study(
        storage=storage,
        study_name=plan.study_name(model, arm),
        direction="maximize",
        pruner=pruner or optuna.pruners.NopPruner(),
        load_if_exists=True,
    )
    back = restore(study, logged)
    trials = study.get_trials(deepcopy=False)
    # TPE's random state does not survive a process: reseeded by the count of trials begun (a failed one too, as its
    # retry repeats its values), a resumed search draws new values instead of repeating an earlier process's draws
    study.sampler = optuna.samplers.TPESampler(seed=plan.sampler_seed + len(trials))
    if not trials:
        study.enqueue_trial(plan.space.untuned(arm, plan.train.lr))
    if back:  # the record went past this store: what it left unfinished (queued, killed, failed) is superseded
        for t in trials:
            if t.state in (TrialState.WAITING, TrialState.RUNNING):
                storage.set_trial_user_attr(t._trial_id, "superseded", True)
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        return study, back
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if t.state in (TrialState.RUNNING, TrialState.FAIL) and t.number not in retried:
            if t.state == TrialState.RUNNING:  # one search at a time: a running trial is a killed process's
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    return study, back


SAME = ("state", "value", "params", "intermediate_values")  # what makes a stored trial the recorded one


def record(t) -> dict:
    """A finished trial as the record keeps it (JSON: floats round-trip exactly); a trial put back from the record is
    written as it was recorded (its number and attributes of the store it ran in), so the record does not change."""
    from optuna.distributions import distribution_to_json

    return {
        "number": t.user_attrs.get("restored_from", t.number),
        "state": t.state.name,
        "value": t.value,
        "params": t.params,
        "distributions": {k: json.loads(distribution_to_json(d)) for k, d in t.distributions.items()},
        "intermediate_values": {str(k): v for k, v in sorted(t.intermediate_values.items())},
        "user_attrs": t.user_attrs.get("recorded", t.user_attrs),
        "started": t.datetime_start.isoformat() if t.datetime_start else None,
        "finished": t.datetime_complete.isoformat() if t.datetime_complete else None,
    }


def restore(study, logged: list[dict]) -> int:
    """Put the recorded finished trials the store lacks back into it (they are not trained again); returns how many.
    The store's finished trials must be the record's first ones: a store and a record that went separate ways (two
    machines searching the same space) are refused rather than merged."""
    from datetime import datetime

    from optuna.distributions import json_to_distribution
    from optuna.trial import FrozenTrial, TrialState

    stored = [record(t) for t in finished(study)]
    for i, (s, r) in enumerate(zip(stored, logged, strict=False)):  # the shorter's length
        if any(json.dumps(s[k], sort_keys=True) != json.dumps(r[k], sort_keys=True) for k in SAME):  # NaN == NaN
            raise ValueError(
                f"search {study.study_name}: its store and its trial record differ at finished trial {i} (store "
                f"{s['params']} -> {s['value']}, record {r['params']} -> {r['value']}); move the store aside to "
                "continue from the record, or the record to continue from the store"
            )
    missing = logged[len(stored) :]
    for r in missing:
        when = [datetime.fromisoformat(r[k]) if r[k] else datetime.now() for k in ("started", "finished")]
        study.add_trial(
            FrozenTrial(
                number=0,  # the store numbers it
                trial_id=0,
                state=TrialState[r["state"]],
                value=r["value"],
                values=None,
                datetime_start=when[0],
                datetime_complete=when[1],
                params=r["params"],
                distributions={k: json_to_distribution(json.dumps(d)) for k, d in r["distributions"].items()},
                # its attributes name trial numbers of the store it ran in (retry_of): kept aside, not live here
                user_attrs={"restored_from": r["number"], "recorded": r["user_attrs"]},
                system_attrs={},
                intermediate_values={int(k): v for k, v in r["intermediate_values"].items()},
            )
        )
    return len(missing)


def save_trials(path: Path, plan: TunePlan, searches: dict) -> None:
    """Write the searches' finished trials into their record (other searches' entries in it are kept)."""
    saved = json.loads(path.read_text()) if path.exists() else {"data": plan.data, "space": plan.space_name}
    entries = saved.setdefault("searches", {})
    for (model, arm), study in searches.items():
        entries[study.study_name] = {
            "model": model,
            "arm": arm,
            "budget": plan.budget(),
            "trials": [record(t) for t in finished(study)],
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(saved, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def logged_trials(path: Path, name: str) -> list[dict]:
    """A search's recorded finished trials (none where the record or the search is absent)."""
    if not path.exists():
        return []
    return json.loads(path.read_text()).get("searches", {}).get(name, {}).get("trials", [])


def finished(study, n: int | None = None) -> list:
    """The first n trials that ran to the end or were pruned: the budget (failed ones are tried again)."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    return sorted(done, key=lambda t: t.number)[:n]


def best_entry(plan: TunePlan, study, model: str, arm: str) -> dict:
    """The best of the first `plan.trials` trials: its configuration (what the study trains) and how it was found."""
    from optuna.trial import TrialState

    done = finished(study, plan.trials)
    complete = [t for t in done if t.state == TrialState.COMPLETE]
    if not complete:  # every trial pruned or failed: nothing to choose from
        raise ValueError(
            f"{model} {arm}: none of the {len(done)} trials completed (all pruned or failed); raise"
            " --trials or --prune-from"
        )
    best = max(complete, key=lambda t: t.value)  # the first of equals
    untuned = plan.space.untuned(arm, plan.train.lr)
    model_cfg, cfg = configs(plan, best.params, model, arm)
    return {
        "model": model_cfg.to_dict(),
        "train": train_entry(cfg),
        "valid_auc": best.value,
        "untuned_valid_auc": next((t.value for t in complete if t.params == untuned), None),
        "trial": best.number,
        "trials": len(done),
        "pruned": len(done) - len(complete),
        "params": best.params,
        "study": study.study_name,
        "budget": plan.budget(),
    }


def train_entry(cfg: TrainConfig) -> dict:
    """The training settings a configuration file gives the study (emb_reg only when set: older files lack it)."""
    return {"lr": cfg.lr, "batch_size": cfg.batch_size} | ({"emb_reg": cfg.emb_reg} if cfg.emb_reg else {})


def best_path(results: Path, data: str, space: str = "default") -> Path:
    """The best configurations of a space's searches: tune/<data>.json (the default space), tune/<data>-<space>.json."""
    return results / "tune" / (f"{data}.json" if space == "default" else f"{data}-{space}.json")


def trials_path(results: Path, data: str, space: str = "default") -> Path:
    """The record of a space's searches, committed beside their best configurations (tune/<data>[-<space>].json):
    every finished trial of every search, which the SQLite store only caches."""
    best = best_path(results, data, space)
    return best.with_name(f"{best.stem}-trials.json")


def write_best(path: Path, data: str, model: str, arm: str, entry: dict) -> None:
    saved = json.loads(path.read_text()) if path.exists() else {"data": data, "configs": {}}
    saved["configs"].setdefault(model, {})[arm] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(saved, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)  # a reader never sees half a file


def run(plan: TunePlan, storage_path: Path, results: Path = RESULTS) -> dict:
    """Run the arms' missing trials in turns (trial i of every model and arm before trial i + 1 of any, so that a
    search stopped part-way leaves every arm with the same budget, within one trial), then write each arm's best
    configuration. Returns the best-config file's content."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{storage_path.resolve()}")
    log = trials_path(results, plan.data, plan.space_name)
    searches = {}
    for m in plan.models:
        for a in plan.arms:
            study, back = open_study(plan, storage, m, a, logged_trials(log, plan.study_name(m, a)))
            searches[(m, a)] = study
            done = len(finished(study))
            print(
                f"tune {plan.data} {m} {a}: {done} trials stored"
                + (f" ({back} from {log})" if back else "")
                + f", {max(plan.trials - done, 0)} to run",
                flush=True,
            )
    save_trials(log, plan, searches)
    for turn in range(plan.trials):
        for (model, arm), study in searches.items():
            if len(finished(study)) <= turn:
                print(f"tune {plan.data} {model} {arm}: trial {turn + 1} of {plan.trials}", flush=True)
                study.optimize(objective(plan, model, arm), n_trials=1, callbacks=[log_trial])
                save_trials(log, plan, searches)
    for (model, arm), study in searches.items():
        entry = best_entry(plan, study, model, arm)
        write_best(best_path(results, plan.data, plan.space_name), plan.data, model, arm, entry)
        print(f"tune {plan.data} {model} {arm}: best valid AUC {entry['valid_auc']:.4f} {entry['params']}")
    return json.loads(best_path(results, plan.data, plan.space_name).read_text())


def log_trial(study, trial) -> None:
    value = trial.value if trial.value is not None else max(trial.intermediate_values.values(), default=None)
    auc = f"{value:.4f}" if value is not None else "-"
    print(f"  trial {trial.number} {trial.state.name.lower()}: valid AUC {auc}  {trial.params}", flush=True)


# ---------------------------------------------------------------- the report
COLUMNS = (*SHARED, *APG_KNOBS, *GROUP_KNOBS)
HEADS = (
    "lr",
    "batch",
    "embed",
    "dropout",
    "widths",
    "BN",
    "emb reg",
    "init",
    "K",
    "K per layer",
    "P",
    "G hidden",
    "gen. bias",
    "G init std",
    "group",
    "LayerNorm z",
)


def run_command(saved: dict, plan: TunePlan) -> str:
    """The `apg experiment tune run` that made the saved searches of the plan's models and arms: their trials and
    budget (as stored with each best configuration)."""
    e = next((saved["configs"][m][a] for m in plan.models for a in plan.arms if a in saved["configs"].get(m, {})), None)
    command = (
        f"apg experiment tune run --data {saved['data']} --models {','.join(plan.models)} --arms {','.join(plan.arms)}"
    )
    if plan.space_name != "default":
        command += f" --space {plan.space_name}"
    if e is None:
        return command
    b = e["budget"]
    return (
        f"{command} --trials {e['trials']} --epochs {b['train']['epochs']} --patience {b['train']['patience']} "
        f"--prune-from {b['prune_from']}"
    )


def report_command(plan: TunePlan) -> str:
    """The `apg experiment tune report` that writes the plan's table (its space's best-config file)."""
    space = "" if plan.space_name == "default" else f" --space {plan.space_name}"
    return f"apg experiment tune report --data {plan.data}{space}"


def report(saved: dict, plan: TunePlan) -> str:
    """Markdown: per model, a row per arm with its best validation AUC, the untuned one, the trials and the values."""
    tuned = saved["configs"]
    entries = [(m, a, tuned[m][a]) for m in plan.models for a in plan.arms if a in tuned.get(m, {})]
    if not entries:
        return f"No arm of {saved['data']} is tuned yet.\n"
    budgets = {json.dumps(e["budget"], sort_keys=True) for _, _, e in entries}
    b = entries[0][2]["budget"]
    lines = [
        f"Dataset {saved['data']}, split seed {b['train']['split_seed']}: per arm one Optuna search (TPE, sampler seed "
        f"{b['sampler_seed']}, the same trials per arm), each trial one run with initialisation seed {SEED} of at "
        f"most {b['train']['epochs']} epochs (patience {b['train']['patience']}), scored on validation AUC; the "
        + (
            f"median pruner from epoch {b['prune_from']} (Optuna's waits for 5 finished trials per arm, so a search "
            "of 5 or fewer prunes none)"
            if b["prune_from"]
            else "no pruning"
        )
        + f". The test split is never read. `untuned` is the arm's first trial ({UNTUNED[plan.space_name]}). P is the "
        "over-parameterisation width (0: off), G hidden 0 a linear G, K per layer the same K in every layer or "
        "halving (K, K/2, ...), emb reg the L2 on the embedding tables, init default or xavier (FuxiCTR's).",
    ]
    if len(budgets) > 1:
        lines.append("**The arms below were tuned under different budgets** (see `budget` in the JSON file).")
    for model in plan.models:
        lines += [
            "",
            f"**{model}**",
            "",
            "| arm | valid AUC | untuned | trials (pruned) | best trial | " + " | ".join(HEADS) + " |",
            "|---" * (5 + len(HEADS)) + "|",
        ]
        for arm in plan.arms:
            e = tuned.get(model, {}).get(arm)
            if e is None:
                lines.append(f"| {arm} | not tuned yet |" + " |" * (3 + len(HEADS)))
                continue
            untuned = f"{e['untuned_valid_auc']:.4f}" if e["untuned_valid_auc"] is not None else ""
            values = [_cell(name, e["params"]) for name in COLUMNS]
            lines.append(
                f"| {arm} | {e['valid_auc']:.4f} | {untuned} | {e['trials']} ({e['pruned']}) | "
                f"{e['trial']} | " + " | ".join(values) + " |"
            )
    return "\n".join(lines) + "\n"


def _cell(name: str, params: dict) -> str:
    if name not in params:
        return "—"
    value = params[name]
    if name == "lr":
        return f"{value:.2e}"
    if name == "overparam":
        return str(value * params["rank"])
    return str(value)


# ---------------------------------------------------------------- the command
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "what",
        choices=["run", "report", "first"],
        help="run the missing trials, write the report, or write the space's first trial per arm as a "
        "configuration file without searching (tune/<data>-<space>-first.json: the recipe itself, for "
        "`apg experiment study run --tuned`)",
    )
    p.add_argument("--data", default="ml-1m", help="a named dataset (ml-100k, ml-1m)")
    p.add_argument("--models", default="dnn,deepfm", help="base models, comma-separated")
    p.add_argument(
        "--arms",
        help=f"arms, comma-separated, of: {', '.join(ARMS)} (default: {','.join(TunePlan.arms)}; for report, the "
        "arms the best-config file has)",
    )
    p.add_argument("--trials", type=int, default=20, help="trials per arm (the same for every arm)")
    p.add_argument("--sampler-seed", type=int, default=0, help="TPE's seed (the same for every arm)")
    p.add_argument("--prune-from", type=int, default=2, help="first epoch the median pruner may stop at (0: never)")
    p.add_argument(
        "--epochs",
        type=int,
        help="epochs at most per trial (default: the space's budget, "
        + ", ".join(f"{k} {v}" for k, v in EPOCHS.items())
        + ")",
    )
    p.add_argument("--patience", type=int, default=2, help="early stopping patience (epochs)")
    p.add_argument("--batch-sizes", default="1024", help="batch sizes to search, comma-separated (one: fixed)")
    p.add_argument("--limit", type=int, help="first N rows only (smoke runs)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="torch device (cuda where a GPU is lent)")
    p.add_argument("--storage", type=Path, help="the searches' SQLite file (default runs/tune/<data>.sqlite3)")
    p.add_argument("--results", type=Path, default=RESULTS, help="where tune/<data>.json and the report go")
    p.add_argument(
        "--space",
        choices=tuple(SPACES),
        default="default",
        help="the knobs' choices: default (issue 11's), or strong (BARS's MovieLens recipe and APG's known-good "
        "knobs first, with BatchNorm, embedding regularisation and FuxiCTR's init searched; its best configurations "
        "go to tune/<data>-strong.json)",
    )


def plan_from_args(a: argparse.Namespace) -> TunePlan:
    arms = tuple(a.arms.split(",")) if a.arms else TunePlan.arms
    unknown = [x for x in arms if x not in ARMS]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; known: {', '.join(ARMS)}")
    batches = tuple(int(b) for b in a.batch_sizes.split(","))
    train = TrainConfig(
        epochs=EPOCHS[a.space] if a.epochs is None else a.epochs,
        patience=a.patience,
        batch_size=batches[0],
        limit=a.limit,
        threads=a.threads,
        device=a.device,
    )
    space = replace(SPACES[a.space], batch_size=batches)
    models = tuple(a.models.split(","))
    return TunePlan(a.data, models, arms, a.trials, a.sampler_seed, a.prune_from, train, space, a.space)


def first_configs(plan: TunePlan, results: Path) -> Path:
    """The space's first trial of every (model, arm) as a configuration file in the best-config format (nothing
    searched, nothing trained: `trials` 0), so the study can train the recipe itself on its test seeds."""
    path = results / "tune" / f"{plan.data}-{plan.space_name}-first.json"
    for model in plan.models:
        for arm in plan.arms:
            params = plan.space.untuned(arm, plan.train.lr)
            model_cfg, cfg = configs(plan, params, model, arm)
            entry = {"model": model_cfg.to_dict(), "train": train_entry(cfg), "params": params, "trials": 0}
            write_best(path, plan.data, model, arm, entry | {"budget": plan.budget(), "valid_auc": None})
    return path


def run_from_args(a: argparse.Namespace) -> int:
    plan = plan_from_args(a)
    if a.what == "run":
        run(plan, a.storage or STORAGE / f"{plan.data}.sqlite3", a.results)
        return 0
    if a.what == "first":
        path = first_configs(plan, a.results)
        epochs = "" if plan.train.epochs == EPOCHS["default"] else f" --epochs {plan.train.epochs}"
        print(f"wrote {path}: train it with `apg experiment study run --data {plan.data} --tuned {path}{epochs}`")
        return 0
    path = best_path(a.results, plan.data, plan.space_name)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run `apg experiment tune run --data {plan.data} --space {plan.space_name}` first"
        )
    out = a.results / f"tune-{path.stem}.md"
    saved = json.loads(path.read_text())
    if a.arms is None:  # the arms the searches ran (a search of base and self is not one with static and group untuned)
        arms = tuple(x for x in ARMS if any(x in saved["configs"].get(m, {}) for m in plan.models))
        plan = replace(plan, arms=arms or plan.arms)
    out.write_text(f"Command: `{run_command(saved, plan)}` (then `{report_command(plan)}`).\n\n{report(saved, plan)}")
    print(out.read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m scripts.experiments.tune ARGS` is `apg experiment tune ARGS`."""
    from scripts.cli import main as apg

    return apg(["experiment", "tune", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
