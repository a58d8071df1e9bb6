#!/usr/bin/env python3
"""Reads `kubectl get aml -A -o json` on stdin.

--pending: prints how many objects have not reported on their current generation yet.
otherwise: prints every object's conditions, one line each.
"""
import json
import sys

items = json.load(sys.stdin)["items"]
if "--pending" in sys.argv:
    print(sum(1 for i in items if i.get("status", {}).get("observedGeneration") != i["metadata"]["generation"]))
    sys.exit(0)
for i in items:
    meta = i["metadata"]
    where = meta.get("namespace", "cluster")
    conditions = i.get("status", {}).get("conditions", [])
    if not conditions:
        print(f"{i['kind']}/{meta['name']} [{where}] no conditions yet")
    for c in conditions:
        print(f"{i['kind']}/{meta['name']} [{where}] {c['type']}={c['status']} {c['reason']}: {c['message']}")
