"""The dependency rule, read from the source: contracts <- {stimuli, experiment_server, analysis} <- psychinterp.

Every import statement counts, also those inside functions. ``contracts`` may import only
pydantic, pyyaml and the standard library; the three middle packages import ``contracts`` and
not one another; the server and the analysis import no vision library at all.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("contracts", "stimuli", "experiment_server", "analysis", "psychinterp")
MAY_IMPORT = {
    "contracts": {"contracts"},
    "stimuli": {"contracts", "stimuli"},
    "experiment_server": {"contracts", "experiment_server"},
    "analysis": {"contracts", "analysis"},
    "psychinterp": set(PROJECT),
}
CONTRACTS_THIRD_PARTY = {"pydantic", "pydantic_core", "yaml"}
VISION = {"torch", "torchvision", "timm", "open_clip", "lucent", "kornia", "safetensors"}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level module) of every import in a file, relative imports resolved to their package."""
    package = path.relative_to(ROOT).parts[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, package if node.level else (node.module or "").split(".")[0]))
    return found


def _edges():
    for package in PROJECT:
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, module in imports(path):
                yield package, path.relative_to(ROOT), line, module


def test_packages_import_only_what_the_dependency_rule_allows():
    wrong = [
        f"{path}:{line} imports {module}"
        for package, path, line, module in _edges()
        if module in PROJECT and module not in MAY_IMPORT[package]
    ]
    assert wrong == []


def test_contracts_need_only_pydantic_yaml_and_the_standard_library():
    allowed = set(sys.stdlib_module_names) | CONTRACTS_THIRD_PARTY | {"contracts", "__future__"}
    wrong = [
        f"{path}:{line} imports {module}"
        for p, path, line, module in _edges()
        if p == "contracts" and module not in allowed
    ]
    assert wrong == []


def test_the_server_and_the_analysis_import_no_vision_library():
    wrong = [
        f"{path}:{line} imports {module}"
        for package, path, line, module in _edges()
        if package in ("experiment_server", "analysis", "contracts") and module in VISION
    ]
    assert wrong == []


def test_the_graph_reader_sees_imports_inside_functions(tmp_path):
    module = ROOT / "contracts" / "paradigms.py"
    assert any(m == "dataclasses" for _, m in imports(module))
    lazy = [m for _, m in imports(ROOT / "psychinterp" / "cli.py")]
    assert "analysis" in lazy and "stimuli" in lazy  # the CLI imports them inside its commands
