"""Options generated from the config dataclasses: every field of ModelConfig, APGConfig and TrainConfig is an option
of `apg train`, and parsing builds the dataclasses back, defaults and changed values alike."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field

import pytest

from scripts import cli, model_commands
from scripts.config_args import add_config_arguments, config_argv, config_from_args

pytest.importorskip("torch")  # the three dataclasses live in model/ (the training side)

from model.apg import APGConfig  # noqa: E402
from model.train import TrainConfig  # noqa: E402
from model.zoo import ModelConfig  # noqa: E402


def changed(cfg, **fixed):
    """`cfg` with every field (recursively) moved off its default, `fixed` for fields the dataclass constrains."""
    hints, values = typing.get_type_hints(type(cfg)), {}
    for f in dataclasses.fields(cfg):
        v, kind = getattr(cfg, f.name), hints[f.name]
        if f.name in fixed:
            values[f.name] = fixed[f.name]
        elif dataclasses.is_dataclass(v):
            values[f.name] = changed(v, **fixed)
        elif "choices" in f.metadata:
            values[f.name] = next(c for c in f.metadata["choices"] if c != v)
        elif isinstance(v, bool):
            values[f.name] = not v
        elif isinstance(v, tuple):
            values[f.name] = (*v, v[0])
        elif v is None:
            values[f.name] = 7 if int in typing.get_args(kind) else "x.json"
        else:  # int, float or str
            values[f.name] = v + (3 if isinstance(v, int) else 0.25 if isinstance(v, float) else "-x")
    return dataclasses.replace(cfg, **values)


CHANGED_MODEL = changed(ModelConfig(), model="dnn", condition="mix", overparam=32, ranks=(4, 8, 16))  # P >= K
CHANGED_TRAIN = changed(TrainConfig())


def train_options() -> tuple[argparse.ArgumentParser, dict]:
    """The parser of `apg train` and its parsed defaults (dest -> value)."""
    p = argparse.ArgumentParser()
    model_commands.train_arguments(p)
    return p, vars(p.parse_args(["--out", "x"]))


def leaves(cls) -> list[dataclasses.Field]:
    """The fields of cls and of its dataclass fields."""
    return [g for f in dataclasses.fields(cls) for g in (leaves(f.default_factory) if f.name == "apg" else [f])]


@pytest.mark.parametrize("cls", [ModelConfig, APGConfig, TrainConfig])
def test_every_field_is_an_option_with_help_and_choices(cls):
    p, defaults = train_options()
    for f in leaves(cls):
        assert f.name in defaults, f"{cls.__name__}.{f.name} has no option"
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
        if "choices" in f.metadata:
            flag = "--" + model_commands.TRAIN_FLAGS.get(f.name, f.name).replace("_", "-")
            with pytest.raises(SystemExit):
                p.parse_args(["--out", "x", flag, "not-a-choice"])


def test_todays_flag_names_keep_working():
    text = train_options()[0].format_help()
    for flag in (
        "--apg",
        "--rank",
        "--overparam",
        "--variant",
        "--group-field",
        "--mix-fields",
        "--embed-dim",
        "--hidden",
        "--epochs",
        "--batch-size",
        "--lr",
        "--patience",
        "--threads",
        "--missing-rate",
        "--limit",
        "--data",
        "--schema",
        "--split",
        "--seed",
        "--out",
        "--quiet",
        "--model",
    ):
        assert f"{flag} " in text


def test_the_changed_configs_change_every_field():
    for changed, default in ((CHANGED_MODEL, ModelConfig()), (CHANGED_TRAIN, TrainConfig())):
        for f in leaves(type(default)):
            owner = (changed.apg, default.apg) if f.name in APGConfig.__dataclass_fields__ else (changed, default)
            assert getattr(owner[0], f.name) != getattr(owner[1], f.name), f.name


@pytest.mark.parametrize(
    "cfg",
    [ModelConfig(), CHANGED_MODEL, TrainConfig(), CHANGED_TRAIN],
    ids=["model-defaults", "model-changed", "train-defaults", "train-changed"],
)
def test_parse_round_trips_to_the_dataclass(cfg):
    argv = config_argv(cfg, model_commands.TRAIN_FLAGS)
    model, train = model_commands.train_configs(cli.build_parser().parse_args(["train", *argv, "--out", "x"]))
    assert (model if isinstance(cfg, ModelConfig) else train) == cfg


@dataclass(frozen=True)
class Inner:
    width: int = field(default=4, metadata={"help": "w"})


@dataclass(frozen=True)
class Outer:
    name: str = field(default="a", metadata={"help": "n", "choices": ("a", "b")})
    rate: float | None = field(default=None, metadata={"help": "r"})
    sizes: tuple[int, ...] = field(default=(1, 2), metadata={"help": "s"})
    on: bool = field(default=False, metadata={"help": "o"})
    inner: Inner = field(default_factory=Inner)


def test_types_choices_and_nesting():
    p = argparse.ArgumentParser()
    add_config_arguments(p, Outer, flags={"width": "inner-width"})
    assert config_from_args(Outer, p.parse_args([])) == Outer()
    args = p.parse_args(["--name", "b", "--rate", "0.5", "--sizes", "3, 4,5", "--on", "--inner-width", "9"])
    assert config_from_args(Outer, args) == Outer("b", 0.5, (3, 4, 5), True, Inner(9))
    for bad in (["--name", "c"], ["--sizes", "1,x"], ["--rate", "fast"]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)
    only = argparse.ArgumentParser()
    add_config_arguments(only, Outer, only=("name",))
    assert set(vars(only.parse_args([]))) == {"name"}
    assert config_from_args(Outer, only.parse_args(["--name", "b"]), only=("name",)) == Outer("b")


def test_an_unsupported_field_type_is_refused():
    @dataclass
    class Odd:
        mapping: dict = field(default_factory=dict)

    with pytest.raises(TypeError, match="mapping"):
        add_config_arguments(argparse.ArgumentParser(), Odd)
