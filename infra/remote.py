"""Remote commands built from the shell steps in cloudinit/steps/.

A step's text is cloudinit/steps/lib.sh plus the step script, run as root
through `sudo bash -c`, with only non-secret NAME=value arguments on its command
line; each script declares its names with `step_args`, and the program checks
them against that declaration before it renders a step. Secrets and files
travel on stdin as a bundle (see lib.sh), so they never show in a command line,
a process list or a Pulumi diff; commands that carry a secret also keep their
output out of the logs and mark it secret in the state.
"""

from __future__ import annotations

import base64
import functools
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_command as command

from infra import tuning
from infra.config import StackConfig
from infra.naming import derived_opts
from infra.nodes import Node
from infra.paths import CLOUDINIT_DIR, read

STEPS_DIR = "steps"


@dataclass(frozen=True)
class NodeFile:
    path: str
    content: pulumi.Input[str]
    mode: str = "0644"
    owner: str = "root:root"
    secret: bool = False  # its content is a secret: the step is handled like one with secrets


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
            # A secret file's lines are hidden from the step's output like a secret's.
            kind = "secretfile" if f.secret else "file"
            lines.append(pulumi.Output.from_input(f.content).apply(
                lambda v, f=f, kind=kind: f"{kind} {f.mode} {f.owner} {f.path} {b64(v)}\n"))
        return pulumi.Output.all(*lines).apply("".join)


def settings_file(values: Mapping[str, str]) -> str:
    """NAME=value lines, values shell-quoted: a settings file a node's root script
    sources (and systemd's EnvironmentFile reads)."""
    return "".join(f"{name}={shlex.quote(value)}\n" for name, value in values.items())


def steps() -> tuple[str, ...]:
    """Every step script (cloudinit/steps/*.sh but lib.sh)."""
    return tuple(sorted(p.stem for p in (CLOUDINIT_DIR / STEPS_DIR).glob("*.sh") if p.name != "lib.sh"))


_STEP_ARGS = re.compile(r"^step_args ((?:[A-Z][A-Z0-9_]* )+)-- \"\$@\"$", re.MULTILINE)


@functools.cache
def declared_args(step: str) -> tuple[str, ...]:
    """The argument names a step script declares in its `step_args NAME... -- "$@"` line."""
    if step not in steps():
        raise ValueError(f"unknown step {step!r}; allowed: {', '.join(steps())}")
    text = re.sub(r"\s*\\\n\s*", " ", read(f"{STEPS_DIR}/{step}.sh"))  # join continued lines
    found = _STEP_ARGS.findall(text)
    if len(found) != 1:
        raise ValueError(f"cloudinit/{STEPS_DIR}/{step}.sh must declare its arguments in one step_args line")
    return tuple(found[0].split())


def lib_settings() -> str:
    """lib.sh's own settings (tuning values), set ahead of it."""
    return f"WAIT_POLL_S={shlex.quote(' '.join(str(s) for s in tuning.WAIT_POLL_S))}"


def step_script(step: str) -> str:
    """What runs for a step: its script with lib.sh (and lib.sh's settings) inserted
    after the shebang."""
    declared_args(step)  # an unknown step fails here
    shebang, _, body = read(f"{STEPS_DIR}/{step}.sh").partition("\n")
    return f"{shebang}\n{lib_settings()}\n{read(f'{STEPS_DIR}/lib.sh')}\n{body}"


def step_text(step: str, args: Mapping[str, str]) -> str:
    """The command line for a step: step_script(step) through `sudo bash -c`, as root,
    with its arguments as NAME=value, exactly the names the script declares."""
    declared = declared_args(step)
    if set(args) != set(declared):
        raise ValueError(f"step {step}: the program passes {sorted(args)}, the script declares {sorted(declared)}")
    quoted = " ".join(shlex.quote(f"{name}={args[name]}") for name in declared)
    return f"sudo -n bash -c {shlex.quote(step_script(step))} {shlex.quote(step)} {quoted}".rstrip()


# pulumi-command sends a re-run the previous run's output as PULUMI_COMMAND_STDOUT and
# PULUMI_COMMAND_STDERR environment requests unless told not to; the nodes' sshd
# accepts no such names (AcceptEnv), so every re-run would fail, and the previous
# output has no business on the node anyway.
NO_PREVIOUS_OUTPUT = False


@dataclass(frozen=True, eq=False)
class Connector:
    """How every remote command reaches a node: the deploy user, the automation key."""

    user: str
    private_key: pulumi.Input[str]
    # node name -> its pinned host key (infra.first_boot); a node without one (its
    # first-boot gate, which prints the key) is reached without checking.
    host_keys: Mapping[str, pulumi.Input[str | None]] = field(default_factory=dict)

    def pinned(self, host_keys: Mapping[str, pulumi.Input[str | None]]) -> Connector:
        """The same connector, verifying each node's host key from now on."""
        return Connector(self.user, self.private_key, dict(host_keys))

    def to(self, node: Node) -> command.remote.ConnectionArgs:
        return command.remote.ConnectionArgs(
            host=node.droplet.ipv4_address,
            user=self.user,
            private_key=self.private_key,
            host_key=self.host_keys.get(node.name),
            dial_error_limit=tuning.SSH_DIAL_ERROR_LIMIT,
            per_dial_timeout=tuning.SSH_PER_DIAL_TIMEOUT_S,
        )


def step_command(resource_name: str, step: str, node: Node, args: Mapping[str, pulumi.Input[str]],
                 connect: Connector, bundle: Bundle, cfg: StackConfig, parent: pulumi.Resource,
                 depends_on: list[pulumi.Resource], aliases: list[pulumi.Alias] | None = None,
                 ) -> command.remote.Command:
    """One bootstrap step on one node; it goes with the node's droplet. Re-running it
    is safe: every step script checks before it changes anything."""
    secret = bool(bundle.secrets) or any(f.secret for f in bundle.files)
    stdin = bundle.render()
    values = pulumi.Output.all(**{name: pulumi.Output.from_input(v).apply(str) for name, v in args.items()}) \
        if args else pulumi.Output.from_input({})
    return command.remote.Command(
        resource_name,
        connection=connect.to(node),
        create=values.apply(lambda a: step_text(step, a)),
        stdin=pulumi.Output.secret(stdin) if secret else stdin,
        # Output may name hosts and timings but never a secret; still, a step that
        # handles secrets keeps its output out of logs and marks it secret in state.
        logging=command.remote.Logging.NONE if secret else command.remote.Logging.STDOUT_AND_STDERR,
        add_previous_output_in_env=NO_PREVIOUS_OUTPUT,
        opts=derived_opts(parent, deleted_with=node.droplet, depends_on=depends_on, aliases=aliases,
                          additional_secret_outputs=["stdout", "stderr"] if secret else None),
    )
