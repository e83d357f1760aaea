"""A small dynamic volume provisioner for the local cluster.

Nothing else creates PersistentVolumes here (no CSI driver). This loop plays the
external provisioner and resizer for the StorageClasses that name it: it creates a
hostPath PV pre-bound to each pending claim (the real PV controller then binds them),
grows a bound PV when its claim asks for more, and deletes released PVs with their
directory. kwokctl runs it as a cluster component, beside the control plane.

Where a volume lives follows the node the scheduler picked for the claim's first pod
(`WaitForFirstConsumer`: the claim's selected-node annotation):

- a real node: the volume is node-local, like a production local volume. Its folder is
  `<root>/<node>/pvc-<uid>` and the PV's node affinity names that node, so a pod that
  mounts it can only run there; when the node is lost, so is the volume (the operator
  then restores the home from its last snapshot on a new volume).
- a kwok node, or no node (a class with `Immediate` binding): kwok nodes have no disk.
  The volume stands for a network disk that every kwok node can attach: its folder is
  `<root>/shared/pvc-<uid>` and its affinity admits every node but the real ones, so
  the kwok-based tests still see a pod move to another node with its claim.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from devtools.network import REAL_NODE_LABEL, REAL_NODE_VALUE

PROVISIONER_NAME = "rspark.dev/local-hostpath"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
# Set by the scheduler on a WaitForFirstConsumer claim: the node of its first pod.
SELECTED_NODE = "volume.kubernetes.io/selected-node"
WAIT_FOR_FIRST_CONSUMER = "WaitForFirstConsumer"
HOSTNAME_LABEL = "kubernetes.io/hostname"
# The folder of the volumes that are not node-local (see the module's docstring).
SHARED_FOLDER = "shared"
POLL_SECONDS = 1.0
# Each poll lists every claim and volume: with 10,000 workspaces, once a second made the
# provisioner and the API server serving it a growing part of the scale benchmark's CPU
# (22 ms a workspace between 1,000 and 3,000 pods, 40 between 3,000 and 7,500). The
# pause grows with the claims.
CLAIMS_PER_POLL_SECOND = 1000
VOLUME_MODE = 0o777

log = logging.getLogger("provisioner")


def parse_quantity(value: str) -> int:
    """Bytes of a storage quantity such as 10Gi, 500M or 1e9."""
    suffixes = {
        "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
        "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    }  # fmt: skip
    for suffix, factor in suffixes.items():
        if value.endswith(suffix):
            return int(float(value[: -len(suffix)]) * factor)
    return int(float(value))


class Provisioner:
    """Objects are read as plain JSON from the API server's watch cache: with a
    thousand claims, the client's model classes would cost seconds of CPU per poll."""

    def __init__(self, api: client.ApiClient, root: Path) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.root = root

    def _list(self, path: str) -> list[dict[str, Any]]:
        response = self.api.call_api(
            *self.api.param_serialize(
                method="GET",
                resource_path=path,
                query_params=[("resourceVersion", "0")],
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
            )
        )
        response.read()
        items: list[dict[str, Any]] = json.loads(response.data)["items"]
        return items

    def our_classes(self) -> dict[str, dict[str, Any]]:
        classes = self._list("/apis/storage.k8s.io/v1/storageclasses")
        return {
            c["metadata"]["name"]: c for c in classes if c.get("provisioner") == PROVISIONER_NAME
        }

    def sync_once(self) -> int:
        """One pass over every claim and volume; returns how many claims there are."""
        classes = self.our_classes()
        volumes = {pv["metadata"]["name"]: pv for pv in self._list("/api/v1/persistentvolumes")}
        claims = self._list("/api/v1/persistentvolumeclaims")
        for claim in claims:
            spec, metadata = claim["spec"], claim["metadata"]
            storage_class = classes.get(spec.get("storageClassName") or "")
            if storage_class is None or metadata.get("deletionTimestamp"):
                continue
            volume_name = spec.get("volumeName")
            selected = (metadata.get("annotations") or {}).get(SELECTED_NODE)
            waits = storage_class.get("volumeBindingMode") == WAIT_FOR_FIRST_CONSUMER
            if not volume_name and f"pvc-{metadata['uid']}" not in volumes:
                if selected or not waits:
                    self.provision(claim, self.placement(selected))
            elif (claim.get("status") or {}).get("phase") == "Bound" and volume_name in volumes:
                self.resize(claim, volumes[volume_name])
        for pv in volumes.values():
            provisioned_by = (pv["metadata"].get("annotations") or {}).get(PROVISIONED_BY)
            if (
                provisioned_by == PROVISIONER_NAME
                and pv.get("status", {}).get("phase") == "Released"
            ):
                self.delete(pv)
        return len(claims)

    def placement(self, node_name: str | None) -> tuple[str, dict[str, Any]] | None:
        """The folder (under the root) and the PV's node affinity for a claim whose first
        pod goes to `node_name` (see the module's docstring); None when that node is gone
        (the scheduler picks another)."""
        node = None
        if node_name:
            try:
                node = self.core.read_node(node_name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                log.warning("selected node %s is gone: waiting for another", node_name)
                return None
        if (
            node is not None
            and (node.metadata.labels or {}).get(REAL_NODE_LABEL) == REAL_NODE_VALUE
        ):
            term = {"key": HOSTNAME_LABEL, "operator": "In", "values": [node.metadata.name]}
            folder = node.metadata.name
        else:
            term = {"key": REAL_NODE_LABEL, "operator": "DoesNotExist"}
            folder = SHARED_FOLDER
        return folder, {"required": {"nodeSelectorTerms": [{"matchExpressions": [term]}]}}

    def provision(
        self, claim: dict[str, Any], placement: tuple[str, dict[str, Any]] | None
    ) -> None:
        if placement is None:
            return
        spec, metadata = claim["spec"], claim["metadata"]
        name = f"pvc-{metadata['uid']}"
        folder, affinity = placement
        path = self.root / folder / name
        path.mkdir(parents=True, exist_ok=True)
        # The kubelet applies a pod's fsGroup to real volumes, never to hostPath ones:
        # writable by every user, as Rancher's local-path-provisioner makes its
        # directories, so that the pods' non-root users (uid 1000) own what they write.
        path.chmod(VOLUME_MODE)
        size = spec["resources"]["requests"]["storage"]
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER_NAME}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": spec["accessModes"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": spec["storageClassName"],
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                "nodeAffinity": affinity,
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": metadata["namespace"],
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                },
            },
        }
        try:
            self.core.create_persistent_volume(body)
            log.info("provisioned %s for %s/%s (%s) in %s", name, metadata["namespace"],
                     metadata["name"], size, path)  # fmt: skip
        except ApiException as exc:
            if exc.status != 409:
                raise

    def resize(self, claim: dict[str, Any], pv: dict[str, Any]) -> None:
        """Grow the PV and report the new capacity on the claim (what resizer + kubelet do)."""
        metadata = claim["metadata"]
        wanted = claim["spec"]["resources"]["requests"]["storage"]
        capacity = (claim.get("status") or {}).get("capacity") or {}
        has = capacity.get("storage", pv["spec"]["capacity"]["storage"])
        if parse_quantity(wanted) <= parse_quantity(has):
            return
        self.core.patch_persistent_volume(
            pv["metadata"]["name"], {"spec": {"capacity": {"storage": wanted}}}
        )
        self.core.patch_namespaced_persistent_volume_claim_status(
            metadata["name"], metadata["namespace"], {"status": {"capacity": {"storage": wanted}}}
        )
        log.info("resized %s/%s to %s", metadata["namespace"], metadata["name"], wanted)

    def delete(self, pv: dict[str, Any]) -> None:
        name = pv["metadata"]["name"]
        shutil.rmtree(pv["spec"]["hostPath"]["path"], ignore_errors=True)
        try:
            self.core.delete_persistent_volume(name)
            log.info("deleted released %s", name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--root", required=True, type=Path, help="directory holding the volumes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    provisioner: Provisioner | None = None
    claims = 0
    while True:
        try:
            if provisioner is None:
                api = config.new_client_from_config(args.kubeconfig)
                provisioner = Provisioner(api, args.root)
            claims = provisioner.sync_once()
        except Exception as exc:  # the API server may be starting or restarting: retry
            log.warning("sync failed: %s", exc)
        time.sleep(poll_pause(claims))


def poll_pause(claims: int) -> float:
    """Seconds between two polls: 1, and a second more per thousand claims."""
    return POLL_SECONDS + claims / CLAIMS_PER_POLL_SECOND


if __name__ == "__main__":
    main()
