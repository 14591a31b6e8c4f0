"""The package's import graph, read from the source (every import statement, those inside functions
included), has no circle: every module can be read after the ones it imports."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "flipguard"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    base = SRC.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Modules of the package an import statement loads (a name imported from a package counts as
    its submodule where one of that name exists)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == PACKAGE]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # relative: from the module's own package up
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if base.split(".")[0] != PACKAGE:
        return []
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append(sub if _is_module(sub) else base)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports, from every ``.py`` file under ``src/flipguard``."""
    graph = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        targets = {t for node in ast.walk(tree) for t in _targets(node, module, path.name == "__init__.py")}
        graph[module] = {t for t in targets if t != module}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                members.append(w)
                if w == v:
                    break
            if len(members) > 1:
                found.append(sorted(members))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_reader_sees_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]


def test_lazy_imports_count(tmp_path):
    tree = ast.parse("def f():\n    from flipguard.defend import multischeme\n")
    found = {t for node in ast.walk(tree) for t in _targets(node, "flipguard.defend.threshold_rows", False)}
    assert found == {"flipguard.defend.multischeme"}


def test_the_package_has_no_import_circle():
    graph = import_graph()
    assert len(graph) > 50 and "flipguard.schemes.kernels.flip" in graph
    assert circles(graph) == []


def _private_imports() -> list[str]:
    """``from X import _name`` where X lies in another package than the importing module (dunders
    such as ``__version__`` aside), as ``file:line: module._name``."""
    found = []
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        module = _module_name(path)
        own = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(PACKAGE) or node.level:
                continue
            target = node.module if SRC.joinpath(*node.module.split(".")).is_dir() else node.module.rsplit(".", 1)[0]
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and target != own:
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.module}.{alias.name}")
    return found


def test_no_private_name_crosses_a_package_line():
    assert _private_imports() == []


def test_scan_defend_and_the_schemes_share_no_private_name():
    """No private name crosses a package line into, out of or between scan, defend and schemes."""
    ours = ("flipguard/scan/", "flipguard/defend/", "flipguard/schemes/", "flipguard.scan", "flipguard.defend",
            "flipguard.schemes")
    assert [f for f in _private_imports() if any(part in f for part in ours)] == []
