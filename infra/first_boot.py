"""The first remote command on every node: it waits until first boot is over, and
pins the node's SSH host key.

Every later step depends on its node's gate, so nothing runs on a node before
cloud-init (hardening included) has finished there. The gate prints the node's
ed25519 host key (the only one its sshd offers); every later command's connection
carries it, so pulumi-command verifies it (FixedHostKey) instead of trusting
whoever answers at the address. The gate's own connection cannot verify: see the
README, "Host keys", for that first connection's trust.
"""

from __future__ import annotations

import base64
import binascii
import re

import pulumi
import pulumi_command as command

from infra.config import StackConfig
from infra.naming import derived_opts, moved_from
from infra.nodes import Nodes
from infra.remote import NO_PREVIOUS_OUTPUT, Connector

HOST_KEY_TYPE = "ssh-ed25519"
HOST_KEY_FILE = "/etc/ssh/ssh_host_ed25519_key.pub"
GATE_SUFFIX = "-first-boot"

# cloud-init exits 0 when done, 1 on errors, 2 on recoverable errors; hardening
# leaves a marker last, so its presence proves the whole first boot ran (rkhunter's
# baseline goes on in the background: nothing here needs it, see harden.sh). The
# last line of output is the host key, type and key only (the comment names the host).
WAIT_FOR_FIRST_BOOT = (
    "cloud-init status --wait >/dev/null; rc=$?; "
    'if [ "$rc" -ne 0 ]; then cloud-init status --long; exit "$rc"; fi; '
    "test -s /var/lib/do-ha-stack/hardened || { echo 'hardening did not finish' >&2; exit 1; }; "
    f"cut -d' ' -f1,2 {HOST_KEY_FILE}"
)

HOST_KEY_LINE = re.compile(rf"^{HOST_KEY_TYPE} ([A-Za-z0-9+/]+={{0,2}})$")


def host_key_line(node: str, stdout: str | None) -> str | None:
    """The host key a node's gate printed, checked: `ssh-ed25519 <base64>` whose blob
    names its own type. None only in a preview, where an existing gate's output is
    still the last run's (before gates printed keys)."""
    lines = (stdout or "").strip().splitlines()
    last = lines[-1].strip() if lines else ""
    match = HOST_KEY_LINE.match(last)
    if match:
        try:
            blob = base64.b64decode(match.group(1), validate=True)
        except binascii.Error:
            blob = b""
        if blob[4:4 + len(HOST_KEY_TYPE)] == HOST_KEY_TYPE.encode():
            return last
    if not last and pulumi.runtime.is_dry_run():
        return None
    raise ValueError(f"{node}{GATE_SUFFIX} printed no {HOST_KEY_TYPE} host key as its last line "
                     f"(from {HOST_KEY_FILE}); got {last[:120]!r}")


class FirstBoot(pulumi.ComponentResource):
    """One gate per node: `ready[node]` is what a node's first step depends on, and
    `host_keys[node]` the host key every later command verifies."""

    def __init__(self, name: str, cfg: StackConfig, nodes: Nodes, connect: Connector,
                 opts: pulumi.ResourceOptions) -> None:
        super().__init__("do-ha-stack:bootstrap:FirstBoot", name, None, opts)
        # The gates were children of the cluster component before it was split.
        moved = moved_from("do-ha-stack:cluster:Cluster", "cluster", opts.parent)
        gates = {
            node.name: command.remote.Command(
                f"{node.name}{GATE_SUFFIX}",
                connection=connect.to(node),
                create=WAIT_FOR_FIRST_BOOT,
                add_previous_output_in_env=NO_PREVIOUS_OUTPUT,
                opts=derived_opts(self, deleted_with=node.droplet, aliases=moved),
            )
            for node in nodes.nodes
        }
        self.ready: dict[str, pulumi.Resource] = dict(gates)
        self.host_keys: dict[str, pulumi.Output[str | None]] = {
            name: gate.stdout.apply(lambda out, name=name: host_key_line(name, out)) for name, gate in gates.items()}
        self.register_outputs({})
