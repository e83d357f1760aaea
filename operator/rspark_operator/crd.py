"""The RStudioWorkspace and SparkProfile CRDs, generated from the pydantic models.

    python -m rspark_operator.crd > crds/rspark.dev_rstudioworkspaces.yaml
    python -m rspark_operator.crd sparkprofiles > crds/rspark.dev_sparkprofiles.yaml

pydantic's JSON schema is turned into a structural OpenAPI v3 schema: $refs
inlined, titles dropped, Optional[X] becomes X (absence is how Kubernetes says
"unset"), and `additionalProperties: false` dropped (the API server prunes and,
with strict field validation, rejects unknown fields).
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from pydantic import BaseModel

from rspark_operator.api import (
    API_VERSION,
    CATEGORY,
    GROUP,
    HOME_SIZE_POSITIVE_MESSAGE,
    KIND,
    PLURAL,
    PROFILE_KIND,
    PROFILE_PLURAL,
    PROFILE_SHORT_NAME,
    PROFILE_SINGULAR,
    SHORT_NAME,
    SINGULAR,
    VERSION,
    WORKSPACE_NAME_MAX_LENGTH,
    WORKSPACE_NAME_PATTERN,
    WorkspaceSpec,
    WorkspaceStatus,
)
from rspark_operator.profiles import SparkProfileSpec

Schema = dict[str, Any]

HOME_SIZE_NEVER_SHRINKS = {
    # string() accepts both halves of int-or-string; the guards leave bad
    # formats to the pattern's own message.
    "rule": "!isQuantity(string(self)) || !isQuantity(string(oldSelf)) || "
    "quantity(string(self)).compareTo(quantity(string(oldSelf))) >= 0",
    "message": "home size may grow but never shrink",
}
HOME_SIZE_POSITIVE = {
    "rule": "!isQuantity(string(self)) || quantity(string(self)).isGreaterThan(quantity('0'))",
    "message": HOME_SIZE_POSITIVE_MESSAGE,
}
WORKSPACE_NAME_RULE = {
    "rule": f"size(self.metadata.name) <= {WORKSPACE_NAME_MAX_LENGTH} && "
    f"self.metadata.name.matches('{WORKSPACE_NAME_PATTERN}')",
    "message": f"metadata.name must be a DNS label of at most {WORKSPACE_NAME_MAX_LENGTH} "
    "characters starting with a letter (it prefixes the names of Services and Spark executors)",
}
PRINTER_COLUMNS = [
    {"name": "User", "type": "string", "jsonPath": ".spec.user"},
    {"name": "IDE", "type": "string", "jsonPath": ".spec.ide"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "URL", "type": "string", "jsonPath": ".status.url"},
    {"name": "Last Snapshot", "type": "date", "jsonPath": ".status.lastSnapshot.time"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def structural(model: type[BaseModel]) -> Schema:
    """The model's JSON schema as a Kubernetes structural schema."""
    raw = model.model_json_schema(by_alias=True)
    definitions: dict[str, Schema] = raw.pop("$defs", {})
    return _clean(raw, definitions)


def _clean(node: Schema, definitions: dict[str, Schema]) -> Schema:
    if "$ref" in node:
        target = definitions[node["$ref"].rsplit("/", 1)[1]]
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        return _clean({**target, **siblings}, definitions)
    variants = node.get("anyOf", [])
    if {"type": "null"} in variants:
        (present,) = (variant for variant in variants if variant != {"type": "null"})
        rest = {
            k: v for k, v in node.items() if k != "anyOf" and not (k == "default" and v is None)
        }
        return _clean({**present, **rest}, definitions)
    result: Schema = {}
    for key, value in node.items():
        if key == "title" or (key == "additionalProperties" and isinstance(value, bool)):
            continue
        if key == "properties":
            result[key] = {name: _clean(child, definitions) for name, child in value.items()}
        elif key in ("items", "additionalProperties"):
            result[key] = _clean(value, definitions)
        elif key == "anyOf":
            result[key] = [_clean(variant, definitions) for variant in value]
        else:
            result[key] = value
    return result


def spec_schema() -> Schema:
    schema = structural(WorkspaceSpec)
    schema["properties"]["home"]["properties"]["size"]["x-kubernetes-validations"] = [
        HOME_SIZE_POSITIVE,
        HOME_SIZE_NEVER_SHRINKS,
    ]
    return schema


def status_schema() -> Schema:
    return structural(WorkspaceStatus)


def custom_resource_definition() -> Schema:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": [SHORT_NAME],
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "description": f"{KIND} ({API_VERSION}): a durable RStudio or "
                            "JupyterLab + Spark workspace whose home is continuously "
                            "snapshotted to object storage and restored wherever its pod starts.",
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {
                                    "type": "string",
                                    "description": f"{API_VERSION}",
                                },
                                "kind": {"type": "string", "description": KIND},
                                # The API server forbids anything more on metadata.
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                            "x-kubernetes-validations": [WORKSPACE_NAME_RULE],
                        }
                    },
                }
            ],
        },
    }


# `kubectl get sparkprofiles`: the kind, the limits and who may use the profile.
PROFILE_PRINTER_COLUMNS = [
    {"name": "Kind", "type": "string", "jsonPath": ".spec.kind"},
    {"name": "Max Executors", "type": "integer", "jsonPath": ".spec.kubernetes.executors.max"},
    {"name": "Max Cores", "type": "integer", "jsonPath": ".spec.kubernetes.executorCores.max"},
    {"name": "Max Memory", "type": "string", "jsonPath": ".spec.kubernetes.executorMemory.max"},
    {"name": "Endpoint", "type": "string", "jsonPath": ".spec.connect.endpoint"},
    {"name": "Namespaces", "type": "string", "jsonPath": ".spec.namespaces"},
    {"name": "Selector", "type": "string", "jsonPath": ".spec.namespaceSelector"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def profile_custom_resource_definition() -> Schema:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PROFILE_PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": PROFILE_KIND,
                "listKind": f"{PROFILE_KIND}List",
                "plural": PROFILE_PLURAL,
                "singular": PROFILE_SINGULAR,
                "shortNames": [PROFILE_SHORT_NAME],
                "categories": [CATEGORY],
            },
            "scope": "Cluster",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "additionalPrinterColumns": PROFILE_PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "description": f"{PROFILE_KIND} ({API_VERSION}): Spark compute "
                            "offered to workspaces (executors on this cluster within limits, "
                            "or a Spark Connect server), written by the platform team.",
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": API_VERSION},
                                "kind": {"type": "string", "description": PROFILE_KIND},
                                "metadata": {"type": "object"},
                                "spec": structural(SparkProfileSpec),
                            },
                        }
                    },
                }
            ],
        },
    }


# The CRDs by plural, as `python -m rspark_operator.crd [plural]` names them.
DEFINITIONS = {
    PLURAL: custom_resource_definition,
    PROFILE_PLURAL: profile_custom_resource_definition,
}


class _Dumper(yaml.SafeDumper):
    """Every rule written out where it applies: no YAML anchors for shared ones."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(plural: str = PLURAL) -> str:
    suffix = "" if plural == PLURAL else f" {plural}"
    header = f"# Generated by `python -m rspark_operator.crd{suffix}`; do not edit.\n"
    return header + yaml.dump(DEFINITIONS[plural](), Dumper=_Dumper, sort_keys=False, width=100)


def main() -> None:
    sys.stdout.write(render(*sys.argv[1:2]))


if __name__ == "__main__":
    main()
