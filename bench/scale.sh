#!/usr/bin/env bash
# Benchmark (not a test): N tenants against the local API server and AWS emulator.
# Measures time until all are Ready, the operator's memory (RSS), AWS calls per tenant to
# converge, and AWS calls per tenant per no-op resync.
#   [BENCH_WRAP="heaptrack -o FILE"] bench/scale.sh [N=1000] [RESYNC=60s] [ROLES=0] [EVENTS=off]
#     BENCH_WRAP: a command the operator runs under (a heap profiler); RSS is then the wrapper's
#     BENCH_PROFILE: `dev` runs the debug build, whose symbols a profiler can name (default release)
#     BENCH_BIN: run this operator binary instead of building one (to compare two builds)
#     ROLES: the share of tenants that also get a workload role (spec.access), 0 to 1
#     BENCH_REPLICAS=1: the policy gives every tenant a replica in eu-west-1 (replication.required)
#     EVENTS: `off` measures a full polled resync; `cloudtrail` runs the operator with drift
#       events (polled every 10 s, audit resync 6h), measures the steady state's AWS calls over
#       STEADY seconds (default 120) and the time to restore a bucket policy deleted behind its
#       back
# Prints Ready tenants and memory every 10 s while converging. Counts Ready tenants from the
# operator's own metrics, so the benchmark's polling is not a load on the API server.
set -euo pipefail
N=${1:-1000}
RESYNC=${2:-60s}
ROLES=${3:-0}
EVENTS=${4:-off}
STEADY=${STEADY:-120}
source "$(dirname "$0")/../scripts/testenv.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$TSO_CACHE/target}
testenv_install
PROFILE=${BENCH_PROFILE:-release}
if [ -n "${BENCH_BIN:-}" ]; then
  BIN=$BENCH_BIN
else
  (cd "$TSO_ROOT" && cargo build --profile "$PROFILE" --locked --quiet)
  BIN=$CARGO_TARGET_DIR/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")/tenant-storage-operator
fi
OP_PID=
# The operator and, under BENCH_WRAP, the profiler's children: by PID, depth first.
kill_tree() { local c; for c in $(pgrep -P "$1"); do kill_tree "$c"; done; kill "$1" 2>/dev/null; }
cleanup() { [ -n "$OP_PID" ] && kill_tree "$OP_PID"; testenv_down; }
trap cleanup EXIT
testenv_up
cd "$TSO_ROOT"
kubectl apply -f crds/ >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
kubectl apply -f examples/10-residencypolicy-eu.yaml >/dev/null
if [ "${BENCH_REPLICAS:-0}" = 1 ]; then
  kubectl patch residencypolicy eu --type merge >/dev/null -p \
    '{"spec":{"replication":{"regions":["eu-west-1"],"defaultRegion":"eu-west-1","required":true}}}'
fi
kubectl create namespace bench >/dev/null
kubectl label namespace bench tenancy.dev/jurisdiction=eu >/dev/null
log "creating $N TenantStorages"
python3 - "$N" "$ROLES" > "$TSO_RUN/tenants.yaml" <<'PY'
import sys
n, share = int(sys.argv[1]), float(sys.argv[2])
for i in range(n):
    # Spread evenly: tenant i has a role when the running share falls behind the target.
    access = "\n  access:\n    serviceAccounts: [app]" if int((i + 1) * share) > int(i * share) else ""
    print(f"---\napiVersion: storage.tenancy.dev/v1alpha1\nkind: TenantStorage\nmetadata:\n  name: t{i:05d}\n  namespace: bench\nspec:\n  policyRef: eu{access}")
PY
kubectl apply -f "$TSO_RUN/tenants.yaml" >/dev/null

PORT=$(free_port)
scrape() { curl -s "http://127.0.0.1:$PORT/metrics"; }
sum() { scrape | awk -v pat="$1" '$0 ~ pat && $0 !~ /^#/ {s += $NF} END {printf "%d", s}'; }
ready_count() { sum '^tenant_storage_tenants[{]ready="True"'; }
rss() { awk '/VmRSS|VmHWM/ {printf "%s %d MiB  ", $1, $2/1024}' "/proc/$OP_PID/status"; }

log "starting the operator (release build, resync $RESYNC)"
T0=$(date +%s.%N)
case "$EVENTS" in
  off) EVENT_ARGS=(--drift-events off) ;;
  cloudtrail) EVENT_ARGS=(--drift-events cloudtrail --drift-events-interval 10s --drift-events-lookback 60s --audit-period 6h) ;;
  *) echo "EVENTS must be off or cloudtrail, not $EVENTS" >&2; exit 2 ;;
esac
${BENCH_WRAP:-} "$BIN" run --cluster-id bench --bucket-prefix bench --namespace bench --resync-period "$RESYNC" \
  "${EVENT_ARGS[@]}" --oidc-provider-arn arn:aws:iam::000000000000:oidc-provider/oidc.bench.local/id/BENCH \
  --metrics-addr "127.0.0.1:$PORT" > "$TSO_RUN/operator.log" 2>&1 &
OP_PID=$!
next=0
while [ "$(ready_count)" -lt "$N" ]; do
  if [ "$SECONDS" -ge "$next" ]; then
    log "$(ready_count) of $N Ready  $(rss 2>/dev/null)"
    next=$((SECONDS + 10))
  fi
  sleep 1
done
T1=$(date +%s.%N)
W=$(sum 'aws_calls_total.*mutating="true"'); R=$(sum 'aws_calls_total.*mutating="false"')
echo "tenants:                 $N"
echo "all Ready after:         $(python3 -c "print(f'{$T1-$T0:.1f} s')")"
echo "memory at convergence:   $(rss)"
echo "AWS calls to converge:   $W mutating, $R reads ($(python3 -c "print(f'{$W/$N:.1f} mutating, {$R/$N:.1f} reads')") per tenant)"
calls_by_operation() { # per tenant, since the scrape in $1
  scrape | python3 "$TSO_ROOT/bench/calls-by-operation.py" "$N" "$1"
}
scrape | grep '^tenant_storage_aws_calls_total{' > "$TSO_RUN/calls-0.txt" || true
echo "per tenant, by operation, to converge:"
: > "$TSO_RUN/calls-empty.txt"
calls_by_operation "$TSO_RUN/calls-empty.txt"
if [ "$EVENTS" = cloudtrail ]; then
  log "steady state with drift events: calls over $STEADY s"
  sleep "$STEADY"
  W2=$(sum 'aws_calls_total.*mutating="true"'); R2=$(sum 'aws_calls_total.*mutating="false"')
  echo "steady state ($STEADY s): $((W2 - W)) mutating, $((R2 - R)) reads: $(python3 -c "print(f'{($R2-$R)/$N*600/$STEADY:.3f}')") reads per tenant per 10 minutes"
  echo "per tenant, by operation, in the steady state:"
  calls_by_operation "$TSO_RUN/calls-0.txt"
  BUCKET=$(kubectl -n bench get tenantstorage t00000 -o jsonpath='{.status.bucketName}')
  AWS=("$TSO_VENV/bin/aws" --endpoint-url "$TSO_AWS_ENDPOINT_URL" --ca-bundle "$AWS_CA_BUNDLE" --region eu-central-1)
  # As someone else: the operator signs as the emulator's root with key `test`, and knows its
  # own writes by that key; a 12-digit key is the same account's root under another key.
  AWS_ACCESS_KEY_ID=000000000000 "${AWS[@]}" s3api delete-bucket-policy --bucket "$BUCKET"
  D0=$(date +%s.%N)
  RESTORED="not restored within 300 s"
  for _ in $(seq 1 1500); do
    if "${AWS[@]}" s3api get-bucket-policy --bucket "$BUCKET" >/dev/null 2>&1; then
      D1=$(date +%s.%N)
      RESTORED="restored after $(python3 -c "print(f'{$D1-$D0:.1f} s')")"
      break
    fi
    sleep 0.2
  done
  echo "bucket policy deleted behind the operator's back: $RESTORED"
  echo "memory after:            $(rss)"
  exit 0
fi
REC0=$(sum 'reconciles_total.*result="ok"')
log "waiting for one full resync of every tenant"
while [ "$(sum 'reconciles_total.*result="ok"')" -lt $((REC0 + N)) ]; do sleep 1; done
REC1=$(sum 'reconciles_total.*result="ok"')
W2=$(sum 'aws_calls_total.*mutating="true"'); R2=$(sum 'aws_calls_total.*mutating="false"')
echo "no-op resync:            $((W2 - W)) mutating, $(python3 -c "print(f'{($R2-$R)/($REC1-$REC0):.2f}')") reads per tenant reconcile"
echo "memory after resync:     $(rss)"
echo "per tenant, by operation, in a no-op resync:"
calls_by_operation "$TSO_RUN/calls-0.txt"
