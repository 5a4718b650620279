"""Several models in one service: the model repository, and the sticky traffic split between two of them.

    entries = repository_entries(Path("models"))      # {"deepfm": models/deepfm, "deepfm-apg": models/deepfm-apg}
    split = Experiment.parse('{"control": "deepfm", "treatment": "deepfm-apg", "share": 0.5, "key": "user_id"}')
    split.arm_of("196")                               # "control" or "treatment", the same on every replica
    choose(split, default, pinned, payload)           # → (model name, arm or None) for one /score body

A repository is a directory whose sub-directories are bundles (each with its bundle.json); a model is served under
its directory's name (`/v2/models/deepfm/infer`, `{"model": "deepfm"}` in a /score body or the `X-APG-Model` header).

The split is a pure function of the experiment's name and the key's value: the first 8 bytes of
blake2b(name NUL value), as a fraction of 2^64, below `share` → treatment. No state, no coordination: every worker and
every replica sends a user to the same arm, and changing `share` moves only the users between the old and new cut.
Key values are normalised as the encoder reads a categorical value (196, 196.0 and " 196 " are one user).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from features import MANIFEST
from features.rules import normalise
from service.errors import BadRequest, ConfigError, InvalidShape

log = logging.getLogger("apg.experiment")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a model or experiment name: a URL path segment, a label
ARMS = ("control", "treatment")
MODEL_HEADER = "x-apg-model"  # pins a /score request to one model (no experiment arm)


def repository_entries(root: Path) -> dict[str, Path]:
    """{name: bundle directory} for every sub-directory of `root` holding a bundle.json; ConfigError when `root` is
    not a directory or holds none. Sub-directories whose names cannot be a model name are skipped with a warning."""
    if not root.is_dir():
        raise ConfigError(f"APG_MODELS {str(root)!r} is not a directory")
    entries = {}
    for path in sorted(root.iterdir()):
        if not (path / MANIFEST).is_file():
            continue
        if not NAME.fullmatch(path.name):
            log.warning("skipping %s: a model name is letters, digits, '_', '.', '-' (at most 64)", path)
            continue
        entries[path.name] = path
    if not entries:
        raise ConfigError(f"APG_MODELS {str(root)!r} holds no bundle (no sub-directory with a {MANIFEST})")
    return entries


@dataclass(frozen=True)
class Experiment:
    """A two-arm split: `share` of the key's values go to `treatment`, the rest to `control`."""

    name: str
    control: str
    treatment: str
    share: float
    key: str

    @classmethod
    def parse(cls, text: str) -> Experiment:
        """From APG_EXPERIMENT: a JSON object, or the path of a file holding one. ConfigError when invalid."""
        source = text
        if not text.lstrip().startswith("{"):
            try:
                source = Path(text).read_text()
            except OSError as exc:
                raise ConfigError(f"APG_EXPERIMENT: not a JSON object and not a readable file: {exc}") from None
        try:
            spec = json.loads(source)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"APG_EXPERIMENT: malformed JSON: {exc}") from None
        if not isinstance(spec, dict):
            raise ConfigError("APG_EXPERIMENT must be a JSON object")
        known = {"name", "control", "treatment", "share", "key"}
        if unknown := sorted(set(spec) - known):
            raise ConfigError(f"APG_EXPERIMENT: unknown keys {unknown}; expected {sorted(known)}")
        missing = sorted({"control", "treatment", "key"} - set(spec))
        if missing:
            raise ConfigError(f"APG_EXPERIMENT: missing {missing}")
        share = spec.get("share", 0.5)
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
            raise ConfigError(f"APG_EXPERIMENT: share must be a number in [0, 1], got {share!r}")
        name = str(spec.get("name", "experiment"))
        experiment = cls(name, spec["control"], spec["treatment"], float(share), spec["key"])
        for field in ("name", "control", "treatment"):
            if not isinstance(getattr(experiment, field), str) or not NAME.fullmatch(getattr(experiment, field)):
                raise ConfigError(f"APG_EXPERIMENT: {field} must be a model name, got {getattr(experiment, field)!r}")
        if experiment.control == experiment.treatment:
            raise ConfigError("APG_EXPERIMENT: control and treatment must be two different models")
        if not isinstance(experiment.key, str) or not experiment.key:
            raise ConfigError("APG_EXPERIMENT: key must be a feature name")
        return experiment

    def check(self, models: set[str], features: dict[str, tuple[str, ...]] | None = None) -> None:
        """ConfigError unless both arms are served models and, for those whose raw features are known (`features`:
        {model: names}), the key is one of them: a misspelled key would send every user to control."""
        for arm in ARMS:
            if (model := getattr(self, arm)) not in models:
                raise ConfigError(f"APG_EXPERIMENT: {arm} {model!r} is not a served model ({sorted(models)})")
            known = (features or {}).get(model)
            if known is not None and self.key not in known:
                raise ConfigError(
                    f"APG_EXPERIMENT: key {self.key!r} is not a feature of {arm} {model!r} (features: {list(known)})"
                )

    def arm_of(self, value: Any) -> str:
        """The arm of one key value (None, a missing key, goes to control)."""
        key = normalise(value)
        if key is None:
            return "control"
        digest = hashlib.blake2b(f"{self.name}\0{key}".encode(), digest_size=8).digest()
        return "treatment" if int.from_bytes(digest, "big") < self.share * 2**64 else "control"

    def model_of(self, arm: str) -> str:
        return self.treatment if arm == "treatment" else self.control


def key_value(payload: Any, key: str) -> Any:
    """The one value of feature `key` in a /score body (rows, columns or ranking), None when absent. A body whose rows
    carry different values is refused: the arm is chosen per request, and a user must always see one arm."""
    values: list[Any] = []
    if isinstance(payload, dict):
        if isinstance(payload.get("instances"), list):
            values = [row.get(key) for row in payload["instances"] if isinstance(row, dict)]
        elif isinstance(payload.get("inputs"), dict):
            column = payload["inputs"].get(key)
            values = column if isinstance(column, list) else []
        elif "context" in payload:
            context = payload.get("context")
            if isinstance(context, dict) and key in context:
                values = [context[key]]
            elif isinstance(payload.get("candidates"), list):
                values = [row.get(key) for row in payload["candidates"] if isinstance(row, dict)]
    try:
        distinct = {normalise(v) for v in values}
    except (ValueError, TypeError, BadRequest):
        return None  # unreadable: the encoder names the error
    if len(distinct) > 1:
        raise InvalidShape(
            f"the rows of one request carry {len(distinct)} different {key!r} values; while an experiment splits"
            f" traffic by {key!r}, send one {key!r} per request, or pin a model ('model' or the X-APG-Model header)",
            field=key,
        )
    return next(iter(distinct), None)


def select(runtime: Any, experiment: Experiment | None, payload: Any, header: str | None) -> tuple[Any, str | None]:
    """(model, arm) for one /score body: pinned by its "model" key (taken out of `payload`) or the X-APG-Model header,
    else the experiment's arm for the request's key value, else the default model with no arm."""
    pinned = header
    if isinstance(payload, dict) and "model" in payload:
        given = payload.pop("model")
        if not isinstance(given, str):
            raise InvalidShape("'model' must be a model name (a string)", field="model")
        if pinned is not None and pinned != given:
            raise BadRequest(f"the body names model {given!r} and the X-APG-Model header {pinned!r}", field="model")
        pinned = given
    if pinned is not None:
        return runtime.get(pinned), None
    if experiment is not None:
        arm = experiment.arm_of(key_value(payload, experiment.key))
        return runtime.get(experiment.model_of(arm)), arm
    return runtime.current, None
