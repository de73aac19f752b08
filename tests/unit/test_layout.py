"""The package borders of docs/architecture.md: signaling and bridge never import each other (both import the
neutral colibri2), colibri2 imports neither, and only sluice puts bridge, signaling and bench together.

Two views of the same rule: a static one over every import statement in the source (also those inside
functions and `if TYPE_CHECKING:` blocks, which a run would not reach), naming file and line; and a fresh
interpreter that imports every module of a package and lists what got loaded, which also catches an import
hidden behind a third package.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: package -> the top-level packages it must never import.
FORBIDDEN: dict[str, frozenset[str]] = {
    "signaling": frozenset({"bridge", "sluice", "bench"}),
    "bridge": frozenset({"signaling", "sluice", "bench"}),
    "colibri2": frozenset({"bridge", "signaling", "sluice", "bench", "xmppclient"}),
    "xmppclient": frozenset({"bridge", "signaling", "sluice", "bench", "colibri2"}),
    "bench": frozenset({"signaling", "sluice"}),
}


def imported_packages(source: str, filename: str) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in `source`, wherever it stands."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.partition(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            found.append((node.lineno, node.module.partition(".")[0]))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value.partition(".")[0]))
    return found


def border_violations(package: str, files: dict[str, str]) -> list[str]:
    """`file:line imports X` for each import across `package`'s border; `files` maps path -> source."""
    forbidden = FORBIDDEN[package]
    return [
        f"{path}:{line} imports {target} ({package} must not import {', '.join(sorted(forbidden))})"
        for path, source in sorted(files.items())
        for line, target in imported_packages(source, path)
        if target in forbidden
    ]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_crosses_a_border(package: str) -> None:
    files = {
        str(path.relative_to(REPO)): path.read_text()
        for path in sorted((REPO / package).rglob("*.py"))
        if "node_modules" not in path.parts
    }
    assert files, f"no Python files under {package}/"
    assert border_violations(package, files) == []


def test_the_static_check_sees_imports_anywhere() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import colibri2.model\n"
        "if TYPE_CHECKING:\n"
        "    from bridge.bridge import Bridge\n"
        "def f() -> None:\n"
        "    import sluice.cli\n"
        "    importlib.import_module('bench.run')\n"
        "from . import relative\n"
    )
    assert border_violations("signaling", {"signaling/x.py": source}) == [
        "signaling/x.py:4 imports bridge (signaling must not import bench, bridge, sluice)",
        "signaling/x.py:6 imports sluice (signaling must not import bench, bridge, sluice)",
        "signaling/x.py:7 imports bench (signaling must not import bench, bridge, sluice)",
    ]


#: Our top-level packages.
OURS = ("bridge", "signaling", "colibri2", "xmppclient", "sluice", "bench")
# Run in a fresh interpreter from the checkout: imports every module of the package named in argv[1] and
# prints where it came from and which of the packages named after it ended up in sys.modules.
_IMPORT_ALL = """
import importlib, json, pkgutil, sys
root = importlib.import_module(sys.argv[1])
for info in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
    importlib.import_module(info.name)
ours = set(sys.argv[2:])
loaded = sorted(n for n in sys.modules if n.partition(".")[0] in ours)
print(json.dumps({"file": root.__file__, "modules": loaded}))
"""


def loaded_by_importing(package: str) -> tuple[Path, list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, package, *OURS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return Path(result["file"]), list(result["modules"])


@pytest.mark.parametrize("package", ["signaling", "colibri2", "xmppclient", "bridge"])
def test_importing_every_module_loads_nothing_across_the_border(package: str) -> None:
    init, modules = loaded_by_importing(package)
    assert init.is_relative_to(REPO / package), f"imported {init}, not this checkout's {package}"
    assert f"{package}." in "".join(modules), f"walked no submodule of {package}: {modules}"
    crossing = [m for m in modules if m.partition(".")[0] in FORBIDDEN[package]]
    assert crossing == []
    if package != "bridge":
        assert "bridge._native" not in modules


def test_the_commands_load_the_load_generator_only_for_a_bench() -> None:
    # bench._native is built apart from the bridge's wheel (native/benchpy): `sluice serve`, `sluice bridge`
    # and even importing the bench's runner must work without it.
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import sluice, bench.run, bench.report\n"
        "for info in pkgutil.walk_packages(sluice.__path__, 'sluice.'):\n"
        "    importlib.import_module(info.name)\n"
        "print(json.dumps(sorted(n for n in sys.modules if n.startswith(('sluice.', 'bench.')))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "sluice.cli" in loaded and "sluice.serve" in loaded and "bench.run" in loaded
    assert "bench._native" not in loaded
