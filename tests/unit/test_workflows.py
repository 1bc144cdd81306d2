"""The GitHub workflows: actionlint-clean, and safe by construction.

actionlint checks syntax, expressions, action inputs and the shell in `run:`.
The structural checks below are what actionlint cannot know: no workflow can
destroy prod, prod deploys wait for staging and for the `production`
environment, previews cover both stacks, secrets come from `secrets.` of an environment
(prod's deploy environment never reaches a pull request), and so
on. Each check is a function returning problems; every test runs it on the real
workflows (no problems) and on deliberately broken copies written to tmp_path
(the problem is caught), so no check passes vacuously.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from infra.paths import REPO_ROOT

WORKFLOW_DIR = REPO_ROOT / ".github" / "workflows"
EXPECTED_FILES = {"preview.yml", "deploy.yml", "teardown.yml"}
STACKS = ("staging", "prod")
PULUMI_ACTION = "pulumi/actions"
TEARDOWN = "teardown.yml"
# env name -> the secret (an environment secret) it must come from
SECRET_ENV = {
    "DIGITALOCEAN_TOKEN": "DIGITALOCEAN_TOKEN",
    "AWS_ACCESS_KEY_ID": "SPACES_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "SPACES_SECRET_ACCESS_KEY",
    "PULUMI_CONFIG_PASSPHRASE": "PULUMI_CONFIG_PASSPHRASE",
}
ALLOWED_SECRETS = set(SECRET_ENV.values()) | {"GITHUB_TOKEN"}
BACKEND_URL = "${{ vars.PULUMI_BACKEND_URL }}"
ALLOWED_PERMISSIONS = {"contents": {"read"}, "pull-requests": {"read", "write"}}

Workflows = dict[str, dict[str, Any]]


# --- loading -------------------------------------------------------------------------

def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    if True in doc:  # YAML 1.1 reads the `on` key as a boolean
        doc["on"] = doc.pop(True)
    return doc


def load_dir(directory: Path) -> Workflows:
    return {p.name: load(p) for p in sorted(directory.iterdir()) if p.suffix in (".yml", ".yaml")}


def write_dir(directory: Path, workflows: Workflows) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, doc in workflows.items():
        (directory / name).write_text(yaml.safe_dump(doc, sort_keys=False, width=1000))
    return directory


@pytest.fixture(scope="module")
def real() -> Workflows:
    return load_dir(WORKFLOW_DIR)


# --- helpers ---------------------------------------------------------------------------

def jobs(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return list((doc.get("jobs") or {}).items())


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps") or [])


def action(step: dict[str, Any]) -> str:
    return str(step.get("uses", "")).split("@", 1)[0]


def with_(step: dict[str, Any]) -> dict[str, Any]:
    return step.get("with") or {}


def pulumi_steps(job: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return [(i, s) for i, s in enumerate(steps(job)) if action(s) == PULUMI_ACTION]


def text_of(value: Any) -> str:
    return json.dumps(value, sort_keys=True).lower()


def expr(value: Any) -> str:
    """An expression with its whitespace normalised: '${{ a }}' == '${{a}}'."""
    return re.sub(r"\s+", "", str(value))


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def environment_name(job: dict[str, Any]) -> str | None:
    env = job.get("environment")
    return env.get("name") if isinstance(env, dict) else env


def matrix_rows(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's matrix as rows: `include` entries, or one row per `stack` value."""
    matrix = (job.get("strategy") or {}).get("matrix") or {}
    if matrix.get("include"):
        return [dict(row) for row in matrix["include"]]
    return [{"stack": stack} for stack in as_list(matrix.get("stack"))]


def resolve(value: Any, row: dict[str, Any]) -> str | None:
    """A `${{ matrix.KEY }}` value for one matrix row; anything else as written."""
    found = re.fullmatch(r"\$\{\{\s*matrix\.([A-Za-z_-]+)\s*\}\}", str(value)) if value is not None else None
    return row.get(found.group(1)) if found else value


# --- checks ------------------------------------------------------------------------------

GUARD_ACCEPTS = ["staging"]
GUARD_REFUSES = ["prod", "Staging", "STAGING", "staging ", " staging", "", "staging\n", "stagingx",
                 "prod-staging", "staging prod", "*"]


def guard_problems(where: str, doc: dict[str, Any], job: dict[str, Any], guard: dict[str, Any]) -> list[str]:
    """Run the guard's script: it must pass for exactly "staging" and fail for anything else."""
    script = guard.get("run")
    if not isinstance(script, str):
        return [f"{where}: the guard step has no run script"]
    if "${{" in script:
        return [f"{where}: the guard reads the stack through an expression in its script; "
                "it must read $STACK from the environment"]
    env_sources = {**(doc.get("env") or {}), **(job.get("env") or {}), **(guard.get("env") or {})}
    if "inputs.stack" not in expr(env_sources.get("STACK", "")):
        return [f"{where}: the guard's $STACK does not come from the workflow input `stack`"]
    problems = []
    for value, should_pass in [(v, True) for v in GUARD_ACCEPTS] + [(v, False) for v in GUARD_REFUSES]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "STACK": value}
        result = subprocess.run(["bash", "-e", "-c", script], env=env, capture_output=True, text=True, timeout=30)
        if (result.returncode == 0) != should_pass:
            problems.append(f"{where}: the guard {'refused' if should_pass else 'accepted'} stack {value!r}")
    return problems


def destroy_problems(workflows: Workflows) -> list[str]:
    """Only teardown.yml destroys, only staging, and only behind a working guard."""
    problems = []
    for wf, doc in workflows.items():
        for job_id, job in jobs(doc):
            where = f"{wf}: job {job_id}"
            if "uses" in job:
                problems.append(f"{where} calls a reusable workflow, which these checks cannot see into")
            for i, s in pulumi_steps(job):
                command = str(with_(s).get("command", ""))
                if command not in ("preview", "up", "update", "destroy", "refresh"):
                    problems.append(f"{where} step {i}: pulumi/actions command {command!r} is not a literal "
                                    "command (an expression could evaluate to destroy)")
            destroying = [i for i, s in enumerate(steps(job)) if "destroy" in text_of(s)]
            if not destroying:
                continue
            if wf != TEARDOWN:
                problems += [f"{where} step {i} mentions destroy; only {TEARDOWN} may destroy" for i in destroying]
                continue
            guards = [i for i, s in enumerate(steps(job)) if s.get("id") == "guard"]
            if not guards:
                problems.append(f"{where} destroys without a guard step (id: guard)")
                continue
            g = guards[0]
            guard = steps(job)[g]
            if guard.get("continue-on-error") or job.get("continue-on-error"):
                problems.append(f"{where}: continue-on-error would let the destroy run after the guard failed")
            if guard.get("if"):
                problems.append(f"{where}: the guard step is conditional ({guard['if']})")
            problems += guard_problems(where, doc, job, guard)
            for i in destroying:
                if i == g:
                    continue
                s = steps(job)[i]
                if i < g:
                    problems.append(f"{where} step {i} destroys before the guard runs")
                if re.search(r"always\(\)|failure\(\)|cancelled\(\)", str(s.get("if", ""))):
                    problems.append(f"{where} step {i} runs even when the guard failed (if: {s['if']})")
                if "run" in s and "destroy" in str(s["run"]).lower():
                    problems.append(f"{where} step {i} destroys from a shell script; destroy only through "
                                    f"{PULUMI_ACTION} with stack-name staging")
                if action(s) == PULUMI_ACTION and with_(s).get("stack-name") != "staging":
                    problems.append(f"{where} step {i} destroys stack {with_(s).get('stack-name')!r}, not 'staging'")
                if action(s) not in (PULUMI_ACTION, ""):
                    problems.append(f"{where} step {i} destroys through {s['uses']}")
    return problems


def prod_gate_problems(workflows: Workflows) -> list[str]:
    """deploy.yml: staging first; prod needs it and waits in the `production` environment."""
    deploy = workflows.get("deploy.yml")
    if deploy is None:
        return ["deploy.yml is missing"]
    problems = []
    triggers = deploy.get("on") or {}
    if set(triggers) != {"push"} or as_list((triggers["push"] or {}).get("branches")) != ["main"]:
        problems.append(f"deploy.yml must run on push to main only, not on {triggers}")
    ups: dict[str, list[str]] = {stack: [] for stack in STACKS}
    for wf, doc in workflows.items():
        for job_id, job in jobs(doc):
            for _, s in pulumi_steps(job):
                if with_(s).get("command") not in ("up", "update"):
                    continue
                stack = str(with_(s).get("stack-name"))
                if wf != "deploy.yml" or stack not in ups:
                    problems.append(f"{wf}: job {job_id} runs up on {stack!r}; only deploy.yml updates staging/prod")
                    continue
                ups[stack].append(job_id)
                group = (job.get("concurrency") or {}) if isinstance(job.get("concurrency"), dict) else {}
                if stack not in str(group.get("group", "")) or group.get("cancel-in-progress") is not False:
                    problems.append(f"deploy.yml: job {job_id} needs a concurrency group of its own stack "
                                    f"with cancel-in-progress: false, has {job.get('concurrency')!r}")
    jobs_by_id = dict(jobs(deploy))
    for stack in STACKS:
        if len(ups[stack]) != 1:
            problems.append(f"deploy.yml: {len(ups[stack])} jobs run up on {stack}, expected one")
    if problems:
        return problems
    staging_job, prod_job = ups["staging"][0], ups["prod"][0]
    if environment_name(jobs_by_id[prod_job]) != "production":
        problems.append(f"deploy.yml: prod job {prod_job} has environment "
                        f"{environment_name(jobs_by_id[prod_job])!r}, not 'production'")
    if staging_job not in as_list(jobs_by_id[prod_job].get("needs")):
        problems.append(f"deploy.yml: prod job {prod_job} does not need the staging job {staging_job}")
    if jobs_by_id[prod_job].get("if"):
        problems.append(f"deploy.yml: prod job {prod_job} is conditional ({jobs_by_id[prod_job]['if']}); "
                        "it could run after a failed staging update")
    return problems


def preview_problems(workflows: Workflows) -> list[str]:
    """preview.yml: a commented preview --diff for both stacks, the render diff and the unit tests."""
    doc = workflows.get("preview.yml")
    if doc is None:
        return ["preview.yml is missing"]
    problems = []
    if "pull_request" not in (doc.get("on") or {}):
        problems.append("preview.yml does not run on pull_request")
    previewed: set[str] = set()
    for job_id, job in jobs(doc):
        for _, s in pulumi_steps(job):
            w = with_(s)
            if w.get("command") != "preview":
                continue
            previewed |= {str(resolve(w.get("stack-name"), row)) for row in matrix_rows(job) or [{}]}
            for key in ("comment-on-pr", "edit-pr-comment", "diff"):
                if w.get(key) is not True:
                    problems.append(f"preview.yml: job {job_id} preview has {key}: {w.get(key)!r}, expected true")
    missing = set(STACKS) - previewed
    if missing:
        problems.append(f"preview.yml previews {sorted(previewed)}, not {sorted(missing)}")
    scripts = [str(s.get("run", "")) for _, job in jobs(doc) for s in steps(job)]
    render = [t for t in scripts if RENDER.search(t)]
    if not render or not all(stack in " ".join(render) for stack in STACKS):
        problems.append("preview.yml does not render both stacks with make render")
    if not any("diff -ru" in t for t in scripts):
        problems.append("preview.yml does not diff the renders (diff -ru)")
    if not any(action(s) == "actions/github-script" for _, job in jobs(doc) for s in steps(job)):
        problems.append("preview.yml does not post the render diff (actions/github-script)")
    if not any(re.search(r"\bmake test-unit\b", t) for t in scripts):
        problems.append("preview.yml does not run make test-unit")
    return problems


RENDER = re.compile(r"\bmake\b[^\n]*\brender\b")
SECRET_NAME = re.compile(r"token|secret|passphrase|password|access_key|key_id|private_key", re.IGNORECASE)
SECRET_REF = re.compile(r"^\$\{\{\s*secrets\.([A-Za-z0-9_]+)\s*\}\}$")
LITERAL_CREDENTIALS = [
    ("a DigitalOcean token", re.compile(r"do[opr]_v1_[0-9a-f]{16,}")),
    ("an access key id", re.compile(r"\b(?:AKIA|DO00)[0-9A-Z]{12,}\b")),
    ("a private key", re.compile(r"PRIVATE KEY")),
]


def _mappings(node: Any, key: str) -> list[dict[str, Any]]:
    """Every mapping stored under `key` anywhere in the document."""
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key and isinstance(v, dict):
                found.append(v)
            found += _mappings(v, key)
    elif isinstance(node, list):
        for v in node:
            found += _mappings(v, key)
    return found


def secret_problems(workflows: Workflows, texts: dict[str, str]) -> list[str]:
    """Secrets only as `${{ secrets.NAME }}`, mapped as documented; the backend from vars."""
    problems = []
    for wf, doc in workflows.items():
        for mapping in _mappings(doc, "env") + _mappings(doc, "with"):
            for key, value in mapping.items():
                ref = SECRET_REF.match(str(value))
                if key in SECRET_ENV and (not ref or ref.group(1) != SECRET_ENV[key]):
                    problems.append(f"{wf}: {key} is {value!r}, expected ${{{{ secrets.{SECRET_ENV[key]} }}}}")
                elif SECRET_NAME.search(key) and not ref:
                    problems.append(f"{wf}: {key} is not a secrets. reference: {value!r}")
        for name in re.findall(r"secrets\.([A-Za-z0-9_]+)", texts[wf]):
            if name not in ALLOWED_SECRETS:
                problems.append(f"{wf}: unknown secret {name}")
        for what, pattern in LITERAL_CREDENTIALS:
            if pattern.search(texts[wf]):
                problems.append(f"{wf} contains {what}")
        for job_id, job in jobs(doc):
            for i, s in pulumi_steps(job):
                env = {**(doc.get("env") or {}), **(job.get("env") or {}), **(s.get("env") or {})}
                missing = sorted(set(SECRET_ENV) - set(env))
                if missing:
                    problems.append(f"{wf}: job {job_id} step {i} runs pulumi without {', '.join(missing)}")
                if expr(with_(s).get("cloud-url")) != expr(BACKEND_URL):
                    problems.append(f"{wf}: job {job_id} step {i} cloud-url is {with_(s).get('cloud-url')!r}, "
                                    f"expected {BACKEND_URL}")
    return problems


# The environment whose secrets a job that runs pulumi on a stack must use:
# pull requests preview prod through `production-preview` (reviewer-gated,
# read-only token), never `production`.
STACK_ENVIRONMENTS = {"push": {"staging": "staging", "prod": "production"},
                      "pull_request": {"staging": "staging", "prod": "production-preview"}}


def environment_problems(workflows: Workflows) -> list[str]:
    """Secrets are environment secrets: read only by jobs in an environment, each
    stack's in its own, and prod's deploy environment by no pull request."""
    problems = []
    for wf, doc in workflows.items():
        if any("secrets." in text_of(v) for v in (doc.get("env") or {}).values()):
            problems.append(f"{wf}: the workflow-level env reads secrets; jobs in an environment must")
        on_pr = bool({"pull_request", "pull_request_target"} & set(doc.get("on") or {}))
        for job_id, job in jobs(doc):
            reads = {n for n in re.findall(r"secrets\.([A-Za-z0-9_]+)", text_of(job)) if n != "GITHUB_TOKEN"}
            for row in matrix_rows(job) or [{}]:
                env = resolve(environment_name(job), row)
                if reads and not env:
                    problems.append(f"{wf}: job {job_id} reads secrets without an environment "
                                    "(they would have to be repository secrets, which every pull request reads)")
                if on_pr and env == "production":
                    problems.append(f"{wf}: pull request job {job_id} uses environment 'production'")
                for _, s in pulumi_steps(job):
                    stack = resolve(with_(s).get("stack-name"), row)
                    want = STACK_ENVIRONMENTS["pull_request" if on_pr else "push"].get(str(stack))
                    if want and env != want:
                        problems.append(f"{wf}: job {job_id} runs pulumi on {stack} in environment {env!r}, "
                                        f"expected {want!r}")
    return problems


# Where `pulumi up` runs: a self-hosted runner (its address in sshAllowedCidrs), by a
# repository variable or the default label. GitHub-hosted runners cannot reach SSH.
DEPLOY_RUNS_ON = "${{ fromJSON(vars.DEPLOY_RUNS_ON || '[\"self-hosted\", \"do-ha-deploy\"]') }}"
GITHUB_HOSTED = re.compile(r"^(ubuntu|windows|macos)-", re.IGNORECASE)


def runner_problems(workflows: Workflows) -> list[str]:
    """A job that runs `pulumi up` (remote commands over SSH) runs on the deploy runner."""
    problems = []
    for wf, doc in workflows.items():
        for job_id, job in jobs(doc):
            if not any(with_(s).get("command") == "up" for _, s in pulumi_steps(job)):
                continue
            runs_on = job.get("runs-on")
            labels = runs_on if isinstance(runs_on, list) else [runs_on]
            if any(GITHUB_HOSTED.match(str(label)) for label in labels):
                problems.append(f"{wf}: job {job_id} runs pulumi up on a GitHub-hosted runner ({runs_on}), "
                                "which cannot reach the droplets' SSH")
            elif expr(runs_on) != expr(DEPLOY_RUNS_ON):
                problems.append(f"{wf}: job {job_id} runs pulumi up on {runs_on!r}, not the deploy runner "
                                f"{DEPLOY_RUNS_ON}")
    return problems


def permission_problems(workflows: Workflows) -> list[str]:
    """Least privilege: contents: read, and pull-requests: write where PR comments are posted."""
    problems = []
    for wf, doc in workflows.items():
        if "permissions" not in doc:
            problems.append(f"{wf} has no top-level permissions (the default token may be read-write)")
        blocks = [("workflow", doc.get("permissions"))] + [(f"job {j}", job.get("permissions"))
                                                            for j, job in jobs(doc) if "permissions" in job]
        for where, perms in blocks:
            if not isinstance(perms, dict):
                problems.append(f"{wf}: {where} permissions are {perms!r}; list them one by one")
                continue
            for scope, level in perms.items():
                if level not in ALLOWED_PERMISSIONS.get(scope, {"none"}):
                    problems.append(f"{wf}: {where} grants {scope}: {level}")
    return problems


PROGRAM_REQUIREMENTS = "requirements.txt"
POLICY_REQUIREMENTS = "policy/requirements.txt"
DEV_REQUIREMENTS = "requirements-dev.txt"
# What `make setup` (every make target but host-packages) installs from: the dev file and its includes.
MAKE_SETUP_FILES = (DEV_REQUIREMENTS, PROGRAM_REQUIREMENTS, POLICY_REQUIREMENTS)
PIP_REQUIREMENT = re.compile(r"(?:^|\s)(?:-r|--requirement)(?:\s+|=)(\S+)")
MAKE_CALL = re.compile(r"\bmake\b((?:\s+-[A-Za-z]\s+\S+)*)\s+([A-Za-z][\w-]*)")


def pip_requirement_files(job: dict[str, Any]) -> list[str]:
    """Files the job's shell steps install with `pip install -r`."""
    found = []
    for s in steps(job):
        for line in str(s.get("run", "")).splitlines():
            if re.search(r"\bpip3?\s+install\b", line):
                found += [os.path.normpath(f.strip("'\"")) for f in PIP_REQUIREMENT.findall(line)]
    return found


def make_setup_dirs(job: dict[str, Any]) -> list[str]:
    """Directories the job runs a make target in that goes through `make setup`."""
    dirs = []
    for s in steps(job):
        script = str(s.get("run", ""))
        for flags, target in MAKE_CALL.findall(script):
            if target == "host-packages":
                continue
            c = re.search(r"-C\s+(\S+)", flags)
            d = c.group(1).strip("'\"") if c else "."
            var = re.fullmatch(r"\$\{?(\w+)\}?", d)
            loop = re.search(rf"\bfor\s+{var.group(1)}\s+in\s+([^;\n]+)", script) if var else None
            dirs += loop.group(1).split() if loop else [d]
    return dirs


def dependency_problems(workflows: Workflows) -> list[str]:
    """Pulumi jobs install the run-time requirements only (plus the policy pack's where it
    runs); a pip cache is keyed on every requirements file the job installs from."""
    problems = []
    for wf, doc in workflows.items():
        for job_id, job in jobs(doc):
            where = f"{wf}: job {job_id}"
            installed = pip_requirement_files(job)
            make_dirs = make_setup_dirs(job)
            pulumi = pulumi_steps(job)
            if pulumi:
                if PROGRAM_REQUIREMENTS not in installed:
                    problems.append(f"{where} runs pulumi without installing {PROGRAM_REQUIREMENTS}")
                if any(with_(s).get("policyPacks") for _, s in pulumi) and POLICY_REQUIREMENTS not in installed:
                    problems.append(f"{where} runs the policy pack without installing {POLICY_REQUIREMENTS}")
                if DEV_REQUIREMENTS in installed or make_dirs:
                    problems.append(f"{where} installs {DEV_REQUIREMENTS}; a job that runs pulumi needs the "
                                    "run-time requirements only")
            for s in steps(job):
                if action(s) != "actions/setup-python" or with_(s).get("cache") != "pip":
                    continue
                patterns = [os.path.normpath(p) for p in str(with_(s).get("cache-dependency-path", "")).split()]
                if not patterns:
                    problems.append(f"{where}: the pip cache has no cache-dependency-path")
                    continue
                needed = installed + [os.path.normpath(os.path.join(d, f)) for d in make_dirs for f in MAKE_SETUP_FILES]
                for path in needed:
                    if not any(fnmatch.fnmatchcase(path, p) for p in patterns):
                        problems.append(f"{where} installs from {path}, which its pip cache-dependency-path "
                                        f"{patterns} does not cover")
    return problems


PIN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+@v\d+$")


def pin_problems(workflows: Workflows) -> list[str]:
    """Actions are pinned to a major version tag (owner/repo@vN)."""
    return [f"{wf}: job {job_id} uses {s['uses']!r}, not owner/repo@vN"
            for wf, doc in workflows.items() for job_id, job in jobs(doc)
            for s in steps(job) if "uses" in s and not PIN.match(str(s["uses"]))]


def teardown_trigger_problems(workflows: Workflows) -> list[str]:
    doc = workflows.get(TEARDOWN)
    if doc is None:
        return [f"{TEARDOWN} is missing"]
    triggers = doc.get("on") or {}
    problems = [f"{TEARDOWN} does not run on {t}" for t in ("workflow_dispatch", "schedule") if t not in triggers]
    if set(triggers) - {"workflow_dispatch", "schedule"}:
        problems.append(f"{TEARDOWN} also runs on {sorted(set(triggers) - {'workflow_dispatch', 'schedule'})}")
    return problems


# --- actionlint -----------------------------------------------------------------------

def actionlint() -> str:
    """The actionlint binary shipped by the venv's wheel, else one on PATH."""
    beside = Path(sys.executable).parent / "actionlint"
    found = str(beside) if beside.exists() else shutil.which("actionlint")
    if not found:
        pytest.fail("actionlint is not installed: it comes from the pinned PyPI wheel in requirements-dev.txt "
                    "(make setup)")
    return found


def run_actionlint(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([actionlint(), "-no-color", "-oneline", *map(str, paths)],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)


def test_the_three_workflows_exist() -> None:
    assert {p.name for p in WORKFLOW_DIR.iterdir()} >= EXPECTED_FILES


def test_actionlint_passes_on_every_workflow() -> None:
    files = sorted(p for p in WORKFLOW_DIR.iterdir() if p.suffix in (".yml", ".yaml"))
    result = run_actionlint(files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "name: bad\non: push\njobs:\n  up:\n    runs-on: ubuntu-latest\n    needs: nowhere\n    steps:\n"
        "      - uses: pulumi/actions@v7\n        with:\n          comand: up\n          stack-name: prod\n")
    result = run_actionlint([bad])
    assert result.returncode != 0
    assert "nowhere" in result.stdout and "comand" in result.stdout


# --- the structural checks: real workflows pass, broken copies fail --------------------

Mutation = Callable[[Workflows], None]


def job_of(workflows: Workflows, wf: str, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    return next(job for _, job in jobs(workflows[wf]) if pred(job))


def pulumi_job(workflows: Workflows, wf: str, command: str, stack: str | None = None) -> dict[str, Any]:
    return job_of(workflows, wf, lambda job: any(
        with_(s).get("command") == command and (stack is None or with_(s).get("stack-name") == stack)
        for _, s in pulumi_steps(job)))


def pulumi_step(job: dict[str, Any]) -> dict[str, Any]:
    return pulumi_steps(job)[0][1]


def teardown_job(w: Workflows) -> dict[str, Any]:
    return pulumi_job(w, TEARDOWN, "destroy")


def guard_step(w: Workflows) -> dict[str, Any]:
    return next(s for s in steps(teardown_job(w)) if s.get("id") == "guard")


def _destroy_in_deploy(w: Workflows) -> None:
    job = pulumi_job(w, "deploy.yml", "up", "prod")
    job["steps"].append({"uses": "pulumi/actions@v7", "with": {"command": "destroy", "stack-name": "prod"}})


def _destroy_prod_in_teardown(w: Workflows) -> None:
    pulumi_step(teardown_job(w))["with"]["stack-name"] = "prod"


def _no_guard(w: Workflows) -> None:
    job = teardown_job(w)
    job["steps"] = [s for s in steps(job) if s.get("id") != "guard"]


def _guard_always_passes(w: Workflows) -> None:
    guard_step(w)["run"] = 'echo "stack: $STACK"\n'


def _guard_prefix_match(w: Workflows) -> None:
    guard_step(w)["run"] = 'case "$STACK" in staging*) ;; *) exit 1 ;; esac\n'


def _guard_case_insensitive(w: Workflows) -> None:
    guard_step(w)["run"] = '[ "${STACK,,}" = staging ] || exit 1\n'


def _guard_inline_expression(w: Workflows) -> None:
    guard_step(w)["run"] = '[ "${{ inputs.stack }}" = staging ] || exit 1\n'


def _guard_after_destroy(w: Workflows) -> None:
    job = teardown_job(w)
    guard = guard_step(w)
    job["steps"] = [s for s in steps(job) if s is not guard] + [guard]


def _destroy_always(w: Workflows) -> None:
    pulumi_step(teardown_job(w))["if"] = "always()"


def _guard_may_fail(w: Workflows) -> None:
    guard_step(w)["continue-on-error"] = True


def _shell_destroy(w: Workflows) -> None:
    teardown_job(w)["steps"].append({"run": "pulumi destroy --yes --stack prod"})


def _dynamic_command(w: Workflows) -> None:
    pulumi_step(pulumi_job(w, "deploy.yml", "up", "prod"))["with"]["command"] = "${{ inputs.command }}"


@pytest.mark.parametrize("mutate, expected", [
    (_destroy_in_deploy, "only teardown.yml may destroy"),
    (_destroy_prod_in_teardown, "destroys stack 'prod'"),
    (_no_guard, "without a guard step"),
    (_guard_always_passes, "accepted stack 'prod'"),
    (_guard_prefix_match, "accepted stack 'stagingx'"),
    (_guard_case_insensitive, "accepted stack 'Staging'"),
    (_guard_inline_expression, "through an expression"),
    (_guard_after_destroy, "before the guard runs"),
    (_destroy_always, "even when the guard failed"),
    (_guard_may_fail, "continue-on-error"),
    (_shell_destroy, "from a shell script"),
    (_dynamic_command, "not a literal command"),
])
def test_no_workflow_can_destroy_prod(real: Workflows, tmp_path: Path, mutate: Mutation, expected: str) -> None:
    assert destroy_problems(real) == []
    broken = copy.deepcopy(real)
    mutate(broken)
    problems = destroy_problems(load_dir(write_dir(tmp_path, broken)))
    assert any(expected in p for p in problems), problems


def _prod_without_environment(w: Workflows) -> None:
    del pulumi_job(w, "deploy.yml", "up", "prod")["environment"]


def _prod_in_staging_environment(w: Workflows) -> None:
    pulumi_job(w, "deploy.yml", "up", "prod")["environment"] = "staging"


def _prod_without_needs(w: Workflows) -> None:
    del pulumi_job(w, "deploy.yml", "up", "prod")["needs"]


def _prod_always(w: Workflows) -> None:
    pulumi_job(w, "deploy.yml", "up", "prod")["if"] = "always()"


def _prod_cancellable(w: Workflows) -> None:
    pulumi_job(w, "deploy.yml", "up", "prod")["concurrency"]["cancel-in-progress"] = True


def _shared_group(w: Workflows) -> None:
    pulumi_job(w, "deploy.yml", "up", "prod")["concurrency"]["group"] = "deploys"


def _deploy_on_pull_request(w: Workflows) -> None:
    w["deploy.yml"]["on"]["pull_request"] = None


def _up_prod_elsewhere(w: Workflows) -> None:
    job = pulumi_job(w, "preview.yml", "preview")
    job["steps"].append({"uses": "pulumi/actions@v7", "with": {"command": "up", "stack-name": "prod"}})


@pytest.mark.parametrize("mutate, expected", [
    (_prod_without_environment, "not 'production'"),
    (_prod_in_staging_environment, "not 'production'"),
    (_prod_without_needs, "does not need the staging job"),
    (_prod_always, "is conditional"),
    (_prod_cancellable, "cancel-in-progress: false"),
    (_shared_group, "concurrency group of its own stack"),
    (_deploy_on_pull_request, "push to main only"),
    (_up_prod_elsewhere, "only deploy.yml updates"),
])
def test_prod_deploys_after_staging_with_approval(real: Workflows, tmp_path: Path, mutate: Mutation,
                                                   expected: str) -> None:
    assert prod_gate_problems(real) == []
    broken = copy.deepcopy(real)
    mutate(broken)
    problems = prod_gate_problems(load_dir(write_dir(tmp_path, broken)))
    assert any(expected in p for p in problems), problems


def _preview_staging_only(w: Workflows) -> None:
    matrix = pulumi_job(w, "preview.yml", "preview")["strategy"]["matrix"]
    matrix["include"] = [row for row in matrix["include"] if row["stack"] == "staging"]


def _preview_no_comment(w: Workflows) -> None:
    pulumi_step(pulumi_job(w, "preview.yml", "preview"))["with"]["comment-on-pr"] = False


def _preview_no_diff(w: Workflows) -> None:
    del pulumi_step(pulumi_job(w, "preview.yml", "preview"))["with"]["diff"]


def _no_render_job(w: Workflows) -> None:
    for name in [j for j, job in jobs(w["preview.yml"]) if RENDER.search(text_of(job))]:
        del w["preview.yml"]["jobs"][name]


def _no_unit_tests(w: Workflows) -> None:
    for name in [j for j, job in jobs(w["preview.yml"]) if "test-unit" in text_of(job)]:
        del w["preview.yml"]["jobs"][name]


@pytest.mark.parametrize("mutate, expected", [
    (_preview_staging_only, "not ['prod']"),
    (_preview_no_comment, "comment-on-pr: False"),
    (_preview_no_diff, "diff: None"),
    (_no_render_job, "make render"),
    (_no_unit_tests, "make test-unit"),
])
def test_previews_cover_both_stacks_render_and_tests(real: Workflows, tmp_path: Path, mutate: Mutation,
                                                      expected: str) -> None:
    assert preview_problems(real) == []
    broken = copy.deepcopy(real)
    mutate(broken)
    problems = preview_problems(load_dir(write_dir(tmp_path, broken)))
    assert any(expected in p for p in problems), problems


def texts_of(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in directory.iterdir() if p.suffix in (".yml", ".yaml")}


def _literal_token(w: Workflows) -> None:
    pulumi_job(w, "deploy.yml", "up", "prod")["env"]["DIGITALOCEAN_TOKEN"] = "dop_v1_" + "0123456789abcdef" * 4


def _wrong_secret(w: Workflows) -> None:
    pulumi_job(w, "deploy.yml", "up", "staging")["env"]["AWS_ACCESS_KEY_ID"] = "${{ secrets.AWS_KEY }}"


def _secret_from_vars(w: Workflows) -> None:
    pulumi_job(w, "preview.yml", "preview")["env"]["PULUMI_CONFIG_PASSPHRASE"] = "${{ vars.PASSPHRASE }}"


def _missing_passphrase(w: Workflows) -> None:
    del teardown_job(w)["env"]["PULUMI_CONFIG_PASSPHRASE"]


def _literal_backend(w: Workflows) -> None:
    pulumi_step(teardown_job(w))["with"]["cloud-url"] = "s3://state?endpoint=fra1.digitaloceanspaces.com&region=fra1"


def _literal_other_secret(w: Workflows) -> None:
    pulumi_step(pulumi_job(w, "deploy.yml", "up", "staging"))["with"]["github-token"] = "ghp_notasecretreference"


@pytest.mark.parametrize("mutate, expected", [
    (_literal_token, "DIGITALOCEAN_TOKEN is 'dop_v1_"),
    (_literal_token, "contains a DigitalOcean token"),
    (_wrong_secret, "expected ${{ secrets.SPACES_ACCESS_KEY_ID }}"),
    (_wrong_secret, "unknown secret AWS_KEY"),
    (_secret_from_vars, "PULUMI_CONFIG_PASSPHRASE is '${{ vars.PASSPHRASE }}'"),
    (_missing_passphrase, "runs pulumi without PULUMI_CONFIG_PASSPHRASE"),
    (_literal_backend, "cloud-url is 's3://state"),
    (_literal_other_secret, "github-token is not a secrets. reference"),
])
def test_secrets_come_from_secret_references(real: Workflows, tmp_path: Path, mutate: Mutation,
                                              expected: str) -> None:
    assert secret_problems(real, texts_of(WORKFLOW_DIR)) == []
    broken = copy.deepcopy(real)
    mutate(broken)
    directory = write_dir(tmp_path, broken)
    problems = secret_problems(load_dir(directory), texts_of(directory))
    assert any(expected in p for p in problems), problems


def _preview_prod_with_deploy_secrets(w: Workflows) -> None:
    for row in pulumi_job(w, "preview.yml", "preview")["strategy"]["matrix"]["include"]:
        if row["stack"] == "prod":
            row["environment"] = "production"


def _preview_prod_with_staging_secrets(w: Workflows) -> None:
    for row in pulumi_job(w, "preview.yml", "preview")["strategy"]["matrix"]["include"]:
        if row["stack"] == "prod":
            row["environment"] = "staging"


def _preview_without_environment(w: Workflows) -> None:
    del pulumi_job(w, "preview.yml", "preview")["environment"]


def _workflow_level_secrets(w: Workflows) -> None:
    w["deploy.yml"]["env"] = {"DIGITALOCEAN_TOKEN": "${{ secrets.DIGITALOCEAN_TOKEN }}"}


def _deploy_prod_in_preview_environment(w: Workflows) -> None:
    pulumi_job(w, "deploy.yml", "up", "prod")["environment"] = "production-preview"


def _teardown_without_environment(w: Workflows) -> None:
    del teardown_job(w)["environment"]


@pytest.mark.parametrize("mutate, expected", [
    (_preview_prod_with_deploy_secrets, "pull request job preview uses environment 'production'"),
    (_preview_prod_with_staging_secrets, "runs pulumi on prod in environment 'staging', expected 'production-preview'"),
    (_preview_without_environment, "job preview reads secrets without an environment"),
    (_workflow_level_secrets, "deploy.yml: the workflow-level env reads secrets"),
    (_deploy_prod_in_preview_environment, "expected 'production'"),
    (_teardown_without_environment, "reads secrets without an environment"),
])
def test_pull_requests_never_read_prods_deploy_secrets(real: Workflows, tmp_path: Path, mutate: Mutation,
                                                        expected: str) -> None:
    assert environment_problems(real) == []
    broken = copy.deepcopy(real)
    mutate(broken)
    problems = environment_problems(load_dir(write_dir(tmp_path, broken)))
    assert any(expected in p for p in problems), problems


def _write_all(w: Workflows) -> None:
    w["deploy.yml"]["permissions"] = "write-all"


def _contents_write(w: Workflows) -> None:
    pulumi_job(w, "preview.yml", "preview")["permissions"]["contents"] = "write"


def _no_top_permissions(w: Workflows) -> None:
    del w[TEARDOWN]["permissions"]


def _id_token(w: Workflows) -> None:
    pulumi_job(w, "deploy.yml", "up", "prod")["permissions"] = {"contents": "read", "id-token": "write"}


@pytest.mark.parametrize("mutate, expected", [
    (_write_all, "permissions are 'write-all'"),
    (_contents_write, "grants contents: write"),
    (_no_top_permissions, "no top-level permissions"),
    (_id_token, "grants id-token: write"),
])
def test_permissions_are_minimal(real: Workflows, tmp_path: Path, mutate: Mutation, expected: str) -> None:
    assert permission_problems(real) == []
    broken = copy.deepcopy(real)
    mutate(broken)
    problems = permission_problems(load_dir(write_dir(tmp_path, broken)))
    assert any(expected in p for p in problems), problems


def install_step(job: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in steps(job) if "pip install" in str(s.get("run", "")))


def setup_python(job: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in steps(job) if action(s) == "actions/setup-python")


def _deploy_installs_dev(w: Workflows) -> None:
    install_step(pulumi_job(w, "deploy.yml", "up", "staging"))["run"] = (
        "python -m venv .venv\n.venv/bin/pip install -r requirements-dev.txt\n")


def _deploy_runs_make_setup(w: Workflows) -> None:
    install_step(pulumi_job(w, "deploy.yml", "up", "prod"))["run"] = "make setup\n"


def _preview_without_policy_deps(w: Workflows) -> None:
    install_step(pulumi_job(w, "preview.yml", "preview"))["run"] = (
        "python -m venv .venv\n.venv/bin/pip install -r requirements.txt\n")


def _teardown_installs_nothing(w: Workflows) -> None:
    job = teardown_job(w)
    job["steps"] = [s for s in steps(job) if s is not install_step(job)]


def _cache_key_misses_policy(w: Workflows) -> None:
    setup_python(pulumi_job(w, "deploy.yml", "up", "prod"))["with"]["cache-dependency-path"] = "requirements.txt"


def _render_cache_misses_dev(w: Workflows) -> None:
    job = job_of(w, "preview.yml", lambda j: bool(RENDER.search(text_of(j))))
    setup_python(job)["with"]["cache-dependency-path"] = "head/requirements.txt\nbase/requirements.txt\n"


def _cache_without_key(w: Workflows) -> None:
    del setup_python(teardown_job(w))["with"]["cache-dependency-path"]


@pytest.mark.parametrize("mutate, expected", [
    (_deploy_installs_dev, "installs requirements-dev.txt; a job that runs pulumi needs the run-time"),
    (_deploy_installs_dev, "runs pulumi without installing requirements.txt"),
    (_deploy_runs_make_setup, "installs requirements-dev.txt"),
    (_preview_without_policy_deps, "runs the policy pack without installing policy/requirements.txt"),
    (_teardown_installs_nothing, "runs pulumi without installing requirements.txt"),
    (_cache_key_misses_policy, "installs from policy/requirements.txt, which its pip cache-dependency-path"),
    (_render_cache_misses_dev, "installs from head/requirements-dev.txt"),
    (_render_cache_misses_dev, "installs from base/policy/requirements.txt"),
    (_cache_without_key, "has no cache-dependency-path"),
])
def test_jobs_install_the_right_requirements(real: Workflows, tmp_path: Path, mutate: Mutation,
                                             expected: str) -> None:
    assert dependency_problems(real) == []
    broken = copy.deepcopy(real)
    mutate(broken)
    problems = dependency_problems(load_dir(write_dir(tmp_path, broken)))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("ref", ["actions/checkout@main", "actions/checkout", "pulumi/actions@v7.0.0",
                                 "docker://alpine:3", "./local-action"])
def test_actions_are_pinned_to_major_versions(real: Workflows, tmp_path: Path, ref: str) -> None:
    assert pin_problems(real) == []
    broken = copy.deepcopy(real)
    steps(teardown_job(broken))[1]["uses"] = ref
    problems = pin_problems(load_dir(write_dir(tmp_path, broken)))
    assert any(repr(ref) in p for p in problems), problems


@pytest.mark.parametrize("change, expected", [
    (lambda on: on.pop("schedule"), "does not run on schedule"),
    (lambda on: on.pop("workflow_dispatch"), "does not run on workflow_dispatch"),
    (lambda on: on.update(push={"branches": ["main"]}), "also runs on ['push']"),
])
def test_teardown_runs_by_hand_and_on_schedule_only(real: Workflows, tmp_path: Path,
                                                    change: Callable[[dict[str, Any]], Any], expected: str) -> None:
    assert teardown_trigger_problems(real) == []
    broken = copy.deepcopy(real)
    change(broken[TEARDOWN]["on"])
    problems = teardown_trigger_problems(load_dir(write_dir(tmp_path, broken)))
    assert any(expected in p for p in problems), problems


def _staging_on_github(w: Workflows) -> None:
    pulumi_job(w, "deploy.yml", "up", "staging")["runs-on"] = "ubuntu-latest"


def _prod_on_github_list(w: Workflows) -> None:
    pulumi_job(w, "deploy.yml", "up", "prod")["runs-on"] = ["ubuntu-24.04"]


def _prod_on_other_variable(w: Workflows) -> None:
    pulumi_job(w, "deploy.yml", "up", "prod")["runs-on"] = "${{ vars.RUNNER }}"


@pytest.mark.parametrize("mutate, expected", [
    (_staging_on_github, "GitHub-hosted runner"),
    (_prod_on_github_list, "GitHub-hosted runner"),
    (_prod_on_other_variable, "not the deploy runner"),
])
def test_pulumi_up_runs_where_the_droplets_ssh_can_be_reached(real: Workflows, tmp_path: Path, mutate: Mutation,
                                                              expected: str) -> None:
    assert runner_problems(real) == []
    broken = copy.deepcopy(real)
    mutate(broken)
    problems = runner_problems(load_dir(write_dir(tmp_path, broken)))
    assert any(expected in p for p in problems), problems
