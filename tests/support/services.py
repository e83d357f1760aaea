"""The local cluster's ingress controller in tests: an Ingress and a request through it."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from devtools.deploy import ingress_address


def host_ingress(name: str, host: str, service: str, port: int) -> dict[str, Any]:
    """An Ingress (the default class) sending every path of `host` to `service`:`port`."""
    backend = {"service": {"name": service, "port": {"number": port}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name},
        "spec": {
            "rules": [
                {
                    "host": host,
                    "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
                }
            ]
        },
    }


def ingress_get(host: str, path: str = "/") -> tuple[int, str]:
    """Status and body of GET `path` on `host` through the ingress controller."""
    request = urllib.request.Request(f"http://{ingress_address()}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
