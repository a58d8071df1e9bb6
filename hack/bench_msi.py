#!/usr/bin/env python3
"""Latency and throughput of the managed identity endpoint, from its token cache.

  bench_msi.py MSI_ENDPOINT MSI_SECRET CLIENT_ID EMULATOR_URL CA_PEM [SEQUENTIAL] [CONCURRENT_TOTAL] [THREADS]

Prints: one cold burst (many callers, a resource nobody asked for yet: how many Entra requests and
how long the first answer took), then sequential requests on one connection (p50/p99/max), then
concurrent ones (requests per second, p50/p99), with the Entra requests each phase made, counted
at the emulator. The client shares the machine with the operator: figures are a floor.
"""
import http.client
import json
import ssl
import sys
import threading
import time
import urllib.parse
import urllib.request


def entra_requests(url, ca):
    context = ssl.create_default_context(cafile=ca)
    with urllib.request.urlopen(f"{url}/_emulator/counters", context=context, timeout=10) as r:
        return json.load(r).get("entra.token", 0)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


class Client:
    def __init__(self, endpoint, secret, client_id):
        parsed = urllib.parse.urlsplit(endpoint)
        self.connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        self.path, self.secret, self.client_id = parsed.path, secret, client_id

    def ask(self, resource):
        query = urllib.parse.urlencode({"api-version": "2017-09-01", "resource": resource, "clientid": self.client_id})
        started = time.perf_counter()
        self.connection.request("GET", f"{self.path}?{query}", headers={"secret": self.secret, "Metadata": "true"})
        response = self.connection.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise SystemExit(f"the endpoint answered {response.status}: {json.loads(body).get('error_description')}")
        return elapsed


def run_threads(endpoint, secret, client_id, resource, threads, each):
    latencies, lock = [], threading.Lock()

    def work():
        client = Client(endpoint, secret, client_id)
        mine = [client.ask(resource) for _ in range(each)]
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return latencies, time.perf_counter() - started


def main():
    endpoint, secret, client_id, emulator, ca = sys.argv[1:6]
    sequential = int(sys.argv[6]) if len(sys.argv) > 6 else 2000
    total = int(sys.argv[7]) if len(sys.argv) > 7 else 20000
    threads = int(sys.argv[8]) if len(sys.argv) > 8 else 32
    ms = lambda s: f"{s * 1000:.2f} ms"

    # A resource nobody asked for yet: every caller waits for one Entra request.
    before = entra_requests(emulator, ca)
    cold, wall = run_threads(endpoint, secret, client_id, "https://management.azure.com/", 100, 1)
    print(f"msi cold: 100 callers at once for a new resource: {entra_requests(emulator, ca) - before} Entra request(s), "
          f"slowest answer {ms(max(cold))}, fastest {ms(min(cold))}")

    resource = "https://storage.azure.com/"
    client = Client(endpoint, secret, client_id)
    client.ask(resource)
    before = entra_requests(emulator, ca)
    latencies = [client.ask(resource) for _ in range(sequential)]
    print(f"msi sequential: {sequential} requests on one connection: p50 {ms(percentile(latencies, 0.5))}, "
          f"p99 {ms(percentile(latencies, 0.99))}, max {ms(max(latencies))}, "
          f"{entra_requests(emulator, ca) - before} Entra requests")

    before = entra_requests(emulator, ca)
    latencies, wall = run_threads(endpoint, secret, client_id, resource, threads, total // threads)
    done = len(latencies)
    print(f"msi concurrent: {done} requests from {threads} connections in {wall:.1f} s: {done / wall:.0f}/s, "
          f"p50 {ms(percentile(latencies, 0.5))}, p99 {ms(percentile(latencies, 0.99))}, "
          f"{entra_requests(emulator, ca) - before} Entra requests")


main()
