"""The package's import graph has no cycle: neither among module-level imports nor through imports inside functions
(a cycle "broken" by a lazy import is still two modules that need each other). Imports under ``TYPE_CHECKING`` are
annotations only and do not count."""

from __future__ import annotations

import ast
from pathlib import Path

import robult

SRC = Path(robult.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        parts = ("robult", *f.relative_to(SRC).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _module_level(node: ast.AST) -> list[ast.AST]:
    """``node`` and everything below it that runs at import (not inside a function)."""
    out = [node]
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            out += _module_level(child)
    return out


def _edges(name: str, path: Path, modules: dict[str, Path], lazy: bool) -> set[str]:
    """The robult modules ``name`` imports (module level only unless ``lazy``), without its parent packages."""
    tree = ast.parse(path.read_text(), filename=str(path))
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for part in node.body
        for n in ast.walk(part)
    }
    nodes = ast.walk(tree) if lazy else _module_level(tree)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in nodes:
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = ".".join([*package[: len(package) - node.level + 1], *([module] if module else [])])
            names = [module, *(f"{module}.{a.name}" for a in node.names)]
        else:
            continue
        for target in names:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_no_import_cycle() -> None:
    modules = _modules()
    assert len(modules) > 50
    top = {m: _edges(m, p, modules, lazy=False) for m, p in modules.items()}
    assert _cycles(top) == []
    every = {m: _edges(m, p, modules, lazy=True) for m, p in modules.items()}
    assert _cycles(every) == []


def test_the_check_finds_a_lazy_cycle_and_ignores_type_checking(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text("try:\n    import robult.c\nexcept ImportError:\n    pass\n\n\ndef f():\n    from robult.b import g\n")
    b.write_text("from robult.a import f\n")
    c.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from robult.a import f\n")
    modules = {"robult.a": a, "robult.b": b, "robult.c": c}
    graph = {m: _edges(m, p, modules, lazy=True) for m, p in modules.items()}
    assert graph == {"robult.a": {"robult.b", "robult.c"}, "robult.b": {"robult.a"}, "robult.c": set()}
    assert _cycles(graph) == [["robult.a", "robult.b"]]
    top = {m: _edges(m, p, modules, lazy=False) for m, p in modules.items()}
    assert top["robult.a"] == {"robult.c"} and _cycles(top) == []


# The command line and the experiments (methods compared over seeds) sit on top of the library; nothing below imports
# them, not even inside a function.
APPLICATION = ("robult.__main__", "robult.cli", "robult.experiments")


def _in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_library_imports_neither_the_experiments_nor_the_cli() -> None:
    """``robult.experiments`` (benchmark, tuning, grid, reports) and ``robult.cli`` use the library (models, losses,
    modules, data, training, inference, evaluation, estimator, ...); no library module imports them, at module level
    or inside a function."""
    modules = _modules()
    assert {"robult.experiments.benchmark", "robult.experiments.tuning", "robult.experiments.grid"} <= set(modules)
    library = [m for m in modules if not _in(m, APPLICATION)]
    for package in ("models", "losses", "modules", "data", "training", "inference", "evaluation", "estimator"):
        assert f"robult.{package}" in library
    found = [
        f"{name} imports {target}"
        for name in sorted(library)
        for target in sorted(_edges(name, modules[name], modules, lazy=True))
        if _in(target, APPLICATION)
    ]
    assert found == []


def _package_of(module: str, modules: dict[str, Path]) -> str:
    """``robult.data.user`` → ``robult.data``; ``robult.data`` (a package) → itself; ``robult.cli`` → ``robult``."""
    if modules[module].name == "__init__.py":
        return module
    return module.rpartition(".")[0]


def test_no_private_name_crosses_a_package() -> None:
    """``from robult.<pkg>.<mod> import _name`` is allowed only inside ``robult.<pkg>``: a name another package
    needs is public (tests may use private names)."""
    modules = _modules()
    crossings = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("robult")):
                continue
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and _package_of(node.module, modules) != _package_of(name, modules):
                    crossings.append(f"{name} imports {node.module}.{alias.name}")
    assert crossings == []


def test_the_trainer_knows_no_model_or_loss_class() -> None:
    """robult.training talks to a method through MultimodalModel's and MethodLoss's interface only: no check of a
    model's type, no look at a function's signature, no probing for optional attributes of the loss."""
    found = []
    for path in sorted((SRC / "training").glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            text = ast.unparse(node) if isinstance(node, ast.Call) else ""
            if text.startswith("isinstance(") and "Model" in text and "ModelCheckpoint" not in text:
                found.append(f"{path.name}:{node.lineno}: {text}")
            if text.startswith(("inspect.signature(", "signature(")):
                found.append(f"{path.name}:{node.lineno}: {text}")
            if text.startswith("getattr(self.criterion") or text.startswith("getattr(criterion"):
                found.append(f"{path.name}:{node.lineno}: {text}")
    assert found == []


def test_inference_never_imports_training() -> None:
    """Loading a trained model needs neither Lightning nor the trainer: ``robult.inference`` imports nothing from
    ``robult.training``, not even inside a function (rebuilding an artefact from a checkpoint is a training-side
    job, ``robult.training.saved_run.artefact_from_checkpoint``); training writes the artefact through inference."""
    modules = _modules()
    found = [
        f"{name} imports {target}"
        for name in sorted(m for m in modules if _in(m, ("robult.inference",)))
        for target in sorted(_edges(name, modules[name], modules, lazy=True))
        if _in(target, ("robult.training",))
    ]
    assert found == []
