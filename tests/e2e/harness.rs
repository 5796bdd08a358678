//! Test harness: the real API server and AWS emulator started by `scripts/test.sh`, and the
//! operator binary run as a child process, one instance per test scoped to its own namespace
//! and cluster id so tests can run in parallel.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::Credentials;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, Namespace};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use tenant_storage_operator::api::{
    Condition, ConditionStatus, ResidencyPolicy, ResidencyPolicySpec, TenantStorage,
};
use tenant_storage_operator::plan::policy_document::{PolicyDocument, Statement};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The operator's counters of AWS calls and of finished reconciles.
pub const CALLS: &str = "tenant_storage_aws_calls_total";
pub const RECONCILES: &str = "tenant_storage_reconciles_total";

/// The cluster's OIDC provider every test operator is given (the emulator checks the token's
/// issuer, subject and audience against the trust policy; it does not verify signatures).
pub const OIDC_ISSUER: &str = "oidc.tso.test/id/E2E";
pub const OIDC_PROVIDER_ARN: &str = "arn:aws:iam::000000000000:oidc-provider/oidc.tso.test/id/E2E";
/// The IAM user of the enforcement tests: a break-glass admin of every test operator.
pub const ADMIN_USER_ARN: &str = "arn:aws:iam::000000000000:user/tso-test-user";
/// The IAM user deletion Jobs run as (where EKS would give them the purge role through IRSA):
/// it holds exactly the policy `tenant-storage-operator iam-policy purge` prints, and is admitted
/// by tenant bucket policies as the chart admits `purge.irsaRoleArn`.
pub const PURGE_USER: &str = "tso-purge";
pub const PURGE_USER_ARN: &str = "arn:aws:iam::000000000000:user/tso-purge";
/// The IAM user export Jobs run as: exactly `tenant-storage-operator iam-policy export`,
/// admitted by tenant bucket policies as the chart admits `export.irsaRoleArn`.
pub const EXPORT_USER: &str = "tso-export";
pub const EXPORT_USER_ARN: &str = "arn:aws:iam::000000000000:user/tso-export";

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test.sh, which starts the API server and AWS emulator")
    })
}

/// The namespace the chart is installed in: the operator's Lease, deletion Jobs, their records
/// and ExternalId Secrets live there, and no tenant has rights in it.
pub fn system_namespace() -> String {
    env("TSO_SYSTEM_NAMESPACE")
}

/// A client with one of the test identities' tokens (`operator`, `purge`, `export`, `editor`,
/// `auditor`): the admin's kubeconfig is for setting up and asserting only.
pub async fn client_as(identity: &str) -> Client {
    let var = format!("TSO_KUBECONFIG_{}", identity.to_uppercase());
    let kubeconfig = kube::config::Kubeconfig::read_from(env(&var)).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kube config");
    Client::try_from(config).expect("kube client")
}

/// Polls `probe` until it returns `Some`, failing the test after [`TIMEOUT`].
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {TIMEOUT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One test's isolated world: a namespace, a cluster id and a bucket prefix of its own.
pub struct Scenario {
    pub client: Client,
    pub ns: String,
    pub cluster_id: String,
    pub prefix: String,
}

impl Scenario {
    pub async fn new(tag: &str) -> Scenario {
        let client = Client::try_default()
            .await
            .expect("kube client from KUBECONFIG");
        install_crds(&client).await;
        let unique = unique_suffix();
        let ns = format!("{tag}-{unique}");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(ns.clone());
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create namespace");
        Scenario {
            client,
            ns,
            cluster_id: format!("c{unique}"),
            prefix: "tso".into(),
        }
    }

    pub fn tenants(&self) -> Api<TenantStorage> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// A policy named after this scenario, so tests never share one.
    pub async fn policy(&self, spec: ResidencyPolicySpec) -> String {
        let name = format!("{}-policy", self.ns);
        let api: Api<ResidencyPolicy> = Api::all(self.client.clone());
        api.create(&PostParams::default(), &ResidencyPolicy::new(&name, spec))
            .await
            .expect("create policy");
        name
    }

    pub async fn operator(&self, extra: &[&str]) -> Operator {
        Operator::start(&self.cluster_id, &self.prefix, &[self.ns.as_str()], extra).await
    }

    pub async fn get(&self, name: &str) -> TenantStorage {
        self.tenants().get(name).await.expect("get TenantStorage")
    }

    /// Waits for a condition of `type_` with `status` and returns the object.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: ConditionStatus,
    ) -> TenantStorage {
        let api = self.tenants();
        eventually(&format!("{name} {type_}={status:?}"), || async {
            let ts = api.get(name).await.ok()?;
            condition(&ts, type_).filter(|c| c.status == status)?;
            Some(ts)
        })
        .await
    }

    /// Waits for a condition of `type_` with `reason` and returns the object.
    pub async fn wait_reason(&self, name: &str, type_: &str, reason: &str) -> TenantStorage {
        let api = self.tenants();
        eventually(&format!("{name} {type_} reason {reason}"), || async {
            let ts = api.get(name).await.ok()?;
            condition(&ts, type_).filter(|c| c.reason == reason)?;
            Some(ts)
        })
        .await
    }

    /// Waits until some tenant has claimed its bucket (in status): provisioning is under way.
    pub async fn wait_for_a_claim(&self, what: &str) {
        eventually(what, || async {
            let list = self.tenants().list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .any(|t| t.status.as_ref().is_some_and(|st| st.bucket_name.is_some()))
                .then_some(())
        })
        .await;
    }

    /// Asserts that AWS holds exactly one alias, one key and one bucket for each of `names`
    /// (tenants of this scenario's namespace in eu-central-1), and no other.
    pub async fn assert_one_of_each(&self, names: &[String]) {
        let aws = Aws::root().await;
        let kms = aws.kms("eu-central-1");
        let alias_prefix = format!("alias/tenant-storage/{}/{}/", self.cluster_id, self.ns);
        let (aliased, aliases) = aliased_keys(&kms, &alias_prefix).await;
        assert_eq!(
            (aliases, aliased.len()),
            (names.len(), names.len()),
            "one alias per tenant, each on its own key"
        );
        assert_eq!(
            keys_of_namespace(&kms, &self.ns).await,
            aliased,
            "no key without its alias"
        );
        let buckets = aws
            .s3("eu-central-1")
            .list_buckets()
            .send()
            .await
            .expect("buckets");
        let ours: BTreeSet<String> = buckets
            .buckets()
            .iter()
            .filter_map(|b| b.name().map(str::to_owned))
            .filter(|n| n.starts_with(&format!("{}-{}-", self.prefix, self.ns)))
            .collect();
        let expected: BTreeSet<String> = names.iter().map(|n| self.bucket_for(n)).collect();
        assert_eq!(ours, expected, "one bucket per tenant, no other");
    }

    pub async fn wait_ready(&self, name: &str) -> TenantStorage {
        self.wait_condition(name, "Ready", ConditionStatus::True)
            .await
    }

    /// Events recorded for a TenantStorage with the given reason.
    pub async fn events(&self, name: &str, reason: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        api.list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
            })
            .collect()
    }

    pub async fn wait_event(&self, name: &str, reason: &str) -> Event {
        eventually(&format!("event {reason} on {name}"), || async {
            self.events(name, reason).await.into_iter().next()
        })
        .await
    }
}

pub fn condition<'a>(ts: &'a TenantStorage, type_: &str) -> Option<&'a Condition> {
    ts.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Unique per test run and per scenario: a counter within the process, the time across runs.
fn unique_suffix() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    format!("{:06x}{n:02x}", secs % 0xff_ffff)
}

/// Applies `crds/` (what users install) and waits until the API server serves them.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds");
    for entry in std::fs::read_dir(&dir).expect("crds/ directory") {
        let path = entry.expect("crds/ entry").path();
        let yaml = std::fs::read_to_string(&path).expect("read CRD");
        let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).expect("parse CRD");
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply("tso-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply CRD");
        eventually(&format!("CRD {name} established"), || async {
            let crd = api.get(&name).await.ok()?;
            crd.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        })
        .await;
    }
}

/// The operator binary, running until dropped.
pub struct Operator {
    child: Child,
    pub metrics_addr: SocketAddr,
    pub log_path: PathBuf,
}

impl Operator {
    pub async fn start(
        cluster_id: &str,
        prefix: &str,
        namespaces: &[&str],
        extra: &[&str],
    ) -> Operator {
        Operator::start_with_env(cluster_id, prefix, namespaces, extra, &[]).await
    }

    /// Starts the operator with extra environment variables (which override the test's).
    pub async fn start_with_env(
        cluster_id: &str,
        prefix: &str,
        namespaces: &[&str],
        extra: &[&str],
        vars: &[(&str, &str)],
    ) -> Operator {
        let port = free_port();
        let metrics_addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log_path = PathBuf::from(std::env::var("TSO_RUN").unwrap_or_else(|_| "/tmp".into()))
            .join(format!("operator-{cluster_id}-{port}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("operator log file");
        // The chart's deployment: its service account (through its token, with the chart's
        // RBAC), its namespace for the Lease, the Jobs and their records.
        let system = system_namespace();
        let (key, secret) = operator_keys(cluster_id, prefix).await;
        let child = Command::new(env!("CARGO_BIN_EXE_tenant-storage-operator"))
            .arg("run")
            .args(["--cluster-id", cluster_id, "--bucket-prefix", prefix])
            .args(["--namespace", &namespaces.join(",")])
            .args(["--metrics-addr", &metrics_addr.to_string()])
            .args(["--oidc-provider-arn", OIDC_PROVIDER_ARN])
            .args(["--admin-principal-arn", ADMIN_USER_ARN])
            .args(["--admin-principal-arn", PURGE_USER_ARN])
            .args(["--admin-principal-arn", EXPORT_USER_ARN])
            .args(["--purge-namespace", &system, "--lease-namespace", &system])
            .args(["--purge-service-account", &env("TSO_PURGE_SERVICE_ACCOUNT")])
            .args([
                "--export-service-account",
                &env("TSO_EXPORT_SERVICE_ACCOUNT"),
            ])
            .args(["--export-principal-arn", EXPORT_USER_ARN])
            .args(extra)
            .env("KUBECONFIG", env("TSO_KUBECONFIG_OPERATOR"))
            // IRSA on EKS; here the keys of an IAM user holding exactly `iam-policy operator`.
            .env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env_remove("AWS_SESSION_TOKEN")
            .env("RUST_LOG", "info,tenant_storage_operator=debug")
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start operator");
        let op = Operator {
            child,
            metrics_addr,
            log_path,
        };
        eventually("operator /readyz", || async {
            (op.get("/readyz").await?.0 == 200).then_some(())
        })
        .await;
        op
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(self.metrics_addr)
            .await
            .ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n")?.1.to_owned();
        Some((status, body))
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.expect("scrape /metrics").1
    }

    /// Sum of a counter over the series whose labels contain every `label="value"` given.
    pub async fn counter(&self, name: &str, labels: &[&str]) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// AWS calls across `n` reconciles: waits for a reconcile to end, then for `n` more,
    /// sampling the counters right after each boundary (a sample taken mid-reconcile would count
    /// part of one). Returns (mutating calls, read calls per reconcile).
    pub async fn calls_over_reconciles(&self, n: f64) -> (f64, f64) {
        self.calls_over_reconciles_of("", n).await
    }

    /// The same for the calls to one AWS service (all services for `""`).
    pub async fn calls_over_reconciles_of(&self, service: &str, n: f64) -> (f64, f64) {
        // An empty label is in every line.
        let service = if service.is_empty() {
            String::new()
        } else {
            format!("service=\"{service}\"")
        };
        let service = service.as_str();
        let sample = |after: f64| async move {
            let done = self.counter(RECONCILES, &["result=\"ok\""]).await;
            if done < after {
                return None;
            }
            let writes = self.counter(CALLS, &["mutating=\"true\"", service]).await;
            let reads = self.counter(CALLS, &["mutating=\"false\"", service]).await;
            Some((done, writes, reads))
        };
        let start = self.counter(RECONCILES, &["result=\"ok\""]).await;
        let (c0, w0, r0) = eventually("a reconcile to end", || sample(start + 1.0)).await;
        let (c1, w1, r1) = eventually("more reconciles", || sample(c0 + n)).await;
        (w1 - w0, (r1 - r0) / (c1 - c0))
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub async fn crash(mut self) {
        self.child.kill().await.expect("kill operator");
    }

    /// SIGTERM, as Kubernetes stops a pod; returns whether the process exited successfully.
    pub async fn terminate(mut self) -> bool {
        let pid = self.child.id().expect("operator pid");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}");
        let status = tokio::time::timeout(TIMEOUT, self.child.wait())
            .await
            .expect("operator exits after SIGTERM")
            .expect("wait for operator");
        status.success()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the process, as a paused VM or node would.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("operator pid");
        let sent = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// Waits for the process to exit on its own.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(TIMEOUT, self.child.wait())
            .await
            .expect("the operator exits")
            .expect("wait for operator")
    }
}

/// `testenv/faults/proxy.py` in front of the emulator, until dropped: a share of all AWS calls
/// fail (throttling, server errors, resets, lost answers, latency).
pub struct FaultProxy {
    _child: Child,
    pub url: String,
    pub log_path: PathBuf,
}

impl FaultProxy {
    pub async fn start(rate: f64, seed: u64) -> FaultProxy {
        FaultProxy::start_with(rate, seed, &[]).await
    }

    /// Also loses the first answer to each of `lose_first` (operation names).
    pub async fn start_with(rate: f64, seed: u64, lose_first: &[&str]) -> FaultProxy {
        let port = free_port();
        let log_path = PathBuf::from(env("TSO_RUN")).join(format!("faults-{port}.tsv"));
        let child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/testenv/faults/proxy.py"
            ))
            .args(["--port", &port.to_string()])
            .args(["--upstream", &env("TSO_AWS_ENDPOINT_URL")])
            .args(["--ca", &env("AWS_CA_BUNDLE")])
            .args(["--rate", &rate.to_string(), "--seed", &seed.to_string()])
            .arg("--log")
            .arg(&log_path)
            .args(lose_first.iter().flat_map(|op| ["--lose-first", op]))
            .kill_on_drop(true)
            .spawn()
            .expect("start the fault proxy");
        wait_listening("the fault proxy listens", port).await;
        FaultProxy {
            _child: child,
            url: format!("http://127.0.0.1:{port}"),
            log_path,
        }
    }

    /// `(service, operation, method, fault, upstream status)` of every request so far.
    pub fn calls(&self) -> Vec<[String; 5]> {
        log_rows(&self.log_path)
    }
}

/// A second API server on the suite's etcd, as a highly available control plane runs several: a
/// test points its operator or Job at it and restarts it (etcd keeping every object) without
/// disturbing the tests on the first one. Stopped, by PID, when dropped.
pub struct ApiServer {
    child: Option<Child>,
    pub port: u16,
}

impl ApiServer {
    pub async fn start() -> ApiServer {
        let port = free_port();
        let mut server = ApiServer { child: None, port };
        server.start_again().await;
        server
    }

    /// Starts the server (again) on its port and waits until it is ready.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the API server is already running");
        let run = PathBuf::from(env("TSO_RUN")).join("k8s");
        let binary = PathBuf::from(env("K8S_W")).join("bin/mini-kube-apiserver");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(run.join(format!("apiserver-{}.log", self.port)))
            .expect("API server log file");
        let child = Command::new(binary)
            .arg(format!("--etcd-servers={}", env("TSO_ETCD_URL")))
            .args([
                "--bind-address=127.0.0.1",
                &format!("--secure-port={}", self.port),
            ])
            .arg(format!(
                "--tls-cert-file={}",
                run.join("pki/server.crt").display()
            ))
            .arg(format!(
                "--tls-private-key-file={}",
                run.join("pki/server.key").display()
            ))
            .arg(format!(
                "--client-ca-file={}",
                run.join("pki/ca.crt").display()
            ))
            .arg(format!(
                "--token-auth-file={}",
                run.join("tokens.csv").display()
            ))
            .arg(format!(
                "--authz-log={}",
                run.join(format!("authz-{}.log", self.port)).display()
            ))
            .arg("--enable-admission-plugins=ValidatingAdmissionPolicy")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start a second API server");
        self.child = Some(child);
        let url = format!("https://127.0.0.1:{}/readyz", self.port);
        eventually("the second API server is ready", || async {
            let out = Command::new("curl")
                .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", &url])
                .output()
                .await
                .ok()?;
            (out.stdout == b"200").then_some(())
        })
        .await;
    }

    /// SIGKILL, as a crashed or rebooted control-plane node: every connection, watches
    /// included, drops at once and nothing is answered until [`ApiServer::start_again`].
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("the API server is running");
        child.kill().await.expect("kill the API server");
    }

    /// A kubeconfig of test identity `identity` (as [`client_as`] takes it) that talks to this
    /// server.
    pub fn kubeconfig(&self, identity: &str) -> PathBuf {
        kubeconfig_for(identity, &format!("https://127.0.0.1:{}", self.port))
    }
}

/// A copy of identity `identity`'s kubeconfig whose cluster is at `server`.
fn kubeconfig_for(identity: &str, server: &str) -> PathBuf {
    let original = env(&format!("TSO_KUBECONFIG_{}", identity.to_uppercase()));
    let text = std::fs::read_to_string(&original).expect("read kubeconfig");
    let old = server_of(&text);
    let port = server.rsplit(':').next().unwrap_or_default();
    let path = PathBuf::from(format!("{original}-{port}"));
    std::fs::write(&path, text.replacen(old, server, 1)).expect("write kubeconfig");
    path
}

/// The API server a kubeconfig written by `testenv/k8s/start.sh` points at.
fn server_of(kubeconfig: &str) -> &str {
    kubeconfig
        .split_once("server: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(server, _)| server)
        .expect("a quoted server in the kubeconfig")
}

/// Waits until something listens on loopback `port`.
async fn wait_listening(what: &str, port: u16) {
    eventually(what, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(drop)
    })
    .await;
}

/// The first `N` tab-separated fields of each line of a proxy's log (a line with fewer, being
/// written, is skipped).
fn log_rows<const N: usize>(path: &std::path::Path) -> Vec<[String; N]> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let fields: Vec<String> = l.split('\t').take(N).map(str::to_owned).collect();
            fields.try_into().ok()
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// `testenv/faults/kube_proxy.py` in front of the suite's API server, until dropped: a share of
/// status writes answered 409 Conflict, and every watch cut after a few seconds.
pub struct KubeFaultProxy {
    _child: Child,
    pub port: u16,
    pub log_path: PathBuf,
}

impl KubeFaultProxy {
    pub async fn start(conflict_rate: f64, watch_cut: (u32, u32), seed: u64) -> KubeFaultProxy {
        let port = free_port();
        let run = PathBuf::from(env("TSO_RUN"));
        let log_path = run.join(format!("kube-faults-{port}.tsv"));
        let admin = std::fs::read_to_string(env("KUBECONFIG")).expect("read kubeconfig");
        let upstream = server_of(&admin).to_owned();
        let child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/testenv/faults/kube_proxy.py"
            ))
            .args(["--port", &port.to_string(), "--upstream", &upstream])
            .arg("--ca")
            .arg(run.join("k8s/pki/ca.crt"))
            .args(["--conflict-rate", &conflict_rate.to_string()])
            .args(["--watch-cut", &format!("{},{}", watch_cut.0, watch_cut.1)])
            .args(["--seed", &seed.to_string()])
            .arg("--log")
            .arg(&log_path)
            .kill_on_drop(true)
            .spawn()
            .expect("start the Kubernetes fault proxy");
        wait_listening("the Kubernetes fault proxy listens", port).await;
        KubeFaultProxy {
            _child: child,
            port,
            log_path,
        }
    }

    /// A kubeconfig of test identity `identity` that talks through this proxy.
    pub fn kubeconfig(&self, identity: &str) -> PathBuf {
        kubeconfig_for(identity, &format!("http://127.0.0.1:{}", self.port))
    }

    /// `(method, path, fault, upstream status)` of every request so far.
    pub fn calls(&self) -> Vec<[String; 4]> {
        log_rows(&self.log_path)
    }
}

/// Ids of every KMS key in the region (all pages) tagged as a tenant of `namespace`, but those a
/// deleted tenant left scheduled for deletion.
pub async fn keys_of_namespace(kms: &aws_sdk_kms::Client, namespace: &str) -> BTreeSet<String> {
    let mut ours = BTreeSet::new();
    let mut pages = kms.list_keys().into_paginator().send();
    while let Some(page) = pages.next().await {
        for key in page.expect("keys").keys() {
            let id = key.key_id().unwrap_or_default();
            let tags = kms
                .list_resource_tags()
                .key_id(id)
                .send()
                .await
                .expect("tags");
            let tenant_of_namespace = tags
                .tags()
                .iter()
                .any(|t| t.tag_key() == "tenancy.dev/namespace" && t.tag_value() == namespace);
            if tenant_of_namespace && !pending_deletion(kms, id).await {
                ours.insert(id.to_owned());
            }
        }
    }
    ours
}

async fn pending_deletion(kms: &aws_sdk_kms::Client, id: &str) -> bool {
    let key = kms
        .describe_key()
        .key_id(id)
        .send()
        .await
        .expect("describe key");
    key.key_metadata().and_then(|m| m.key_state())
        == Some(&aws_sdk_kms::types::KeyState::PendingDeletion)
}

/// Key ids the aliases under `prefix` point to (all pages), and how many such aliases there are.
pub async fn aliased_keys(kms: &aws_sdk_kms::Client, prefix: &str) -> (BTreeSet<String>, usize) {
    let mut keys = BTreeSet::new();
    let mut count = 0;
    let mut pages = kms.list_aliases().into_paginator().send();
    while let Some(page) = pages.next().await {
        for alias in page.expect("aliases").aliases() {
            if alias.alias_name().is_some_and(|n| n.starts_with(prefix)) {
                count += 1;
                keys.extend(alias.target_key_id().map(str::to_owned));
            }
        }
    }
    (keys, count)
}

/// AWS clients straight from the SDK (not the operator's adapters), as an outside observer.
pub struct Aws {
    config: SdkConfig,
}

impl Aws {
    /// The emulator's account root, which the operator also uses.
    pub async fn root() -> Aws {
        Aws::with(None).await
    }

    /// An IAM user whose own policy allows s3:* and kms:*: bound by bucket policies.
    pub async fn user() -> Aws {
        Aws::with(Some(Credentials::new(
            env("TSO_TEST_USER_KEY"),
            env("TSO_TEST_USER_SECRET"),
            None,
            None,
            "tso-tests",
        )))
        .await
    }

    /// The root of another emulated account (a customer's).
    pub async fn account_root(account: &str) -> Aws {
        Aws::with(Some(Credentials::new(
            account,
            "secret",
            None,
            None,
            "tso-tests",
        )))
        .await
    }

    /// Long-term keys (an IAM user's).
    pub async fn keys(key: &str, secret: &str) -> Aws {
        Aws::with(Some(Credentials::new(key, secret, None, None, "tso-tests"))).await
    }

    /// Temporary credentials (an assumed role's).
    pub async fn session(key: &str, secret: &str, token: &str) -> Aws {
        Aws::with(Some(Credentials::new(
            key,
            secret,
            Some(token.to_owned()),
            None,
            "tso-tests",
        )))
        .await
    }

    /// Assumes `role_arn` with a service-account token for `subject` (EKS IRSA, as a pod's SDK
    /// does).
    pub async fn web_identity(role_arn: &str, subject: &str) -> Result<Aws, String> {
        Aws::web_identity_for(role_arn, subject, "sts.amazonaws.com").await
    }

    /// The same with a token for another audience. Errors are the AWS error code.
    pub async fn web_identity_for(
        role_arn: &str,
        subject: &str,
        audience: &str,
    ) -> Result<Aws, String> {
        let out = Aws::root()
            .await
            .sts()
            .assume_role_with_web_identity()
            .role_arn(role_arn)
            .role_session_name("e2e")
            .web_identity_token(service_account_token(subject, audience))
            .send()
            .await
            .map_err(|e| error_code(&e))?;
        let c = out
            .credentials()
            .expect("credentials in AssumeRoleWithWebIdentity");
        Ok(Aws::session(c.access_key_id(), c.secret_access_key(), c.session_token()).await)
    }

    /// Assumes `role_arn` with these credentials. Errors are the AWS error code.
    pub async fn assume(&self, role_arn: &str, external_id: Option<&str>) -> Result<Aws, String> {
        let out = self
            .sts()
            .assume_role()
            .role_arn(role_arn)
            .role_session_name("e2e")
            .set_external_id(external_id.map(str::to_owned))
            .send()
            .await
            .map_err(|e| error_code(&e))?;
        let c = out.credentials().expect("credentials in AssumeRole");
        Ok(Aws::session(c.access_key_id(), c.secret_access_key(), c.session_token()).await)
    }

    pub fn iam(&self) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.config)
    }

    pub fn sts(&self) -> aws_sdk_sts::Client {
        aws_sdk_sts::Client::new(&self.config)
    }

    async fn with(credentials: Option<Credentials>) -> Aws {
        let ca = PathBuf::from(env("AWS_CA_BUNDLE"));
        let http = tenant_storage_operator::cloud::https_client(Some(&ca)).expect("https client");
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .endpoint_url(env("TSO_AWS_ENDPOINT_URL"))
            .region(Region::new("us-east-1"));
        if let Some(c) = credentials {
            loader = loader.credentials_provider(c);
        }
        Aws {
            config: loader.load().await,
        }
    }

    pub fn s3(&self, region: &str) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::from(&self.config)
            .region(Region::new(region.to_owned()))
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    pub fn backup(&self, region: &str) -> aws_sdk_backup::Client {
        let conf = aws_sdk_backup::config::Builder::from(&self.config)
            .region(Region::new(region.to_owned()))
            .build();
        aws_sdk_backup::Client::from_conf(conf)
    }

    pub fn kms(&self, region: &str) -> aws_sdk_kms::Client {
        let conf = aws_sdk_kms::config::Builder::from(&self.config)
            .region(Region::new(region.to_owned()))
            .build();
        aws_sdk_kms::Client::from_conf(conf)
    }
}

/// The AWS error code of a failed call (`AccessDenied`, `NoSuchEntity`, ...).
pub fn error_code(e: &impl aws_sdk_s3::error::ProvideErrorMetadata) -> String {
    e.code().unwrap_or("(no code)").to_owned()
}

/// A projected service-account token as the cluster's OIDC issuer would sign it (unsigned: the
/// emulator does not verify signatures, AWS would).
pub fn service_account_token(subject: &str, audience: &str) -> String {
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "iss": format!("https://{OIDC_ISSUER}"),
        "sub": subject,
        "aud": audience,
    });
    format!("{header}.{}.", base64url(claims.to_string().as_bytes()))
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| acc << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// Runs kubectl against the test API server; returns (success, stdout, stderr).
pub fn kubectl(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new("kubectl")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run kubectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Tag set of a bucket as a map.
pub async fn bucket_tags(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
) -> std::collections::BTreeMap<String, String> {
    match s3.get_bucket_tagging().bucket(bucket).send().await {
        Ok(out) => out
            .tag_set()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect(),
        Err(_) => Default::default(),
    }
}

/// An EU policy like the example's, for tests that need their own.
pub fn eu_spec() -> ResidencyPolicySpec {
    serde_json::from_value(serde_json::json!({
        "jurisdiction": "EU",
        "allowedRegions": ["eu-central-1", "eu-west-1"],
        "defaultRegion": "eu-central-1",
    }))
    .expect("policy spec")
}

/// A TenantStorage object.
pub fn tenant(name: &str, policy: &str, extra: serde_json::Value) -> TenantStorage {
    let mut spec = serde_json::json!({ "policyRef": policy });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    TenantStorage::new(name, serde_json::from_value(spec).expect("tenant spec"))
}

impl Scenario {
    /// The bucket name the operator must use for `name` in this scenario.
    pub fn bucket_for(&self, name: &str) -> String {
        tenant_storage_operator::plan::naming::bucket_name(
            &self.prefix,
            &self.cluster_id,
            &self.ns,
            name,
        )
    }

    /// Asks the operator for an immediate check of the cloud (the recheck annotation).
    pub async fn recheck(&self, name: &str) {
        let patch = serde_json::json!({"metadata": {"annotations": {
            tenant_storage_operator::controllers::RECHECK: unique_suffix()
        }}});
        self.tenants()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("annotate recheck");
    }

    pub async fn create(&self, ts: &TenantStorage) -> Result<TenantStorage, kube::Error> {
        self.tenants().create(&PostParams::default(), ts).await
    }

    /// Creates a plain tenant of `policy` and waits until it is Ready; returns its bucket.
    pub async fn ready_bucket(&self, name: &str, policy: &str) -> String {
        self.create(&tenant(name, policy, serde_json::json!({})))
            .await
            .expect("create tenant");
        self.wait_ready(name)
            .await
            .status
            .and_then(|st| st.bucket_name)
            .expect("bucket")
    }
}

/// Replaces a bucket's tag set, as someone working behind the operator's back would.
pub async fn put_bucket_tags<K: AsRef<str>, V: AsRef<str>>(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    tags: impl IntoIterator<Item = (K, V)>,
) {
    let tag_set = tags
        .into_iter()
        .map(|(k, v)| {
            aws_sdk_s3::types::Tag::builder()
                .key(k.as_ref())
                .value(v.as_ref())
                .build()
                .expect("tag")
        })
        .collect::<Vec<_>>();
    let tagging = aws_sdk_s3::types::Tagging::builder()
        .set_tag_set(Some(tag_set))
        .build()
        .expect("tagging");
    s3.put_bucket_tagging()
        .bucket(bucket)
        .tagging(tagging)
        .send()
        .await
        .expect("put bucket tags");
}

/// Plays the kubelet for the deletion Job of request `namespace/request`: waits for the Job the
/// operator created, then returns its container's command with exactly its arguments and
/// environment, plus what its pod would be given besides: the service account's token (here
/// through a kubeconfig, with the chart's RBAC) and AWS credentials (IRSA on EKS; here the keys
/// of [`PURGE_USER`], holding exactly the generated purge policy). Nothing of the test's own
/// environment leaks in.
pub async fn job_command(namespace: &str, request: &str) -> Command {
    let container = job_container(namespace, request).await;
    pod_command(&env("TSO_PURGE_SERVICE_ACCOUNT"), &container).await
}

/// The same for the export Job of DataExportRequest `namespace/request`: the export service
/// account's token and the keys of [`EXPORT_USER`].
pub async fn export_job_command(namespace: &str, request: &str) -> Command {
    let container = export_job_container(namespace, request).await;
    pod_command(&env("TSO_EXPORT_SERVICE_ACCOUNT"), &container).await
}

/// The container of the deletion Job of request `namespace/request`, once the operator created
/// it.
pub async fn job_container(namespace: &str, request: &str) -> Container {
    let name = tenant_storage_operator::controllers::deletion_job_name(namespace, request);
    system_job_container(&name, &env("TSO_PURGE_SERVICE_ACCOUNT")).await
}

/// The container of the export Job of request `namespace/request`, once the operator created
/// it.
pub async fn export_job_container(namespace: &str, request: &str) -> Container {
    let name = tenant_storage_operator::plan::naming::export_job_name(namespace, request);
    system_job_container(&name, &env("TSO_EXPORT_SERVICE_ACCOUNT")).await
}

/// The one container of Job `name` in the system namespace, once it exists; the Job must run
/// as `service_account`.
pub async fn system_job_container(name: &str, service_account: &str) -> Container {
    let admin = Client::try_default().await.expect("kube client");
    let jobs: Api<Job> = Api::namespaced(admin, &system_namespace());
    let job = eventually(&format!("job {name}"), || async {
        jobs.get_opt(name).await.ok()?
    })
    .await;
    let pod = job
        .spec
        .and_then(|j| j.template.spec)
        .expect("the Job has a pod template");
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some(service_account),
        "Job {name} runs as the chart's service account for it"
    );
    assert!(
        pod.volumes.is_none(),
        "the test operator has no CA bundle volume to mount"
    );
    let [container] = pod.containers.as_slice() else {
        panic!("one container: {:?}", pod.containers);
    };
    container.clone()
}

/// AWS as the deletion Jobs are: [`PURGE_USER`], holding exactly the generated purge policy.
pub async fn purge_aws() -> Aws {
    let (key, secret) = purge_keys().await;
    Aws::keys(key, secret).await
}

/// AWS as the export Jobs are: [`EXPORT_USER`], holding exactly the generated export policy.
pub async fn export_aws() -> Aws {
    let (key, secret) = export_keys().await;
    Aws::keys(key, secret).await
}

/// AWS as the operator of `cluster_id` and `prefix` is: an IAM user holding exactly the
/// generated operator policy (and the emulator's renamings of it).
pub async fn operator_aws(cluster_id: &str, prefix: &str) -> Aws {
    let (key, secret) = operator_keys(cluster_id, prefix).await;
    Aws::keys(&key, &secret).await
}

/// Access keys of the IAM user an operator of `cluster_id` and `prefix` runs as, holding exactly
/// the generated operator policy; one user and key per cluster id, prefix and test process.
pub async fn operator_keys(cluster_id: &str, prefix: &str) -> (String, String) {
    static KEYS: tokio::sync::Mutex<BTreeMap<String, (String, String)>> =
        tokio::sync::Mutex::const_new(BTreeMap::new());
    let user = format!("tso-op-{cluster_id}-{prefix}");
    let mut keys = KEYS.lock().await;
    if let Some(known) = keys.get(&user) {
        return known.clone();
    }
    let mut policy = tenant_storage_operator::plan::iam_policy::operator(
        "aws",
        "000000000000",
        prefix,
        cluster_id,
    );
    policy.statements.extend(emulator_statements(&policy));
    let new = iam_user(&user, "tenant-storage-operator", &policy).await;
    keys.insert(user, new.clone());
    new
}

/// What ministack needs beyond the generated operator policy, because it names resources
/// differently from AWS (see the README's emulator notes): a role by `role/<name>` without its
/// path, a KMS call that names an alias by the alias's ARN (AWS authorizes it against the key's),
/// and `CreateAlias`/`DeleteAlias` (which carry no `KeyId`) by `*` (AWS authorizes them against
/// the alias and the key). Each grants the generated statements' own actions, on the emulator's
/// name for the same resources.
fn emulator_statements(policy: &PolicyDocument) -> Vec<Statement> {
    let actions = |sid: &str| {
        policy
            .statement(sid)
            .map(Statement::actions_named)
            .unwrap_or_else(|| panic!("generated statement {sid}"))
    };
    let statement = |sid, actions: &[String], resource: &str| {
        Statement::allow(sid).actions(actions).resources([resource])
    };
    vec![
        statement(
            "EmulatorRolesWithoutPath",
            actions("WorkloadRoles"),
            "arn:aws:iam::000000000000:role/tenant-*",
        ),
        statement(
            "EmulatorReplicationRolesWithoutPath",
            &[actions("WorkloadRoles"), actions("PassReplicationRoles")].concat(),
            "arn:aws:iam::000000000000:role/replication-*",
        ),
        statement(
            "EmulatorKeysByAlias",
            actions("ReadKeys"),
            "arn:aws:kms:*:000000000000:alias/tenant-storage/*",
        ),
        statement("EmulatorAliasesAsAnyResource", actions("OwnAliases"), "*"),
        // ministack names a backup call's resource only by a vault name in its body (never
        // by the path, where AWS Backup's API puts it), so the rest is `*`; it does not
        // populate `iam:PolicyARN` either.
        statement("EmulatorBackupVaults", actions("BackupVaults"), "*"),
        statement("EmulatorBackupPlans", actions("BackupPlans"), "*"),
        statement(
            "EmulatorBackupRoleWithoutPath",
            actions("BackupRolePolicy"),
            "arn:aws:iam::000000000000:role/tenant-*",
        ),
    ]
}

/// Creates (or reuses) IAM user `name` with `policy` as its only inline policy; new access keys.
pub async fn iam_user(name: &str, policy_name: &str, policy: &PolicyDocument) -> (String, String) {
    let iam = Aws::root().await.iam();
    match iam.create_user().user_name(name).send().await {
        Ok(_) => {}
        Err(e) if error_code(&e) == "EntityAlreadyExists" => {}
        Err(e) => panic!("create IAM user {name}: {e:?}"),
    }
    iam.put_user_policy()
        .user_name(name)
        .policy_name(policy_name)
        .policy_document(serde_json::to_string(policy).expect("policy JSON"))
        .send()
        .await
        .expect("attach the generated policy");
    let key = iam
        .create_access_key()
        .user_name(name)
        .send()
        .await
        .expect("access key");
    let key = key.access_key().expect("access key");
    (
        key.access_key_id().to_owned(),
        key.secret_access_key().to_owned(),
    )
}

/// Access keys of [`PURGE_USER`], created once per test process with the generated policy.
async fn purge_keys() -> &'static (String, String) {
    static KEYS: tokio::sync::OnceCell<(String, String)> = tokio::sync::OnceCell::const_new();
    KEYS.get_or_init(|| async {
        let policy = tenant_storage_operator::plan::iam_policy::purge("aws", "000000000000", "tso");
        iam_user(PURGE_USER, "tenant-storage-purge", &policy).await
    })
    .await
}

/// Access keys of [`EXPORT_USER`], created once per test process with the generated policy
/// (for the bucket prefix every [`Scenario`] uses, as [`purge_keys`]).
async fn export_keys() -> &'static (String, String) {
    static KEYS: tokio::sync::OnceCell<(String, String)> = tokio::sync::OnceCell::const_new();
    KEYS.get_or_init(|| async {
        let policy =
            tenant_storage_operator::plan::iam_policy::export("aws", "000000000000", "tso");
        iam_user(EXPORT_USER, "tenant-storage-export", &policy).await
    })
    .await
}

/// The process a pod of the chart's `service_account` (the purge or the export one) runs for
/// `container`: that service account's token and its Job role's AWS keys.
pub async fn pod_command(service_account: &str, container: &Container) -> Command {
    let (kubeconfig, (key, secret), pod) = if service_account == env("TSO_PURGE_SERVICE_ACCOUNT") {
        ("TSO_KUBECONFIG_PURGE", purge_keys().await, "purge-pod")
    } else if service_account == env("TSO_EXPORT_SERVICE_ACCOUNT") {
        ("TSO_KUBECONFIG_EXPORT", export_keys().await, "export-pod")
    } else {
        panic!("no test identity for service account {service_account}")
    };
    assert_eq!(
        container.command.as_deref(),
        Some(["tenant-storage-operator".to_owned()].as_slice())
    );
    let mut command = Command::new(env!("CARGO_BIN_EXE_tenant-storage-operator"));
    command
        .env_clear()
        .args(container.args.clone().unwrap_or_default())
        .envs(container.env.iter().flatten().map(|v| {
            // The downward API: the pod's name, unique per started pod.
            let from_field = v
                .value_from
                .as_ref()
                .and_then(|f| f.field_ref.as_ref())
                .map(|f| f.field_path.as_str());
            let value = match from_field {
                Some("metadata.name") => format!("{pod}-{}", unique_suffix()),
                Some(other) => panic!("no downward API value for {other}"),
                None => v.value.clone().unwrap_or_default(),
            };
            (v.name.clone(), value)
        }))
        .env("KUBECONFIG", env(kubeconfig))
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .kill_on_drop(true);
    command
}
