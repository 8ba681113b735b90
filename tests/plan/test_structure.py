"""Structure rules the codebase keeps: small modules, simple functions, one connector switch.

These read the source (``ast``), so a regression fails here rather than in a review.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "tandem"
MAX_LINES = 400
MAX_COMPLEXITY = 15
_BRANCHES = (
    ast.If, ast.For, ast.AsyncFor, ast.While, ast.IfExp, ast.ExceptHandler, ast.match_case,
    ast.Assert,
)  # fmt: skip


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def complexity(fn: ast.AST) -> int:
    """McCabe approximation: 1 + branches + extra boolean operands + comprehension loops/ifs."""
    n, todo = 1, list(ast.iter_child_nodes(fn))
    while todo:
        x = todo.pop()
        if isinstance(x, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        n += isinstance(x, _BRANCHES)
        if isinstance(x, ast.BoolOp):
            n += len(x.values) - 1
        if isinstance(x, ast.comprehension):
            n += 1 + len(x.ifs)
        todo += ast.iter_child_nodes(x)
    return n


def test_no_module_over_400_lines() -> None:
    big = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not big, big


def test_no_function_over_complexity_15() -> None:
    found = {}
    for p in _modules():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                cc = complexity(node)
                if cc > MAX_COMPLEXITY:
                    found[f"{p.relative_to(PACKAGE)}:{node.lineno} {node.name}"] = cc
    assert not found, found


def test_pools_are_never_looked_up_by_string() -> None:
    """``spec.pool(role)`` / ``status.pool(role)``, never ``getattr(obj, role)``."""
    offenders = []
    for p in _modules():
        for node in ast.walk(ast.parse(p.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Name)
                and node.args[1].id == "role"
            ):
                offenders.append(f"{p.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, offenders


def test_connector_is_switched_only_in_the_strategy_registry() -> None:
    """Outside ``plan/kv`` and the router's protocols nothing compares against a connector."""
    offenders = []
    for p in _modules():
        rel = p.relative_to(PACKAGE).as_posix()
        if rel.startswith(("plan/kv/", "router/", "api/")):
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Compare):
                names = [ast.unparse(x) for x in (node.left, *node.comparators)]
                if any(n.startswith("Connector.") or n.endswith(".connector") for n in names):
                    offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, offenders
