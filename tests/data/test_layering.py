"""The data layer stays below the model: nothing under ``robult/data`` imports the config, modules, models or losses."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import robult.data

FORBIDDEN = ("robult.config", "robult.modules", "robult.models", "robult.losses")
DATA_DIR = Path(robult.data.__file__).parent


def _imported(source: str, location: Path) -> list[str]:
    """Every module an ``import`` / ``from ... import`` anywhere in ``source`` names (top level or inside functions);
    relative imports are resolved as if the file lived at ``location``."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source, filename=str(location))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                package = ["robult", *location.relative_to(DATA_DIR.parent).with_suffix("").parts[:-1]]
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{module}" if module else base
            names.append(module)
            names += [f"{module}.{a.name}" for a in node.names]
    return names


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def test_no_data_module_imports_config_modules_models_or_losses() -> None:
    files = sorted(DATA_DIR.rglob("*.py"))
    assert len(files) >= 8
    bad = {str(f.relative_to(DATA_DIR)): [n for n in _imported(f.read_text(), f) if _forbidden(n)] for f in files}
    assert not {k: v for k, v in bad.items() if v}


def test_the_check_sees_lazy_and_relative_imports() -> None:
    source = "def f():\n    from robult.models.robult import RobultModel\n\nfrom ..config import read_yaml\n"
    found = [n for n in _imported(source, DATA_DIR / "user.py") if _forbidden(n)]
    assert "robult.models.robult" in found and "robult.config" in found


def test_importing_every_data_module_loads_none_of_them() -> None:
    modules = sorted(
        "robult.data." + ".".join(f.relative_to(DATA_DIR).with_suffix("").parts)
        for f in DATA_DIR.rglob("*.py")
        if f.name != "__init__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
