"""The layering rules of ARCHITECTURE.md, checked on the source: which package may import
which, no import cycle, and no MLX above the engine."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "triton_mlx"
FRONT_ENDS = ("triton_mlx.openai", "triton_mlx.triton", "triton_mlx.anthropic",
              "triton_mlx.responses_api")
NO_MLX = ("triton_mlx.http", "triton_mlx.openai", "triton_mlx.triton", "triton_mlx.serving",
          "triton_mlx.observability", "triton_mlx.anthropic", "triton_mlx.responses_api")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Modules imported at module level (TYPE_CHECKING blocks included), resolved to names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    nodes = list(tree.body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.If | ast.Try):  # `if TYPE_CHECKING:` and guarded imports
            nodes.extend(node.body + getattr(node, "orelse", []))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports(path) if m in modules and m != name}
            for name, path in modules.items()}


def test_front_ends_do_not_import_each_other():
    edges = graph()
    for name, targets in edges.items():
        for front_end in FRONT_ENDS:
            if name.startswith(front_end + ".") or name == front_end:
                others = [t for t in targets if t.startswith(FRONT_ENDS) and
                          not (t == front_end or t.startswith(front_end + "."))]
                assert not others, f"{name} imports another front-end: {others}"


def test_the_layers_below_the_front_ends_do_not_import_them():
    for name, targets in graph().items():
        if name.startswith(("triton_mlx.serving", "triton_mlx.engine", "triton_mlx.repository",
                            "triton_mlx.http", "triton_mlx.encoders")):
            up = [t for t in targets if t.startswith(FRONT_ENDS)]
            assert not up, f"{name} imports a front-end: {up}"


def test_no_mlx_above_the_engine():
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        if name.startswith(NO_MLX):
            mlx = [m for m in imports(path) if m == "mlx" or m.startswith(("mlx.", "mlx_lm"))]
            assert not mlx, f"{name} imports {mlx}"


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (its modules in order, the first repeated last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
