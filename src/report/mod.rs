//! Compliance report across all tenants, with evidence read from the cloud at report time (not
//! from status alone): what an auditor asks for. `evaluate` and the renderers are pure; `collect`
//! does the reads.

mod backups;
mod replicas;

use std::fmt::Write as _;

use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::api::{EncryptionMode, ResidencyPolicy, ResidencyPolicySpec, TenantStorage};
use crate::cloud::{BucketPresence, Cloud, CloudError};
use crate::plan::policy_document::{Effect, PolicyDocument};
use crate::plan::{
    EncryptionRequirement, LoggingTarget, ObservedEncryption, ObservedKey, PublicAccessBlock,
};

/// One requirement, judged with the evidence that decided it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub pass: bool,
    pub evidence: String,
}

impl Check {
    fn pass(evidence: impl Into<String>) -> Self {
        Check {
            pass: true,
            evidence: evidence.into(),
        }
    }
    fn fail(evidence: impl Into<String>) -> Self {
        Check {
            pass: false,
            evidence: evidence.into(),
        }
    }
}

/// One tenant's line in the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantReport {
    pub tenant: String,
    pub policy: String,
    pub jurisdiction: String,
    pub bucket: String,
    pub region: Check,
    pub encryption: Check,
    pub tls_only: Check,
    pub public_access: Check,
    pub access_logging: Check,
    pub backups: Check,
    /// The replica (if the tenant has or needs one) is in a region the policy allows for
    /// replicas, and the primary's rule feeds it.
    pub replica_region: Check,
    pub replica_encrypted: Check,
    pub compliant: bool,
}

/// What was read from the cloud about one tenant.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// Region from HEAD (`None`: bucket not found).
    pub region: Option<String>,
    pub encryption: Option<ObservedEncryption>,
    pub key: Option<ObservedKey>,
    pub policy: Option<String>,
    pub public_access_block: Option<PublicAccessBlock>,
    pub object_ownership: Option<String>,
    pub logging: Option<LoggingTarget>,
    /// Region of the logging target bucket, from HEAD.
    pub logging_region: Option<String>,
    /// The backups recorded for the tenant, as AWS Backup holds them.
    pub backups: Option<backups::BackupEvidence>,
    /// The replica recorded for the tenant, as S3 holds it.
    pub replica: Option<replicas::ReplicaEvidence>,
}

/// How a tenant's data is meant to be encrypted: its recorded mode and, with the tenant key,
/// the key's ARN.
#[derive(Clone, Copy, Debug)]
pub struct Protection<'a> {
    pub mode: EncryptionMode,
    pub key_arn: Option<&'a str>,
}

/// Whether the data is under the encryption the tenant was provisioned with, and that is what
/// the policy asks. Bucket Keys and SSE-C blocking are the operator's to keep (drift), not the
/// report's question.
fn encryption(
    ev: &Evidence,
    protection: Protection<'_>,
    policy: Option<&ResidencyPolicySpec>,
) -> Check {
    let asked = policy.map(|p| p.encryption.mode);
    if let Some(asked) = asked.filter(|asked| *asked != protection.mode) {
        return Check::fail(format!(
            "the tenant is encrypted with {:?}, but its policy asks for {asked:?}",
            protection.mode
        ));
    }
    let key_arn = protection.key_arn;
    match (protection.mode, &ev.encryption, key_arn, &ev.key) {
        (EncryptionMode::S3Managed, Some(enc), _, _)
            if enc.meets(EncryptionRequirement::S3Managed) =>
        {
            Check::pass("SSE-S3 (AES-256 with S3-managed keys), as the policy asks")
        }
        (EncryptionMode::TenantKey, Some(enc), Some(arn), Some(key))
            if enc.meets(EncryptionRequirement::Kms {
                key: Some(arn),
                dsse: false,
            }) =>
        {
            if key.state == "Enabled" {
                Check::pass(format!(
                    "SSE-KMS with tenant key {arn} ({}, bucket key {})",
                    key.state,
                    if enc.bucket_key { "on" } else { "off" }
                ))
            } else {
                Check::fail(format!(
                    "SSE-KMS with tenant key {arn}, but the key is {}",
                    key.state
                ))
            }
        }
        (EncryptionMode::S3Managed, Some(enc), _, _) => Check::fail(format!(
            "default encryption {} with {}, not SSE-S3",
            enc.algorithm,
            enc.key_id.as_deref().unwrap_or("no key"),
        )),
        (EncryptionMode::TenantKey, Some(enc), _, _) => Check::fail(format!(
            "default encryption {} with {}, not the tenant key {}",
            enc.algorithm,
            enc.key_id.as_deref().unwrap_or("no key"),
            key_arn.unwrap_or("(none recorded)")
        )),
        (_, None, _, _) => Check::fail("no default encryption"),
    }
}

/// Judges one tenant against its policy from what the cloud said.
pub fn evaluate(
    tenant: String,
    policy_name: &str,
    policy: Option<&ResidencyPolicySpec>,
    bucket: String,
    protection: Protection<'_>,
    ev: &Evidence,
) -> TenantReport {
    let jurisdiction = policy.map_or_else(|| "-".to_owned(), |p| p.jurisdiction.clone());
    let region = match (&ev.region, policy) {
        (None, _) => Check::fail(format!("bucket {bucket} not found")),
        (Some(_), None) => Check::fail(format!("ResidencyPolicy {policy_name} not found")),
        (Some(r), Some(p)) if p.allowed_regions.contains(r) => {
            Check::pass(format!("bucket in {r}, allowed by {policy_name}"))
        }
        (Some(r), Some(p)) => Check::fail(format!(
            "bucket in {r}; {policy_name} allows {}",
            p.allowed_regions.join(", ")
        )),
    };
    let encryption = encryption(ev, protection, policy);
    let tls_only = match ev.policy.as_deref().map(PolicyDocument::parse) {
        Some(Ok(doc)) => tls_only(&doc),
        Some(Err(e)) => Check::fail(format!("bucket policy unreadable: {e}")),
        None => Check::fail("no bucket policy"),
    };
    let public_access = match (&ev.public_access_block, ev.object_ownership.as_deref()) {
        (Some(pab), Some("BucketOwnerEnforced")) if *pab == PublicAccessBlock::ALL_ON => {
            Check::pass("all four Block Public Access settings on; ACLs disabled")
        }
        (pab, ownership) => Check::fail(format!(
            "public access block {}; object ownership {}",
            pab.map_or("absent".to_owned(), |p| format!("{p:?}")),
            ownership.unwrap_or("unset")
        )),
    };
    let logging_required = policy.is_some_and(|p| p.access_logging.enabled);
    let access_logging = match (&ev.logging, logging_required) {
        (Some(target), _) => match (&ev.logging_region, &ev.region) {
            (Some(lr), Some(r)) if lr == r => Check::pass(format!(
                "to s3://{}/{} in {lr}",
                target.bucket, target.prefix
            )),
            (Some(lr), _) => Check::fail(format!(
                "to s3://{}/{} in {lr}, outside the tenant's region",
                target.bucket, target.prefix
            )),
            (None, _) => Check::fail(format!("to s3://{}, which does not exist", target.bucket)),
        },
        (None, true) => Check::fail("access logging off, but the policy requires it"),
        (None, false) => Check::pass("off; not required by the policy"),
    };
    let bucket_arn = crate::plan::Arn::bucket(
        crate::plan::partition_of(ev.region.as_deref().unwrap_or_default()),
        &bucket,
    );
    let backups = backups::judge(policy, &bucket_arn.to_string(), ev.backups.as_ref());
    let replica_region = replicas::region(policy, ev.replica.as_ref());
    let replica_encrypted = replicas::encrypted(protection.mode, ev.replica.as_ref());
    let compliant = [
        &region,
        &encryption,
        &tls_only,
        &public_access,
        &access_logging,
        &backups,
        &replica_region,
        &replica_encrypted,
    ]
    .iter()
    .all(|c| c.pass);
    TenantReport {
        tenant,
        policy: policy_name.to_owned(),
        jurisdiction,
        bucket,
        region,
        encryption,
        tls_only,
        public_access,
        access_logging,
        backups,
        replica_region,
        replica_encrypted,
        compliant,
    }
}

/// Whether the bucket policy refuses plain HTTP (a `Deny` on `aws:SecureTransport` false), and
/// the TLS floor it sets, if any.
fn tls_only(policy: &PolicyDocument) -> Check {
    let denies_plain_http = policy.statements.iter().any(|st| {
        st.effect == Effect::Deny && st.condition_values("Bool", "aws:SecureTransport") == ["false"]
    });
    let min_tls = policy.statements.iter().find_map(|st| {
        match st.condition_values("NumericLessThan", "s3:TlsVersion") {
            [version] => Some(version.as_str()),
            _ => None,
        }
    });
    if denies_plain_http {
        Check::pass(format!(
            "bucket policy denies aws:SecureTransport=false; minimum TLS {}",
            min_tls.unwrap_or("not set")
        ))
    } else {
        Check::fail("bucket policy does not deny plain HTTP")
    }
}

/// Output format of `report`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Markdown,
}

fn mark(check: &Check) -> &'static str {
    if check.pass { "PASS" } else { "FAIL" }
}

pub fn render(reports: &[TenantReport], format: Format) -> Result<String, serde_json::Error> {
    let mut out = String::new();
    match format {
        Format::Json => {
            out = serde_json::to_string_pretty(&serde_json::json!({
                "tenants": reports,
                "compliant": reports.iter().filter(|r| r.compliant).count(),
                "nonCompliant": reports.iter().filter(|r| !r.compliant).count(),
            }))?
        }
        Format::Table => {
            let _ = writeln!(
                out,
                "{:<40} {:<6} {:<14} {:<9} {:<10} {:<7} {:<13} {:<14} {:<7} {:<7} {:<9} COMPLIANT",
                "TENANT",
                "JURIS.",
                "REGION",
                "IN-POLICY",
                "ENCRYPTION",
                "TLS",
                "PUBLIC-ACCESS",
                "ACCESS-LOGGING",
                "BACKUPS",
                "REPLICA",
                "REPL-ENC.",
            );
            for r in reports {
                let region = r
                    .region
                    .evidence
                    .split_whitespace()
                    .nth(2)
                    .unwrap_or("-")
                    .trim_end_matches(',');
                let _ = writeln!(
                    out,
                    "{:<40} {:<6} {:<14} {:<9} {:<10} {:<7} {:<13} {:<14} {:<7} {:<7} {:<9} {}",
                    r.tenant,
                    r.jurisdiction,
                    region,
                    mark(&r.region),
                    mark(&r.encryption),
                    mark(&r.tls_only),
                    mark(&r.public_access),
                    mark(&r.access_logging),
                    mark(&r.backups),
                    mark(&r.replica_region),
                    mark(&r.replica_encrypted),
                    if r.compliant { "yes" } else { "NO" }
                );
            }
            for r in reports.iter().filter(|r| !r.compliant) {
                for (what, c) in checks(r) {
                    if !c.pass {
                        let _ = writeln!(out, "{}: {what}: {}", r.tenant, c.evidence);
                    }
                }
            }
        }
        Format::Markdown => {
            let _ = writeln!(
                out,
                "| tenant | jurisdiction | bucket | region | encryption | TLS only | public access | access logging | backups configured | replica region in policy | replica encrypted | compliant |"
            );
            let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
            for r in reports {
                let cell = |c: &Check| format!("{} {}", mark(c), c.evidence.replace('|', "\\|"));
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.tenant,
                    r.jurisdiction,
                    r.bucket,
                    cell(&r.region),
                    cell(&r.encryption),
                    cell(&r.tls_only),
                    cell(&r.public_access),
                    cell(&r.access_logging),
                    cell(&r.backups),
                    cell(&r.replica_region),
                    cell(&r.replica_encrypted),
                    if r.compliant { "yes" } else { "**no**" }
                );
            }
        }
    }
    Ok(out)
}

fn checks(r: &TenantReport) -> [(&'static str, &Check); 8] {
    [
        ("region", &r.region),
        ("encryption", &r.encryption),
        ("TLS only", &r.tls_only),
        ("public access", &r.public_access),
        ("access logging", &r.access_logging),
        ("backups configured", &r.backups),
        ("replica region in policy", &r.replica_region),
        ("replica encrypted", &r.replica_encrypted),
    ]
}

/// Reads every TenantStorage (in `namespaces`, or all) and the cloud state of its bucket.
pub async fn collect(
    client: &Client,
    cloud: &Cloud,
    namespaces: &[String],
) -> Result<Vec<TenantReport>, ReportError> {
    let policies: Api<ResidencyPolicy> = Api::all(client.clone());
    let policies = policies.list(&ListParams::default()).await?.items;
    let mut tenants = Vec::new();
    if namespaces.is_empty() {
        tenants = Api::<TenantStorage>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items;
    } else {
        for ns in namespaces {
            tenants.extend(
                Api::<TenantStorage>::namespaced(client.clone(), ns)
                    .list(&ListParams::default())
                    .await?
                    .items,
            );
        }
    }
    let mut reports = Vec::new();
    for ts in tenants {
        let name = format!("{}/{}", ts.namespace().unwrap_or_default(), ts.name_any());
        let policy = policies
            .iter()
            .find(|p| p.name_any() == ts.spec.policy_ref)
            .map(|p| &p.spec);
        let status = ts.status.clone().unwrap_or_default();
        // A tenant that claimed its bucket before the mode was recorded uses the tenant key;
        // one that has none yet is judged by what its policy asks.
        let legacy = status
            .bucket_name
            .is_some()
            .then_some(EncryptionMode::TenantKey);
        let asked = policy.map(|p| p.encryption.mode);
        let protection = Protection {
            mode: status
                .encryption_mode
                .or(legacy)
                .or(asked)
                .unwrap_or_default(),
            key_arn: status.kms_key_arn.as_deref(),
        };
        let (Some(bucket), Some(region)) = (status.bucket_name.clone(), status.region.clone())
        else {
            reports.push(evaluate(
                name,
                &ts.spec.policy_ref,
                policy,
                match &ts.spec.delegated {
                    Some(d) => format!("(delegated: {})", d.bucket),
                    None => "(not provisioned)".into(),
                },
                protection,
                &Evidence::default(),
            ));
            continue;
        };
        let mut ev = observe(cloud, &bucket, &region, status.kms_key_arn.as_deref()).await?;
        if let Some(recorded) = &status.backup {
            let s3 = cloud.region(&recorded.region);
            ev.backups = Some(backups::observe(&s3, &bucket, recorded).await?);
        }
        if let Some(recorded) = &status.replica {
            let primary = (bucket.as_str(), region.as_str());
            ev.replica = Some(replicas::observe(cloud, primary, recorded).await?);
        }
        reports.push(evaluate(
            name,
            &ts.spec.policy_ref,
            policy,
            bucket,
            protection,
            &ev,
        ));
    }
    Ok(reports)
}

async fn observe(
    cloud: &Cloud,
    bucket: &str,
    region: &str,
    key_arn: Option<&str>,
) -> Result<Evidence, CloudError> {
    let s3 = cloud.region(region);
    let actual = match s3.bucket_presence(bucket).await? {
        BucketPresence::Ours { region } => region,
        BucketPresence::Absent | BucketPresence::OtherAccount => return Ok(Evidence::default()),
    };
    let s3 = cloud.region(&actual);
    let (encryption, policy, public_access_block, object_ownership, logging) = futures::try_join!(
        s3.bucket_encryption(bucket),
        s3.bucket_policy(bucket),
        s3.public_access_block(bucket),
        s3.object_ownership(bucket),
        s3.logging(bucket),
    )?;
    let key = match key_arn {
        Some(arn) => s3.observe_key(arn, true).await?,
        None => None,
    };
    let logging_region = match &logging {
        Some(target) => match s3.bucket_presence(&target.bucket).await? {
            BucketPresence::Ours { region } => Some(region),
            _ => None,
        },
        None => None,
    };
    Ok(Evidence {
        region: Some(actual),
        encryption,
        key,
        policy,
        public_access_block,
        object_ownership,
        logging,
        logging_region,
        backups: None,
        replica: None,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Cloud(#[from] CloudError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{DefaultEncryption, Desired, TenantIdentity};

    fn keyed() -> Protection<'static> {
        Protection {
            mode: EncryptionMode::TenantKey,
            key_arn: Some(KEY),
        }
    }

    const KEY: &str = "arn:aws:kms:eu-central-1:000000000000:key/k1";

    fn policy() -> ResidencyPolicySpec {
        serde_json::from_value(serde_json::json!({
            "jurisdiction": "EU", "allowedRegions": ["eu-central-1"], "defaultRegion": "eu-central-1"
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn good() -> Evidence {
        let id = TenantIdentity {
            cluster_id: "c".into(),
            namespace: "n".into(),
            name: "t".into(),
        };
        let desired = Desired::new("tso", &id, "eu", &policy(), "eu-central-1".into());
        Evidence {
            region: Some("eu-central-1".into()),
            encryption: Some(ObservedEncryption {
                algorithm: "aws:kms".into(),
                key_id: Some(KEY.into()),
                bucket_key: true,
                sse_c_blocked: true,
            }),
            key: Some(ObservedKey {
                arn: KEY.into(),
                key_id: "k1".into(),
                state: "Enabled".into(),
                rotation_enabled: true,
            }),
            policy: Some(
                desired
                    .bucket_policy(&DefaultEncryption::Kms(KEY.into()))
                    .to_string(),
            ),
            public_access_block: Some(PublicAccessBlock::ALL_ON),
            object_ownership: Some("BucketOwnerEnforced".into()),
            logging: Some(LoggingTarget {
                bucket: "logs".into(),
                prefix: "n/t/".into(),
            }),
            logging_region: Some("eu-central-1".into()),
            backups: None,
            replica: None,
        }
    }

    #[test]
    fn compliant_tenant_passes_everything() {
        let r = evaluate(
            "n/t".into(),
            "eu",
            Some(&policy()),
            "b".into(),
            keyed(),
            &good(),
        );
        assert!(r.compliant, "{r:?}");
        assert!(
            r.tls_only.evidence.contains("minimum TLS 1.2"),
            "{}",
            r.tls_only.evidence
        );
    }

    #[test]
    fn each_failure_is_caught_with_its_evidence() {
        let p = policy();
        type Break = Box<dyn Fn(&mut Evidence)>;
        let cases: Vec<(&str, Break)> = vec![
            (
                "bucket in us-east-1",
                Box::new(|e| {
                    e.region = Some("us-east-1".into());
                    e.logging_region = Some("us-east-1".into());
                }),
            ),
            (
                "AES256",
                Box::new(|e| {
                    e.encryption = Some(ObservedEncryption {
                        algorithm: "AES256".into(),
                        key_id: None,
                        bucket_key: false,
                        sse_c_blocked: true,
                    })
                }),
            ),
            (
                "the key is Disabled",
                Box::new(|e| {
                    if let Some(k) = e.key.as_mut() {
                        k.state = "Disabled".into()
                    }
                }),
            ),
            ("no bucket policy", Box::new(|e| e.policy = None)),
            (
                "bucket policy unreadable",
                Box::new(|e| e.policy = Some("{\"Statement\": 1}".into())),
            ),
            (
                "does not deny plain HTTP",
                Box::new(|e| {
                    e.policy = Some(
                        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Condition": {"Bool": {"aws:SecureTransport": false}}}}"#.into(),
                    )
                }),
            ),
            (
                "object ownership ObjectWriter",
                Box::new(|e| e.object_ownership = Some("ObjectWriter".into())),
            ),
            ("requires it", Box::new(|e| e.logging = None)),
            (
                "outside the tenant's region",
                Box::new(|e| e.logging_region = Some("us-east-1".into())),
            ),
        ];
        for (evidence, break_it) in cases {
            let mut ev = good();
            break_it(&mut ev);
            let r = evaluate("n/t".into(), "eu", Some(&p), "b".into(), keyed(), &ev);
            assert!(!r.compliant, "{evidence}: {r:?}");
            let failed: Vec<_> = checks(&r).into_iter().filter(|(_, c)| !c.pass).collect();
            assert_eq!(failed.len(), 1, "{evidence}: {failed:?}");
            assert!(
                failed[0].1.evidence.contains(evidence),
                "{evidence}: {failed:?}"
            );
        }
    }

    /// Read as AWS may return it: one statement as an object, a boolean condition value.
    #[test]
    fn a_hand_written_policy_is_read_as_iam_reads_it() {
        let mut ev = good();
        ev.policy = Some(
            r#"{"Version": "2012-10-17", "Statement": {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "s3:*", "Resource": "arn:aws:s3:::b/*", "Condition": {"Bool": {"aws:SecureTransport": false}}}}"#.into(),
        );
        let r = evaluate(
            "n/t".into(),
            "eu",
            Some(&policy()),
            "b".into(),
            keyed(),
            &ev,
        );
        assert!(r.tls_only.pass, "{r:?}");
        assert!(
            r.tls_only.evidence.contains("minimum TLS not set"),
            "{}",
            r.tls_only.evidence
        );
    }

    #[test]
    fn renders_every_format() {
        let p = policy();
        let ok = evaluate("n/ok".into(), "eu", Some(&p), "b1".into(), keyed(), &good());
        let mut ev = good();
        ev.policy = None;
        let bad = evaluate("n/bad".into(), "eu", Some(&p), "b2".into(), keyed(), &ev);
        let reports = [ok, bad];
        let json: serde_json::Value =
            serde_json::from_str(&render(&reports, Format::Json).unwrap_or_default())
                .unwrap_or_default();
        assert_eq!(json["nonCompliant"], 1);
        assert_eq!(json["tenants"][1]["tlsOnly"]["pass"], false);
        let md = render(&reports, Format::Markdown).unwrap_or_default();
        assert!(
            md.contains("| n/bad | EU | b2 |") && md.contains("FAIL no bucket policy"),
            "{md}"
        );
        let table = render(&reports, Format::Table).unwrap_or_default();
        assert!(
            table.contains("n/bad: TLS only: no bucket policy"),
            "{table}"
        );
    }

    #[test]
    fn s3_managed_keys_pass_only_where_the_policy_asks_for_them() {
        let mut ev = good();
        ev.encryption = Some(ObservedEncryption {
            algorithm: "AES256".into(),
            key_id: None,
            bucket_key: false,
            sse_c_blocked: true,
        });
        ev.key = None;
        let s3 = Protection {
            mode: EncryptionMode::S3Managed,
            key_arn: None,
        };
        let mut asks = policy();
        asks.encryption.mode = EncryptionMode::S3Managed;
        let r = evaluate("n/t".into(), "eu", Some(&asks), "b".into(), s3, &ev);
        assert!(r.encryption.pass, "{:?}", r.encryption);
        let r = evaluate("n/t".into(), "eu", Some(&policy()), "b".into(), s3, &ev);
        assert!(!r.encryption.pass && r.encryption.evidence.contains("asks for TenantKey"));
        let r = evaluate(
            "n/t".into(),
            "eu",
            Some(&policy()),
            "b".into(),
            keyed(),
            &ev,
        );
        assert!(
            !r.encryption.pass,
            "SSE-S3 is not the tenant key: {:?}",
            r.encryption
        );
    }
}
