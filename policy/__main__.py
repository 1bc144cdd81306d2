"""do-ha-stack policy pack: policy/rules.py wired into pulumi_policy.

    pulumi preview --policy-pack policy        (pulumi up accepts the same flag)

The Pulumi CLI starts this file as a script from the policy directory; the
repository root goes on sys.path so the rules share `infra.ports` and
`infra.userdata` with the program. Every policy is mandatory: a violation stops
the preview or update.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Pulumi starts a pack from its own folder: the repository (where infra.paths
# defines the root for everything else) must be importable first.
_repo = str(Path(__file__).resolve().parent.parent)
if _repo not in sys.path:
    sys.path.insert(0, _repo)

from pulumi_policy import (  # noqa: E402
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError  # noqa: E402

from policy import rules  # noqa: E402

PACK_NAME = "do-ha-stack"


def plain(value: Any) -> Any:
    """The engine's props as plain dicts and lists, unknown values as rules.Unknown.

    pulumi_policy hands props over behind a proxy that raises on every read of an
    unknown value; the rules decide themselves whether they need the value.
    """
    if isinstance(value, (str, bytes)):
        return value
    if hasattr(value, "keys"):
        out = {}
        for key in value:
            try:
                out[key] = plain(value[key])
            except UnknownValueError as exc:
                out[key] = rules.Unknown(exc.unknown_type_sentinel)
        return out
    if hasattr(value, "__len__") and hasattr(value, "__getitem__"):
        items = []
        for i in range(len(value)):
            try:
                items.append(plain(value[i]))
            except UnknownValueError as exc:
                items.append(rules.Unknown(exc.unknown_type_sentinel))
        return items
    return value


def _checked(run: Callable[[], list[str]]) -> list[str]:
    try:
        return run()
    except rules.NotKnownYet as exc:
        # pulumi_policy reports this as "can't run policy ... during preview".
        raise UnknownValueError(exc.value.detail or UNKNOWN_STRING_VALUE, exc.path.split(".")) from None


def resource_policy(info: rules.RuleInfo) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        options = rules.Options(protect=bool(args.opts.protect), stack=rules.stack_of(args.urn))
        props = plain(args.props)
        for message in _checked(lambda: info.check(args.resource_type, props, options)):
            report_violation(message, None)

    return ResourceValidationPolicy(name=info.name, description=info.description, validate=validate,
                                    enforcement_level=EnforcementLevel.MANDATORY)


def stack_policy(info: rules.RuleInfo) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [
            rules.Resource(
                type=r.resource_type, urn=r.urn, props=plain(r.props), protect=bool(r.opts.protect),
                property_dependencies={k: [d.urn for d in deps] for k, deps in r.property_dependencies.items()},
            )
            for r in args.resources
        ]
        for message in _checked(lambda: info.check(resources)):
            report_violation(message, None)

    return StackValidationPolicy(name=info.name, description=info.description, validate=validate,
                                 enforcement_level=EnforcementLevel.MANDATORY)


def policies() -> list[Any]:
    return [resource_policy(i) for i in rules.RESOURCE_RULES] + [stack_policy(i) for i in rules.STACK_RULES]


if __name__ == "__main__":
    # Serves the engine over gRPC until it is stopped.
    PolicyPack(name=PACK_NAME, policies=policies(), enforcement_level=EnforcementLevel.MANDATORY)
