"""Names, tags and resource options shared by every component of a stack."""

from __future__ import annotations

from typing import Any

import pulumi

from infra.config import PROJECT, StackConfig


def droplet_name(cfg: StackConfig, node: str) -> str:
    return f"{PROJECT}-{cfg.stack}-{node}"


def stack_tag(cfg: StackConfig) -> str:
    return f"{PROJECT}-{cfg.stack}"


def role_tag(cfg: StackConfig, role: str) -> str:
    return f"{PROJECT}-{cfg.stack}-{role}"


def role_of(node: str) -> str:
    return "witness" if node == "witness" else "app"


def child_opts(cfg: StackConfig, parent: pulumi.Resource, **kwargs: Any) -> pulumi.ResourceOptions:
    """Options for a resource inside a component: parented, and protected on prod.

    protect is set on every resource explicitly rather than inherited, so the
    mocks tests can see it per resource.
    """
    return pulumi.ResourceOptions(parent=parent, protect=cfg.protect, **kwargs)


def derived_opts(parent: pulumi.Resource, **kwargs: Any) -> pulumi.ResourceOptions:
    """Options for a resource the program re-derives by replacement, never protected.

    - Certificates renew by replacement (pulumi-tls marks them for it once they are
      in their early-renewal window); a certificate request is replaced when its
      node's address changes.
    - A node's remote commands (deleted_with its droplet) are replaced with the
      droplet when it is replaced: they re-run on the new node. They have no
      delete action, so replacing or deleting one touches nothing on a node.

    Protected, they would make the engine refuse every prod `up` from a renewal
    window on, and every node replacement. They hold nothing that cannot be
    issued or run again from the protected keys, passwords and droplets.
    """
    return pulumi.ResourceOptions(parent=parent, protect=False, **kwargs)


def moved_from(parent_type: str, parent_name: str, grandparent: pulumi.Resource | None) -> list[pulumi.Alias]:
    """Aliases for a resource that moved to another component of the same stack.

    The URN carries the parent chain, so a move alone would make the engine
    create the resource anew and delete the old one (refused on prod, where
    everything is protected). The alias names the former parent, whose own
    parent was `grandparent`, so state carries over and nothing is replaced.
    """
    former = pulumi.create_urn(parent_name, parent_type, parent=grandparent)
    return [pulumi.Alias(parent=former)]
