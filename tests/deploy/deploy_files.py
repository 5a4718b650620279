"""Small readers for the deployment files, for the tests: Dockerfile, .dockerignore, compose values, PromQL names.

No Docker engine is needed (or available): the Dockerfile is parsed, not built.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------- Dockerfile
@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the rest of the line, continuations joined
    line: int

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction (ENTRYPOINT ["a", "b"]), else None."""
        return _json_array(self.args)


@dataclass
class Stage:
    name: str | None
    base: str  # the FROM image after global ARG expansion (or an earlier stage's name)
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        """ENV key=value pairs of this stage (later ones win). The legacy `ENV key value` form too."""
        out: dict[str, str] = {}
        for ins in self.all("ENV"):
            words = shlex.split(ins.args)
            if words and "=" not in words[0]:
                out[words[0]] = " ".join(words[1:])
                continue
            for word in words:
                key, _, value = word.partition("=")
                out[key] = value
        return out

    def copy_from(self) -> set[str]:
        """Stages (or images) this stage copies from: COPY --from=X."""
        found = set()
        for ins in self.all("COPY"):
            for word in shlex.split(ins.args):
                if word.startswith("--from="):
                    found.add(word.split("=", 1)[1])
        return found


@dataclass
class Healthcheck:
    options: dict[str, str]
    command: list[str] | None  # exec form; None for shell form or NONE
    raw: str


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage {name!r}; stages: {[s.name for s in self.stages]}")

    def names(self) -> list[str | None]:
        return [s.name for s in self.stages]

    def closure(self, name: str) -> list[Stage]:
        """The stage and every earlier stage it builds on (FROM <stage>) or copies from (COPY --from=<stage>)."""
        names = set(self.names())
        seen: list[Stage] = []
        todo = [name]
        while todo:
            stage = self.stage(todo.pop())
            if stage in seen:
                continue
            seen.append(stage)
            todo += [n for n in {stage.base, *stage.copy_from()} if n in names]
        return seen


def parse_dockerfile(text: str) -> Dockerfile:
    """Logical instructions (continuations joined, comments dropped), grouped into stages."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in _instructions(text):
        if ins.keyword == "ARG" and not stages:
            key, _, value = ins.args.partition("=")
            global_args[key.strip()] = _unquote(value.strip())
        elif ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--platform")]
            base = expand(words[0], global_args)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(name, base))
        elif stages:
            stages[-1].instructions.append(ins)
    return Dockerfile(global_args, stages)


def parse_healthcheck(ins: Instruction) -> Healthcheck:
    rest = ins.args.strip()
    options = {}
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        key, _, value = word[2:].partition("=")
        options[key] = value
        rest = rest.strip()
    if rest.upper() == "NONE":
        return Healthcheck(options, None, rest)
    keyword, _, command = rest.partition(" ")
    assert keyword.upper() == "CMD", f"HEALTHCHECK without CMD: {ins.args!r}"
    return Healthcheck(options, _json_array(command.strip()), command.strip())


def expand(value: str, variables: dict[str, str]) -> str:
    """${VAR}, $VAR and ${VAR:-default} as Dockerfile and compose files expand them (from `variables` only)."""

    def one(m: re.Match) -> str:
        name, default = m.group(1) or m.group(3), m.group(2)
        return variables.get(name) or (default if default is not None else "")

    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)", one, value)


def _instructions(text: str):
    buf, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue  # blank lines, comments and parser directives
        if buf and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if not buf:
            start = number
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, args = buf.partition(" ")
        yield Instruction(keyword.upper(), args.strip(), start)
        buf = ""
    if buf:
        keyword, _, args = buf.partition(" ")
        yield Instruction(keyword.upper(), args.strip(), start)


def _json_array(text: str) -> list[str] | None:
    text = text.strip()
    if not text.startswith("["):
        return None
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
    return value


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


# ----------------------------------------------------------------------------------------- .dockerignore
def dockerignore_patterns(text: str) -> list[tuple[bool, str]]:
    """(negated, pattern) per line, as Docker reads them: comments and blanks dropped, paths cleaned."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:].strip() if negated else line
        pattern = pattern.strip("/") or "."
        out.append((negated, pattern))
    return out


def dockerignored(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Whether Docker leaves `path` (relative, '/'-separated) out of the build context.

    The last matching pattern wins; a pattern matches a path or any of its parent directories
    (moby's patternmatcher); `**` matches any number of directories.
    """
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, pattern in patterns:
        regex = _glob_regex(pattern)
        if any(regex.fullmatch(c) for c in candidates):
            excluded = not negated
    return excluded


def _glob_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        else:
            ch = pattern[i]
            if ch == "*":
                out += "[^/]*"
            elif ch == "?":
                out += "[^/]"
            elif ch == "[":
                end = pattern.index("]", i)
                out += pattern[i : end + 1]
                i = end
            else:
                out += re.escape(ch)
            i += 1
    return re.compile(out)


# ------------------------------------------------------------------------------------------------ PromQL
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (not functions, keywords, labels or Grafana variables)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers (and the Grafana variables inside them)
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range selectors, subqueries
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", s):
        word, rest = m.group(0), s[m.end() :].lstrip()
        if rest.startswith("(") or word.lower() in _PROMQL_WORDS or word.lower() in {"inf", "nan"}:
            continue
        names.add(word)
    return names


def dashboard_targets(dashboard: dict) -> list[tuple[str, dict]]:
    """(panel title, target) for every target of every panel, rows' collapsed panels included."""
    out = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                out.append((inner.get("title", ""), target))
    return out
