//! Observed cloud state and the changes that turn it into the desired state.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::api::Versioning;

use super::identity::{TenantIdentity, tags};
use super::policy_document::PolicyDocument;

/// A tenant key as KMS describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedKey {
    pub arn: String,
    pub key_id: String,
    /// KMS key state: `Enabled`, `Disabled`, `PendingDeletion`, ...
    pub state: String,
    pub rotation_enabled: bool,
}

/// Default encryption of a bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedEncryption {
    pub algorithm: String,
    pub key_id: Option<String>,
    pub bucket_key: bool,
    /// Whether the rule's `BlockedEncryptionTypes` refuses uploads with customer-provided keys.
    pub sse_c_blocked: bool,
}

/// What a bucket's default encryption must be: one check, [`ObservedEncryption::meets`], for
/// the operator's own buckets (drift), the compliance report and customers' buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncryptionRequirement<'a> {
    /// Exactly as the operator sets it on its buckets, so anything else is drift: the wanted
    /// encryption (SSE-KMS with Bucket Keys on, or SSE-S3) and SSE-C blocked. A rule that
    /// allows SSE-C (or predates the setting) lets uploads escape the key.
    AsConfigured(&'a DefaultEncryption),
    /// SSE-KMS with `key` (its ARN; any key when `None`), and DSSE-KMS too when `dsse`.
    Kms { key: Option<&'a str>, dsse: bool },
    /// SSE-S3: AES-256 with S3-managed keys.
    S3Managed,
}

impl ObservedEncryption {
    /// Whether this default encryption meets `requirement`.
    pub fn meets(&self, requirement: EncryptionRequirement<'_>) -> bool {
        match requirement {
            EncryptionRequirement::AsConfigured(want) => {
                self.sse_c_blocked && self.is_configured_as(want)
            }
            EncryptionRequirement::Kms { key, dsse } => {
                let kms = self.algorithm == "aws:kms" || (dsse && self.algorithm == "aws:kms:dsse");
                kms && key.is_none_or(|arn| self.uses_key(arn))
            }
            EncryptionRequirement::S3Managed => self.algorithm == "AES256",
        }
    }

    /// Whether this is the encryption the operator sets for `want`.
    fn is_configured_as(&self, want: &DefaultEncryption) -> bool {
        match want {
            DefaultEncryption::Kms(key_arn) => {
                let key = Some(key_arn.as_str());
                self.bucket_key && self.meets(EncryptionRequirement::Kms { key, dsse: false })
            }
            DefaultEncryption::S3Managed => self.meets(EncryptionRequirement::S3Managed),
        }
    }

    /// S3 echoes the key as it was configured, by ARN or by bare key id: both name the key
    /// `key_arn`.
    fn uses_key(&self, key_arn: &str) -> bool {
        self.key_id.as_deref().is_some_and(|k| {
            k == key_arn || key_arn.rsplit_once("key/").is_some_and(|(_, id)| id == k)
        })
    }
}

/// The four Block Public Access settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicAccessBlock {
    pub block_public_acls: bool,
    pub ignore_public_acls: bool,
    pub block_public_policy: bool,
    pub restrict_public_buckets: bool,
}

impl PublicAccessBlock {
    pub const ALL_ON: PublicAccessBlock = PublicAccessBlock {
        block_public_acls: true,
        ignore_public_acls: true,
        block_public_policy: true,
        restrict_public_buckets: true,
    };
}

/// Settings of an existing bucket that the operator keeps in shape. `None` means "not set".
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ObservedBucket {
    pub tags: BTreeMap<String, String>,
    pub encryption: Option<ObservedEncryption>,
    pub public_access_block: Option<PublicAccessBlock>,
    pub object_ownership: Option<String>,
    /// `Enabled`, `Suspended`, or `None` for a bucket that was never versioned.
    pub versioning: Option<String>,
    pub policy: Option<String>,
    /// Where the bucket's server access logs go.
    pub logging: Option<LoggingTarget>,
    /// Days after which the lifecycle configuration expires objects (log buckets only).
    pub expiration_days: Option<i32>,
}

/// Destination of a bucket's server access logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggingTarget {
    pub bucket: String,
    pub prefix: String,
}

/// Default encryption of a bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DefaultEncryption {
    /// SSE-KMS with this key, S3 Bucket Keys on (tenant buckets).
    Kms(String),
    /// SSE-S3: AES-256 with keys S3 manages (log buckets, where it is the only encryption
    /// access logging can write into; tenants whose policy asks for S3-managed keys).
    S3Managed,
}

impl DefaultEncryption {
    /// The KMS key, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            DefaultEncryption::Kms(key) => Some(key),
            DefaultEncryption::S3Managed => None,
        }
    }
}

/// Whether an existing bucket may be touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    Ours,
    /// Not ours: never modified, never deleted. The string says why, for the condition message.
    Foreign(String),
}

/// Decides ownership from the bucket's tags. A bucket with no ownership tags at all is ours only
/// if this tenant had already claimed the name (recorded in its status before the bucket was
/// created), which is how a creation interrupted before tagging is recovered.
pub fn ownership(
    tags_seen: &BTreeMap<String, String>,
    id: &TenantIdentity,
    claimed: bool,
) -> Ownership {
    let get = |k: &str| tags_seen.get(k).map(String::as_str);
    let has_our_tags = tags_seen.keys().any(|k| k.starts_with("tenancy.dev/"));
    if !has_our_tags {
        return if claimed {
            Ownership::Ours
        } else {
            Ownership::Foreign("it has no tenant-storage-operator ownership tags".into())
        };
    }
    if id.tag_values().iter().all(|(k, v)| get(k) == Some(*v)) {
        Ownership::Ours
    } else {
        Ownership::Foreign(format!(
            "its ownership tags name cluster {:?}, namespace {:?}, name {:?}",
            get(tags::CLUSTER).unwrap_or("-"),
            get(tags::NAMESPACE).unwrap_or("-"),
            get(tags::NAME).unwrap_or("-"),
        ))
    }
}

/// A bucket released by a deleted tenant (`deletionPolicy: Retain`) answers to the policy it
/// was released under: a new tenant of the same namespace and name under another policy (perhaps
/// another jurisdiction) does not get its data. Returns why, for the condition message.
pub fn released_under_another_policy(
    tags_seen: &BTreeMap<String, String>,
    policy_name: &str,
) -> Option<String> {
    if tags_seen.get(tags::RELEASED).map(String::as_str) != Some("true") {
        return None;
    }
    let released_under = tags_seen.get(tags::POLICY).map_or("-", String::as_str);
    (released_under != policy_name).then(|| {
        format!(
            "it holds the data of a tenant released under ResidencyPolicy {released_under:?}, and this tenant names {policy_name:?}; it is re-adopted only under the policy it was released from"
        )
    })
}

/// A change to the tenant's KMS key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyChange {
    CreateKey,
    CreateAlias,
    EnableRotation,
}

/// The key exists but cannot protect data; the operator does not override a human's decision to
/// disable or delete a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyNotUsable {
    pub state: String,
}

/// Changes to the tenant key. A key that is not `Enabled` is reported, never re-enabled.
pub fn key_changes(observed: Option<&ObservedKey>) -> Result<Vec<KeyChange>, KeyNotUsable> {
    match observed {
        None => Ok(vec![
            KeyChange::CreateKey,
            KeyChange::CreateAlias,
            KeyChange::EnableRotation,
        ]),
        Some(key) if key.state != "Enabled" => Err(KeyNotUsable {
            state: key.state.clone(),
        }),
        Some(key) if !key.rotation_enabled => Ok(vec![KeyChange::EnableRotation]),
        Some(_) => Ok(vec![]),
    }
}

/// A change to the tenant bucket.
#[derive(Clone, Debug, PartialEq)]
pub enum BucketChange {
    Create,
    PutTags(BTreeMap<String, String>),
    PutPublicAccessBlock,
    PutOwnershipControls,
    PutEncryption(DefaultEncryption),
    PutVersioning(Versioning),
    PutPolicy(String),
    PutLogging(Option<LoggingTarget>),
    PutExpiration(i32),
}

impl BucketChange {
    /// The setting this change restores, as users call it in Events.
    pub fn setting(&self) -> &'static str {
        match self {
            BucketChange::Create => "bucket",
            BucketChange::PutTags(_) => "tags",
            BucketChange::PutPublicAccessBlock => "publicAccessBlock",
            BucketChange::PutOwnershipControls => "objectOwnership",
            BucketChange::PutEncryption(_) => "encryption",
            BucketChange::PutVersioning(_) => "versioning",
            BucketChange::PutPolicy(_) => "bucketPolicy",
            BucketChange::PutLogging(_) => "accessLogging",
            BucketChange::PutExpiration(_) => "lifecycle",
        }
    }
}

impl fmt::Display for BucketChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BucketChange::Create => write!(f, "create bucket"),
            BucketChange::PutTags(t) => write!(f, "set {} tags", t.len()),
            BucketChange::PutPublicAccessBlock => {
                write!(f, "turn on all four Block Public Access settings")
            }
            BucketChange::PutOwnershipControls => {
                write!(f, "set object ownership BucketOwnerEnforced")
            }
            BucketChange::PutEncryption(DefaultEncryption::Kms(key)) => write!(
                f,
                "set default encryption SSE-KMS with {key} and Bucket Keys"
            ),
            BucketChange::PutEncryption(DefaultEncryption::S3Managed) => {
                write!(f, "set default encryption SSE-S3")
            }
            BucketChange::PutVersioning(v) => write!(f, "set versioning {v:?}"),
            BucketChange::PutPolicy(_) => write!(f, "put bucket policy"),
            BucketChange::PutLogging(Some(t)) => {
                write!(f, "log access to s3://{}/{}", t.bucket, t.prefix)
            }
            BucketChange::PutLogging(None) => write!(f, "turn access logging off"),
            BucketChange::PutExpiration(days) => write!(f, "expire objects after {days} days"),
        }
    }
}

impl fmt::Display for KeyChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyChange::CreateKey => write!(f, "create KMS key"),
            KeyChange::CreateAlias => write!(f, "create key alias"),
            KeyChange::EnableRotation => write!(f, "enable automatic key rotation"),
        }
    }
}

/// Everything a bucket must look like, whatever its role (tenant data or access logs).
#[derive(Clone, Debug, PartialEq)]
pub struct BucketShape {
    pub tags: BTreeMap<String, String>,
    pub encryption: DefaultEncryption,
    /// `None`: versioning is not managed (log buckets).
    pub versioning: Option<Versioning>,
    pub policy: PolicyDocument,
    /// `None`: access logging is not managed (log buckets do not log themselves); `Some(None)`:
    /// logging must be off.
    pub logging: Option<Option<LoggingTarget>>,
    /// Lifecycle expiration of every object, in days (log buckets).
    pub expiration_days: Option<i32>,
}

/// Changes that bring the bucket to the desired shape; empty when it is up to date, which is
/// what makes a no-op reconcile free of mutating calls. A new bucket gets its ownership tags
/// right after creation and public access blocked before anything else.
pub fn bucket_changes(shape: &BucketShape, observed: Option<&ObservedBucket>) -> Vec<BucketChange> {
    let Some(seen) = observed else {
        let mut changes = vec![
            BucketChange::Create,
            BucketChange::PutTags(shape.tags.clone()),
            BucketChange::PutPublicAccessBlock,
            BucketChange::PutOwnershipControls,
            BucketChange::PutEncryption(shape.encryption.clone()),
        ];
        changes.extend(shape.versioning.map(BucketChange::PutVersioning));
        changes.push(BucketChange::PutPolicy(shape.policy.to_string()));
        if let Some(Some(target)) = &shape.logging {
            changes.push(BucketChange::PutLogging(Some(target.clone())));
        }
        changes.extend(shape.expiration_days.map(BucketChange::PutExpiration));
        return changes;
    };
    let mut changes = Vec::new();
    let tags_ok = shape.tags.iter().all(|(k, v)| seen.tags.get(k) == Some(v))
        && !seen.tags.contains_key(tags::RELEASED);
    if !tags_ok {
        let mut merged: BTreeMap<String, String> = seen
            .tags
            .iter()
            .filter(|(k, _)| k.as_str() != tags::RELEASED)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        merged.extend(shape.tags.clone());
        changes.push(BucketChange::PutTags(merged));
    }
    if seen.public_access_block != Some(PublicAccessBlock::ALL_ON) {
        changes.push(BucketChange::PutPublicAccessBlock);
    }
    if seen.object_ownership.as_deref() != Some("BucketOwnerEnforced") {
        changes.push(BucketChange::PutOwnershipControls);
    }
    let encryption_ok = seen
        .encryption
        .as_ref()
        .is_some_and(|enc| enc.meets(EncryptionRequirement::AsConfigured(&shape.encryption)));
    if !encryption_ok {
        changes.push(BucketChange::PutEncryption(shape.encryption.clone()));
    }
    let versioning_ok = match shape.versioning {
        None => true,
        Some(Versioning::Enabled) => seen.versioning.as_deref() == Some("Enabled"),
        Some(Versioning::Suspended) => seen.versioning.as_deref() != Some("Enabled"),
    };
    if let (false, Some(v)) = (versioning_ok, shape.versioning) {
        changes.push(BucketChange::PutVersioning(v));
    }
    let policy_ok = seen
        .policy
        .as_deref()
        .and_then(|p| serde_json::from_str::<Value>(p).ok())
        .is_some_and(|p| shape.policy.same_as(&p));
    if !policy_ok {
        changes.push(BucketChange::PutPolicy(shape.policy.to_string()));
    }
    if let Some(want) = &shape.logging
        && seen.logging != *want
    {
        changes.push(BucketChange::PutLogging(want.clone()));
    }
    if let Some(days) = shape.expiration_days
        && seen.expiration_days != Some(days)
    {
        changes.push(BucketChange::PutExpiration(days));
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EncryptionSpec, ResidencyPolicySpec, TransportSpec};
    use crate::plan::Desired;

    const KEY: &str = "arn:aws:kms:eu-central-1:000000000000:key/1234";

    fn id() -> TenantIdentity {
        TenantIdentity {
            cluster_id: "c1".into(),
            namespace: "acme".into(),
            name: "data".into(),
        }
    }

    fn desired() -> Desired {
        let policy = ResidencyPolicySpec {
            jurisdiction: "EU".into(),
            allowed_regions: vec!["eu-central-1".into()],
            default_region: "eu-central-1".into(),
            encryption: EncryptionSpec::default(),
            transport: TransportSpec::default(),
            versioning: Versioning::Enabled,
            namespace_selector: None,
            access_logging: crate::api::AccessLoggingSpec::default(),
            deletion: crate::api::DeletionSpec::default(),
            access: crate::api::AccessPolicySpec::default(),
            export: Default::default(),
            replication: Default::default(),
            backup: Default::default(),
            refused_tenant_access: Default::default(),
        };
        Desired::new("tso", &id(), "eu", &policy, "eu-central-1".into())
    }

    fn up_to_date(d: &Desired) -> ObservedBucket {
        let mut tags = d.tags.clone();
        tags.insert("cost-center".into(), "42".into());
        ObservedBucket {
            tags,
            encryption: Some(ObservedEncryption {
                algorithm: "aws:kms".into(),
                key_id: Some(KEY.into()),
                bucket_key: true,
                sse_c_blocked: true,
            }),
            public_access_block: Some(PublicAccessBlock::ALL_ON),
            object_ownership: Some("BucketOwnerEnforced".into()),
            versioning: Some("Enabled".into()),
            policy: Some(
                d.bucket_policy(&DefaultEncryption::Kms(KEY.into()))
                    .to_string(),
            ),
            logging: d.logging.clone(),
            expiration_days: None,
        }
    }

    #[test]
    fn new_bucket_gets_everything_in_safe_order() {
        let d = desired();
        let changes = bucket_changes(&d.shape(&DefaultEncryption::Kms(KEY.into())), None);
        let settings: Vec<_> = changes.iter().map(BucketChange::setting).collect();
        assert_eq!(
            settings,
            [
                "bucket",
                "tags",
                "publicAccessBlock",
                "objectOwnership",
                "encryption",
                "versioning",
                "bucketPolicy",
                "accessLogging"
            ],
            "tags right after creation prove ownership; public access is blocked before anything else"
        );
    }

    #[test]
    fn up_to_date_bucket_needs_no_change() {
        let d = desired();
        assert_eq!(
            bucket_changes(
                &d.shape(&DefaultEncryption::Kms(KEY.into())),
                Some(&up_to_date(&d))
            ),
            vec![]
        );
    }

    #[test]
    fn reformatted_policy_and_bare_key_id_are_not_drift() {
        let d = desired();
        let mut seen = up_to_date(&d);
        let mut policy = d
            .bucket_policy(&DefaultEncryption::Kms(KEY.into()))
            .to_json();
        if let Some(st) = policy["Statement"].as_array_mut() {
            st.reverse();
            st[0]["Resource"] = Value::Array(vec![st[0]["Resource"].clone()]);
        }
        seen.policy = Some(serde_json::to_string_pretty(&policy).unwrap_or_default());
        seen.encryption = Some(ObservedEncryption {
            algorithm: "aws:kms".into(),
            key_id: Some("1234".into()),
            bucket_key: true,
            sse_c_blocked: true,
        });
        assert_eq!(
            bucket_changes(&d.shape(&DefaultEncryption::Kms(KEY.into())), Some(&seen)),
            vec![]
        );
    }

    #[test]
    fn each_drift_is_detected() {
        let d = desired();
        type Drift = Box<dyn Fn(&mut ObservedBucket)>;
        let cases: Vec<(&str, Drift)> = vec![
            ("encryption", Box::new(|b| b.encryption = None)),
            ("accessLogging", Box::new(|b| b.logging = None)),
            (
                "encryption",
                Box::new(|b| {
                    b.encryption = Some(ObservedEncryption {
                        algorithm: "AES256".into(),
                        key_id: None,
                        bucket_key: false,
                        sse_c_blocked: true,
                    })
                }),
            ),
            (
                "encryption",
                Box::new(|b| {
                    if let Some(e) = b.encryption.as_mut() {
                        e.sse_c_blocked = false;
                    }
                }),
            ),
            (
                "publicAccessBlock",
                Box::new(|b| {
                    b.public_access_block = Some(PublicAccessBlock {
                        restrict_public_buckets: false,
                        ..PublicAccessBlock::ALL_ON
                    })
                }),
            ),
            (
                "objectOwnership",
                Box::new(|b| b.object_ownership = Some("ObjectWriter".into())),
            ),
            (
                "versioning",
                Box::new(|b| b.versioning = Some("Suspended".into())),
            ),
            ("bucketPolicy", Box::new(|b| b.policy = None)),
            (
                "bucketPolicy",
                Box::new(|b| {
                    b.policy = Some("{\"Version\":\"2012-10-17\",\"Statement\":[]}".into())
                }),
            ),
            (
                "tags",
                Box::new(|b| {
                    b.tags.remove(tags::JURISDICTION);
                }),
            ),
            (
                "tags",
                Box::new(|b| {
                    b.tags.insert(tags::RELEASED.into(), "true".into());
                }),
            ),
        ];
        for (setting, drift) in cases {
            let mut seen = up_to_date(&d);
            drift(&mut seen);
            let changes =
                bucket_changes(&d.shape(&DefaultEncryption::Kms(KEY.into())), Some(&seen));
            let got: Vec<_> = changes.iter().map(BucketChange::setting).collect();
            assert_eq!(got, [setting]);
        }
    }

    /// Tenant and log buckets alike: default encryption that lets SSE-C uploads in is drift,
    /// however right the rest of it is.
    #[test]
    fn encryption_allowing_sse_c_is_drift() {
        for (want, algorithm, key_id) in [
            (DefaultEncryption::Kms(KEY.into()), "aws:kms", Some(KEY)),
            (DefaultEncryption::S3Managed, "AES256", None),
        ] {
            let mut seen = ObservedEncryption {
                algorithm: algorithm.into(),
                key_id: key_id.map(str::to_owned),
                bucket_key: key_id.is_some(),
                sse_c_blocked: true,
            };
            let configured = EncryptionRequirement::AsConfigured(&want);
            assert!(seen.meets(configured), "{want:?}");
            seen.sse_c_blocked = false;
            assert!(!seen.meets(configured), "{want:?}");
        }
    }

    /// The report asks for SSE-KMS with the tenant key, whatever else the rule says; a
    /// customer's bucket for SSE-KMS or DSSE-KMS with any key.
    #[test]
    fn each_caller_asks_for_what_it_needs() {
        let kms = |algorithm: &str, key_id: Option<&str>| ObservedEncryption {
            algorithm: algorithm.into(),
            key_id: key_id.map(str::to_owned),
            bucket_key: false,
            sse_c_blocked: false,
        };
        let tenant_key = EncryptionRequirement::Kms {
            key: Some(KEY),
            dsse: false,
        };
        assert!(kms("aws:kms", Some(KEY)).meets(tenant_key));
        assert!(kms("aws:kms", Some("1234")).meets(tenant_key));
        assert!(!kms("aws:kms", Some("234")).meets(tenant_key));
        assert!(!kms("aws:kms", None).meets(tenant_key));
        assert!(!kms("aws:kms:dsse", Some(KEY)).meets(tenant_key));
        assert!(
            !kms("aws:kms", Some(KEY)).meets(EncryptionRequirement::AsConfigured(
                &DefaultEncryption::Kms(KEY.into())
            ))
        );
        let any_key = EncryptionRequirement::Kms {
            key: None,
            dsse: true,
        };
        assert!(kms("aws:kms", None).meets(any_key));
        assert!(kms("aws:kms:dsse", Some("other")).meets(any_key));
        assert!(!kms("AES256", None).meets(any_key));
    }

    #[test]
    fn restoring_tags_keeps_user_tags_and_drops_released() {
        let d = desired();
        let mut seen = up_to_date(&d);
        seen.tags.insert(tags::RELEASED.into(), "true".into());
        let changes = bucket_changes(&d.shape(&DefaultEncryption::Kms(KEY.into())), Some(&seen));
        let [BucketChange::PutTags(tags)] = changes.as_slice() else {
            panic!("expected one tag change, got {changes:?}");
        };
        assert_eq!(tags.get("cost-center").map(String::as_str), Some("42"));
        assert!(!tags.contains_key(tags::RELEASED));
    }

    #[test]
    fn ownership_rules() {
        let d = desired();
        assert_eq!(ownership(&d.tags, &id(), false), Ownership::Ours);
        assert!(matches!(
            ownership(&BTreeMap::new(), &id(), false),
            Ownership::Foreign(_)
        ));
        assert_eq!(ownership(&BTreeMap::new(), &id(), true), Ownership::Ours);
        let mut other = d.tags.clone();
        other.insert(tags::CLUSTER.into(), "c2".into());
        let Ownership::Foreign(why) = ownership(&other, &id(), true) else {
            panic!("another cluster's bucket must be foreign");
        };
        assert!(why.contains("c2"), "{why}");
    }

    #[test]
    fn released_buckets_stay_with_their_policy() {
        let mut seen = desired().tags;
        assert_eq!(released_under_another_policy(&seen, "eu"), None);
        seen.insert(tags::RELEASED.into(), "true".into());
        assert_eq!(released_under_another_policy(&seen, "eu"), None);
        let why = released_under_another_policy(&seen, "us").expect("another policy");
        assert!(why.contains("\"eu\"") && why.contains("\"us\""), "{why}");
        seen.remove(tags::POLICY);
        assert!(released_under_another_policy(&seen, "eu").is_some());
    }

    #[test]
    fn key_rules() {
        assert_eq!(key_changes(None).map(|c| c.len()), Ok(3));
        let mut key = ObservedKey {
            arn: KEY.into(),
            key_id: "1234".into(),
            state: "Enabled".into(),
            rotation_enabled: true,
        };
        assert_eq!(key_changes(Some(&key)), Ok(vec![]));
        key.rotation_enabled = false;
        assert_eq!(key_changes(Some(&key)), Ok(vec![KeyChange::EnableRotation]));
        key.state = "PendingDeletion".into();
        assert_eq!(
            key_changes(Some(&key)),
            Err(KeyNotUsable {
                state: "PendingDeletion".into()
            })
        );
    }
}
