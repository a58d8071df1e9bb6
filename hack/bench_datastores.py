#!/usr/bin/env python3
"""Datastore throughput against the raw Kubernetes write rate, on the same API server.

  bench_datastores.py operator N OPERATOR_PID   # N SAS Datastores in team-a, until all are Ready
  bench_datastores.py raw N                     # the same writes by a minimal client

`operator` creates N Datastores (SAS pod access from the account key, no registration: nothing to
call in Azure) and waits until every one is Ready with its Secret; it prints objects per second and
the operator's CPU time per object. `raw` makes, per object, what the operator's work amounts to
on the API server: create the Datastore, add a finalizer, write a Secret, write status. Both use
8 connections. KUBECONFIG must point at the cluster (token user, as hack/local-cluster.sh writes).
"""
import concurrent.futures
import json
import os
import ssl
import sys
import time
import urllib.request

import yaml

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
GROUP = "/apis/amlidentity.io/v1alpha1"


def client():
    config = yaml.safe_load(open(os.environ["KUBECONFIG"]))
    cluster = config["clusters"][0]["cluster"]
    token = config["users"][0]["user"]["token"]
    context = ssl.create_default_context(cafile=cluster["certificate-authority"])

    def call(method, path, body=None, content_type="application/json"):
        request = urllib.request.Request(
            cluster["server"] + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
        )
        with urllib.request.urlopen(request, context=context, timeout=30) as r:
            return json.load(r)

    return call


def datastore(name, namespace):
    return {
        "apiVersion": "amlidentity.io/v1alpha1",
        "kind": "Datastore",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "workspaceRef": {"name": "ml-workspace"},
            "datastoreName": name.replace("-", "_"),
            "type": "AzureBlob",
            "accountName": "stmlwteama",
            "containerName": "training-data",
            "credentials": {"type": "AccountKey", "secretRef": {"name": "stmlwteama-key", "key": "accountKey"}},
            "register": False,
            "podAccess": {"secretName": f"{name}-access", "sas": {"permissions": "rl", "ttl": "1h"}},
        },
    }


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def ready(item):
    status = item.get("status", {})
    return status.get("observedGeneration") == item["metadata"]["generation"] and any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
    )


def operator(n, pid):
    call = client()
    namespace = "team-a"
    names = [f"bench-ds-{i}" for i in range(n)]
    cpu_before = cpu_seconds(pid)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: call("POST", f"{GROUP}/namespaces/{namespace}/datastores", datastore(name, namespace)), names))
    deadline = started + 600
    while True:
        items = call("GET", f"{GROUP}/namespaces/{namespace}/datastores")["items"]
        done = sum(1 for i in items if i["metadata"]["name"].startswith("bench-ds-") and ready(i))
        if done >= n:
            break
        if time.monotonic() > deadline:
            sys.exit(f"only {done} of {n} Datastores were Ready after 600 s")
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(pid) - cpu_before
    print(f"operator: {n} Datastores Ready in {elapsed:.1f} s ({n / elapsed:.1f}/s), "
          f"operator CPU {cpu:.2f} s ({1000 * cpu / n:.1f} ms per object)")
    return n / elapsed


def raw(n):
    call = client()
    namespace = "bench-raw"
    try:
        call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    except urllib.error.HTTPError as e:
        if e.code != 409:
            raise
    merge = "application/merge-patch+json"

    def one(i):
        name = f"raw-ds-{i}"
        call("POST", f"{GROUP}/namespaces/{namespace}/datastores", datastore(name, namespace))
        call("PATCH", f"{GROUP}/namespaces/{namespace}/datastores/{name}",
             {"metadata": {"finalizers": ["bench.amlidentity.io/raw"]}}, merge)
        call("POST", f"/api/v1/namespaces/{namespace}/secrets", {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-access"},
            "stringData": {"AZURE_STORAGE_SAS_TOKEN": "sv=2025-07-05&se=2030-01-01T00%3A00%3A00Z&sig=x"}})
        call("PATCH", f"{GROUP}/namespaces/{namespace}/datastores/{name}/status", {"status": {
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "SasIssued", "message": "bench",
                            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]}}, merge)

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))
    elapsed = time.monotonic() - started
    print(f"raw client: the same writes for {n} objects in {elapsed:.1f} s ({n / elapsed:.1f}/s)")
    # Let the namespace go: the finalizers were only there to cost what the operator's cost.
    for i in range(n):
        call("PATCH", f"{GROUP}/namespaces/{namespace}/datastores/raw-ds-{i}",
             {"metadata": {"finalizers": None}}, merge)
    call("DELETE", f"/api/v1/namespaces/{namespace}")
    return n / elapsed


if __name__ == "__main__":
    mode, n = sys.argv[1], int(sys.argv[2])
    rate = operator(n, int(sys.argv[3])) if mode == "operator" else raw(n)
    with open(os.environ.get("BENCH_RESULT", "/dev/null"), "a") as out:
        out.write(f"{mode} {rate}\n")
