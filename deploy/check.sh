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
python3 observability/prometheusrule.py --check

# The optional Prometheus Operator component renders on top of the production overlay (its
# CRD kinds have no schema in kubernetes-validate: rendered, not validated).
# kustomize takes only relative paths: a throwaway overlay beside the real ones.
with_operator="$(mktemp -d k8s/.check-operator.XXXXXX)"
trap 'rm -rf "$tmp" "$with_operator"' EXIT
cat > "$with_operator/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../overlays/production
components:
  - ../components/prometheus-operator
YAML
kubectl kustomize "$with_operator" > "$tmp/with-operator.yaml"
for kind in ServiceMonitor PrometheusRule; do
  grep -q "^kind: $kind$" "$tmp/with-operator.yaml" || { echo "component prometheus-operator: no $kind" >&2; exit 1; }
done
echo "component prometheus-operator: $(grep -c '^kind:' "$tmp/with-operator.yaml") objects render"

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
