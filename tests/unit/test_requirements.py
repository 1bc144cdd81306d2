"""The requirements files: run time apart from development, each import covered.

    requirements.txt          what the Pulumi program imports (Pulumi.yaml's runtime installs it)
    policy/requirements.txt   the policy pack: the program's file plus pulumi-policy
    requirements-dev.txt      everything `make setup` installs: both of the above, tests, lab, tooling, ruff

A package that infra/ starts to import but only requirements-dev.txt pins would pass
every test and break `pulumi up` in the deploy workflow, which installs the run-time
files only; these tests catch that.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement

from infra.paths import REPO_ROOT

RUNTIME = REPO_ROOT / "requirements.txt"
POLICY = REPO_ROOT / "policy" / "requirements.txt"
DEV = REPO_ROOT / "requirements-dev.txt"
LOCAL = {"infra", "tooling", "lab", "tests", "policy", "bench", "cloudinit"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(path: Path) -> tuple[list[Path], dict[str, Requirement]]:
    """(files it includes with -r, its own requirements by normalised name)."""
    includes: list[Path] = []
    pins: dict[str, Requirement] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            includes.append((path.parent / line.split(None, 1)[1]).resolve())
            continue
        req = Requirement(line)
        assert norm(req.name) not in pins, f"{path.name}: {req.name} is listed twice"
        pins[norm(req.name)] = req
    return includes, pins


def closure(path: Path) -> dict[str, Requirement]:
    """Every requirement a file pins, its -r includes' too."""
    includes, pins = parse(path)
    out: dict[str, Requirement] = {}
    for inc in includes:
        out.update(closure(inc))
    return {**out, **pins}


def installed_closure(names: set[str], extras: dict[str, set[str]]) -> set[str]:
    """The pinned distributions and everything they pull in, as installed in this venv."""
    seen: set[str] = set()
    todo = [(n, extras.get(n, set())) for n in names]
    while todo:
        name, wanted = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for spec in requires:
            req = Requirement(spec)
            envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((norm(req.name), set(req.extras)))
    return seen


def third_party_imports(paths: list[Path]) -> dict[str, set[str]]:
    """Top-level module -> the files importing it, for modules neither stdlib nor local."""
    found: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in LOCAL and top != "__future__":
                    where = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
                    found.setdefault(top, set()).add(str(where))
    return found


@functools.cache
def _module_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distributions(module: str) -> set[str]:
    return {norm(d) for d in _module_distributions().get(module, [])}


def uncovered(paths: list[Path], available: set[str]) -> dict[str, list[str]]:
    """Third-party modules the files import that no distribution in `available` provides."""
    return {m: sorted(files) for m, files in third_party_imports(paths).items() if not distributions(m) & available}


def py_files(*parts: str) -> list[Path]:
    files: list[Path] = []
    for part in parts:
        p = REPO_ROOT / part
        files += [p] if p.is_file() else sorted(p.rglob("*.py"))
    return files


def test_every_requirement_is_pinned_exactly() -> None:
    for path in (RUNTIME, POLICY, DEV):
        for req in parse(path)[1].values():
            specs = list(req.specifier)
            assert len(specs) == 1 and specs[0].operator == "==", f"{path.name}: {req} is not pinned with =="


def test_the_files_include_each_other_as_documented() -> None:
    assert parse(RUNTIME)[0] == []
    assert parse(POLICY)[0] == [RUNTIME.resolve()]
    assert set(parse(DEV)[0]) == {RUNTIME.resolve(), POLICY.resolve()}
    # one pin per package across the three files
    names = [n for path in (RUNTIME, POLICY, DEV) for n in parse(path)[1]]
    assert len(names) == len(set(names)), names


def test_requirements_txt_is_exactly_what_the_program_imports() -> None:
    program = py_files("__main__.py", "infra")
    pinned = set(parse(RUNTIME)[1])
    missing = uncovered(program, pinned)
    assert not missing, f"imported by the program but not in requirements.txt: {missing}"
    used = set().union(*(distributions(m) for m in third_party_imports(program)))
    assert pinned <= used, f"requirements.txt pins what the program never imports: {sorted(pinned - used)}"


def test_the_policy_pack_imports_are_in_its_requirements() -> None:
    assert "pulumi-policy" in parse(POLICY)[1]
    missing = uncovered(py_files("policy"), set(closure(POLICY)))
    assert not missing, f"imported by policy/ but not in policy/requirements.txt: {missing}"


def test_development_imports_are_covered_by_requirements_dev() -> None:
    pins = closure(DEV)
    installed = installed_closure(set(pins), {n: set(r.extras) for n, r in pins.items()})
    missing = uncovered(py_files("__main__.py", "infra", "policy", "tooling", "lab", "tests", "bench"), installed)
    assert not missing, f"imported but not installed by requirements-dev.txt: {missing}"


def test_a_dev_only_import_in_the_program_is_caught(tmp_path: Path) -> None:
    module = tmp_path / "state.py"
    module.write_text("import os\nimport yaml\nfrom boto3 import session\nfrom infra import paths\n")
    assert uncovered([module], set(parse(RUNTIME)[1])) == {"boto3": [str(module)]}
    assert uncovered([module], set(closure(DEV))) == {}
