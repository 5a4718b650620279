"""The import graph of the project's own packages (features, model, service, scripts), read from the source: no
circle, counting imports inside functions too (a lazy import hides a circle, it does not remove it)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("features", "model", "service", "scripts")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree: ast.AST, known: set[str], own: str) -> set[str]:
    """Our modules `tree` imports at run time (not under `if TYPE_CHECKING:`); `from p import m` is module p.m."""
    out = set()
    typing_only = [n for n in ast.walk(tree) if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)]
    skipped = {id(n) for block in typing_only for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            subs = [f"{node.module}.{a.name}" for a in node.names]
            names = [s for s in subs if s in known] or [node.module]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != own:
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    known = set(paths)
    return {m: imports(ast.parse(p.read_text()), known, m) for m, p in paths.items()}


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), iteratively."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], 0
    for root in g:
        if root in index:
            continue
        work = [(root, iter(sorted(g[root])))]
        index[root] = low[root] = counter = counter + 1
        stack.append(root)
        on.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter = counter + 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(g[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_the_checker_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import b\ndef f():\n    import c\n")
    assert imports(tree, {"a", "b", "c"}, "a") == {"c"}  # lazy imports count; type-checking ones do not


def test_no_import_circle():
    assert circles(graph()) == []


def test_the_feature_contract_imports_neither_half():
    g = graph()
    for name, deps in g.items():
        if name.startswith("features"):
            assert not {d for d in deps if not d.startswith("features")}, name


def importers(g: dict[str, set[str]], package: str) -> set[str]:
    """The modules of service/ outside `package` that import it or one of its modules."""
    inside = lambda m: m == package or m.startswith(package + ".")  # noqa: E731
    return {m for m, deps in g.items() if m.startswith("service") and not inside(m) and any(map(inside, deps))}


def test_the_adapters_are_the_top_floor():
    """routes/ and grpc/ adapt the service to HTTP and gRPC: nothing in service/ but the app factory imports either
    (plumbing and core are below both), and neither imports the other."""
    g = graph()
    assert importers(g, "service.routes") == {"service.app"}
    assert importers(g, "service.grpc") == {"service.app"}


def test_the_request_id_rule_is_written_once():
    """service/observe.py's rule (echo a sane client id, else make one) is the one HTTP, gRPC and feedback use; no other
    module of service/ spells the header or defines a request-id function of its own."""
    import service.feedback.base
    import service.grpc.server
    import service.middleware
    from service import observe

    assert service.middleware.request_id_of is observe.request_id_of
    assert service.grpc.server.request_id_of is observe.request_id_of
    assert service.feedback.base.valid_id is observe.valid_id
    spelled, defined = [], []
    for path in sorted((ROOT / "service").rglob("*.py")):
        if path == ROOT / "service/observe.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            value = node.value if isinstance(node, ast.Constant) else None
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            if isinstance(value, str) and value.strip().lower() == "x-request-id":
                spelled.append(f"{module_name(path)}:{node.lineno}")
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and "request_id" in node.name.lower():
                defined.append(f"{module_name(path)}.{node.name}")
    assert spelled == [] and defined == []
