//! IAM principals: which ARNs a human may name as one (the operator's flags), the patterns that
//! stand for a principal in a bucket policy, and who the operator is to customers and to tenant
//! buckets. Pure: no I/O.

use thiserror::Error;

use super::arn::{Arn, ArnError};

/// How a principal ARN should look, for error messages.
const PRINCIPAL_EXAMPLE: &str = "expected an IAM principal ARN such as arn:aws:iam::123456789012:role/break-glass (wildcards allowed in the name, not for the whole name)";

/// Why an ARN given as a principal (`--admin-principal-arn`, `--operator-role-arn`) is refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PrincipalArnError {
    #[error("{0}; {PRINCIPAL_EXAMPLE}")]
    NotAnArn(#[from] ArnError),
    #[error("{0:?} is not an IAM or STS ARN in an AWS partition; {PRINCIPAL_EXAMPLE}")]
    NotIam(String),
    /// A pattern like `...:*` or `role/*` would admit every principal of the account.
    #[error("{0:?} names no principal, or only by wildcards; {PRINCIPAL_EXAMPLE}")]
    Unnamed(String),
}

/// Checks an ARN a human gives as a principal: an IAM or STS ARN whose resource is the account
/// root or a role, user or session with a name that is not only wildcards.
pub fn parse_principal_arn(text: &str) -> Result<String, PrincipalArnError> {
    let arn: Arn = text.parse()?;
    if !arn.partition.starts_with("aws") || !matches!(arn.service.as_str(), "iam" | "sts") {
        return Err(PrincipalArnError::NotIam(text.to_owned()));
    }
    let named = arn.resource == "root"
        || ["role/", "user/", "assumed-role/"].iter().any(|kind| {
            arn.resource
                .strip_prefix(kind)
                .is_some_and(|name| name.chars().any(|c| !matches!(c, '*' | '/' | '?')))
        });
    if !named {
        return Err(PrincipalArnError::Unnamed(text.to_owned()));
    }
    Ok(text.to_owned())
}

/// A role as a role ARN (`iam`, `role/<path>/<name>`) or a session ARN (`sts`,
/// `assumed-role/<name>/<session>`) names it. A session ARN carries no IAM path.
struct RoleRef<'a> {
    name: &'a str,
    session: bool,
}

fn role_ref(arn: &Arn) -> Option<RoleRef<'_>> {
    match arn.service.as_str() {
        "iam" => Some(RoleRef {
            name: arn.resource.strip_prefix("role/")?.rsplit('/').next()?,
            session: false,
        }),
        "sts" => Some(RoleRef {
            name: arn
                .resource
                .strip_prefix("assumed-role/")?
                .split('/')
                .next()?,
            session: true,
        }),
        _ => None,
    }
}

/// Whether two ARNs name the same role of the same account: as role ARNs (whatever the path)
/// or as any of its sessions, which is how CloudTrail records a caller.
pub fn same_role(a: &str, b: &str) -> bool {
    let (Ok(a), Ok(b)) = (a.parse::<Arn>(), b.parse::<Arn>()) else {
        return false;
    };
    match (role_ref(&a), role_ref(&b)) {
        (Some(ra), Some(rb)) => a.account == b.account && ra.name == rb.name,
        _ => false,
    }
}

/// Principal ARN patterns that stand for an identity: a role (or a session of it, as
/// `GetCallerIdentity` reports it) counts with all its sessions. An assumed-role session ARN
/// carries no IAM path, so a role known only from a session is admitted with any path. AWS
/// evaluates `aws:PrincipalArn` of a session as the role ARN; the session form is listed too,
/// since it names only sessions of the same role (and some emulators evaluate that form).
pub fn principal_patterns(text: &str) -> Vec<String> {
    let Ok(arn) = text.parse::<Arn>() else {
        return vec![text.to_owned()];
    };
    let (partition, account) = (&arn.partition, &arn.account);
    match role_ref(&arn) {
        Some(RoleRef {
            name,
            session: true,
        }) => vec![
            Arn::role(partition, account, "/", name).to_string(),
            Arn::role(partition, account, "/*/", name).to_string(),
            Arn::assumed_role(partition, account, name, "*").to_string(),
        ],
        // A pattern's session form would match sessions of any role.
        Some(RoleRef {
            name,
            session: false,
        }) if !name.contains(['*', '?']) => vec![
            text.to_owned(),
            Arn::assumed_role(partition, account, name, "*").to_string(),
        ],
        _ => vec![text.to_owned()],
    }
}

/// Who the operator is: to customers (the principal a delegated role's trust policy names) and
/// to tenant buckets (the principals their policies admit besides each tenant's own role).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorPrincipals {
    pub operator: String,
    pub allowed: Vec<String>,
}

impl OperatorPrincipals {
    /// From the identity the operator runs as (`caller`, as STS reports it), the role ARN it was
    /// told it has (with its IAM path, which a session ARN lacks) and the admin principals.
    /// Without a told role, the caller's role is named without a path.
    pub fn new(caller: &str, operator_role: Option<&str>, admins: &[String]) -> Self {
        let caller_patterns = principal_patterns(caller);
        let operator = operator_role
            .or(caller_patterns.first().map(String::as_str))
            .unwrap_or(caller)
            .to_owned();
        let mut allowed = caller_patterns.clone();
        for arn in admins.iter().map(String::as_str).chain(operator_role) {
            allowed.extend(principal_patterns(arn));
        }
        OperatorPrincipals { operator, allowed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: &str = "arn:aws:sts::000000000000:assumed-role/tso-operator/i-123";

    #[test]
    fn caller_identities_become_principal_patterns() {
        assert_eq!(
            principal_patterns(SESSION),
            vec![
                "arn:aws:iam::000000000000:role/tso-operator",
                "arn:aws:iam::000000000000:role/*/tso-operator",
                "arn:aws:sts::000000000000:assumed-role/tso-operator/*"
            ]
        );
        assert_eq!(
            principal_patterns("arn:aws:iam::000000000000:role/tenant-storage-operator/c1/t"),
            vec![
                "arn:aws:iam::000000000000:role/tenant-storage-operator/c1/t",
                "arn:aws:sts::000000000000:assumed-role/t/*"
            ]
        );
        for alone in [
            "arn:aws:iam::000000000000:role/admins/*",
            "arn:aws:iam::000000000000:user/admin",
            "not-an-arn",
        ] {
            assert_eq!(principal_patterns(alone), vec![alone]);
        }
    }

    #[test]
    fn principal_arns_given_by_humans() {
        for ok in [
            "arn:aws:iam::123456789012:role/break-glass",
            "arn:aws:iam::123456789012:role/admins/*",
            "arn:aws-us-gov:iam::123456789012:user/ops",
            "arn:aws:iam::123456789012:root",
        ] {
            assert_eq!(parse_principal_arn(ok).as_deref(), Ok(ok));
        }
        let err = |s: &str| parse_principal_arn(s).map(|_| ()).unwrap_err();
        assert!(matches!(
            err("break-glass"),
            PrincipalArnError::NotAnArn(ArnError::NotAnArn(_))
        ));
        assert!(matches!(
            err("arn:aws:iam::123456789012:"),
            PrincipalArnError::NotAnArn(ArnError::Empty { .. })
        ));
        assert!(matches!(
            err("arn:aws:s3:::bucket"),
            PrincipalArnError::NotIam(_)
        ));
        let unnamed = err("arn:aws:iam::123456789012:role/*");
        assert_eq!(
            unnamed,
            PrincipalArnError::Unnamed("arn:aws:iam::123456789012:role/*".into())
        );
        assert!(unnamed.to_string().contains("role/break-glass"));
    }

    #[test]
    fn roles_match_their_sessions() {
        assert!(same_role(
            SESSION,
            "arn:aws:iam::000000000000:role/system/tso-operator"
        ));
        assert!(!same_role(
            SESSION,
            "arn:aws:iam::111111111111:role/tso-operator"
        ));
        assert!(!same_role(
            "arn:aws:iam::000000000000:user/a",
            "arn:aws:iam::000000000000:user/a"
        ));
    }

    #[test]
    fn operator_is_its_told_role_or_its_caller_role() {
        let admins = vec!["arn:aws:iam::000000000000:user/admin".to_owned()];
        let derived = OperatorPrincipals::new(SESSION, None, &admins);
        assert_eq!(
            derived.operator,
            "arn:aws:iam::000000000000:role/tso-operator"
        );
        assert_eq!(derived.allowed.len(), 4);
        assert!(derived.allowed.contains(&admins[0]));
        let told = "arn:aws:iam::000000000000:role/system/tso-operator";
        let given = OperatorPrincipals::new(SESSION, Some(told), &admins);
        assert_eq!(given.operator, told);
        assert!(given.allowed.iter().any(|a| a == told));
        assert_eq!(given.allowed.len(), 6);
    }
}
