"""SSH access: the admin keys and the automation key the remote commands use."""

from __future__ import annotations

import pulumi
import pulumi_digitalocean as do
import pulumi_tls as tls

from infra.config import StackConfig
from infra.naming import child_opts, stack_tag


class Access(pulumi.ComponentResource):
    """Registers the SSH keys droplets are created with.

    Attaching keys at creation also stops DigitalOcean from mailing a root
    password. The automation key is generated per stack; its private half is a
    Pulumi secret (pulumi-tls marks it so) and never leaves the state.
    """

    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("do-ha-stack:access:Access", name, None, opts)
        self.automation_key = tls.PrivateKey(
            "automation", algorithm="ED25519", opts=child_opts(cfg, self)
        )
        # The provider appends a newline; authorized_keys lines are compared stripped.
        self.automation_public_key: pulumi.Output[str] = self.automation_key.public_key_openssh.apply(str.strip)
        self.automation_private_key: pulumi.Output[str] = pulumi.Output.secret(
            self.automation_key.private_key_openssh
        )
        keys = [do.SshKey(
            "automation-key",
            name=f"{stack_tag(cfg)}-automation",
            public_key=self.automation_public_key,
            opts=child_opts(cfg, self),
        )]
        if cfg.register_admin_ssh_keys:
            keys += [
                do.SshKey(f"admin-key-{i}", name=f"{stack_tag(cfg)}-admin-{i}", public_key=key,
                          opts=child_opts(cfg, self))
                for i, key in enumerate(cfg.admin_ssh_keys, start=1)
            ]
        self.fingerprints: list[pulumi.Output[str]] = [k.fingerprint for k in keys]
        self.register_outputs({"automationPublicKey": self.automation_public_key})
