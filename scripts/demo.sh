#!/usr/bin/env bash
# The demo: a local Kubernetes API server and AWS emulator, the operator running on the
# examples, and what was created on both sides. Installs what it needs on the first run.
# DEMO_KEEP=1 leaves everything running (it prints how to stop it).
set -euo pipefail
source "$(dirname "$0")/testenv.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$TSO_CACHE/target}

testenv_install
log "building the operator"
(cd "$TSO_ROOT" && cargo build --locked --quiet)
BIN=$CARGO_TARGET_DIR/debug/tenant-storage-operator
stop() {
  [ -f "${TSO_RUN:-/nonexistent}/operator.pid" ] && kill "$(cat "$TSO_RUN/operator.pid")" 2>/dev/null
  testenv_down
}
if [ "${DEMO_KEEP:-0}" != 1 ]; then trap stop EXIT; fi
testenv_up
cd "$TSO_ROOT"

log "installing the CRDs and applying examples/"
kubectl apply -f crds/ >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
kubectl apply -f examples/

log "starting the operator as the chart's service account, with the chart's RBAC (logs: $TSO_RUN/operator.log)"
KUBECONFIG=$TSO_KUBECONFIG_OPERATOR "$BIN" run --cluster-id demo --bucket-prefix demo \
  --resync-period 5s --metrics-addr 127.0.0.1:0 \
  --purge-namespace "$TSO_SYSTEM_NAMESPACE" --lease-namespace "$TSO_SYSTEM_NAMESPACE" \
  --oidc-provider-arn arn:aws:iam::000000000000:oidc-provider/oidc.demo.local/id/DEMO \
  > "$TSO_RUN/operator.log" 2>&1 &
echo $! > "$TSO_RUN/operator.pid"
kubectl wait --for=condition=Ready tenantstorages --all -A --timeout=120s

log "Kubernetes side"
kubectl get residencypolicies
kubectl get tenantstorages -A
EVENT_COLUMNS=NAMESPACE:.metadata.namespace,OBJECT:.regarding.name,TYPE:.type,REASON:.reason,MESSAGE:.note
kubectl get events.events.k8s.io -A -o custom-columns="$EVENT_COLUMNS"

log "AWS side"
aws=("$TSO_VENV/bin/aws" --endpoint-url "$TSO_AWS_ENDPOINT_URL" --ca-bundle "$AWS_CA_BUNDLE")
for ts in acme-eu/acme globex-us/globex; do
  ns=${ts%/*}; name=${ts#*/}
  bucket=$(kubectl get ts "$name" -n "$ns" -o jsonpath='{.status.bucketName}')
  region=$(kubectl get ts "$name" -n "$ns" -o jsonpath='{.status.region}')
  key=$(kubectl get ts "$name" -n "$ns" -o jsonpath='{.status.kmsKeyArn}')
  echo "--- $ns/$name: s3://$bucket in $region"
  echo "location:      $("${aws[@]}" s3api head-bucket --bucket "$bucket" --region "$region" --query BucketRegion --output text)"
  echo "encryption:    $("${aws[@]}" s3api get-bucket-encryption --bucket "$bucket" --region "$region" --output json --query 'ServerSideEncryptionConfiguration.Rules[0]' | tr -d ' \n')"
  echo "public access: $("${aws[@]}" s3api get-public-access-block --bucket "$bucket" --region "$region" --output json --query PublicAccessBlockConfiguration | tr -d ' \n')"
  echo "ownership:     $("${aws[@]}" s3api get-bucket-ownership-controls --bucket "$bucket" --region "$region" --query 'OwnershipControls.Rules[0].ObjectOwnership' --output text)"
  echo "versioning:    $("${aws[@]}" s3api get-bucket-versioning --bucket "$bucket" --region "$region" --query Status --output text)"
  echo "tags:          $("${aws[@]}" s3api get-bucket-tagging --bucket "$bucket" --region "$region" --output text --query 'TagSet[].[Key,Value]' | tr '\t\n' '= ')"
  echo "access logs:   $("${aws[@]}" s3api get-bucket-logging --bucket "$bucket" --region "$region" --query 'LoggingEnabled.[TargetBucket,TargetPrefix]' --output text | tr '\t' '/')"
  echo "kms key:       $key ($("${aws[@]}" kms describe-key --key-id "$key" --region "$region" --query KeyMetadata.KeyState --output text), rotation $("${aws[@]}" kms get-key-rotation-status --key-id "$key" --region "$region" --query KeyRotationEnabled --output text))"
  echo "bucket policy statements: $("${aws[@]}" s3api get-bucket-policy --bucket "$bucket" --region "$region" --query Policy --output text | python3 -c 'import json,sys; print(", ".join(s["Sid"] for s in json.load(sys.stdin)["Statement"]))')"
  role=$(kubectl get ts "$name" -n "$ns" -o jsonpath='{.status.access.roleArn}')
  if [ -n "$role" ]; then
    echo "workload role: $role"
    echo "  annotate:    $(kubectl get ts "$name" -n "$ns" -o jsonpath='{.status.access.serviceAccountAnnotation}')"
    echo "  trust:       $("${aws[@]}" iam get-role --role-name "${role##*/}" --output json --query Role.AssumeRolePolicyDocument | tr -d ' \n')"
    echo "  permissions: $("${aws[@]}" iam get-role-policy --role-name "${role##*/}" --policy-name tenant-storage-access --output json --query PolicyDocument | tr -d ' \n')"
  fi
done

log "compliance report (evidence read from AWS now)"
"$BIN" report

log "drift: deleting the EU bucket's policy behind the operator's back"
bucket=$(kubectl get ts acme -n acme-eu -o jsonpath='{.status.bucketName}')
"${aws[@]}" s3api delete-bucket-policy --bucket "$bucket" --region eu-central-1
for _ in $(seq 1 100); do
  "${aws[@]}" s3api get-bucket-policy --bucket "$bucket" --region eu-central-1 >/dev/null 2>&1 && break
  sleep 0.2
done
"${aws[@]}" s3api get-bucket-policy --bucket "$bucket" --region eu-central-1 >/dev/null && echo "bucket policy restored"
for _ in $(seq 1 100); do
  kubectl get events.events.k8s.io -n acme-eu -o custom-columns="$EVENT_COLUMNS" | grep -q DriftCorrected && break
  sleep 0.2
done
kubectl get events.events.k8s.io -n acme-eu -o custom-columns="$EVENT_COLUMNS" | grep -E "^NAMESPACE|DriftCorrected"

if [ "${DEMO_KEEP:-0}" = 1 ]; then
  log "left running: export KUBECONFIG=$KUBECONFIG; stop with: kill \$(cat $TSO_RUN/operator.pid); source scripts/testenv.sh; TSO_RUN=$TSO_RUN testenv_down"
fi
