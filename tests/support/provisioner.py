"""A small dynamic volume provisioner for the local cluster.

kwok has no kubelet and no CSI driver, so nothing creates PersistentVolumes.
This loop plays the external provisioner and resizer for one StorageClass:
it creates a hostPath PV pre-bound to each pending claim (the real PV
controller then binds them), grows a bound PV when its claim asks for more,
and deletes released PVs with their directory. kwokctl runs it as a cluster
component, beside the control plane.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

PROVISIONER_NAME = "rspark.dev/local-hostpath"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
POLL_SECONDS = 1.0

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
    def __init__(self, core: client.CoreV1Api, storage: client.StorageV1Api, root: Path) -> None:
        self.core = core
        self.storage = storage
        self.root = root

    def our_classes(self) -> set[str]:
        classes = self.storage.list_storage_class().items
        return {c.metadata.name for c in classes if c.provisioner == PROVISIONER_NAME}

    def sync_once(self) -> None:
        classes = self.our_classes()
        volumes = {pv.metadata.name: pv for pv in self.core.list_persistent_volume().items}
        for claim in self.core.list_persistent_volume_claim_for_all_namespaces().items:
            if claim.spec.storage_class_name not in classes or claim.metadata.deletion_timestamp:
                continue
            if not claim.spec.volume_name and f"pvc-{claim.metadata.uid}" not in volumes:
                self.provision(claim)
            elif claim.status.phase == "Bound" and claim.spec.volume_name in volumes:
                self.resize(claim, volumes[claim.spec.volume_name])
        for pv in volumes.values():
            provisioned_by = (pv.metadata.annotations or {}).get(PROVISIONED_BY)
            if provisioned_by == PROVISIONER_NAME and pv.status.phase == "Released":
                self.delete(pv)

    def provision(self, claim: Any) -> None:
        name = f"pvc-{claim.metadata.uid}"
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        size = claim.spec.resources.requests["storage"]
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER_NAME}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": claim.spec.access_modes,
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": claim.spec.storage_class_name,
                "volumeMode": claim.spec.volume_mode or "Filesystem",
                "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": claim.metadata.namespace,
                    "name": claim.metadata.name,
                    "uid": claim.metadata.uid,
                },
            },
        }
        try:
            self.core.create_persistent_volume(body)
            log.info("provisioned %s for %s/%s (%s)", name, claim.metadata.namespace,
                     claim.metadata.name, size)  # fmt: skip
        except ApiException as exc:
            if exc.status != 409:
                raise

    def resize(self, claim: Any, pv: Any) -> None:
        """Grow the PV and report the new capacity on the claim (what resizer + kubelet do)."""
        wanted = claim.spec.resources.requests["storage"]
        has = (claim.status.capacity or {}).get("storage", pv.spec.capacity["storage"])
        if parse_quantity(wanted) <= parse_quantity(has):
            return
        self.core.patch_persistent_volume(
            pv.metadata.name, {"spec": {"capacity": {"storage": wanted}}}
        )
        self.core.patch_namespaced_persistent_volume_claim_status(
            claim.metadata.name,
            claim.metadata.namespace,
            {"status": {"capacity": {"storage": wanted}}},
        )
        log.info("resized %s/%s to %s", claim.metadata.namespace, claim.metadata.name, wanted)

    def delete(self, pv: Any) -> None:
        shutil.rmtree(self.root / pv.metadata.name, ignore_errors=True)
        try:
            self.core.delete_persistent_volume(pv.metadata.name)
            log.info("deleted released %s", pv.metadata.name)
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
    while True:
        try:
            if provisioner is None:
                config.load_kube_config(args.kubeconfig)
                provisioner = Provisioner(client.CoreV1Api(), client.StorageV1Api(), args.root)
            provisioner.sync_once()
        except Exception as exc:  # the API server may be starting or restarting: retry
            log.warning("sync failed: %s", exc)
        time.sleep(POLL_SECONDS)


if __name__ == "__main__":
    main()
