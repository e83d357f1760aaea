"""The local cluster's ingress controller in tests: an Ingress and a request through it."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from devtools import services
from devtools.localcluster import LOCAL


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
    address = dict(
        line.split("=", 1)
        for line in (LOCAL / services.INGRESS_ENV_FILE).read_text().splitlines()
        if "=" in line
    )[services.INGRESS_HTTP_KEY]
    request = urllib.request.Request(f"http://{address}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
