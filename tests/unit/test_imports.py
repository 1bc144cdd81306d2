"""The project's own modules import each other without cycles, and the program (infra/)
depends on none of the offline tooling, the lab or the tests.

Imports are read from the source (ast), wherever they are: at the top, inside a
function, under `if TYPE_CHECKING` (a function-local import that dodges a cycle is
still a cycle here).
"""

from __future__ import annotations

import ast
from pathlib import Path

from infra.paths import REPO_ROOT

PACKAGES = ("infra", "tooling", "lab", "bench", "policy", "tests.helpers")
INFRA_MUST_NOT_IMPORT = ("tooling", "lab", "tests")


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the packages (a package is its __init__)."""
    found = {}
    for package in packages:
        for path in sorted((root / package.replace(".", "/")).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imported_names(module: str, path: Path) -> set[str]:
    """Absolute names a module imports: `import a.b` gives a.b, `from a import b` gives a.b
    and a (b may be a module or a name defined in a)."""
    is_package = path.name == "__init__.py"
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    files = module_files(root, packages)
    graph = {}
    for module, path in files.items():
        targets = set()
        for name in imported_names(module, path):
            # the longest known prefix: `import lab.topology` and `from lab.topology import X`
            # both reach lab.topology; a name defined in a package reaches the package
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a path back to its start) per strongly connected group of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    found = []
    for group in groups:
        start = min(group)
        path, seen = [start], {start}
        while True:  # walk inside the group until a module repeats
            nxt = min(w for w in graph[path[-1]] if w in group)
            if nxt in seen:
                found.append(path[path.index(nxt):] + [nxt])
                break
            path.append(nxt)
            seen.add(nxt)
    return found


def forbidden_imports(root: Path, package: str, forbidden: tuple[str, ...]) -> list[str]:
    """`module imports name` for each import of `package`'s modules from the forbidden packages."""
    return sorted(f"{module} imports {name}"
                  for module, path in module_files(root, (package,)).items()
                  for name in imported_names(module, path)
                  if name.split(".")[0] in forbidden)


def test_project_modules_import_no_cycle() -> None:
    graph = import_graph(REPO_ROOT, PACKAGES)
    # the graph is the real one: known edges are in it
    assert {"lab.containers", "lab.stack", "lab.standin", "lab.replay"} <= graph["lab.bringup"]
    assert "tooling.mocks" in graph["bench.mocks_eval"] and "policy.rules" in graph["policy.__main__"]
    assert "lab.standin" in graph["tests.helpers.agent_sandbox"]
    assert cycles(graph) == []


def test_the_program_imports_nothing_of_tooling_lab_or_tests() -> None:
    assert any(m.startswith("infra.") for m in module_files(REPO_ROOT, ("infra",)))
    assert forbidden_imports(REPO_ROOT, "infra", INFRA_MUST_NOT_IMPORT) == []


def test_the_checks_can_fail(tmp_path: Path) -> None:
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg import b\n",
        "pkg/b.py": "def f():\n    from . import c  # function-local\n",
        "pkg/c.py": "import pkg.a\n",
        "pkg/d.py": "from pkg.a import f\nimport os\n",
        "infra/__init__.py": "",
        "infra/x.py": "def g():\n    import lab.topology\nfrom tests.helpers import stacks\nimport tooling_like\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path, ("pkg", "infra"))
    assert graph["pkg.d"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    assert forbidden_imports(tmp_path, "infra", INFRA_MUST_NOT_IMPORT) == [
        "infra.x imports lab.topology", "infra.x imports tests.helpers", "infra.x imports tests.helpers.stacks"]
