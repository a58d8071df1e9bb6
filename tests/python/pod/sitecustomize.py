"""The "cluster DNS" of a pod-shaped test process: AMLID_POD_HOSTS (`host=ip:port,...`) sends the
named hosts to local servers, so training code can keep its real URLs (e.g. a vault's
https://my-key-vault.vault.azure.net/) unmodified. Loaded by Python itself from PYTHONPATH."""
import os
import socket

_hosts = {}
for entry in filter(None, os.environ.get("AMLID_POD_HOSTS", "").split(",")):
    name, _, address = entry.partition("=")
    ip, _, port = address.rpartition(":")
    _hosts[name.strip().lower()] = (ip, int(port))

if _hosts:
    _real = socket.getaddrinfo

    def _getaddrinfo(host, port, *args, **kwargs):
        target = _hosts.get(str(host).lower())
        if target is None:
            return _real(host, port, *args, **kwargs)
        return _real(target[0], target[1], *args, **kwargs)

    socket.getaddrinfo = _getaddrinfo
