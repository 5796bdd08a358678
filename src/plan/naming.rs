//! Deterministic, DNS-safe names for tenant resources.

use sha2::{Digest, Sha256};
use thiserror::Error;

/// S3's limit on bucket name length.
pub const MAX_BUCKET_NAME: usize = 63;
/// Longest accepted `--bucket-prefix`, so that a readable part of the tenant survives.
pub const MAX_PREFIX: usize = 20;
/// Hex characters of the identity hash in a bucket name: 48 bits, so a collision between two
/// tenants of one account is not a practical concern.
const HASH_LEN: usize = 12;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NamingError {
    #[error(
        "bucket prefix {0:?} is invalid: use 1-{MAX_PREFIX} lowercase letters, digits or '-', starting and ending with a letter or digit, not starting with 'xn--', 'sthree-' or 'amzn-s3-demo-'"
    )]
    Prefix(String),
    #[error(
        "cluster id {0:?} is invalid: use 1-63 lowercase letters, digits or '-' (it is written into every resource's tags and must never change for a cluster)"
    )]
    ClusterId(String),
}

/// Validates the operator-wide bucket prefix (`--bucket-prefix`).
pub fn validate_prefix(prefix: &str) -> Result<(), NamingError> {
    let ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX
        && is_dns_label(prefix)
        && !["xn--", "sthree-", "amzn-s3-demo-"]
            .iter()
            .any(|p| prefix.starts_with(p));
    ok.then_some(())
        .ok_or_else(|| NamingError::Prefix(prefix.to_owned()))
}

/// Validates the cluster id (`--cluster-id`).
pub fn validate_cluster_id(id: &str) -> Result<(), NamingError> {
    (!id.is_empty() && id.len() <= 63 && is_dns_label(id))
        .then_some(())
        .ok_or_else(|| NamingError::ClusterId(id.to_owned()))
}

fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(|b| *b != b'-')
        && bytes.last().is_some_and(|b| *b != b'-')
}

/// `<prefix>-<namespace>-<name>-<hash>`, cut to 63 characters. The hash covers cluster id,
/// namespace and name, so the name is unique per tenant even when the readable part is cut, and
/// two clusters sharing an account never collide.
pub fn bucket_name(prefix: &str, cluster_id: &str, namespace: &str, name: &str) -> String {
    let hash = identity_hash(cluster_id, namespace, name);
    readable_name(prefix, &format!("{namespace}-{name}"), &hash)
}

/// `<prefix>-r-<namespace>-<name>-<hash>`: the tenant's replica bucket in `region`. The hash
/// also covers the region, so a replica in another region would never reuse the name.
pub fn replica_bucket_name(
    prefix: &str,
    cluster_id: &str,
    namespace: &str,
    name: &str,
    region: &str,
) -> String {
    let hash = identity_hash(cluster_id, &format!("replica:{region}:{namespace}"), name);
    readable_name(prefix, &format!("r-{namespace}-{name}"), &hash)
}

/// IAM name of the role S3 replicates a tenant's bucket with, shaped like its bucket name.
pub fn replication_role_name(cluster_id: &str, namespace: &str, name: &str) -> String {
    let hash = identity_hash(cluster_id, &format!("replication:{namespace}"), name);
    readable_name("replication", &format!("{namespace}-{name}"), &hash)
}

/// `<prefix>-<readable>-<hash>` within S3's 63 characters: `readable` made DNS-safe and cut.
fn readable_name(prefix: &str, readable: &str, hash: &str) -> String {
    let budget = MAX_BUCKET_NAME.saturating_sub(prefix.len() + HASH_LEN + 2);
    let readable: String = readable
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            _ => '-',
        })
        .take(budget)
        .collect();
    let readable = squeeze_dashes(readable.trim_matches('-'));
    if readable.is_empty() {
        format!("{prefix}-{hash}")
    } else {
        format!("{prefix}-{readable}-{hash}")
    }
}

/// `<prefix>-logs-<region>-<hash>`: the access-log bucket of one policy in one region. The hash
/// covers cluster id, policy and region, so each policy's retention applies to its own logs.
pub fn log_bucket_name(prefix: &str, cluster_id: &str, policy: &str, region: &str) -> String {
    let hash = identity_hash(cluster_id, &format!("logs:{policy}"), region);
    format!("{prefix}-logs-{region}-{hash}")
}

/// The operator-owned bucket that keeps deletion evidence of one policy's tenants in one region.
pub fn evidence_bucket_name(prefix: &str, cluster_id: &str, policy: &str, region: &str) -> String {
    let hash = identity_hash(cluster_id, &format!("evidence:{policy}"), region);
    format!("{prefix}-evidence-{region}-{hash}")
}

/// The operator-owned bucket that keeps the exports of one policy's tenants in one region, so an
/// export stays in its tenant's jurisdiction.
pub fn export_bucket_name(prefix: &str, cluster_id: &str, policy: &str, region: &str) -> String {
    let hash = identity_hash(cluster_id, &format!("export:{policy}"), region);
    format!("{prefix}-export-{region}-{hash}")
}

/// AWS Backup's limit on vault and plan names.
const MAX_BACKUP_NAME: usize = 50;

/// `<prefix>-<region>-<hash>`: the backup vault (and plan) of one policy in one region, at most
/// 50 characters (a region too long for them is cut; the hash covers it whole, with the
/// cluster id and policy).
pub fn backup_vault_name(prefix: &str, cluster_id: &str, policy: &str, region: &str) -> String {
    let hash = identity_hash(cluster_id, &format!("backup:{policy}"), region);
    let budget = MAX_BACKUP_NAME.saturating_sub(prefix.len() + HASH_LEN + 2);
    let region: String = region.chars().take(budget).collect();
    format!("{prefix}-{}-{hash}", region.trim_end_matches('-'))
}

/// Alias of the key that encrypts a policy's backup vault in a region. Five segments: a tenant
/// key's alias has four (`<cluster>/<namespace>/<name>`), so no tenant can hold this one.
pub fn backup_key_alias(cluster_id: &str, policy: &str) -> String {
    format!(
        "alias/tenant-storage/{cluster_id}/backup/{}/vault",
        policy.replace('.', "_")
    )
}

/// IAM name of the role AWS Backup assumes for one cluster's backups, beside the tenant roles
/// under [`role_path`].
pub fn backup_role_name(cluster_id: &str) -> String {
    let hash = identity_hash(cluster_id, "backup", "role");
    format!("tenant-storage-backup-{hash}")
}

/// Alias of the operator's key that signs deletion certificates, one per region.
pub fn signing_key_alias(cluster_id: &str) -> String {
    format!("alias/tenant-storage/{cluster_id}/evidence-signing")
}

/// IAM name of a tenant's workload role: `tenant-<namespace>-<name>-<hash>`, the shape of a
/// bucket name (at most 63 characters, which fits IAM's 64), unique per cluster and tenant.
pub fn role_name(cluster_id: &str, namespace: &str, name: &str) -> String {
    bucket_name("tenant", cluster_id, namespace, name)
}

/// IAM path of the roles of one cluster: the operator's IAM permissions can be scoped to it.
pub fn role_path(cluster_id: &str) -> String {
    format!("/tenant-storage-operator/{cluster_id}/")
}

/// KMS's limit on alias length.
const MAX_ALIAS: usize = 256;

/// KMS alias of a tenant's key. Aliases are per account and region, so the cluster id is part
/// of it. KMS allows only `[A-Za-z0-9/_-]`: the dots a Kubernetes name may hold become `_`
/// (which Kubernetes names never contain, so no two tenants map to one alias), and a name too
/// long for 256 characters is cut and made unique by the identity hash.
pub fn key_alias(cluster_id: &str, namespace: &str, name: &str) -> String {
    let alias = format!(
        "alias/tenant-storage/{cluster_id}/{namespace}/{}",
        name.replace('.', "_")
    );
    if alias.len() <= MAX_ALIAS {
        return alias;
    }
    let hash = identity_hash(cluster_id, namespace, name);
    let mut cut: String = alias.chars().take(MAX_ALIAS - HASH_LEN - 1).collect();
    cut.push('-');
    cut.push_str(&hash);
    cut
}

/// Label on deletion Jobs and on a request's records: the request they serve.
pub const DELETION_REQUEST_LABEL: &str = "storage.tenancy.dev/deletion-request";

/// Name of the Job serving a DataDeletionRequest, and the prefix of its records' names:
/// readable, at most 63 characters, unique per request namespace and name.
pub fn deletion_job_name(namespace: &str, name: &str) -> String {
    job_name("purge", namespace, name)
}

/// Name of the Job serving a DataExportRequest (and of its fence Lease's prefix).
pub fn export_job_name(namespace: &str, name: &str) -> String {
    job_name("export", namespace, name)
}

/// Name of the Job that signs a fresh download link for the export request of uid
/// `request_uid`, once per value of its refresh annotation. Named by the uid, which nobody
/// chooses: a value picked to collide with another request's name cannot reach that request.
pub fn export_link_job_name(request_uid: &str, refresh: &str) -> String {
    format!("link-{request_uid}-{}", refresh_hash(refresh))
}

/// Name of the Secret that hands a link over to the operator, by the same rule.
pub fn export_link_handoff_name(request_uid: &str, refresh: Option<&str>) -> String {
    match refresh {
        None => format!("export-link-{request_uid}"),
        Some(value) => format!("export-link-{request_uid}-{}", refresh_hash(value)),
    }
}

/// 64 bits of the SHA-256 of a refresh annotation value.
fn refresh_hash(value: &str) -> String {
    Sha256::digest(value.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `<kind>-<namespace>-<name>` made a DNS label, cut to leave room for a hash of what it names.
fn job_name(kind: &str, namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    let hash: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    let readable: String = format!("{kind}-{namespace}-{name}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(52)
        .collect();
    format!("{}-{hash}", readable.trim_end_matches('-'))
}

/// Value of [`DELETION_REQUEST_LABEL`]: `<namespace>.<name>`, or the Job name when that is
/// longer than a label value may be (63 characters).
pub fn deletion_request_label(namespace: &str, name: &str) -> String {
    let value = format!("{namespace}.{name}");
    if value.len() <= 63 {
        value
    } else {
        deletion_job_name(namespace, name)
    }
}

fn identity_hash(cluster_id: &str, namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{cluster_id}/{namespace}/{name}").as_bytes());
    digest
        .iter()
        .flat_map(|b| [b >> 4, b & 0xf])
        .take(HASH_LEN)
        .map(|n| char::from_digit(u32::from(n), 16).unwrap_or('0'))
        .collect()
}

fn squeeze_dashes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_valid_bucket(name: &str) {
        assert!(
            (3..=MAX_BUCKET_NAME).contains(&name.len()),
            "{name} has length {}",
            name.len()
        );
        assert!(is_dns_label(name), "{name} is not DNS-safe");
        assert!(!name.contains("--"), "{name} has a double dash");
    }

    #[test]
    fn deterministic_and_readable() {
        let a = bucket_name("tso", "prod-eu", "acme", "data");
        assert_eq!(a, bucket_name("tso", "prod-eu", "acme", "data"));
        assert!(a.starts_with("tso-acme-data-"), "{a}");
        assert_valid_bucket(&a);
    }

    #[test]
    fn unique_per_cluster_namespace_and_name() {
        let names = [
            bucket_name("tso", "c1", "a", "b-c"),
            bucket_name("tso", "c1", "a-b", "c"),
            bucket_name("tso", "c2", "a", "b-c"),
            bucket_name("tso", "c1", "a", "b"),
        ];
        for (i, x) in names.iter().enumerate() {
            for y in &names[i + 1..] {
                assert_ne!(x, y);
            }
        }
    }

    #[test]
    fn longest_inputs_fit_in_63_characters() {
        let ns = "n".repeat(63);
        let name = format!("{}.x.{}", "a".repeat(120), "b".repeat(120));
        let long = bucket_name(&"p".repeat(MAX_PREFIX), "cluster", &ns, &name);
        assert_valid_bucket(&long);
        let other = bucket_name(&"p".repeat(MAX_PREFIX), "cluster", &ns, &format!("{name}z"));
        assert_ne!(long, other, "truncation must not merge two tenants");
    }

    #[test]
    fn dots_and_dashes_never_produce_invalid_names() {
        for (ns, name) in [("a", "-.-"), ("x", "y.-.z"), ("ns", "...")] {
            assert_valid_bucket(&bucket_name("t", "c", ns, name));
        }
    }

    #[test]
    fn prefix_and_cluster_id_rules() {
        assert!(validate_prefix("tso").is_ok());
        for bad in [
            "",
            "-a",
            "a-",
            "Tso",
            "a_b",
            "xn--a",
            "sthree-x",
            &"a".repeat(21),
        ] {
            assert!(validate_prefix(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_cluster_id("prod-eu-1").is_ok());
        assert!(validate_cluster_id("Prod").is_err());
        assert!(validate_cluster_id("").is_err());
    }

    #[test]
    fn log_bucket_names() {
        let long = log_bucket_name(&"p".repeat(MAX_PREFIX), "cluster", "eu", "ap-southeast-3");
        assert_valid_bucket(&long);
        assert_ne!(
            log_bucket_name("t", "c", "eu", "eu-west-1"),
            log_bucket_name("t", "c", "eu-strict", "eu-west-1")
        );
        assert!(log_bucket_name("t", "c", "eu", "eu-west-1").starts_with("t-logs-eu-west-1-"));
    }

    #[test]
    fn export_bucket_names() {
        let long = export_bucket_name(&"p".repeat(MAX_PREFIX), "cluster", "eu", "ap-southeast-3");
        assert_valid_bucket(&long);
        let name = export_bucket_name("t", "c", "eu", "eu-west-1");
        assert_eq!(name, export_bucket_name("t", "c", "eu", "eu-west-1"));
        assert!(name.starts_with("t-export-eu-west-1-"), "{name}");
        // Same policy and region, other purpose: the hash differs as well as the readable part.
        let evidence = evidence_bucket_name("t", "c", "eu", "eu-west-1");
        assert_ne!(name.rsplit('-').next(), evidence.rsplit('-').next());
        assert_ne!(name, export_bucket_name("t", "c", "eu-strict", "eu-west-1"));
        assert_ne!(name, export_bucket_name("t", "c2", "eu", "eu-west-1"));
    }

    #[test]
    fn alias_is_namespaced_by_cluster() {
        assert_eq!(key_alias("c", "ns", "t"), "alias/tenant-storage/c/ns/t");
    }

    #[test]
    fn alias_is_always_valid_for_kms() {
        let long_name = format!("{}.{}", "a".repeat(200), "b".repeat(52));
        let aliases = [
            key_alias("c", "ns", "web.app"),
            key_alias(&"c".repeat(63), &"n".repeat(63), &long_name),
            key_alias(&"c".repeat(63), &"n".repeat(63), &format!("{long_name}x")),
        ];
        assert_eq!(aliases[0], "alias/tenant-storage/c/ns/web_app");
        for alias in &aliases {
            assert!(alias.len() <= MAX_ALIAS, "{alias} is too long");
            assert!(
                alias
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c)),
                "{alias} has characters KMS refuses"
            );
        }
        assert_ne!(aliases[1], aliases[2], "cutting must not merge two tenants");
    }

    #[test]
    fn deletion_job_names_are_short_and_unique() {
        let long = "n".repeat(63);
        let a = deletion_job_name(&long, &"r".repeat(253));
        let b = deletion_job_name(&long, &format!("{}x", "r".repeat(252)));
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
        assert!(deletion_job_name("acme", "gdpr-42").starts_with("purge-acme-gdpr-42-"));
        assert!(deletion_request_label(&long, &"r".repeat(30)).len() <= 63);
    }

    #[test]
    fn export_job_names_are_short_unique_and_not_deletion_names() {
        let long = "n".repeat(63);
        let a = export_job_name(&long, &"r".repeat(253));
        let b = export_job_name(&long, &format!("{}x", "r".repeat(252)));
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
        assert_ne!(a, deletion_job_name(&long, &"r".repeat(253)));
        assert!(export_job_name("acme", "gdpr-42").starts_with("export-acme-gdpr-42-"));
        assert_ne!(
            export_job_name("acme", "gdpr-42"),
            deletion_job_name("acme", "gdpr-42")
        );
    }

    #[test]
    fn backup_names_fit_and_stay_apart() {
        let long = backup_vault_name(&"p".repeat(MAX_PREFIX), "cluster", "eu", &"r".repeat(32));
        assert!(long.len() <= MAX_BACKUP_NAME, "{long}");
        let name = backup_vault_name("t", "c", "eu", "eu-west-1");
        assert!(name.starts_with("t-eu-west-1-"), "{name}");
        assert_ne!(name, backup_vault_name("t", "c", "eu", "eu-west-3"));
        assert_ne!(name, backup_vault_name("t", "c", "us", "eu-west-1"));
        assert_ne!(name, backup_vault_name("t", "c2", "eu", "eu-west-1"));
        assert_eq!(
            backup_key_alias("c", "eu.strict"),
            "alias/tenant-storage/c/backup/eu_strict/vault"
        );
        assert_ne!(backup_key_alias("c", "eu"), key_alias("c", "backup", "eu"));
        assert!(backup_role_name(&"c".repeat(63)).len() <= 64);
        assert_ne!(backup_role_name("c1"), backup_role_name("c2"));
    }

    #[test]
    fn replica_names_are_their_own() {
        let long = "n".repeat(63);
        let primary = bucket_name("tso", "c1", "acme", &long);
        let replica = replica_bucket_name("tso", "c1", "acme", &long, "eu-west-1");
        assert!(replica.len() <= MAX_BUCKET_NAME, "{replica}");
        assert!(replica.starts_with("tso-r-acme-"), "{replica}");
        assert_ne!(replica, primary);
        assert_ne!(
            replica,
            replica_bucket_name("tso", "c1", "acme", &long, "eu-north-1")
        );
        let role = replication_role_name("c1", "acme", &long);
        assert!(
            role.len() <= 64 && role.starts_with("replication-acme-"),
            "{role}"
        );
        assert_ne!(role, role_name("c1", "acme", &long));
    }
}
