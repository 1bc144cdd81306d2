"""Load DigitalOcean's OpenAPI files (shared/do-openapi) as plain JSON Schemas.

The lab's fake DigitalOcean account (lab.fake_do) is only useful if it answers
the way the real API is documented to, so tests validate its requests and
responses against the published schemas. OpenAPI 3.0 schemas are *almost* JSON
Schema; this module inlines the cross-file `$ref`s and converts the differences:

- `nullable: true` -> a "null" type (or an anyOf with null);
- `discriminator` with a mapping on an anyOf/oneOf -> if/then per value, so
  `{"type": "assign"}` must match the assign schema (needs `droplet_id`), as the
  API means it, rather than any branch whose enum happens to allow "assign";
- the spec's "null" placeholder branch (`title: 'null'`, `type: object`,
  `nullable: true`, no properties) -> `{"type": "null"}`: read literally it
  would accept *any* object and hide a malformed droplet;
- boolean exclusiveMinimum/Maximum (draft 4 style) -> numeric form.

With `strict=True` every outermost object schema also gets
`unevaluatedProperties: false`, so a misspelt or undocumented field fails
instead of passing silently (the DO schemas never close their objects).

The repository subset in shared/ leaves out some models the droplet and region
schemas point to (regions/, sizes/, images/). Such a `$ref` becomes an open
schema `{}` and is listed in `Spec.unresolved`, so callers can see exactly how
much went unchecked; strictness is not applied around it.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from jsonschema import Draft202012Validator, FormatChecker

from infra.paths import REPO_ROOT


# The operations lab.fake_do implements, as DigitalOcean-public.v2.yaml maps
# them (that top-level file is not part of the shared subset, so the table is here).
OPERATIONS: dict[tuple[str, str], str] = {
    ("GET", "/v2/reserved_ips"): "resources/reserved_ips/reservedIPs_list.yml",
    ("GET", "/v2/reserved_ips/{reserved_ip}"): "resources/reserved_ips/reservedIPs_get.yml",
    ("GET", "/v2/reserved_ips/{reserved_ip}/actions"): "resources/reserved_ips/reservedIPsActions_list.yml",
    ("POST", "/v2/reserved_ips/{reserved_ip}/actions"): "resources/reserved_ips/reservedIPsActions_post.yml",
    ("GET", "/v2/reserved_ips/{reserved_ip}/actions/{action_id}"): "resources/reserved_ips/reservedIPsActions_get.yml",
    ("GET", "/v2/floating_ips"): "resources/floating_ips/floatingIPs_list.yml",
    ("GET", "/v2/floating_ips/{floating_ip}"): "resources/floating_ips/floatingIPs_get.yml",
    ("GET", "/v2/floating_ips/{floating_ip}/actions"): "resources/floating_ips/floatingIPsAction_list.yml",
    ("POST", "/v2/floating_ips/{floating_ip}/actions"): "resources/floating_ips/floatingIPsAction_post.yml",
    ("GET", "/v2/floating_ips/{floating_ip}/actions/{action_id}"): "resources/floating_ips/floatingIPsAction_get.yml",
    ("GET", "/v2/droplets"): "resources/droplets/droplets_list.yml",
    ("GET", "/v2/droplets/{droplet_id}"): "resources/droplets/droplets_get.yml",
    ("DELETE", "/v2/droplets/{droplet_id}"): "resources/droplets/droplets_destroy.yml",
    ("GET", "/v2/droplets/{droplet_id}/actions"): "resources/droplets/dropletActions_list.yml",
    ("POST", "/v2/droplets/{droplet_id}/actions"): "resources/droplets/dropletActions_post.yml",
    ("GET", "/v2/droplets/{droplet_id}/actions/{action_id}"): "resources/droplets/dropletActions_get.yml",
    ("GET", "/v2/actions"): "resources/actions/actions_list.yml",
    ("GET", "/v2/actions/{action_id}"): "resources/actions/actions_get.yml",
}

# Keywords that only document (or that JSON Schema would misread) are dropped.
_DROP = {"example", "examples", "description", "title", "discriminator", "xml",
         "externalDocs", "deprecated", "readOnly", "writeOnly", "nullable"}


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: PyYAML's 1.1 rules read the droplet status enum's
    `off` (and on/yes/no) as booleans, which would reject a correct "off"."""


_Yaml12Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def default_root() -> Path:
    """The `specification` folder: $DO_OPENAPI_DIR, else shared/ beside the repo."""
    env = os.environ.get("DO_OPENAPI_DIR")
    base = Path(env) if env else REPO_ROOT.parent / "shared" / "do-openapi"
    return base / "specification" if (base / "specification").is_dir() else base


def match_operation(method: str, path: str) -> tuple[str, str] | None:
    """(path template, operation file) for a concrete request path, if implemented."""
    path = path.split("?", 1)[0]
    for (m, template), op in OPERATIONS.items():
        if m != method.upper():
            continue
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            return template, op
    return None


@functools.cache
def required_scopes(method: str, path: str) -> frozenset[str] | None:
    """The token scopes the specification requires for a request (its `security`); None
    for what it does not document (the lab's own endpoints: full-access tokens only)."""
    found = match_operation(method, path)
    if found is None:
        return None
    with (default_root() / found[1]).open() as f:
        security = yaml.load(f, Loader=_Yaml12Loader).get("security") or []
    return frozenset(scope for requirement in security for scope in requirement.get("bearer_auth", []))


def format_checker() -> FormatChecker:
    """jsonschema's checker plus date-time and uri, which it only checks when
    optional packages are installed; the spec leans on both."""
    checker = FormatChecker()

    @checker.checks("date-time", raises=ValueError)
    def _date_time(value: object) -> bool:
        if not isinstance(value, str):
            return True
        if "T" not in value.upper():
            return False
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        return parsed.tzinfo is not None

    @checker.checks("uri")
    def _uri(value: object) -> bool:
        if not isinstance(value, str):
            return True
        parts = urlparse(value)
        return bool(parts.scheme and parts.netloc)

    return checker


@dataclass(frozen=True)
class _Loc:
    file: Path  # the YAML file a node lives in; relative $refs resolve from it


class Spec:
    """The OpenAPI files under one `specification` root, loaded lazily."""

    def __init__(self, root: Path | None = None, strict: bool = True) -> None:
        self.root = (root or default_root()).resolve()
        self.strict = strict
        self.unresolved: set[str] = set()
        self._files: dict[Path, Any] = {}
        if not self.root.is_dir():
            raise FileNotFoundError(f"no OpenAPI specification at {self.root}")

    # --- files and $refs ----------------------------------------------------

    def _load(self, path: Path) -> Any:
        if path not in self._files:
            with path.open() as f:
                self._files[path] = yaml.load(f, Loader=_Yaml12Loader)
        return self._files[path]

    def _deref(self, ref: str, loc: _Loc) -> tuple[Any, _Loc] | None:
        """Target node of a $ref and the file it lives in; None if the file is absent."""
        file_part, _, pointer = ref.partition("#")
        path = (loc.file.parent / file_part).resolve() if file_part else loc.file
        if not path.is_file():
            self.unresolved.add(str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path))
            return None
        node = self._load(path)
        for token in [t for t in pointer.split("/") if t]:
            token = token.replace("~1", "/").replace("~0", "~")
            node = node[int(token)] if isinstance(node, list) else node[token]
        return node, _Loc(path)

    def _follow(self, node: Any, loc: _Loc) -> tuple[Any, _Loc]:
        """Follow $ref chains on non-schema objects (responses, parameters)."""
        seen = 0
        while isinstance(node, dict) and "$ref" in node:
            target = self._deref(node["$ref"], loc)
            if target is None:
                raise KeyError(f"unresolvable {node['$ref']} from {loc.file}")
            node, loc = target
            seen += 1
            if seen > 32:
                raise RecursionError(f"$ref loop at {loc.file}")
        return node, loc

    # --- operations ---------------------------------------------------------

    def operation(self, op_file: str) -> tuple[dict[str, Any], _Loc]:
        loc = _Loc(self.root / op_file)
        op = copy.deepcopy(self._load(loc.file))
        op.pop("x-codeSamples", None)  # names example files the subset leaves out
        return op, loc

    def response_schema(self, op_file: str, status: int) -> dict[str, Any] | None:
        """JSON Schema of the JSON body for `status` (or `default`); None if the
        documented response has no body. KeyError if neither is documented."""
        op, loc = self.operation(op_file)
        responses = op.get("responses", {})
        resp = responses.get(str(status), responses.get(status, responses.get("default")))
        if resp is None:
            raise KeyError(f"{op_file}: no response documented for {status}")
        resp, rloc = self._follow(resp, loc)
        media = (resp.get("content") or {}).get("application/json")
        if not media or "schema" not in media:
            return None
        return self.schema(media["schema"], rloc)

    def documented_statuses(self, op_file: str) -> set[str]:
        op, _ = self.operation(op_file)
        return {str(k) for k in op.get("responses", {})}

    def request_schema(self, op_file: str) -> dict[str, Any] | None:
        op, loc = self.operation(op_file)
        body = op.get("requestBody")
        if body is None:
            return None
        body, bloc = self._follow(body, loc)
        media = (body.get("content") or {}).get("application/json")
        return self.schema(media["schema"], bloc) if media else None

    def validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        return Draft202012Validator(schema, format_checker=format_checker())

    # --- schema conversion ----------------------------------------------------

    def schema(self, node: Any, loc: _Loc) -> dict[str, Any]:
        """Inline and convert one OpenAPI schema object to JSON Schema 2020-12."""
        out = self._convert(node, loc, in_combinator=False, stack=())
        out["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        return out

    def _convert(self, node: Any, loc: _Loc, in_combinator: bool,
                 stack: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(node, dict):
            raise TypeError(f"schema expected in {loc.file}, got {node!r}")
        if "$ref" in node:
            key = f"{loc.file}#{node['$ref']}"
            if key in stack:
                raise RecursionError(f"recursive schema {key}")
            target = self._deref(node["$ref"], loc)
            if target is None:
                return {"x-unresolved": node["$ref"]}
            return self._convert(target[0], target[1], in_combinator, stack + (key,))

        # The spec's "null" placeholder branch: see the module docstring.
        if (node.get("title") == "null" and node.get("nullable") and
                "properties" not in node and not any(k in node for k in ("allOf", "anyOf", "oneOf"))):
            return {"type": "null"}

        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROP or key.startswith("x-"):
                continue
            if key == "properties":
                out[key] = {name: self._convert(sub, loc, False, stack) for name, sub in value.items()}
            elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
                out[key] = self._convert(value, loc, False, stack)
            elif key in ("allOf", "anyOf", "oneOf"):
                out[key] = [self._convert(sub, loc, True, stack) for sub in value]
            elif key in ("exclusiveMinimum", "exclusiveMaximum") and isinstance(value, bool):
                bound = "minimum" if key == "exclusiveMinimum" else "maximum"
                if value and bound in node:
                    out[key] = node[bound]
            else:
                out[key] = copy.deepcopy(value)
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            if key in out and node.get(key) is True:
                out.pop(bound, None)

        disc = node.get("discriminator")
        if isinstance(disc, dict) and disc.get("mapping") and ("anyOf" in node or "oneOf" in node):
            prop = disc["propertyName"]
            rules = []
            for value, ref in disc["mapping"].items():
                mapped = self._convert({"$ref": ref}, loc, True, stack)
                rules.append({"if": {"properties": {prop: {"const": value}}, "required": [prop]},
                              "then": mapped})
            out.setdefault("allOf", []).extend(rules)

        if self.strict and not in_combinator and _shape(out) == "declared":
            out["unevaluatedProperties"] = False

        if node.get("nullable"):
            if "type" in out:
                types = out["type"] if isinstance(out["type"], list) else [out["type"]]
                out["type"] = types + ["null"]
                if "enum" in out and None not in out["enum"]:
                    out["enum"] = list(out["enum"]) + [None]
            else:
                out = {"anyOf": [{"type": "null"}, out]}
        return out


def _shape(node: dict[str, Any]) -> str:
    """'open' if part of the object is unknown or explicitly open, 'declared' if
    its properties are all described, 'none' if it describes no properties."""
    if "x-unresolved" in node or "additionalProperties" in node or "unevaluatedProperties" in node:
        return "open"
    shapes = {"declared"} if "properties" in node else set()
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in node.get(key, []):
            shapes.add(_shape(sub.get("then", sub)) if "if" in sub else _shape(sub))
    if "open" in shapes:
        return "open"
    return "declared" if "declared" in shapes else "none"
