"""Renders and lints the Helm chart with Helm itself (helm-python-sdk embeds Helm 4), for the tests.

  chart.py render CHART NAME NAMESPACE VALUES_JSON  -> {"manifests": {template: text}} or {"error": ...}
  chart.py lint CHART VALUES_JSON KUBE_VERSION      -> {"messages": [...], "errors": [...]}
"""
import json
import sys

import helm_python as helm


def main():
    command, chart_dir = sys.argv[1], sys.argv[2]
    if command == "render":
        name, namespace, values = sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
        chart = helm.Chart.load(chart_dir)
        try:
            manifests = chart.render(values, name=name, namespace=namespace, is_install=True)
        except helm.HelmError as e:
            print(json.dumps({"error": str(e)}))
            return
        print(json.dumps({"manifests": manifests}))
    elif command == "lint":
        values, kube_version = json.loads(sys.argv[3]), sys.argv[4]
        report = helm.lint(chart_dir, values=values, strict=True, kube_version=kube_version)
        print(json.dumps(report, default=str))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
