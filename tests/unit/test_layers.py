"""The layer rule of docs/architecture.md, read from the code: imports run data -> models -> training ->
evaluation -> pipeline -> cli, never back, and no llmrec modules import each other in a cycle. Imports
inside functions count too (they are how cycles used to hide); those under `if TYPE_CHECKING:` do not run."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "llmrec"
LEAVES = {"errors", "config", "rank_metrics", "metrics", "params_doc", "model_types", "__init__"}  # below every layer
LAYERS = {
    "data": 1,
    "models": 2,
    "training": 3,
    "evaluation": 4,
    **dict.fromkeys(["pipeline", "monitoring", "validation", "versioning", "tracking", "drift", "promotion", "batch", "serving", "serving_schema"], 5),
    "cli": 6,
}
NAMES = {1: "data", 2: "models", 3: "training", 4: "evaluation", 5: "pipeline", 6: "cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    if top in LEAVES:
        return 0
    assert top in LAYERS, f"{module} is in no layer: add it to docs/architecture.md and to this test"
    return LAYERS[top]


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path) -> list[tuple[str, int]]:
    """(llmrec module imported, line) for every import that runs, at any depth."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                continue
            if isinstance(child, ast.ImportFrom) and child.level == 0 and (child.module or "").split(".")[0] == "llmrec":
                for alias in child.names:  # `from llmrec.evaluation import evaluate` imports the submodule
                    sub = f"{child.module}.{alias.name}"
                    found.append((sub if sub in MODULES else child.module, child.lineno))
            elif isinstance(child, ast.Import):
                found.extend((a.name, child.lineno) for a in child.names if a.name.startswith("llmrec."))
            visit(child)

    visit(ast.parse(path.read_text()))
    return [(name, line) for name, line in found if name in MODULES]


def test_no_import_runs_up_the_layers():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = module_name(path)
        for target, line in imports(path):
            if layer(target) > layer(here):
                upward.append(f"{path.relative_to(REPO)}:{line} ({NAMES.get(layer(here), 'leaf')}) imports {target} "
                              f"({NAMES[layer(target)]})")
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_no_import_cycle():
    graph = {module_name(p): {t for t, _ in imports(p)} - {module_name(p)} for p in PACKAGE.rglob("*.py")}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def cycle_from(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := cycle_from(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = cycle_from(start)
            assert found is None, "import cycle: " + " -> ".join(found)


def test_the_rule_sees_a_violation(tmp_path):
    """The checks themselves: an upward import and a function-local one are found, TYPE_CHECKING is skipped."""
    module = tmp_path / "probe.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from llmrec import cli\n"
                      "def f():\n    from llmrec.evaluation import evaluate\n")
    assert imports(module) == [("llmrec.evaluation.evaluate", 5)]
    assert layer("llmrec.evaluation.evaluate") > layer("llmrec.models.ranker") > layer("llmrec.data.contract") > layer("llmrec.metrics")


def test_every_model_type_has_one_class_and_one_trainer_and_nothing_else_switches_on_the_type():
    """The model types live in one table (llmrec.model_types.MODEL_TYPES): class, trainer, settings section; nothing
    else in llmrec/ compares model.type with a type name."""
    import typing

    from llmrec.config import ModelParams
    from llmrec.model_types import MODEL_TYPES

    choices = set(typing.get_args(ModelParams.model_fields["type"].annotation))
    assert set(MODEL_TYPES) == choices
    for kind in MODEL_TYPES.values():
        cls = kind.load_class()
        assert all(callable(getattr(cls, m, None)) for m in ("load", "save", "scorer", "text_scorer", "catalogue_scorer"))
        assert isinstance(cls.ranks_catalogue, bool)
        assert callable(kind.load_trainer())
        assert kind.settings in ModelParams.model_fields, f"{kind.name}: no model.{kind.settings} section"
    switches = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and "type" in ast.unparse(node.left).split(".")[-1]:
                values = {c.value for c in node.comparators if isinstance(c, ast.Constant)}
                if values & choices:
                    switches.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert not switches, "switches on the model type outside the registry:\n" + "\n".join(switches)


LONG_MODULE = 450  # lines


def test_a_long_module_says_why_it_is_one_module():
    """Modules stay short; one over LONG_MODULE lines states in its docstring why it is one module."""
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        if source.count("\n") > LONG_MODULE and "Why one module this long:" not in (ast.get_docstring(ast.parse(source)) or ""):
            unexplained.append(f"{path.relative_to(REPO)} ({source.count(chr(10))} lines)")
    assert not unexplained, "split these modules, or say in their docstring 'Why one module this long: ...': " + ", ".join(unexplained)
