"""Runs a command the way a pod with `envFrom: secretRef` runs it: its environment is the keys of
the Secret read from stdin (kubectl get secret -o json), plus what the image adds (--env K=V: its
trust store, its DNS), and nothing of the caller's. Keys that are not environment names (the
`<audience>.token` files a pod mounts as a volume) are left out."""
import base64
import json
import os
import re
import sys

args = sys.argv[1:]
split = args.index("--")
extra, command = args[:split], args[split + 1 :]
secret = json.load(sys.stdin)
env = {
    key: base64.b64decode(value).decode()
    for key, value in secret.get("data", {}).items()
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key)
}
for flag, pair in zip(extra[::2], extra[1::2]):
    assert flag == "--env", f"expected --env K=V, got {flag}"
    key, _, value = pair.partition("=")
    env[key] = value
sys.stdout.flush()
os.execve(command[0], command, env)
