"""Validation of the requests the bot sends against Discord's own OpenAPI spec."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SPEC_PATH = SHARED / "discord" / "openapi.json"
SIGNED_INTERACTION_PATH = SHARED / "discord" / "signed-interaction.json"


class SpecViolation(AssertionError):
    """A request the bot sent does not match Discord's OpenAPI spec."""


@dataclass(frozen=True)
class _Route:
    template: str
    pattern: re.Pattern[str]
    operations: dict[str, Any]


class DiscordSpec:
    """Finds the operation for a method and path and validates body and query against it."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        resource: Resource[Any] = Resource.from_contents(spec, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource("urn:discord", resource)
        self._routes: list[_Route] = []
        for template, operations in spec["paths"].items():
            regex = re.sub(r"\\\{[^}]+\\\}", r"[^/]+", re.escape(template))
            self._routes.append(_Route(template, re.compile(f"^{regex}$"), operations))
        # Literal segments (like @original) must win over a parameter in the same place.
        self._routes.sort(key=lambda r: r.template.count("{"))

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]]:
        """The path template and operation object for a concrete request path."""
        path = re.sub(r"^/api/v\d+", "", path)
        for route in self._routes:
            if route.pattern.match(path) and method.lower() in route.operations:
                return route.template, route.operations[method.lower()]
        raise SpecViolation(f"{method} {path} is not an operation of Discord's API")

    def validate(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        *,
        files: list[str] | None = None,
    ) -> str:
        """Raise SpecViolation unless the request is valid; return the path template.

        With `files` (the names of its file parts, `files[0]`...) the request was
        multipart/form-data and `body` its `payload_json`: both are checked together
        against the operation's multipart schema.
        """
        template, op = self.operation(method, path)
        for param in op.get("parameters", []):
            if param.get("in") != "query" or not query or param["name"] not in query:
                continue
            self._check(_coerce(query[param["name"]], param["schema"]), param["schema"], template)
        unknown = set(query or {}) - {
            p["name"] for p in op.get("parameters", []) if p.get("in") == "query"
        }
        if unknown:
            raise SpecViolation(f"{method} {template}: unknown query parameters {sorted(unknown)}")
        content = op.get("requestBody", {}).get("content", {})
        if body is None:
            if op.get("requestBody", {}).get("required"):
                raise SpecViolation(f"{method} {template}: a body is required")
            return template
        if files is not None:
            if "multipart/form-data" not in content:
                raise SpecViolation(f"{method} {template} takes no multipart body")
            if not isinstance(body, dict):
                raise SpecViolation(f"{method} {template}: payload_json is not a JSON object")
            # A file part stands in the schema as a binary string property.
            form = {**body, **dict.fromkeys(files, "")}
            self._check(form, content["multipart/form-data"]["schema"], template)
            return template
        if "application/json" not in content:
            raise SpecViolation(f"{method} {template} takes no JSON body")
        self._check(body, content["application/json"]["schema"], template)
        return template

    def _check(self, instance: Any, schema: dict[str, Any], where: str) -> None:
        validator = jsonschema.Draft202012Validator(
            _rebase(schema),
            registry=self._registry,
        )
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        if errors:
            best = jsonschema.exceptions.best_match(errors)
            raise SpecViolation(f"{where}: {best.message} at {list(best.path)}")


def _rebase(schema: Any) -> Any:
    """Point the spec's local refs (#/components/...) at the registered document."""
    if isinstance(schema, dict):
        return {
            k: (f"urn:discord{v}" if k == "$ref" and v.startswith("#") else _rebase(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_rebase(v) for v in schema]
    return schema


def _coerce(value: str, schema: dict[str, Any]) -> Any:
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "integer" in kinds and re.fullmatch(r"-?\d+", value):
        return int(value)
    if "boolean" in kinds and value in ("true", "false"):
        return value == "true"
    return value


@functools.cache
def discord_spec() -> DiscordSpec:
    """The parsed spec, loaded once per test session."""
    return DiscordSpec(json.loads(SPEC_PATH.read_text()))


def signed_interaction_vector() -> dict[str, str]:
    """The real Discord-signed interaction with its public key."""
    data: dict[str, str] = json.loads(SIGNED_INTERACTION_PATH.read_text())
    return data
