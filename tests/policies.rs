//! Every IAM policy document the operator generates passes parliament (the IAM policy linter,
//! https://github.com/duo-labs/parliament) with no finding above LOW, but for the accepted
//! findings listed in [`accepted`], each with its reason.
//!
//! The documents are built with the library's pure functions, from realistic ARNs; no API server
//! or AWS emulator is needed, only `TSO_PARLIAMENT` (set by `scripts/testenv.sh`): run it with
//! `scripts/test.sh`, or `source scripts/testenv.sh; testenv_install; cargo test --test policies`.
//!
//! parliament has no mode of its own for resource or trust policies: it lints every document
//! alike, checking a statement's `Principal` when there is one. Trust policies have no
//! `Resource` element, which parliament reports as MALFORMED (HIGH) before checking actions and
//! conditions (duo-labs/parliament#229). A trust policy is the resource policy of its role, so it
//! is linted as such: the role's ARN is added as each statement's `Resource`. Community auditors
//! (privilege escalation, credentials exposure, permissions management, ...) are on for all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tenant_storage_operator::api::{AccessLevel, ResidencyPolicySpec};
use tenant_storage_operator::plan::access::{self, OidcProvider};
use tenant_storage_operator::plan::iam_policy;
use tenant_storage_operator::plan::principal::principal_patterns;
use tenant_storage_operator::plan::{
    DefaultEncryption, Desired, DesiredLogBucket, PolicyDocument, TenantIdentity,
};

/// The account of a customer hosting a delegated tenant's bucket.
const CUSTOMER_ACCOUNT: &str = "210987654321";
const REGION: &str = "eu-central-1";
const PARTITION: &str = "aws";
const KEY_ARN: &str =
    "arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const TENANT_ROLE_ARN: &str =
    "arn:aws:iam::123456789012:role/tenant-storage-operator/prod-eu/tenant-acme-data-4f1c2a9b7e3d";
const OPERATOR_SESSION_ARN: &str =
    "arn:aws:sts::123456789012:assumed-role/tenant-storage-operator/botocore-session-1700000000";
const BREAK_GLASS_ARN: &str = "arn:aws:iam::123456789012:role/break-glass-admin";
const CUSTOMER_ROLE_ARN: &str = "arn:aws:iam::210987654321:role/tenant-storage-access";
const CUSTOMER_BUCKET_ARN: &str = "arn:aws:s3:::acme-analytics-eu";
const OIDC_PROVIDER_ARN: &str = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-central-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE";

/// Severities parliament reports, lowest first (`parliament/cli.py`).
const SEVERITIES: &[&str] = &["MUTE", "INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL"];

/// A finding above LOW that is accepted: the policy, parliament's issue code, and the
/// finding's subject (its detail; the actions it names when it has no detail), all exact.
struct Accepted {
    policy: &'static str,
    issue: &'static str,
    subject: String,
}

fn accept(policy: &'static str, issue: &'static str, subject: impl Into<String>) -> Accepted {
    Accepted {
        policy,
        issue,
        subject: subject.into(),
    }
}

/// Findings above LOW that are accepted, each with the reason. The test also fails when one is
/// no longer reported, so this list stays exact.
fn accepted() -> Vec<Accepted> {
    let issuer = OIDC_PROVIDER_ARN
        .split_once(":oidc-provider/")
        .map(|(_, issuer)| issuer)
        .expect("an OIDC provider ARN");
    let mut accepted = vec![
        // The community auditor flags every action that returns credentials. Obtaining the
        // credentials of one role is what these documents are for: the tenant role may assume
        // only the customer's role (role chaining, by ARN); the customer's trust admits only the
        // operator with the tenant's ExternalId and the tenant's own role; the IRSA trust admits only
        // the tenant's named service accounts through the cluster's OIDC provider, audience
        // pinned.
        accept("role-chaining", "CREDENTIALS_EXPOSURE", "sts:assumerole"),
        accept("customer-trust", "CREDENTIALS_EXPOSURE", "sts:assumerole"),
        accept(
            "irsa-trust",
            "CREDENTIALS_EXPOSURE",
            "sts:assumerolewithwebidentity",
        ),
        // parliament knows SAML providers and four public web identity providers, not IAM OIDC
        // providers (`oidc-provider/...`), which is how EKS IRSA federates service accounts.
        accept("irsa-trust", "UNKNOWN_FEDERATION_SOURCE", OIDC_PROVIDER_ARN),
        // `<issuer>:aud` and `<issuer>:sub` are the condition keys IAM derives from an OIDC
        // provider (AWS's IRSA setup uses exactly these); being per provider, they cannot be in
        // parliament's list of STS condition keys. They pin the audience and the service
        // accounts, so they stay.
        accept(
            "irsa-trust",
            "UNKNOWN_CONDITION_FOR_ACTION",
            format!("Unknown condition {issuer}:aud for action sts:AssumeRoleWithWebIdentity"),
        ),
        accept(
            "irsa-trust",
            "UNKNOWN_CONDITION_FOR_ACTION",
            format!("Unknown condition {issuer}:sub for action sts:AssumeRoleWithWebIdentity"),
        ),
    ];
    // Both tenant bucket policies (tenant key, S3-managed keys) share these statements.
    for tenant_bucket in TENANT_BUCKETS {
        // s3:TlsVersion is a Numeric key compared with versions like 1.2 (AWS's own examples do
        // so); parliament's Numeric check accepts only integers (`^\d+$`), so any TLS version
        // floor is reported, once per S3 action of `s3:*`.
        accepted.push(accept(
            tenant_bucket,
            "MISMATCHED_TYPE",
            "Type mismatch: s3:TlsVersion requires a value of type Numeric but given ['1.2']",
        ));
    }
    // The bucket policy's Deny statements on `s3:*` condition on the request's TLS version,
    // authentication type and signature age. parliament's S3 definition lists these keys for
    // every S3 action but two: InitiateReplication (S3 Batch Replication's own permission) and
    // PutAccessPointPublicAccessBlock (an account-level S3 Control action, which cannot name the
    // bucket at all). A Deny whose key a request does not carry just does not match it, which is
    // the intended reading for every action; narrowing `s3:*` to exclude these two would make the
    // statements weaker, not stronger.
    for tenant_bucket in TENANT_BUCKETS {
        for key in ["s3:TlsVersion", "s3:signatureAge", "s3:authType"] {
            for action in [
                "s3:InitiateReplication",
                "s3:PutAccessPointPublicAccessBlock",
            ] {
                accepted.push(accept(
                    tenant_bucket,
                    "UNKNOWN_CONDITION_FOR_ACTION",
                    format!("Unknown condition {key} for action {action}"),
                ));
            }
        }
    }
    accepted
}

/// The tenant bucket policy with the tenant key and with S3-managed keys.
const TENANT_BUCKETS: [&str; 2] = ["tenant-bucket", "tenant-bucket-s3-managed-keys"];

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: run the policy lint with scripts/test.sh, or \
             `source scripts/testenv.sh; testenv_install; cargo test --test policies` \
             (testenv_install installs parliament)"
        ),
    }
}

fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    format!("{}{:x}", std::process::id(), nanos % 0xfffff)
}

/// What a document is to IAM, which decides how it is linted.
enum Kind {
    /// Attached to a role (or created by the customer on theirs).
    Identity,
    /// A bucket policy.
    Resource,
    /// The trust policy of the role with this ARN.
    Trust(&'static str),
}

struct Document {
    name: &'static str,
    kind: Kind,
    policy: PolicyDocument,
}

fn eu_policy() -> ResidencyPolicySpec {
    serde_json::from_value(json!({
        "jurisdiction": "EU",
        "allowedRegions": [REGION],
        "defaultRegion": REGION,
        "accessLogging": {"enabled": true}
    }))
    .expect("a valid ResidencyPolicy spec")
}

/// Every policy document the operator generates or asks a customer to create.
fn documents() -> Vec<Document> {
    let spec = eu_policy();
    let id = TenantIdentity {
        cluster_id: "prod-eu".into(),
        namespace: "acme".into(),
        name: "data".into(),
    };
    let mut tenant = Desired::new("tso", &id, "eu", &spec, REGION.into());
    tenant.allowed_principals = [TENANT_ROLE_ARN, OPERATOR_SESSION_ARN, BREAK_GLASS_ARN]
        .iter()
        .flat_map(|arn| principal_patterns(arn))
        .collect();
    tenant.deny_writes = true;
    let bucket_arn = tenant.bucket_arn();

    let oidc = OidcProvider {
        arn: OIDC_PROVIDER_ARN.into(),
        audience: "sts.amazonaws.com".into(),
    };
    let issuer = oidc.issuer().expect("the provider ARN names an issuer");
    let operator_role = principal_patterns(OPERATOR_SESSION_ARN)
        .into_iter()
        .next()
        .expect("a session names its role");

    let mut documents = Vec::new();
    for (level, managed, customer) in [
        (
            AccessLevel::ReadWrite,
            "managed-access-read-write",
            "customer-permissions-read-write",
        ),
        (
            AccessLevel::ReadOnly,
            "managed-access-read-only",
            "customer-permissions-read-only",
        ),
    ] {
        documents.push(Document {
            name: managed,
            kind: Kind::Identity,
            policy: access::managed_access_policy(level, &bucket_arn, Some(KEY_ARN), REGION),
        });
        documents.push(Document {
            name: customer,
            kind: Kind::Identity,
            policy: access::customer_permissions_policy(
                level,
                CUSTOMER_BUCKET_ARN,
                CUSTOMER_ACCOUNT,
                &[REGION.to_owned(), "eu-west-1".to_owned()],
                PARTITION,
            ),
        });
    }
    documents.extend([
        Document {
            name: "role-chaining",
            kind: Kind::Identity,
            policy: access::chaining_policy(CUSTOMER_ROLE_ARN),
        },
        Document {
            name: "irsa-trust",
            kind: Kind::Trust(TENANT_ROLE_ARN),
            policy: access::irsa_trust_policy(&oidc, issuer, "acme", &["app".into(), "etl".into()]),
        },
        Document {
            name: "customer-trust",
            kind: Kind::Trust(CUSTOMER_ROLE_ARN),
            policy: access::customer_trust_policy(
                &operator_role,
                "9f4c1d2e7b3a4e8fa1c65d2b8e0f3a7c",
                Some(TENANT_ROLE_ARN),
            ),
        },
        Document {
            name: "tenant-bucket",
            kind: Kind::Resource,
            policy: tenant.bucket_policy(&DefaultEncryption::Kms(KEY_ARN.into())),
        },
        Document {
            name: "tenant-bucket-s3-managed-keys",
            kind: Kind::Resource,
            policy: tenant.bucket_policy(&DefaultEncryption::S3Managed),
        },
        // The Jobs' roles (`iam-policy purge`, `iam-policy export`).
        Document {
            name: "purge-jobs",
            kind: Kind::Identity,
            policy: iam_policy::purge(PARTITION, "123456789012", "tso"),
        },
        Document {
            name: "export-jobs",
            kind: Kind::Identity,
            policy: iam_policy::export(PARTITION, "123456789012", "tso"),
        },
        Document {
            name: "access-log-bucket",
            kind: Kind::Resource,
            policy: DesiredLogBucket::new("tso", "prod-eu", "eu", &spec, REGION)
                .shape()
                .policy,
        },
    ]);
    documents
}

/// The document as parliament is given it: a trust policy gets its role as `Resource`.
fn as_linted(document: &Document) -> PolicyDocument {
    let mut policy = document.policy.clone();
    match document.kind {
        Kind::Identity | Kind::Resource => {}
        Kind::Trust(role_arn) => {
            for statement in &mut policy.statements {
                assert!(
                    statement.resource.is_none() && statement.not_resource.is_none(),
                    "{}: a trust policy statement names a Resource: {statement:?}",
                    document.name
                );
                *statement = statement.clone().resource(role_arn);
            }
        }
    }
    policy
}

/// One parliament finding, from its `--json` output.
#[derive(Debug)]
struct Finding {
    issue: String,
    severity: String,
    /// The detail, or, for findings without one, the actions of their location.
    subject: String,
    line: String,
}

/// Runs parliament on `file` and returns every finding it reports, whatever its severity.
fn parliament(file: &Path) -> Vec<Finding> {
    let mut cmd = Command::new(env("TSO_PARLIAMENT"));
    cmd.arg("--json")
        .args(["--minimum_severity", "INFO"])
        .arg("--include-community-auditors")
        .arg("--files")
        .arg(file);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // parliament exits 0 without findings and 1 with some; anything else (a usage error, a
    // Python exception with its traceback) is not a lint result.
    let code = out.status.code();
    assert!(
        code == Some(0) || code == Some(1),
        "{cmd:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // One JSON object per line, each with `issue`, `severity`, `detail` and `location`.
    let findings: Vec<Finding> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("{cmd:?}: not a JSON finding ({e}): {line}\nstderr:\n{stderr}")
            });
            let field = |name: &str| {
                v[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("{cmd:?}: finding without a {name}: {line}"))
                    .to_owned()
            };
            Finding {
                issue: field("issue"),
                severity: field("severity"),
                subject: match &v["detail"] {
                    Value::String(s) if !s.is_empty() => s.clone(),
                    Value::Null | Value::String(_) => actions(&v["location"]),
                    other => other.to_string(),
                },
                line: line.to_owned(),
            }
        })
        .collect();
    assert_eq!(
        code == Some(1),
        !findings.is_empty(),
        "{cmd:?} exited with {} but printed {} findings:\n{stdout}\n{stderr}",
        out.status,
        findings.len()
    );
    findings
}

/// The actions a finding's location names, comma-separated.
fn actions(location: &Value) -> String {
    location["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_owned))
        .collect::<Vec<_>>()
        .join(",")
}

fn rank(severity: &str) -> usize {
    SEVERITIES
        .iter()
        .position(|s| *s == severity)
        .unwrap_or_else(|| panic!("unknown parliament severity {severity:?}"))
}

fn severity_rank_is_low_or_below(severity: &str) -> bool {
    rank(severity) <= rank("LOW")
}

#[test]
fn every_generated_policy_passes_parliament() {
    let dir: PathBuf = std::env::temp_dir().join(format!("tso-policies-{}", unique()));
    std::fs::create_dir_all(&dir).expect("create a temp dir for the policy documents");
    let mut failures = Vec::new();
    let accepted = accepted();
    let mut accepted_seen = BTreeSet::new();
    for document in documents() {
        let file = dir.join(format!("{}.json", document.name));
        let text = serde_json::to_string_pretty(&as_linted(&document)).expect("policy as JSON");
        std::fs::write(&file, text).expect("write the policy document");
        let findings = parliament(&file);
        let counts: Vec<String> = SEVERITIES
            .iter()
            .rev()
            .filter_map(|s| {
                let n = findings.iter().filter(|f| f.severity == *s).count();
                (n > 0).then(|| format!("{n} {s}"))
            })
            .collect();
        println!(
            "{}: {}",
            document.name,
            if counts.is_empty() {
                "no findings".to_owned()
            } else {
                counts.join(", ")
            }
        );
        // parliament reports a condition once per action `s3:*` expands to: group the same
        // finding, most severe first, with one of its lines.
        let mut grouped: BTreeMap<(std::cmp::Reverse<usize>, &str, &str), (usize, &str)> =
            BTreeMap::new();
        for f in &findings {
            let key = (
                std::cmp::Reverse(rank(&f.severity)),
                f.issue.as_str(),
                f.subject.as_str(),
            );
            grouped.entry(key).or_insert((0, &f.line)).0 += 1;
        }
        for ((severity, issue, subject), (count, line)) in grouped {
            let severity = SEVERITIES[severity.0];
            println!("  {count} x {severity} {issue}: {subject}");
            if severity_rank_is_low_or_below(severity) {
                continue;
            }
            let accepted = accepted.iter().position(|a| {
                a.policy == document.name && a.issue == issue && a.subject == subject
            });
            match accepted {
                Some(i) => {
                    accepted_seen.insert(i);
                }
                None => failures.push(format!(
                    "{}: {count} x {severity} {issue}: {subject}\n    e.g. {line}",
                    document.name
                )),
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    for (i, a) in accepted.iter().enumerate() {
        if !accepted_seen.contains(&i) {
            failures.push(format!(
                "{}: accepted finding no longer reported: {} {}",
                a.policy, a.issue, a.subject
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "parliament findings above LOW:\n{}",
        failures.join("\n")
    );
}

/// The tenant bucket policy refuses uploads with a customer-provided key (SSE-C), AWS's
/// documented form: a `Null` test on `s3:x-amz-server-side-encryption-customer-algorithm`, which
/// every SSE-C `PutObject`, `CopyObject` and multipart upload carries. The emulator never sets
/// that key, so the statement is asserted here (and linted above) rather than observed.
#[test]
fn tenant_bucket_policy_refuses_customer_provided_keys() {
    let documents = documents();
    let tenant = documents
        .iter()
        .find(|d| d.name == "tenant-bucket")
        .expect("the tenant bucket policy");
    let bucket_arn = tenant.policy.statements[0]
        .resources_named()
        .first()
        .expect("the bucket ARN");
    let sse_c: Vec<Value> = tenant
        .policy
        .statements
        .iter()
        .filter(|st| {
            st.condition
                .values()
                .flat_map(|keys| keys.keys())
                .any(|key| key.contains("x-amz-server-side-encryption-customer"))
        })
        .map(|st| serde_json::to_value(st).expect("a statement as JSON"))
        .collect();
    assert_eq!(
        sse_c,
        [json!({
            "Sid": "DenyCustomerProvidedKeys",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": format!("{bucket_arn}/*"),
            "Condition": {"Null": {"s3:x-amz-server-side-encryption-customer-algorithm": "false"}}
        })],
        "exactly one statement names SSE-C, and it denies every SSE-C upload"
    );
}
