"""Re-key the site's ACME certificate now (a key that may have leaked):
`make rekey-site STACK=prod`.

On the app node that holds the reserved IP (the one that renews), site-cert gets
a certificate with a new key, installs it, and revokes the one it replaced; the
other nodes serve the new one within a minute (their sync timer). nginx reloads
gracefully: no request fails. With a supplied certificate there is nothing to
run here: set the new pair and `make up`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from infra.config import StackConfig
from infra.web import SITE_CERT
from tooling.health import Report
from tooling.node_ops import (
    OperationError, Operations, add_ssh_options, cli_operations, run_operation, settled, stack_config,
)


def rekey(cfg: StackConfig, ops: Operations) -> Report:
    if cfg.tls != "acme":
        raise OperationError(f"{cfg.stack} has no ACME certificate (domain: {cfg.domain or 'none'}, certificate: "
                             f"{cfg.tls}); with a supplied one, set the new tlsCertificate and tlsPrivateKey "
                             "and run make up")
    before = ops.health()
    holders = before.holder.get("pacemaker") or []
    if len(holders) != 1:
        raise OperationError(f"pacemaker runs the reserved IP on {', '.join(holders) or 'no node'}; the node "
                             "holding it re-keys, so fix that first (make status)")
    node = holders[0]
    ops.say(f"rekey-site: on {node}, which holds the reserved IP")
    result = ops.run_on(node, ["sudo", "-n", SITE_CERT, "rekey"])
    if result.returncode != 0:
        raise OperationError(f"site-cert rekey on {node} failed; the old certificate is still served and not "
                             f"revoked unless it says so: {(result.stderr or result.stdout).strip()[-800:]}")
    for line in result.stderr.strip().splitlines():
        ops.say(f"rekey-site: {line}")
    return settled(ops)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.site_rekey", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True)
    add_ssh_options(parser)
    args = parser.parse_args(argv)
    return run_operation(lambda: rekey(stack_config(args.stack), cli_operations(args, os.environ)))


if __name__ == "__main__":
    sys.exit(main())
