//! The Helm chart in `charts/tenant-storage-operator`: its CRDs are the generated ones, it lints,
//! renders what the values say, passes checkov but for the documented exceptions, documents
//! every value, and installs into (and uninstalls from) the test API server.
//!
//! Needs `TSO_HELM`, `TSO_CHECKOV` (set by `scripts/testenv.sh`) and, for the install test,
//! `KUBECONFIG` (set by `testenv_up`): run it with `scripts/test.sh`, or
//! `source scripts/testenv.sh; testenv_install; testenv_up; cargo test --test helm`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// checkov findings that are deliberate. Each is skipped by a `checkov.io/skip*` annotation on
/// the Deployment, explained in values.yaml and in docs/helm.md ("checkov").
const DOCUMENTED_SKIPS: &[&str] = &["CKV_K8S_11", "CKV_K8S_15", "CKV_K8S_38", "CKV_K8S_43"];

/// Variables the chart sets that are read by something other than `tenant-storage-operator run`'s
/// flags: the AWS SDK, the log filter, and the pod's namespace for humans and future use.
const NOT_FLAGS: &[&str] = &["AWS_REGION", "RUST_LOG", "POD_NAMESPACE"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    root().join("charts/tenant-storage-operator")
}

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: run the chart tests with scripts/test.sh, or \
             `source scripts/testenv.sh; testenv_install; testenv_up; cargo test --test helm` \
             (testenv_install installs helm and checkov, testenv_up starts the API server)"
        ),
    }
}

fn helm() -> Command {
    Command::new(env("TSO_HELM"))
}

fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    format!("{}{:x}", std::process::id(), nanos % 0xfffff)
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` and returns its output, whatever the exit status.
fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(cmd)))
}

/// Runs `cmd`, fails the test unless it succeeds, and returns its stdout.
fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}\n{}",
        describe(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn template_cmd(sets: &[(&str, &str)]) -> Command {
    let mut cmd = helm();
    cmd.args(["template", "tso", "--namespace", "tso-system"])
        .arg(chart());
    for (k, v) in sets {
        cmd.arg("--set").arg(format!("{k}={v}"));
    }
    cmd
}

/// `helm template` into one JSON value per manifest.
fn render(sets: &[(&str, &str)]) -> Vec<Value> {
    parse_manifests(&run(&mut template_cmd(sets)))
}

fn parse_manifests(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .map(|v| serde_json::to_value(v).expect("manifest as JSON"))
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind)
}

fn get<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    find(docs, kind).unwrap_or_else(|| panic!("no {kind} rendered"))
}

/// The container's plain `value` env entries, and the names of those from a `fieldRef`.
fn container_env(deploy: &Value) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut plain = BTreeMap::new();
    let mut field_refs = BTreeMap::new();
    let env = deploy["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("container env");
    for e in env {
        let name = e["name"].as_str().expect("env name").to_owned();
        if let Some(v) = e["value"].as_str() {
            plain.insert(name, v.to_owned());
        } else {
            let path = e["valueFrom"]["fieldRef"]["fieldPath"]
                .as_str()
                .unwrap_or_else(|| panic!("env {name} is neither a value nor a fieldRef"));
            field_refs.insert(name, path.to_owned());
        }
    }
    (plain, field_refs)
}

#[test]
fn chart_crds_are_identical_to_crds_dir() {
    let list = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect()
    };
    let top = root().join("crds");
    let ours = chart().join("crds");
    let fix = "run `cp crds/*.yaml charts/tenant-storage-operator/crds/`";
    assert_eq!(
        list(&ours),
        list(&top),
        "the chart's crds/ must hold the same files as crds/: {fix}"
    );
    for file in list(&top) {
        let a = std::fs::read(top.join(&file)).expect("read crds/");
        let b = std::fs::read(ours.join(&file)).expect("read chart crds/");
        assert!(
            a == b,
            "charts/tenant-storage-operator/crds/{file} differs from crds/{file}: {fix}"
        );
    }
}

#[test]
fn helm_lint_passes() {
    let out = run(helm()
        .args(["lint", "--strict", "--set", "clusterId=lint"])
        .arg(chart()));
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn template_without_cluster_id_fails_clearly() {
    let out = output(&mut template_cmd(&[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "rendered without clusterId");
    assert!(
        stderr.contains("clusterId is required"),
        "unclear error: {stderr}"
    );

    let out = output(&mut template_cmd(&[
        ("clusterId", "c1"),
        ("logFormat", "xml"),
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "rendered with logFormat=xml");
    assert!(
        stderr.contains("logFormat must be json or text"),
        "{stderr}"
    );
}

#[test]
fn template_defaults_are_hardened() {
    let docs = render(&[("clusterId", "c-defaults")]);
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    let expected: BTreeSet<&str> = [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    .into();
    assert_eq!(kinds, expected, "rendered kinds");
    for d in &docs {
        if !matches!(
            d["kind"].as_str(),
            Some(
                "ClusterRole"
                    | "ClusterRoleBinding"
                    | "ValidatingAdmissionPolicy"
                    | "ValidatingAdmissionPolicyBinding"
            )
        ) {
            assert_eq!(
                d["metadata"]["namespace"], "tso-system",
                "{} {} is not in the release namespace",
                d["kind"], d["metadata"]["name"]
            );
        }
    }

    let deploy = get(&docs, "Deployment");
    assert_eq!(deploy["spec"]["replicas"], 2);
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(pod["serviceAccountName"], "tso-tenant-storage-operator");
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true, "{psc}");
    assert_eq!(psc["runAsUser"], 65532, "{psc}");
    assert_eq!(psc["runAsGroup"], 65532, "{psc}");
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{psc}");
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(pod[key].is_null() || pod[key] == false, "{key}");
    }
    // Spread over nodes and zones, never forced (ScheduleAnyway), when there are replicas.
    let spread = pod["topologySpreadConstraints"]
        .as_array()
        .expect("topologySpreadConstraints");
    let keys: BTreeSet<&str> = spread
        .iter()
        .filter_map(|c| c["topologyKey"].as_str())
        .collect();
    assert_eq!(
        keys,
        ["kubernetes.io/hostname", "topology.kubernetes.io/zone"].into()
    );
    assert!(pod["affinity"]["podAntiAffinity"].is_object());

    let c = &pod["containers"][0];
    assert_eq!(c["args"], json!(["run"]));
    assert_eq!(c["image"], "tenant-storage-operator:0.1.0");
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{sc}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{sc}");
    assert_eq!(sc["runAsNonRoot"], true, "{sc}");
    assert_eq!(sc["runAsUser"], 65532, "{sc}");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{sc}");
    assert!(sc["capabilities"]["add"].is_null(), "{sc}");
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{sc}");
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}})
    );
    assert_eq!(
        c["ports"],
        json!([{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "metrics");
    assert!(c["volumeMounts"].is_null() && pod["volumes"].is_null());

    let (plain, refs) = container_env(deploy);
    let expected: BTreeMap<String, String> = [
        ("TSO_CLUSTER_ID", "c-defaults"),
        ("TSO_BUCKET_PREFIX", "tenant"),
        ("TSO_RESYNC_PERIOD", "10m"),
        ("TSO_RESYNC_RATE", "20"),
        ("TSO_DRIFT_EVENTS", "cloudtrail"),
        ("TSO_DRIFT_EVENTS_INTERVAL", "1m"),
        ("TSO_DRIFT_EVENTS_LOOKBACK", "15m"),
        ("TSO_AUDIT_PERIOD", "6h"),
        ("TSO_MAX_CONCURRENT_RECONCILES", "16"),
        ("TSO_METRICS_ADDR", "0.0.0.0:8080"),
        ("TSO_LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
        ("TSO_LEADER_ELECTION", "true"),
        ("TSO_LEASE_NAMESPACE", "tso-system"),
        ("TSO_LEASE_NAME", "tso-tenant-storage-operator"),
        ("TSO_PURGE_NAMESPACE", "tso-system"),
        (
            "TSO_PURGE_SERVICE_ACCOUNT",
            "tso-tenant-storage-operator-purge",
        ),
        ("TSO_PURGE_IMAGE", "tenant-storage-operator:0.1.0"),
        (
            "TSO_EXPORT_SERVICE_ACCOUNT",
            "tso-tenant-storage-operator-export",
        ),
        ("TSO_OIDC_AUDIENCE", "sts.amazonaws.com"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(plain, expected, "env with default values");
    assert_eq!(refs["POD_NAME"], "metadata.name");
    assert_eq!(refs["POD_NAMESPACE"], "metadata.namespace");

    let pdb = get(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let svc = get(&docs, "Service");
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(svc["spec"]["ports"][0]["port"], 8080);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
    let sa = get(&docs, "ServiceAccount");
    assert!(sa["metadata"]["annotations"].is_null(), "{sa}");
    assert_eq!(sa["automountServiceAccountToken"], true);
    for job in ["purge", "export"] {
        let name = format!("tso-tenant-storage-operator-{job}");
        let sa = docs
            .iter()
            .find(|d| d["kind"] == "ServiceAccount" && d["metadata"]["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no ServiceAccount {name}"));
        assert!(sa["metadata"]["annotations"].is_null(), "{sa}");
    }
}

#[test]
fn template_carries_every_value() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let docs = render(&[
        ("clusterId", "prod-eu-1"),
        ("bucketPrefix", "acme"),
        ("resyncPeriod", "5m"),
        ("maxConcurrentReconciles", "32"),
        ("namespaces", "{team-a,team-b}"),
        ("aws.region", "eu-central-1"),
        ("aws.endpointUrl", "https://s3.eu-central-1.amazonaws.com"),
        ("aws.s3ForcePathStyle", "true"),
        ("aws.caBundle.configMapName", "corp-ca"),
        ("aws.caBundle.key", "ca.pem"),
        ("logFormat", "text"),
        ("logLevel", "debug"),
        ("leaderElection.leaseName", "tso-leader"),
        ("replicas", "1"),
        ("image.repository", "registry.example/tso"),
        ("image.digest", &digest),
        (
            "serviceAccount.irsaRoleArn",
            "arn:aws:iam::123456789012:role/tso",
        ),
        ("metrics.serviceMonitor.enabled", "true"),
        ("networkPolicy.enabled", "false"),
        ("priorityClassName", "system-cluster-critical"),
        (
            "access.oidcProviderArn",
            "arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-central-1.amazonaws.com/id/ABC",
        ),
        ("access.oidcAudience", "sts.example"),
        (
            "access.adminPrincipalArns",
            "{arn:aws:iam::123456789012:role/break-glass}",
        ),
        (
            "purge.irsaRoleArn",
            "arn:aws:iam::123456789012:role/tso-purge",
        ),
        (
            "export.irsaRoleArn",
            "arn:aws:iam::123456789012:role/tso-export",
        ),
    ]);
    let deploy = get(&docs, "Deployment");
    let (plain, _) = container_env(deploy);
    for (k, v) in [
        ("TSO_CLUSTER_ID", "prod-eu-1"),
        ("TSO_BUCKET_PREFIX", "acme"),
        ("TSO_RESYNC_PERIOD", "5m"),
        ("TSO_MAX_CONCURRENT_RECONCILES", "32"),
        ("TSO_NAMESPACES", "team-a,team-b"),
        ("AWS_REGION", "eu-central-1"),
        (
            "TSO_AWS_ENDPOINT_URL",
            "https://s3.eu-central-1.amazonaws.com",
        ),
        ("TSO_S3_FORCE_PATH_STYLE", "true"),
        ("AWS_CA_BUNDLE", "/etc/tenant-storage-operator/ca/ca.pem"),
        ("TSO_LOG_FORMAT", "text"),
        ("RUST_LOG", "debug"),
        ("TSO_LEASE_NAME", "tso-leader"),
        (
            "TSO_OIDC_PROVIDER_ARN",
            "arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-central-1.amazonaws.com/id/ABC",
        ),
        ("TSO_OIDC_AUDIENCE", "sts.example"),
        // The Jobs' roles are always admitted to tenant buckets.
        (
            "TSO_ADMIN_PRINCIPAL_ARNS",
            "arn:aws:iam::123456789012:role/break-glass,arn:aws:iam::123456789012:role/tso-purge,arn:aws:iam::123456789012:role/tso-export",
        ),
        (
            "TSO_EXPORT_PRINCIPAL_ARN",
            "arn:aws:iam::123456789012:role/tso-export",
        ),
        (
            "TSO_OPERATOR_ROLE_ARN",
            "arn:aws:iam::123456789012:role/tso",
        ),
    ] {
        assert_eq!(plain.get(k).map(String::as_str), Some(v), "env {k}");
    }
    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], format!("registry.example/tso@{digest}"));
    assert_eq!(
        c["volumeMounts"],
        json!([{"name": "ca-bundle", "mountPath": "/etc/tenant-storage-operator/ca", "readOnly": true}])
    );
    assert_eq!(
        pod["volumes"],
        json!([{"name": "ca-bundle", "configMap": {"name": "corp-ca", "items": [{"key": "ca.pem", "path": "ca.pem"}]}}])
    );
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(deploy["spec"]["replicas"], 1);
    assert!(pod["topologySpreadConstraints"].is_null() && pod["affinity"].is_null());
    assert!(
        find(&docs, "PodDisruptionBudget").is_none(),
        "no PDB for one replica"
    );
    assert!(find(&docs, "NetworkPolicy").is_none());
    // With a digest, the image-digest finding is no longer skipped.
    let annotations = deploy["metadata"]["annotations"].to_string();
    assert!(!annotations.contains("CKV_K8S_43"), "{annotations}");
    let sa = get(&docs, "ServiceAccount");
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/tso"
    );
    for job in ["purge", "export"] {
        let name = format!("tso-tenant-storage-operator-{job}");
        let sa = docs
            .iter()
            .find(|d| d["kind"] == "ServiceAccount" && d["metadata"]["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no ServiceAccount {name}"));
        assert_eq!(
            sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
            format!("arn:aws:iam::123456789012:role/tso-{job}")
        );
    }
    let sm = get(&docs, "ServiceMonitor");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");

    // A Secret instead of a ConfigMap; both at once is refused.
    let docs = render(&[("clusterId", "c1"), ("aws.caBundle.secretName", "corp-ca")]);
    let pod = &get(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["secret"],
        json!({"secretName": "corp-ca", "items": [{"key": "ca-bundle.pem", "path": "ca-bundle.pem"}]})
    );
    let out = output(&mut template_cmd(&[
        ("clusterId", "c1"),
        ("aws.caBundle.secretName", "a"),
        ("aws.caBundle.configMapName", "b"),
    ]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not both"));
}

/// Every variable the chart gives the container is one the operator reads: a misspelt or
/// not-yet-implemented flag would otherwise be ignored without a word.
#[test]
fn chart_env_names_are_operator_flags() {
    let help =
        run(Command::new(env!("CARGO_BIN_EXE_tenant-storage-operator")).args(["run", "--help"]));
    let docs = render(&[("clusterId", "c1"), ("aws.region", "eu-west-1")]);
    let (plain, refs) = container_env(get(&docs, "Deployment"));
    for name in plain.keys().chain(refs.keys()) {
        if NOT_FLAGS.contains(&name.as_str()) {
            continue;
        }
        assert!(
            help.contains(&format!("[env: {name}=")),
            "the chart sets {name}, which `tenant-storage-operator run` does not read:\n{help}"
        );
    }
}

fn checkov(manifests: &str, what: &str) -> Value {
    let dir = std::env::temp_dir().join(format!("tso-helm-checkov-{}", unique()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("rendered.yaml"), manifests).expect("write manifests");
    // --skip-download: no calls to the vendor's platform; the checks are all local.
    let out = output(Command::new(env("TSO_CHECKOV")).arg("-d").arg(&dir).args([
        "--framework",
        "kubernetes",
        "--quiet",
        "--compact",
        "--skip-download",
        "-o",
        "json",
    ]));
    std::fs::remove_dir_all(&dir).ok();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "checkov ({what}) printed no JSON report ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // One framework: an object; several: a list of them.
    let report = match report {
        Value::Array(mut v) => v.remove(0),
        v => v,
    };
    let failed: Vec<String> = report["results"]["failed_checks"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| format!("{} {} on {}", c["check_id"], c["check_name"], c["resource"]))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        failed.is_empty(),
        "checkov ({what}) failed checks: fix them, or explain them in values.yaml and \
         docs/helm.md and skip them with a checkov.io/skip annotation:\n{}",
        failed.join("\n")
    );
    assert!(
        out.status.success(),
        "checkov ({what}) exited {}",
        out.status
    );
    let passed = report["summary"]["passed"].as_u64().unwrap_or(0);
    assert!(
        passed > 50,
        "checkov ({what}) checked almost nothing: {report}"
    );
    report
}

#[test]
fn checkov_finds_nothing_undocumented() {
    let docs_md = std::fs::read_to_string(root().join("docs/helm.md")).expect("docs/helm.md");
    let values = std::fs::read_to_string(chart().join("values.yaml")).expect("values.yaml");
    for id in DOCUMENTED_SKIPS {
        assert!(docs_md.contains(id), "docs/helm.md does not explain {id}");
        assert!(values.contains(id), "values.yaml does not explain {id}");
    }
    let digest = format!("sha256:{}", "cd".repeat(32));
    for (what, sets) in [
        ("defaults", vec![("clusterId", "c1")]),
        (
            "every option",
            vec![
                ("clusterId", "c1"),
                ("image.digest", digest.as_str()),
                ("aws.caBundle.secretName", "corp-ca"),
                ("serviceAccount.irsaRoleArn", "arn:aws:iam::1:role/x"),
                ("metrics.serviceMonitor.enabled", "true"),
            ],
        ),
        ("one replica", vec![("clusterId", "c1"), ("replicas", "1")]),
    ] {
        let manifests = run(&mut template_cmd(&sets));
        let report = checkov(&manifests, what);
        let skipped: BTreeSet<String> = report["results"]["skipped_checks"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["check_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for id in &skipped {
            assert!(
                DOCUMENTED_SKIPS.contains(&id.as_str()),
                "checkov ({what}) skipped {id}, which is not in the documented skip list"
            );
        }
    }
}

/// Values that are Kubernetes objects copied into the pod spec as they are.
const PASS_THROUGH: &[&str] = &["resources", "podSecurityContext", "securityContext"];

/// Dotted paths of every leaf of values.yaml (scalars, lists, and empty maps).
fn leaves(prefix: &str, v: &serde_yaml::Value, out: &mut Vec<String>) {
    match v {
        serde_yaml::Value::Mapping(m) if !m.is_empty() => {
            for (k, v) in m {
                let k = k.as_str().expect("string keys in values.yaml");
                let path = if prefix.is_empty() {
                    k.to_owned()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&path, v, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

#[test]
fn every_value_is_documented() {
    let values: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(chart().join("values.yaml")).expect("values.yaml"),
    )
    .expect("values.yaml parses");
    let mut paths = Vec::new();
    leaves("", &values, &mut paths);
    assert!(paths.len() > 20, "{paths:?}");
    let docs = std::fs::read_to_string(root().join("docs/helm.md")).expect("docs/helm.md");
    let table_rows: Vec<&str> = docs.lines().filter(|l| l.starts_with('|')).collect();
    let documented = |p: &str| {
        let cell = format!("`{p}`");
        table_rows.iter().any(|row| row.contains(&cell))
    };
    let missing: Vec<&String> = paths
        .iter()
        .filter(|p| {
            // Kubernetes objects passed through as a whole are documented as a whole.
            let whole = PASS_THROUGH
                .iter()
                .any(|o| p.starts_with(&format!("{o}.")) && documented(o));
            !whole && !documented(p)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "values missing from docs/helm.md's configuration table: {missing:?}"
    );
}

fn kubectl() -> Command {
    env("KUBECONFIG");
    Command::new("kubectl")
}

fn get_json(args: &[&str]) -> Value {
    let out = run(kubectl().arg("get").args(args).args(["-o", "json"]));
    serde_json::from_str(&out).expect("kubectl JSON")
}

/// Uninstalls the release if the test fails half-way, so the API server is left tidy.
struct Release {
    name: String,
    ns: String,
    installed: bool,
}

impl Drop for Release {
    fn drop(&mut self) {
        if self.installed {
            let _ = helm()
                .args(["uninstall", &self.name, "--namespace", &self.ns])
                .output();
        }
    }
}

fn assert_no_wildcard(obj: &Value) {
    let rules = obj["rules"].to_string();
    assert!(
        !rules.contains('*'),
        "{} {} has a wildcard: {rules}",
        obj["kind"],
        obj["metadata"]["name"]
    );
}

#[test]
fn install_and_uninstall_on_api_server() {
    env("KUBECONFIG");
    let id = unique();
    let ns = format!("helm-{id}");
    let mut release = Release {
        name: format!("tso-{id}"),
        ns: ns.clone(),
        installed: false,
    };
    let name = format!("{}-tenant-storage-operator", release.name);
    run(kubectl().args(["create", "namespace", &ns]));
    release.installed = true;
    // The API server runs no kubelet: pods never start, so nothing is waited for but hooks
    // (--wait=hookOnly is Helm 4's spelling of --wait=false). If the CRDs exist already, Helm
    // leaves them as they are.
    let out = run(helm()
        .args(["install", &release.name])
        .arg(chart())
        .args(["--namespace", &ns, "--wait=hookOnly", "--timeout", "60s"])
        .args(["--set", &format!("clusterId=c{id}")])
        .args([
            "--set",
            "serviceAccount.irsaRoleArn=arn:aws:iam::123456789012:role/tenant-storage-operator",
        ])
        // Bound to no namespace: concurrent tests must not meet this release's admission policy.
        .args([
            "--set",
            &format!("admissionPolicy.namespaceSelector.matchLabels.tso-helm-release=r{id}"),
        ])
        // The guard binds every namespace and admits this release's service accounts only: it
        // would refuse the test environment's own operator. Rendered and linted above.
        .args(["--set", "guardPolicy.enabled=false"]));
    assert!(out.contains("STATUS: deployed"), "{out}");

    let deploy = get_json(&["deployment", &name, "-n", &ns]);
    assert_eq!(deploy["spec"]["replicas"], 2);
    let (plain, _) = container_env(&deploy);
    assert_eq!(plain["TSO_CLUSTER_ID"], format!("c{id}"));
    assert_eq!(plain["TSO_LEASE_NAMESPACE"], ns);

    let sa = get_json(&["serviceaccount", &name, "-n", &ns]);
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/tenant-storage-operator"
    );

    // Cluster-wide: this project's kinds, namespaces (read) and Events only, and for the
    // operator the creation and patching, never reading, of Secrets (export links in tenants'
    // namespaces). ConfigMaps, Jobs, Leases and reading Secrets only in the release namespace,
    // where tenants have no rights. Which rules are there at all is proven by
    // tests/rbac_usage.rs: each one is used by the suite.
    for role in [
        name.clone(),
        format!("{name}-purge"),
        format!("{name}-export"),
    ] {
        let cr = get_json(&["clusterrole", &role]);
        assert_no_wildcard(&cr);
        for rule in cr["rules"].as_array().expect("rules") {
            let resources = rule["resources"].to_string();
            if resources.contains("secrets") && role == name {
                assert_eq!(rule["resources"], json!(["secrets"]), "{rule}");
                assert_eq!(rule["verbs"], json!(["create", "patch"]), "{rule}");
                continue;
            }
            assert!(
                ["configmaps", "secrets", "jobs", "leases"]
                    .iter()
                    .all(|r| !resources.contains(r)),
                "ClusterRole {role} grants {resources} in every namespace"
            );
        }
        let crb = get_json(&["clusterrolebinding", &role]);
        assert_eq!(crb["roleRef"]["name"], role);
        assert_eq!(
            crb["subjects"],
            json!([{"kind": "ServiceAccount", "name": role, "namespace": ns}])
        );
        let r = get_json(&["role", &role, "-n", &ns]);
        assert_no_wildcard(&r);
        let rb = get_json(&["rolebinding", &role, "-n", &ns]);
        assert_eq!(
            rb["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role})
        );
        assert_eq!(
            rb["subjects"],
            json!([{"kind": "ServiceAccount", "name": role, "namespace": ns}])
        );
    }
    let operator_rules = get_json(&["role", &name, "-n", &ns])["rules"].to_string();
    assert!(operator_rules.contains("secrets") && operator_rules.contains("leases"));
    let purge_rules = get_json(&["role", &format!("{name}-purge"), "-n", &ns])["rules"].to_string();
    assert!(
        purge_rules.contains("configmaps") && !purge_rules.contains("secrets"),
        "{purge_rules}"
    );
    let purge_sa = get_json(&["serviceaccount", &format!("{name}-purge"), "-n", &ns]);
    assert_eq!(purge_sa["metadata"]["name"], format!("{name}-purge"));
    // The export Jobs create their handoff Secret and can read none.
    let export_rules = get_json(&["role", &format!("{name}-export"), "-n", &ns])["rules"].clone();
    assert_eq!(
        export_rules,
        json!([
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "verbs": ["get", "create", "update"]}
        ])
    );
    let export_sa = get_json(&["serviceaccount", &format!("{name}-export"), "-n", &ns]);
    assert_eq!(export_sa["metadata"]["name"], format!("{name}-export"));
    // Tenants' rights reach the built-in roles through aggregation labels.
    let edit = get_json(&["clusterrole", &format!("{name}-edit")]);
    assert_eq!(
        edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    assert!(!edit["rules"].to_string().contains("/status"));
    assert!(
        edit["rules"].to_string().contains("dataexportrequests"),
        "{edit}"
    );

    let svc = get_json(&["service", &format!("{name}-metrics"), "-n", &ns]);
    assert_eq!(svc["spec"]["ports"][0]["port"], 8080);
    let pdb = get_json(&["poddisruptionbudget", &name, "-n", &ns]);
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    for crd in [
        "tenantstorages.storage.tenancy.dev",
        "residencypolicies.storage.tenancy.dev",
    ] {
        get_json(&["crd", crd]);
    }

    run(helm().args(["uninstall", &release.name, "--namespace", &ns]));
    release.installed = false;
    for (kind, namespaced) in [
        ("deployment", true),
        ("serviceaccount", true),
        ("clusterrole", false),
        ("clusterrolebinding", false),
    ] {
        let mut cmd = kubectl();
        cmd.args(["get", kind, &name, "--ignore-not-found", "-o", "name"]);
        if namespaced {
            cmd.args(["-n", &ns]);
        }
        let left = run(&mut cmd);
        assert!(left.trim().is_empty(), "{kind} {name} left after uninstall");
    }
    // CRDs are never removed by Helm: tenants' objects (and their buckets) outlive the release.
    get_json(&["crd", "tenantstorages.storage.tenancy.dev"]);
}
