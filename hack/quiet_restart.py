#!/usr/bin/env python3
"""What a restart of a settled operator cost, from the emulator's request counters and the
resourceVersions of what the operator writes.

  quiet_restart.py snapshot EMULATOR_URL CA_PEM > before.json
  quiet_restart.py compare before.json EMULATOR_URL CA_PEM

`compare` prints one line: ARM writes, tokens minted for pods (Entra requests by any client that is
not one of the operator's own credentials), ACR exchanges, and writes to the Secrets, ConfigMaps and
ServiceAccounts of the operator's namespaces; and how often the operator signed in again (its token
cache lives in memory, so a new process signs in once per credential and resource).
"""
import json
import ssl
import subprocess
import sys
import urllib.request

KINDS = "secrets,configmaps,serviceaccounts"


def counters(url, ca):
    context = ssl.create_default_context(cafile=ca)
    with urllib.request.urlopen(f"{url}/_emulator/counters", context=context, timeout=10) as r:
        return json.load(r)


def kubectl_json(*args):
    return json.loads(subprocess.check_output(["kubectl", *args, "-o", "json"]))


def versions():
    items = kubectl_json("get", KINDS, "-A")["items"]
    return {
        f"{i['kind']}/{i['metadata'].get('namespace', '')}/{i['metadata']['name']}": i["metadata"]["resourceVersion"]
        for i in items
    }


def operator_clients():
    clients = set()
    for kind in ("azurecredentials", "clusterazurecredentials"):
        for item in kubectl_json("get", kind, "-A")["items"]:
            spec = item["spec"]
            for source in ("servicePrincipal", "workloadIdentity", "managedIdentity"):
                client = spec.get(source, {}).get("clientId")
                if client:
                    clients.add(client.lower())
    return clients


def delta(before, after, keep):
    return sum(after.get(k, 0) - before.get(k, 0) for k in after if keep(k))


def main():
    if sys.argv[1] == "snapshot":
        json.dump({"counters": counters(sys.argv[2], sys.argv[3]), "versions": versions()}, sys.stdout)
        return
    before = json.load(open(sys.argv[2]))
    after_counters = counters(sys.argv[3], sys.argv[4])
    after_versions = versions()
    ours = operator_clients()

    def entra(key, own):
        if not key.startswith("entra.token:"):
            return False
        client = key.split(":")[1].lower()
        return (client in ours) == own

    arm_writes = delta(before["counters"], after_counters, lambda k: k.split(".")[:2] in (["arm", "PUT"], ["arm", "PATCH"], ["arm", "DELETE"]))
    pod_tokens = delta(before["counters"], after_counters, lambda k: entra(k, False) or k.startswith("imds.token:"))
    exchanges = delta(before["counters"], after_counters, lambda k: k.startswith("acr.exchange:"))
    sign_ins = delta(before["counters"], after_counters, lambda k: entra(k, True))
    rewritten = sorted(k for k, v in before["versions"].items() if after_versions.get(k, v) != v)
    print(
        f"after a restart: {arm_writes} ARM writes, {pod_tokens} tokens minted for pods, "
        f"{exchanges} ACR exchanges, {len(rewritten)} Secret/ConfigMap/ServiceAccount writes "
        f"(the operator signed in again with {sign_ins} token requests)"
    )
    for k in rewritten:
        print(f"  rewritten: {k}")


if __name__ == "__main__":
    main()
