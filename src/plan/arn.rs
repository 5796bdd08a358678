//! Amazon Resource Names: built and read in one place, so a policy, a tag filter and a parsed
//! flag all agree on `arn:<partition>:<service>:<region>:<account>:<resource>`. A resource may
//! hold IAM wildcards (`*`, `?`) where an ARN is a policy pattern.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// One ARN, or an ARN pattern of an IAM policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arn {
    pub partition: String,
    pub service: String,
    /// Empty for global services (S3 buckets, IAM).
    pub region: String,
    /// Empty for S3 buckets, which ARNs name without their account.
    pub account: String,
    /// Everything after the fifth `:`, which may itself contain `:` and `/`.
    pub resource: String,
}

/// Why a string is not an ARN.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ArnError {
    #[error("{0:?} is not an ARN: it does not start with \"arn:\"")]
    NotAnArn(String),
    #[error(
        "{arn:?} is not an ARN: it has {fields} of the 6 fields arn:partition:service:region:account:resource"
    )]
    MissingFields { arn: String, fields: usize },
    #[error("{arn:?} is not an ARN: its {field} is empty")]
    Empty { arn: String, field: &'static str },
}

impl Arn {
    fn new(partition: &str, service: &str, region: &str, account: &str, resource: String) -> Self {
        Arn {
            partition: partition.to_owned(),
            service: service.to_owned(),
            region: region.to_owned(),
            account: account.to_owned(),
            resource,
        }
    }

    /// `arn:<partition>:s3:::<bucket>`; `bucket` may be a pattern (`<prefix>-*`).
    pub fn bucket(partition: &str, bucket: &str) -> Self {
        Arn::new(partition, "s3", "", "", bucket.to_owned())
    }

    /// The objects under `path` of this bucket ARN: `<bucket arn>/<path>`.
    pub fn objects(&self, path: &str) -> Self {
        Arn {
            resource: format!("{}/{path}", self.resource),
            ..self.clone()
        }
    }

    /// `arn:<partition>:kms:<region>:<account>:key/<key_id>`; `*` for any region or key.
    pub fn kms_key(partition: &str, region: &str, account: &str, key_id: &str) -> Self {
        Arn::new(partition, "kms", region, account, format!("key/{key_id}"))
    }

    /// `arn:<partition>:kms:<region>:<account>:alias/<name>`; `*` for any region or alias.
    pub fn kms_alias(partition: &str, region: &str, account: &str, name: &str) -> Self {
        Arn::new(partition, "kms", region, account, format!("alias/{name}"))
    }

    /// `arn:<partition>:iam::<account>:role<path><name>`: `path` starts and ends with `/`.
    pub fn role(partition: &str, account: &str, path: &str, name: &str) -> Self {
        Arn::new(partition, "iam", "", account, format!("role{path}{name}"))
    }

    /// `arn:<partition>:backup:<region>:<account>:<resource>`, e.g. `backup-vault:<name>`.
    pub fn backup(partition: &str, region: &str, account: &str, resource: &str) -> Self {
        Arn::new(partition, "backup", region, account, resource.to_owned())
    }

    /// `arn:<partition>:iam::aws:policy/<name>`: a policy AWS manages.
    pub fn aws_managed_policy(partition: &str, name: &str) -> Self {
        Arn::new(partition, "iam", "", "aws", format!("policy/{name}"))
    }

    /// `arn:<partition>:sts::<account>:assumed-role/<role>/<session>`.
    pub fn assumed_role(partition: &str, account: &str, role: &str, session: &str) -> Self {
        let resource = format!("assumed-role/{role}/{session}");
        Arn::new(partition, "sts", "", account, resource)
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Arn {
            partition,
            service,
            region,
            account,
            resource,
        } = self;
        write!(f, "arn:{partition}:{service}:{region}:{account}:{resource}")
    }
}

impl FromStr for Arn {
    type Err = ArnError;

    fn from_str(s: &str) -> Result<Self, ArnError> {
        let fields: Vec<&str> = s.splitn(6, ':').collect();
        let [prefix, partition, service, region, account, resource] = fields[..] else {
            return Err(if fields.first() == Some(&"arn") {
                ArnError::MissingFields {
                    arn: s.to_owned(),
                    fields: fields.len(),
                }
            } else {
                ArnError::NotAnArn(s.to_owned())
            });
        };
        if prefix != "arn" {
            return Err(ArnError::NotAnArn(s.to_owned()));
        }
        let empty = |field| ArnError::Empty {
            arn: s.to_owned(),
            field,
        };
        for (field, value) in [
            ("partition", partition),
            ("service", service),
            ("resource", resource),
        ] {
            if value.is_empty() {
                return Err(empty(field));
            }
        }
        Ok(Arn::new(
            partition,
            service,
            region,
            account,
            resource.to_owned(),
        ))
    }
}

/// Why a string is not an AWS account id.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{0:?} is not an AWS account id (12 digits)")]
pub struct NotAnAccountId(String);

/// Checks an account id a human gives: the account field of an ARN, 12 digits.
pub fn parse_account_id(id: &str) -> Result<String, NotAnAccountId> {
    (id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()))
        .then(|| id.to_owned())
        .ok_or_else(|| NotAnAccountId(id.to_owned()))
}

/// AWS partition of a region, for ARNs.
pub fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_arns_aws_expects() {
        let bucket = Arn::bucket("aws-cn", "acme-data");
        assert_eq!(bucket.to_string(), "arn:aws-cn:s3:::acme-data");
        assert_eq!(
            bucket.objects("*").to_string(),
            "arn:aws-cn:s3:::acme-data/*"
        );
        assert_eq!(
            Arn::kms_key("aws", "*", "123456789012", "*").to_string(),
            "arn:aws:kms:*:123456789012:key/*"
        );
        assert_eq!(
            Arn::kms_alias("aws", "*", "123456789012", "tenant-storage/*").to_string(),
            "arn:aws:kms:*:123456789012:alias/tenant-storage/*"
        );
        assert_eq!(
            Arn::role("aws", "1", "/tso/c1/", "t").to_string(),
            "arn:aws:iam::1:role/tso/c1/t"
        );
        assert_eq!(
            Arn::assumed_role("aws", "1", "op", "*").to_string(),
            "arn:aws:sts::1:assumed-role/op/*"
        );
        assert_eq!(partition_of("cn-north-1"), "aws-cn");
        assert_eq!(partition_of("us-gov-west-1"), "aws-us-gov");
        assert_eq!(partition_of("eu-central-1"), "aws");
    }

    #[test]
    fn parses_what_it_prints() {
        for text in [
            "arn:aws:s3:::acme-data",
            "arn:aws:iam::123456789012:role/a/b/c",
            "arn:aws:kms:eu-central-1:123456789012:key/1234",
            "arn:aws-us-gov:sts::1:assumed-role/r/s",
            // The resource keeps its own colons.
            "arn:aws:logs:eu-west-1:1:log-group:/x:*",
        ] {
            let arn: Arn = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(arn.to_string(), text);
        }
        let key: Result<Arn, _> = "arn:aws:kms:eu-central-1:123456789012:key/1234".parse();
        assert_eq!(
            key,
            Ok(Arn::kms_key("aws", "eu-central-1", "123456789012", "1234"))
        );
    }

    #[test]
    fn refuses_what_is_not_an_arn_and_says_why() {
        let err = |s: &str| s.parse::<Arn>().map(|_| ()).unwrap_err();
        assert_eq!(err("acme-data"), ArnError::NotAnArn("acme-data".into()));
        assert_eq!(
            err("urn:aws:s3:::b:c"),
            ArnError::NotAnArn("urn:aws:s3:::b:c".into())
        );
        assert_eq!(
            err("arn:aws:iam::123456789012"),
            ArnError::MissingFields {
                arn: "arn:aws:iam::123456789012".into(),
                fields: 5
            }
        );
        assert_eq!(
            err("arn:aws:iam::123456789012:"),
            ArnError::Empty {
                arn: "arn:aws:iam::123456789012:".into(),
                field: "resource"
            }
        );
        assert_eq!(
            err("arn::s3:::b"),
            ArnError::Empty {
                arn: "arn::s3:::b".into(),
                field: "partition"
            }
        );
        assert!(
            err("arn:aws:s3")
                .to_string()
                .contains("has 3 of the 6 fields")
        );
        assert!(
            err("arn:aws::::x")
                .to_string()
                .contains("its service is empty")
        );
    }

    #[test]
    fn account_ids_are_twelve_digits() {
        assert_eq!(
            parse_account_id("123456789012").as_deref(),
            Ok("123456789012")
        );
        for bad in ["12345678901", "1234567890123", "12345678901a", ""] {
            let err = parse_account_id(bad).map(|_| ()).unwrap_err();
            assert!(err.to_string().contains("12 digits"), "{bad}");
        }
    }
}
