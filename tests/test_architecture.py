"""The package's shape, as ARCHITECTURE.md describes it: imports go down the layers only, none loops,
and no function in the package or the recipes runs past 60 lines."""

import ast
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "hf_ragtrain"

# Lowest first. A module may import modules of its own layer or below, never above.
LAYERS = [
    ("foundations", ["version", "hardware", "memory", "allocator", "offline", "losses", "distributed", "data.errors", "evaluation.metrics"]),
    ("data", ["data"]),
    ("models", ["modeling"]),
    ("inference and evaluation", ["reranker", "evaluation", "scoring"]),
    ("arguments and cards", ["arguments", "hub"]),
    ("trainers", ["trainers"]),
    ("runner", ["runner"]),
    ("public API", [""]),
]


def layer_of(module: str) -> int:
    """The layer of a module name relative to the package (``data.mining``; ``""`` is the package itself)."""
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".") or prefix == "") and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: pathlib.Path, name: str, known: set[str]) -> set[str]:
    """Package modules imported anywhere in the file (function-level imports included)."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if name else []
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                root = ".".join(["hf_ragtrain", *base, *([node.module] if node.module else [])])
            else:
                root = node.module or ""
            targets = [root] + [f"{root}.{a.name}" for a in node.names]
        for target in targets:
            if target == "hf_ragtrain" or target.startswith("hf_ragtrain."):
                relative = target[len("hf_ragtrain."):] if target != "hf_ragtrain" else ""
                if relative in known:
                    found.add(relative)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    known = set(modules)
    return {name: imports_of(path, name, known) for name, path in modules.items()}


def test_every_module_has_a_layer():
    assert all(layer_of(m) is not None for m in package_modules())


def test_imports_only_go_down_the_layers():
    upward = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
              for a, targets in import_graph().items() for b in sorted(targets)
              if layer_of(b) > layer_of(a)]
    assert not upward, "\n".join(upward)


def find_loops(edges: dict[str, set[str]]) -> list[str]:
    """Every cycle a depth-first walk of ``edges`` meets, as ``a -> b -> a``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    loops = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                loops.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return loops


def test_no_import_loop():
    assert find_loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a -> b -> c -> a"]  # the finder works
    graph = import_graph()
    # a package's __init__ importing its own submodules is how Python packages work, not a loop
    edges = {a: {b for b in bs if not (a == "" or b.startswith(a + "."))} for a, bs in graph.items()}
    loops = find_loops(edges)
    assert not loops, "\n".join(loops)


def test_the_layer_check_sees_function_level_imports(tmp_path):
    """The check must catch an upward import hidden inside a function (the kind the old code had)."""
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from ..trainers import RerankTrainer\n    return RerankTrainer\n")
    assert imports_of(module, "data.probe", {"data.probe", "trainers"}) == {"trainers"}
    assert layer_of("trainers") > layer_of("data.probe")


def long_functions(root: pathlib.Path, limit: int = 60) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    out.append(f"{os.path.relpath(path, REPO)}:{node.lineno} {node.name} ({length} lines)")
    return out


@pytest.mark.parametrize("folder", ["hf_ragtrain", "recipes"])
def test_no_function_over_sixty_lines(folder):
    too_long = long_functions(REPO / folder)
    assert not too_long, "\n".join(too_long)


def test_the_public_api_has_what_the_recipes_import():
    """Recipes and notebooks import from the package's top level; every name it lists exists."""
    import hf_ragtrain

    assert not [n for n in hf_ragtrain.__all__ if not hasattr(hf_ragtrain, n)]
    for recipe in sorted((REPO / "recipes").glob("*.py")):
        for node in ast.walk(ast.parse(recipe.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "hf_ragtrain":
                missing = [a.name for a in node.names if a.name not in hf_ragtrain.__all__]
                assert not missing, (recipe.name, missing)
