"""Remote commands built from the shell steps in cloudinit/steps/.

A step's text is cloudinit/steps/lib.sh plus the step script, run as root
through `sudo bash -c`, with only non-secret arguments on its command line.
Secrets and files travel on stdin as a bundle (see lib.sh), so they never show
in a command line, a process list or a Pulumi diff; commands that carry a secret
also keep their output out of the logs and mark it secret in the state.
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass, field
from typing import Sequence

import pulumi
import pulumi_command as command

from infra.paths import read


@dataclass(frozen=True)
class NodeFile:
    path: str
    content: pulumi.Input[str]
    mode: str = "0644"
    owner: str = "root:root"


@dataclass
class Bundle:
    secrets: dict[str, pulumi.Input[str]] = field(default_factory=dict)
    files: list[NodeFile] = field(default_factory=list)

    def render(self) -> pulumi.Output[str]:
        """The stdin text: one line per secret or file, values base64-encoded."""
        def b64(text: str) -> str:
            return base64.b64encode(text.encode()).decode()

        lines: list[pulumi.Output[str]] = []
        for name, value in sorted(self.secrets.items()):
            lines.append(pulumi.Output.from_input(value).apply(lambda v, n=name: f"secret {n} {b64(v)}\n"))
        for f in self.files:
            lines.append(pulumi.Output.from_input(f.content).apply(
                lambda v, f=f: f"file {f.mode} {f.owner} {f.path} {b64(v)}\n"))
        return pulumi.Output.all(*lines).apply("".join)


STEPS = ("cluster-node", "cluster-setup", "cluster-resources", "storage-volume", "storage-mount",
         "db-node", "db-seed", "db-handover")


def step_script(step: str) -> str:
    """What runs for a step: its script with lib.sh inserted after the shebang."""
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; allowed: {', '.join(STEPS)}")
    shebang, _, body = read(f"steps/{step}.sh").partition("\n")
    return f"{shebang}\n{read('steps/lib.sh')}\n{body}"


def step_text(step: str, args: Sequence[str]) -> str:
    """The command line for a step: step_script(step) through `sudo bash -c`, as root."""
    script = step_script(step)
    quoted = " ".join(shlex.quote(a) for a in args)
    return f"sudo -n bash -c {shlex.quote(script)} {shlex.quote(step)} {quoted}".rstrip()


def step_command(resource_name: str, step: str, args: pulumi.Input[Sequence[str]],
                 connection: command.remote.ConnectionArgs, bundle: Bundle,
                 opts: pulumi.ResourceOptions) -> command.remote.Command:
    """One bootstrap step on one node. Re-running it is safe: every step script
    checks before it changes anything."""
    secret = bool(bundle.secrets)
    stdin = bundle.render()
    return command.remote.Command(
        resource_name,
        connection=connection,
        create=pulumi.Output.from_input(args).apply(lambda a: step_text(step, a)),
        stdin=pulumi.Output.secret(stdin) if secret else stdin,
        # Output may name hosts and timings but never a secret; still, a step that
        # handles secrets keeps its output out of logs and marks it secret in state.
        logging=command.remote.Logging.NONE if secret else command.remote.Logging.STDOUT_AND_STDERR,
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            additional_secret_outputs=["stdout", "stderr"] if secret else None)),
    )
