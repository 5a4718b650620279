"""The equal-budget search per arm: the same knobs and trials for every arm, configs that map to what trains, a
resumable storage and a best-config file the study keys its runs by. The objective is a fast deterministic fake
(no training) except in the one slow test."""

import argparse
import math

import pytest

pytest.importorskip("torch")  # training-side tests: skipped where torch is absent (a serving-only install)
pytest.importorskip("optuna")

import json
from dataclasses import replace

import optuna
from optuna.trial import TrialState

from model.train import TrainConfig
from model.zoo import ModelConfig
from scripts.experiments import study, tune
from scripts.experiments.study import ARMS, Plan
from scripts.experiments.tune import APG_KNOBS, GROUP_KNOBS, SHARED, Space, TunePlan

ARGS = ["--data", "ml-100k", "--models", "dnn", "--arms", "base,static,self", "--epochs", "3"]


def fake_trial(calls: list, stop_at: int | None = None):
    """A deterministic stand-in for a training run: the score depends on the values only, rising over epochs."""

    def train_trial(model_cfg, cfg, report):
        calls.append((model_cfg, cfg))
        if stop_at is not None and len(calls) == stop_at:
            raise KeyboardInterrupt  # Ctrl-C in the middle of a trial
        a = model_cfg.apg
        score = 0.75 - 0.02 * abs(math.log10(cfg.lr) + 2.5) - 0.01 * model_cfg.dropout + 0.0001 * model_cfg.embed_dim
        score += 0.001 * a.generate_bias + 0.0001 * a.rank if a.enabled else 0.0
        for epoch in range(1, cfg.epochs + 1):
            report(epoch, score - 0.01 * (cfg.epochs - epoch))
        return score

    return train_trial


def args(tmp_path, *extra):
    return [*ARGS, "--storage", str(tmp_path / "tune.sqlite3"), "--results", str(tmp_path), *extra]


def studies(tmp_path, arms=("base", "static", "self"), plan=None):
    plan = plan or replace(TunePlan(data="ml-100k"), train=replace(TunePlan().train, epochs=3))
    url = f"sqlite:///{tmp_path / 'tune.sqlite3'}"
    return {a: optuna.load_study(study_name=plan.study_name("dnn", a), storage=url) for a in arms}


def test_every_arm_searches_the_same_shared_knobs_and_apg_arms_the_apg_ones():
    space, s = Space(), optuna.create_study(direction="maximize")
    dists = {}
    for arm, apg in ARMS.items():
        trial = s.ask()
        space.suggest(trial, apg)
        dists[arm] = trial.distributions
        group = set(GROUP_KNOBS) if apg.condition == "group" else set()
        assert set(trial.params) == set(SHARED) | (set(APG_KNOBS) if apg.enabled else set()) | group
    assert all({k: d[k] for k in SHARED} == {k: dists["base"][k] for k in SHARED} for d in dists.values())
    apg_arms = [a for a in ARMS if ARMS[a].enabled]
    same = (*SHARED, *APG_KNOBS)  # every APG arm: the same APG knobs too
    assert all({k: dists[a][k] for k in same} == {k: dists[apg_arms[0]][k] for k in same} for a in apg_arms)
    assert dists["group"]["group_field"].choices[0] == ARMS["group"].group_field  # the untuned group comes first
    for arm in ARMS:  # the untuned arm (each search's first trial) lies in the space
        for name, value in space.untuned(arm, 1e-3).items():
            choices = getattr(space, name)
            assert choices[0] <= value <= choices[1] if name == "lr" else value in choices, (arm, name)


def test_a_trials_values_map_to_model_and_train_config():
    plan = TunePlan(data="ml-100k")
    params = {
        "lr": 3e-3,
        "batch_size": 1024,
        "embed_dim": 32,
        "dropout": 0.2,
        "hidden": "400,400",
        "batch_norm": True,
        "emb_reg": 0.01,
        "init": "xavier",
        "rank": 8,
        "rank_schedule": "halving",
        "overparam": 2,
        "cond_hidden": 0,
        "generate_bias": True,
        "gen_init_std": 0.01,
        "group_field": "occupation",
        "cond_norm": True,
    }
    model_cfg, cfg = tune.configs(plan, params, "deepfm", "group")
    assert (model_cfg.model, model_cfg.embed_dim, model_cfg.hidden, model_cfg.dropout) == (
        "deepfm",
        32,
        (400, 400),
        0.2,
    )
    a = model_cfg.apg
    assert (a.condition, a.cond_embed) == ("group", True)  # the arm's own definition
    assert (a.group_field, a.cond_norm) == ("occupation", True)  # the group's knobs
    assert (a.rank, a.overparam, a.cond_hidden, a.generate_bias, a.gen_init_std) == (8, 16, 0, True, 0.01)
    assert a.ranks == (8, 4) and model_cfg.batch_norm and model_cfg.init == "xavier"  # halving: K, K/2 per layer
    assert (cfg.lr, cfg.batch_size, cfg.seed, cfg.data, cfg.epochs) == (3e-3, 1024, 0, "ml-100k", plan.train.epochs)
    assert cfg.emb_reg == 0.01
    base, _ = tune.configs(plan, {k: params[k] for k in SHARED}, "deepfm", "base")
    assert not base.apg.enabled and base.apg == ARMS["base"]
    # the untuned values train exactly the untuned study's arm, with seed 0
    for arm in ("base", "static", "self", "group"):
        got = tune.configs(plan, plan.space.untuned(arm, plan.train.lr), "dnn", arm)
        assert got == study.arm_configs(Plan(data="ml-100k"), "dnn", arm, seed=0)


def test_equal_budget_per_arm_best_file_and_report(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tune, "train_trial", fake_trial(calls))
    assert tune.main(["run", *args(tmp_path, "--trials", "8")]) == 0
    assert len(calls) == 24 and all(cfg.seed == 0 for _, cfg in calls)
    # the arms take turns (base, static, self, base, ...): a search stopped part-way leaves equal budgets
    assert [m.apg.enabled for m, _ in calls] == [False, True, True] * 8
    assert [m.apg.condition for m, _ in calls[:3]] == [ARMS[a].condition for a in ("base", "static", "self")]
    found = studies(tmp_path)
    for arm, s in found.items():
        assert len(tune.finished(s)) == 8
        assert s.trials[0].params == Space().untuned(arm, 1e-3)  # trial 0: the arm untuned
    # the same sampler seed and the same values' scores: two APG arms try the very same values
    assert [t.params for t in found["static"].trials] == [t.params for t in found["self"].trials]
    assert sum(t.state == TrialState.PRUNED for s in found.values() for t in s.trials) > 0  # the median pruner
    saved = json.loads((tmp_path / "tune" / "ml-100k.json").read_text())
    for arm, s in found.items():
        e = saved["configs"]["dnn"][arm]
        complete = [t for t in s.trials if t.state == TrialState.COMPLETE]
        assert e["valid_auc"] == max(t.value for t in complete) and e["trials"] == 8
        assert e["pruned"] == 8 - len(complete) and e["untuned_valid_auc"] == s.trials[0].value
        model_cfg, cfg = tune.configs(TunePlan(data="ml-100k"), s.trials[e["trial"]].params, "dnn", arm)
        assert ModelConfig.from_dict(e["model"]) == model_cfg and e["train"] == {"lr": cfg.lr, "batch_size": 1024}
    assert tune.main(["report", *args(tmp_path, "--trials", "8")]) == 0
    text = (tmp_path / "tune-ml-100k.md").read_text()
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| ")}
    assert set(rows) == {"arm", "base", "static", "self"}
    assert rows["base"].count("—") == len(APG_KNOBS) + len(GROUP_KNOBS)
    assert rows["self"].count("—") == len(GROUP_KNOBS)  # not a group-wise arm
    assert f"| {saved['configs']['dnn']['self']['valid_auc']:.4f} |" in rows["self"]


def test_a_report_without_arms_tells_the_arms_the_search_ran_and_what_its_first_trial_was(tmp_path, monkeypatch):
    monkeypatch.setattr(tune, "train_trial", fake_trial([]))
    common = ["--data", "ml-100k", "--models", "dnn", "--space", "strong", "--trials", "2", "--epochs", "3"]
    common += ["--storage", str(tmp_path / "tune.sqlite3"), "--results", str(tmp_path)]
    assert tune.main(["run", *common, "--arms", "base,self"]) == 0
    assert tune.main(["report", *common]) == 0  # no --arms: a search of base and self is told as that
    text = (tmp_path / "tune-ml-100k-strong.md").read_text()
    assert "`apg experiment tune run --data ml-100k --models dnn --arms base,self --space strong --trials 2" in text
    assert "(then `apg experiment tune report --data ml-100k --space strong`)" in text
    rows = {line.split(" | ")[0][2:] for line in text.splitlines() if line.startswith("| ")}
    assert rows == {"arm", "base", "self"} and "not tuned yet" not in text
    assert "`untuned` is the arm's first trial (BARS's MovieLens recipe with APG's known-good knobs" in text
    assert set(tune.UNTUNED) == set(tune.SPACES)
    assert tune.main(["report", *common, "--arms", "base,static,self"]) == 0  # asked for: the untuned arm shows
    assert "| static | not tuned yet |" in (tmp_path / "tune-ml-100k-strong.md").read_text()


def test_a_stopped_search_continues_where_it_stopped(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tune, "train_trial", fake_trial(calls))
    assert tune.main(["run", *args(tmp_path, "--trials", "3")]) == 0
    assert len(calls) == 9
    assert tune.main(["run", *args(tmp_path, "--trials", "5")]) == 0  # more trials: only the new ones run
    assert len(calls) == 15 and all(len(tune.finished(s)) == 5 for s in studies(tmp_path).values())
    assert tune.main(["run", *args(tmp_path, "--trials", "5")]) == 0 and len(calls) == 15  # nothing runs twice
    # a process killed in a trial leaves it running; Ctrl-C leaves it failed: both are tried again, same values
    killed = studies(tmp_path)["base"].ask()
    Space().suggest(killed, ARMS["base"])
    calls.clear()
    monkeypatch.setattr(tune, "train_trial", fake_trial(calls, stop_at=2))
    with pytest.raises(KeyboardInterrupt):
        tune.main(["run", *args(tmp_path, "--trials", "7")])
    interrupted = calls[1]
    calls.clear()
    monkeypatch.setattr(tune, "train_trial", fake_trial(calls))
    assert tune.main(["run", *args(tmp_path, "--trials", "7")]) == 0
    base = studies(tmp_path)["base"]
    assert calls[0] == interrupted and base.trials[killed.number].state == TrialState.FAIL
    assert [t.params for t in base.trials if t.user_attrs.get("retry_of") == killed.number] == [killed.params]
    assert all(len(tune.finished(s)) == 7 for s in studies(tmp_path).values())
    assert len(calls) == 1 + 2 + 2  # static's interrupted trial and self's in turn 6, then turn 7: one each
    for s in studies(tmp_path).values():  # a resumed search draws new values, not its first process's again
        done = [json.dumps(t.params, sort_keys=True) for t in tune.finished(s)]
        assert len(set(done)) == len(done) == 7


def test_a_fresh_store_continues_from_the_committed_trial_record(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(tune, "train_trial", fake_trial(calls))
    assert tune.main(["run", *args(tmp_path, "--trials", "4")]) == 0
    log = tmp_path / "tune" / "ml-100k-trials.json"
    saved = json.loads(log.read_text())
    first = {e["arm"]: e["trials"] for e in saved["searches"].values()}
    assert sorted(first) == ["base", "self", "static"] and all(len(t) == 4 for t in first.values())
    stale = tmp_path / "stale.sqlite3"
    stale.write_bytes((tmp_path / "tune.sqlite3").read_bytes())
    (tmp_path / "tune.sqlite3").unlink()  # a fresh clone: the record is committed, the store is not
    calls.clear()
    capsys.readouterr()
    assert tune.main(["run", *args(tmp_path, "--trials", "6")]) == 0
    assert len(calls) == 6  # trials 5 and 6 of each arm: the recorded four are not trained again
    assert "4 trials stored (4 from" in capsys.readouterr().out
    for arm, s in studies(tmp_path).items():
        done = tune.finished(s)
        assert len(done) == 6 and [t.user_attrs.get("restored_from") for t in done[:4]] == [0, 1, 2, 3]
        for t, r in zip(done[:4], first[arm], strict=True):
            assert tune.record(t) == r  # written back as recorded: a restore leaves the record unchanged
            assert (t.state.name, t.value, t.params) == (r["state"], r["value"], r["params"])
            assert t.intermediate_values == {int(k): v for k, v in r["intermediate_values"].items()}
            assert t.datetime_complete.isoformat() == r["finished"]
    assert all(len(e["trials"]) == 6 for e in json.loads(log.read_text())["searches"].values())
    assert [e["trials"][:4] for e in json.loads(log.read_text())["searches"].values()] == list(first.values())
    # a stale store (this machine's, while another ran on and committed the record) is topped up, nothing re-run
    (tmp_path / "tune.sqlite3").write_bytes(stale.read_bytes())
    calls.clear()
    assert tune.main(["run", *args(tmp_path, "--trials", "6")]) == 0 and calls == []
    assert all(len(tune.finished(s)) == 6 for s in studies(tmp_path).values())
    # a store and a record that went separate ways are refused, not merged
    saved = json.loads(log.read_text())
    name = next(n for n, e in saved["searches"].items() if e["arm"] == "self")
    saved["searches"][name]["trials"][1]["value"] = 0.5
    log.write_text(json.dumps(saved))
    capsys.readouterr()
    assert tune.main(["run", *args(tmp_path, "--trials", "6")]) == 2 and calls == []
    err = capsys.readouterr().err
    assert f"search {name}: its store and its trial record differ at finished trial 1" in err
    assert "-> 0.5); move the store aside" in err


def test_a_restored_trial_drops_the_retry_number_of_the_store_it_ran_in(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tune, "train_trial", fake_trial(calls))
    assert tune.main(["run", *args(tmp_path, "--trials", "2")]) == 0
    log = tmp_path / "tune" / "ml-100k-trials.json"
    saved = json.loads(log.read_text())
    for e in saved["searches"].values():
        e["trials"][1]["user_attrs"] = {"retry_of": 0}  # its first try failed in the store it ran in
    log.write_text(json.dumps(saved))
    (tmp_path / "tune.sqlite3").unlink()
    assert tune.main(["run", *args(tmp_path, "--trials", "2")]) == 0 and len(calls) == 6
    for s in studies(tmp_path).values():
        assert [t.user_attrs["restored_from"] for t in s.trials] == [0, 1]
        assert not any("retry_of" in t.user_attrs for t in s.trials)  # not live: no retry logic reads it
    assert json.loads(log.read_text()) == saved  # and written back as recorded


def test_a_store_killed_mid_search_yields_to_a_record_that_went_on(tmp_path, monkeypatch):
    """A machine killed in its first trial (base's trial failed, the other arms' untuned trials still queued) while
    another machine ran the search on and committed the record: the stale store's unfinished trials are superseded,
    not trained again after the restored ones."""
    calls = []
    monkeypatch.setattr(tune, "train_trial", fake_trial(calls, stop_at=1))
    with pytest.raises(KeyboardInterrupt):
        tune.main(["run", *args(tmp_path, "--trials", "2")])
    stale = (tmp_path / "tune.sqlite3").read_bytes()
    (tmp_path / "tune.sqlite3").unlink()
    calls.clear()
    monkeypatch.setattr(tune, "train_trial", fake_trial(calls))
    assert tune.main(["run", *args(tmp_path, "--trials", "2")]) == 0 and len(calls) == 6  # the other machine
    (tmp_path / "tune.sqlite3").write_bytes(stale)
    calls.clear()
    assert tune.main(["run", *args(tmp_path, "--trials", "3")]) == 0
    assert len(calls) == 3  # trial 3 of each arm, nothing else
    for s in studies(tmp_path).values():
        done = tune.finished(s)
        assert len(done) == 3 and len({json.dumps(t.params, sort_keys=True) for t in done}) == 3  # no repeat
        left = [t for t in s.trials if t not in done]
        assert left and all(t.state == TrialState.FAIL for t in left)
        assert not s.get_trials(states=(TrialState.WAITING,))  # nothing queued to hijack a later run


def test_the_best_file_keys_the_studys_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(tune, "train_trial", fake_trial([]))
    tune.main(["run", *args(tmp_path, "--trials", "6")])
    path = tmp_path / "tune" / "ml-100k.json"
    saved = json.loads(path.read_text())
    untuned = Plan(data="ml-100k", models=("dnn",), arms=("base", "static", "self"))
    tuned = replace(untuned, tuned=study.load_tuned(path, "ml-100k"))
    assert replace(untuned, tuned=study.load_tuned(path, "ml-100k")) == tuned  # the file reads back the same
    study.check_tuned(tuned, path)
    for arm in untuned.arms:
        e = saved["configs"]["dnn"][arm]
        model_cfg, cfg = study.arm_configs(tuned, "dnn", arm, seed=3)
        want_model, want_cfg = tune.configs(TunePlan(data="ml-100k"), e["params"], "dnn", arm)
        assert model_cfg == want_model and cfg == replace(want_cfg, seed=3, epochs=untuned.train.epochs)
        key = json.loads(study.run_key(tuned, "dnn", arm, 3))
        assert key["tuned"] == {"model": e["model"], "train": e["train"]}
        assert "tuned" not in json.loads(study.run_key(untuned, "dnn", arm, 3))
    # the store: tuned and untuned runs of the same model, arm, seed and budget never mix
    store = study.store_path(tmp_path, "ml-100k")
    store.parent.mkdir(parents=True)
    records = [
        {
            "key": study.run_key(p, "dnn", "self", 1),
            "model": "dnn",
            "arm": "self",
            "seed": 1,
            "budget": p.budget(),
            "tuned": study.tuned_of(p, "dnn", "self"),
        }
        for p in (untuned, tuned)
    ]
    store.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert [r["tuned"] for r in study.stored(untuned, tmp_path)] == [None]
    assert [r["key"] for r in study.stored(tuned, tmp_path)] == [records[1]["key"]]
    with pytest.raises(ValueError, match="dnn/group"):
        study.check_tuned(replace(tuned, arms=("base", "group")), path)
    with pytest.raises(ValueError, match="tuned on ml-100k"):
        study.load_tuned(path, "ml-1m")


def test_tune_is_an_experiment_subcommand():
    from scripts.cli import build_parser

    a = build_parser().parse_args(["experiment", "tune", "report", "--data", "ml-100k", "--trials", "4"])
    assert a.apg_handler.run == "scripts.experiments.tune:run_from_args" and tune.plan_from_args(a).trials == 4


@pytest.mark.slow
def test_a_tiny_real_search_and_the_study_trains_its_configs(tmp_path, monkeypatch):
    from model.data import Dataset

    tiny = ["--data", "ml-100k", "--limit", "3000", "--epochs", "1", "--models", "dnn", "--arms", "base,self"]
    part = Dataset.part

    def no_test(self, split):
        assert split != "test", "the search read the test split"
        return part(self, split)

    with monkeypatch.context() as m:
        m.setattr(Dataset, "part", no_test)
        assert (
            tune.main(
                ["run", *tiny, "--trials", "2", "--storage", str(tmp_path / "t.sqlite3"), "--results", str(tmp_path)]
            )
            == 0
        )
    plan = TunePlan("ml-100k", ("dnn",), ("base", "self"), 2, train=replace(TunePlan().train, epochs=1, limit=3000))
    for arm in plan.arms:
        s = optuna.load_study(study_name=plan.study_name("dnn", arm), storage=f"sqlite:///{tmp_path / 't.sqlite3'}")
        assert [t.state for t in s.trials] == [TrialState.COMPLETE] * 2
        assert all(t.intermediate_values == {1: t.value} and 0 < t.value < 1 for t in s.trials)  # the epoch hook
    path = tmp_path / "tune" / "ml-100k.json"
    runs = tmp_path / "runs"
    assert (
        study.main(
            ["run", *tiny, "--seeds", "1", "--tuned", str(path), "--results", str(tmp_path), "--runs", str(runs)]
        )
        == 0
    )
    saved = json.loads(path.read_text())["configs"]["dnn"]
    records = study.read_store(study.store_path(tmp_path, "ml-100k")).values()
    assert {r["arm"]: r["tuned"] for r in records} == {
        a: {"model": e["model"], "train": e["train"]} for a, e in saved.items()
    }
    trained = json.loads((runs / "ml-100k" / "dnn-self-tuned-e1-s1" / "metrics.json").read_text())["config"]
    assert trained["model"] == saved["self"]["model"] and trained["train"]["lr"] == saved["self"]["train"]["lr"]
    # RESULTS.md section 2: the search's table, then the tuned study's (the tiny budget's runs, as `section` reads them)
    from scripts.experiments.results_report import ml1m_sections

    (tmp_path / "figures").mkdir()
    text = "\n".join(ml1m_sections(tmp_path, tmp_path / "figures", data="ml-100k")).split("## 3.")[0]
    assert "apg experiment tune run --data ml-100k --models dnn --arms base,self --trials 2 --epochs 1" in text
    assert f"| self | {saved['self']['valid_auc']:.4f} |" in text
    assert "No tuned run stored yet" in text  # the default budget's tuned runs: none here
    budget = TrainConfig(epochs=1, patience=2, batch_size=1024, limit=3000)
    plan = study.Plan("ml-100k", ("dnn",), ("base", "self"), (1, 2, 3), budget, study.load_tuned(path, "ml-100k"))
    lines = study.section(tmp_path, plan, figures=tmp_path / "figures", tuned=path)
    assert f"--seeds 1 --epochs 1 --tuned {path}`" in lines[0]  # the seeds stored, not the plan's; the budget's epochs
    assert "each arm with its tuned learning rate" in lines[2] and "| dnn | self |" in lines[2]
    assert (tmp_path / "figures" / "study-ml-100k-tuned.png").stat().st_size > 1000


def test_the_strong_space_starts_from_barss_recipe_and_leaves_the_default_searches_named_as_stored():
    from scripts.experiments.tune import SPACES, STRONG, best_path

    first = STRONG.untuned("self", 1e-3)
    assert (first["hidden"], first["batch_norm"], first["emb_reg"], first["dropout"], first["init"]) == (
        "400,400,400",
        True,
        0.01,
        0.3,
        "xavier",
    )
    assert (first["cond_hidden"], first["generate_bias"], first["rank_schedule"]) == (0, True, "halving")
    model_cfg, cfg = tune.configs(TunePlan(space=STRONG), first, "deepfm", "self")
    assert model_cfg.apg.ranks == (32, 16, 8) and model_cfg.apg.overparam == 64 and cfg.emb_reg == 0.01
    assert set(STRONG.untuned("base", 1e-3)) == set(SHARED)
    # the default space's identity is the one the stored searches were made with: their names do not change
    stored = json.loads(best_path(study.RESULTS, "ml-1m").read_text())["configs"]["deepfm"]["self"]
    assert json.loads(json.dumps(Space().identity())) == stored["budget"]["space"]
    assert STRONG.identity() != Space().identity() and set(SPACES) == {"default", "strong"}
    assert best_path(study.RESULTS, "ml-1m", "strong").name == "ml-1m-strong.json"
    # the strong recipe's trials train 30 epochs at most unless told otherwise (at 10 they stopped mid-climb)
    parser = argparse.ArgumentParser()
    tune.add_arguments(parser)
    strong, default = (tune.plan_from_args(parser.parse_args(["run", "--space", s])) for s in ("strong", "default"))
    assert (strong.train.epochs, default.train.epochs) == (30, 10)
    assert tune.plan_from_args(parser.parse_args(["run", "--space", "strong", "--epochs", "12"])).train.epochs == 12


def test_the_first_configs_file_is_the_recipe_itself_and_the_study_trains_it(tmp_path):
    from scripts.experiments.tune import STRONG, first_configs

    plan = TunePlan(models=("deepfm",), arms=("base", "self"), space=STRONG, space_name="strong")
    path = first_configs(plan, tmp_path)
    assert path.name == "ml-1m-strong-first.json"
    tuned = study.load_tuned(path, "ml-1m")
    model_cfg, cfg = study.arm_configs(Plan(models=("deepfm",), arms=("self",), tuned=tuned), "deepfm", "self", 3)
    assert model_cfg.hidden == (400, 400, 400) and model_cfg.batch_norm and model_cfg.apg.ranks == (32, 16, 8)
    assert (cfg.emb_reg, cfg.lr, cfg.seed) == (0.01, 1e-3, 3)
    saved = json.loads(path.read_text())["configs"]["deepfm"]
    assert saved["base"]["trials"] == 0 and saved["base"]["train"] == {"lr": 1e-3, "batch_size": 1024, "emb_reg": 0.01}
