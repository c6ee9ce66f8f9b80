#!/usr/bin/env bash
# Checks the operators' ecosystem files under deploy/:
#   - deploy/prometheus/qyzmet-alerts.yml       promtool check rules
#   - deploy/prometheus/qyzmet-alerts.test.yml  promtool test rules (the rules' unit tests)
#   - deploy/prometheus/prometheus.yml          promtool check config (loads the rules too)
#   - deploy/grafana/qyzmet.json                parses as JSON, and every panel query and
#                                               variable query parses as PromQL
#
#   scripts/check-deploy.sh
#
# Needs promtool — on PATH, or in .qyzmet/tools/bin where scripts/test-tools.sh unpacks it from
# Debian's prometheus package without installing (so no Prometheus daemon is started) — and
# python3. Exits non-zero on the first failure; never skips a check.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PATH="$PWD/.qyzmet/tools/bin:$PATH"

if ! command -v promtool >/dev/null 2>&1; then
    echo "error: promtool not found; run scripts/test-tools.sh (it unpacks promtool from Debian's" >&2
    echo "    prometheus package into .qyzmet/tools/bin), or install that package" >&2
    exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "error: python3 not found (apt-get install --no-install-recommends python3)" >&2
    exit 1
fi

echo "== promtool $(promtool --version 2>&1 | head -n1 | awk '{print $3}')"
promtool check rules deploy/prometheus/qyzmet-alerts.yml
promtool test rules deploy/prometheus/qyzmet-alerts.test.yml
promtool check config deploy/prometheus/prometheus.yml

dashboard=deploy/grafana/qyzmet.json
echo "Checking $dashboard"
python3 -m json.tool "$dashboard" >/dev/null

# The dashboard's PromQL, with Grafana's variables replaced by sample values, written as
# recording rules so that `promtool check rules` parses every expression.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 - "$dashboard" >"$tmp/dashboard-queries.yml" <<'PY'
import json, re, sys

with open(sys.argv[1], encoding="utf-8") as f:
    dash = json.load(f)
if dash.get("schemaVersion", 0) < 36:
    sys.exit(f"{sys.argv[1]}: schemaVersion {dash.get('schemaVersion')} < 36")

def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))

exprs = [t["expr"] for p in panels(dash["panels"]) for t in p.get("targets", []) if t.get("expr")]
for v in dash.get("templating", {}).get("list", []):
    q = v.get("query")
    q = q.get("query") if isinstance(q, dict) else q
    m = re.fullmatch(r"label_values\((.+),\s*\w+\)", q or "")
    if v.get("type") == "query" and m:
        exprs.append(m.group(1))
if not exprs:
    sys.exit(f"{sys.argv[1]}: no queries found")

samples = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h"}
print("groups:\n  - name: dashboard-queries\n    rules:")
for i, e in enumerate(exprs):
    for k, val in samples.items():
        e = e.replace(k, val)
    e = re.sub(r"\$\{?\w+\}?", ".*", e)  # $service, ${pool}, ...: any value
    print(f"      - record: dashboard_query_{i}\n        expr: {json.dumps(e)}")
PY
promtool check rules "$tmp/dashboard-queries.yml" >/dev/null || {
    echo "error: a query in $dashboard is not valid PromQL:" >&2
    promtool check rules "$tmp/dashboard-queries.yml" >&2 || true
    exit 1
}
echo "  SUCCESS: $(grep -c 'record:' "$tmp/dashboard-queries.yml") queries parse"

echo "deploy files OK"
