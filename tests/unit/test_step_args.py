"""The contract between the program and its shell steps: named arguments.

Each step script declares its arguments once (`step_args NAME... -- "$@"`) and
documents them in its header; the program passes exactly those names, and
lib.sh refuses anything else before the step changes anything.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from infra.paths import CLOUDINIT_DIR
from infra.remote import declared_args, step_text, steps
from tests.helpers.stacks import plain_config
from tooling.mocks import Run, run_program
from tooling.render import commands

DOC_LINE = re.compile(r"^#   ([A-Z][A-Z0-9_]*(?:, [A-Z][A-Z0-9_]*)*),?(?:\s|$)")


def documented_args(step: str) -> set[str]:
    """Names listed in the script's `# Arguments` header block."""
    header = []
    for line in (CLOUDINIT_DIR / "steps" / f"{step}.sh").read_text().splitlines()[1:]:
        if not line.startswith("#"):
            break
        header.append(line)
    names: set[str] = set()
    for line in header:
        match = DOC_LINE.match(line)
        if match:
            names.update(match.group(1).split(", "))
    return names


def passed_args(create: str) -> tuple[str, dict[str, str]]:
    """(step, NAME -> value) from a rendered `sudo -n bash -c SCRIPT STEP ARGS...` command."""
    words = shlex.split(create)
    assert words[:4] == ["sudo", "-n", "bash", "-c"], words[:4]
    step, args = words[5], words[6:]
    return step, dict(a.split("=", 1) for a in args)


@pytest.fixture(scope="module")
def runs(prod: Run, staging: Run) -> list[Run]:
    # Without a witness too: the arbiter and witness arguments change shape.
    bare = run_program("bare", plain_config("staging") | {"witness": False, "appNodeCount": 3})
    # With a domain and no certificate: the ACME steps.
    acme = run_program("acme", plain_config("staging") | {"domain": "www.example.com"})
    return [prod, staging, bare, acme]


@pytest.mark.parametrize("step", steps())
def test_each_script_documents_exactly_what_it_declares(step: str) -> None:
    assert documented_args(step) == set(declared_args(step))


def test_the_program_passes_exactly_the_declared_names(runs: list[Run]) -> None:
    used = set()
    for run in runs:
        for cmd in commands(run):
            if not cmd["create"].startswith("sudo -n bash -c"):
                continue  # the first-boot gate is no step
            step, args = passed_args(cmd["create"])
            used.add(step)
            assert list(args) == list(declared_args(step)), (run.stack, cmd["name"])
            assert all(v != "" for v in args.values()), (run.stack, cmd["name"], args)
    assert used == set(steps())


def test_a_mismatch_stops_the_render() -> None:
    with pytest.raises(ValueError, match="script declares"):
        step_text("db-handover", {"BOOTSTRAP": "no", "EXTRA": "1"})
    with pytest.raises(ValueError, match="script declares"):
        step_text("db-seed", {"PRIMARY": "10.0.0.1"})
    with pytest.raises(ValueError, match="unknown step"):
        step_text("no-such-step", {})


def _step_args(*argv: str) -> subprocess.CompletedProcess[str]:
    """lib.sh's step_args (with its log, die and hide_in) declaring A and B, on this machine's bash."""
    lib = (CLOUDINIT_DIR / "steps" / "lib.sh").read_text()
    funcs = "\n".join(re.findall(r"^(?:log|die|hide_in|step_args)\(\) \{\n.*?^\}\n", lib, re.MULTILINE | re.DOTALL))
    script = f'STEP=test\n{funcs}\nstep_args A B -- "$@"\nprintf "%s|%s" "$A" "$B"\n'
    return subprocess.run(["bash", "-c", script, "test", *argv], capture_output=True, text=True, timeout=10)


def test_lib_sets_declared_arguments() -> None:
    result = _step_args("B=two words", "A=x=y")
    assert (result.returncode, result.stdout) == (0, "x=y|two words")


@pytest.mark.parametrize("argv, message", [
    (["A=1"], "missing argument B; this step takes: A B"),
    (["A=1", "B=2", "C=3"], "unknown argument C; this step takes: A B"),
    (["A=1", "A=2", "B=3"], "argument A given twice"),
    (["A=1", "plain"], "argument 'plain' is not NAME=value"),
    (["A=1", "lower=2"], "argument 'lower=2' is not NAME=value"),
])
def test_lib_refuses_bad_arguments_clearly(argv: list[str], message: str) -> None:
    result = _step_args(*argv)
    assert result.returncode == 1 and result.stdout == ""
    assert message in result.stderr


def test_the_web_step_creates_the_root_nginx_serves() -> None:
    from infra.web import DOCUMENT_ROOT

    site = (CLOUDINIT_DIR / "app" / "nginx-site-common.conf").read_text()
    assert re.search(rf"^\s*root {re.escape(DOCUMENT_ROOT)};$", site, re.MULTILINE)


def test_lib_waits_with_the_tuned_pauses() -> None:
    """wait_for pauses as infra/tuning.py says between checks, the last pause repeating."""
    from infra import tuning
    from infra.remote import lib_settings

    lib = (CLOUDINIT_DIR / "steps" / "lib.sh").read_text()
    funcs = "\n".join(re.findall(r"^(?:log|die|wait_for)\(\) \{\n.*?^\}\n", lib, re.MULTILINE | re.DOTALL))
    # the condition holds at its seventh check; sleep only records its pause
    script = (f"STEP=test\n{lib_settings()}\n{funcs}\nsleep() {{ printf '%s ' \"$1\"; }}\n"
              "n=0\nready() { n=$((n + 1)); [ \"$n\" -ge 7 ]; }\nwait_for 'the test' 60 ready\n")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=10)
    pauses = [str(p) for p in tuning.WAIT_POLL_S]
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == (pauses + [pauses[-1]] * 6)[:6]


def test_put_file_keeps_an_existing_directorys_mode(tmp_path: Path) -> None:
    lib = (CLOUDINIT_DIR / "steps" / "lib.sh").read_text()
    put_file = re.search(r"^put_file\(\) \{\n.*?^\}\n", lib, re.MULTILINE | re.DOTALL)
    assert put_file
    private, fresh = tmp_path / "private", tmp_path / "fresh" / "sub"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    owner = f"{os.getuid()}:{os.getgid()}"
    script = (f"{put_file.group(0)}\nCHANGED=()\n"
              f"put_file 0600 {owner} {private}/token <<<secret\nput_file 0644 {owner} {fresh}/file <<<text\n")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    assert (private / "token").read_text() == "secret\n" and stat.S_IMODE((private / "token").stat().st_mode) == 0o600
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o755 and (fresh / "file").read_text() == "text\n"
