#!/usr/bin/env bash
# Offline checks of everything under deploy/: each kustomize overlay validates strictly
# against the Kubernetes schemas, the alert rules and every dashboard query parse as PromQL.
# Needs kubectl (kustomize built in), kubernetes-validate (PyPI) and promtool (Debian's
# prometheus). .ci/run installs the last two.
set -euo pipefail
cd "$(dirname "$0")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

for overlay in k8s/overlays/*/; do
  name="$(basename "$overlay")"
  kubectl kustomize "$overlay" > "$tmp/$name.yaml"
  kubernetes-validate --strict --quiet "$tmp/$name.yaml"
  echo "k8s overlay $name: $(grep -c '^kind:' "$tmp/$name.yaml") objects valid"
done

promtool check rules observability/alerts.yaml

# Every dashboard query as a recording rule, so promtool parses it.
python3 - "$tmp/dashboard-rules.yaml" <<'PY'
import json, sys
dashboard = json.load(open("observability/grafana-dashboard.json"))
exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
with open(sys.argv[1], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, expr in enumerate(exprs):
        out.write(f"      - record: trickle:dashboard_query_{i}\n        expr: {json.dumps(expr)}\n")
print(f"dashboard: {len(exprs)} queries")
PY
promtool check rules "$tmp/dashboard-rules.yaml"
