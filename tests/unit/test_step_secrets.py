"""A step that received secrets never prints them, even when it fails: lib.sh hides
every line of every secret in all the step's output and its log lines (run here
with bash; the lab makes every secret-carrying step leak and fail on purpose,
tests/lab/test_lab_secrets.py)."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

from infra.paths import CLOUDINIT_DIR

PASSWORD = "s3cr3t-Pa55word-xyz"
PEM = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIKeyLineOne\nSecondLineOfTheKey==\n-----END PRIVATE KEY-----"


def _run(body: str, tmp_path: Path, bundle: dict[str, str]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "logger").write_text('#!/bin/sh\nprintf "%s\\n" "$*" >> "$LOGGED"\n')
    (tmp_path / "logger").chmod(0o755)
    stdin = "".join(f"secret {k} {base64.b64encode(v.encode()).decode()}\n" for k, v in bundle.items())
    script = (CLOUDINIT_DIR / "steps/lib.sh").read_text() + "\nset -euo pipefail\nread_bundle\n" + body
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "LOGGED": str(tmp_path / "logged")}
    return subprocess.run(["bash", "-c", script, "test-step"], input=stdin, capture_output=True, text=True,
                          env=env, timeout=30)


def test_a_failing_step_prints_no_secret(tmp_path: Path) -> None:
    body = ('echo "creating user with $SECRET_PW"\n'
            'printf "%s\\n" "$SECRET_KEY" >&2\n'
            'log "connecting with $SECRET_PW"\n'
            # what a client does when it fails: echo the statement it was given
            'quiet sh -c "cat >&2; exit 3" <<<"ERROR 1064 near IDENTIFIED BY $SECRET_PW" || true\n'
            'die "giving up after $SECRET_PW"\n')
    result = _run(body, tmp_path, {"PW": PASSWORD, "KEY": PEM})
    assert result.returncode == 1
    output = result.stdout + result.stderr + (tmp_path / "logged").read_text()
    for secret_line in [PASSWORD, *PEM.splitlines()]:
        assert secret_line not in output
    assert "creating user with [secret]" in result.stdout
    assert "test-step: error: giving up after [secret]" in result.stderr
    assert "connecting with [secret]" in (tmp_path / "logged").read_text()
    assert result.stderr.count("[secret]") >= 5  # the key's four lines and the log line, at least


def test_a_step_without_secrets_prints_as_it_is(tmp_path: Path) -> None:
    result = _run('echo "plain [text] s3cr3t"\n', tmp_path, {})
    assert result.returncode == 0 and result.stdout == "plain [text] s3cr3t\n"


def test_output_is_complete_when_the_step_ends(tmp_path: Path) -> None:
    result = _run('for i in $(seq 2000); do echo "line $i $SECRET_PW"; done\n', tmp_path, {"PW": PASSWORD})
    lines = result.stdout.splitlines()
    assert len(lines) == 2000 and lines[-1] == "line 2000 [secret]"


def test_a_secret_file_is_written_and_hidden_like_a_secret(tmp_path: Path) -> None:
    """A bundle's secret file (the backup key's environment, say): its lines never
    show in the step's output, a plain file's do."""
    (tmp_path / "logger").write_text("#!/bin/sh\n")
    (tmp_path / "logger").chmod(0o755)
    target, plain = tmp_path / "backup.env", tmp_path / "settings"
    env_text = f"AWS_SECRET_ACCESS_KEY={PASSWORD}\nRESTIC_REPOSITORY=s3:https://example/bucket\n"

    def item(kind: str, path: Path, text: str) -> str:
        return f"{kind} 0600 root:root {path} {base64.b64encode(text.encode()).decode()}\n"

    stdin = item("secretfile", target, env_text) + item("file", plain, "HOST=lab-stack\n")
    script = ((CLOUDINIT_DIR / "steps/lib.sh").read_text() + "\nset -euo pipefail\nread_bundle\n"
              f'cat {target} {plain}; cat {target} >&2\n'
              f'echo "key: $(sed -n "s/^AWS_SECRET_ACCESS_KEY=//p" {target})"; die "injected fault"\n')
    result = subprocess.run(["bash", "-c", script, "test-step"], input=stdin, capture_output=True, text=True,
                            env={"PATH": f"{tmp_path}:{os.environ['PATH']}"}, timeout=30)
    assert target.read_text() == env_text and oct(target.stat().st_mode)[-3:] == "600"
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert PASSWORD not in output and "s3:https://example/bucket" not in output
    assert result.stdout == "[secret]\n[secret]\nHOST=lab-stack\nkey: [secret]\n"
