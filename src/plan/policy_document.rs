//! IAM policy documents as types: every bucket, trust and permissions policy the operator
//! builds, and the bucket policies it reads back. A document serializes to the JSON IAM and S3
//! take, keeping each builder's choice of a scalar or a list; it reads back what AWS returns,
//! where a one-element list may come back as a scalar and conditions may hold booleans or
//! numbers. Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use thiserror::Error;

/// The current policy language version, which every generated document declares.
pub const VERSION: &str = "2012-10-17";

/// An IAM policy: identity-based, a role's trust policy or a bucket policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyDocument {
    #[serde(default = "implied_version")]
    pub version: String,
    /// Bucket policies written by hand often carry one; the operator never sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Always written as a list; AWS accepts (and may hold) a single statement object.
    #[serde(rename = "Statement", deserialize_with = "one_or_many_vec")]
    pub statements: Vec<Statement>,
}

/// IAM reads a document without `Version` as the original language version.
fn implied_version() -> String {
    "2008-10-17".to_owned()
}

/// A list that may also be given as its only element.
fn one_or_many_vec<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    OneOrMany::deserialize(deserializer).map(OneOrMany::into_vec)
}

/// Why a text is not a policy document.
#[derive(Debug, Error)]
#[error("not an IAM policy document: {0}")]
pub struct NotAPolicy(#[from] serde_json::Error);

impl PolicyDocument {
    /// A document of the current language version.
    pub fn new(statements: Vec<Statement>) -> Self {
        PolicyDocument {
            version: VERSION.to_owned(),
            id: None,
            statements,
        }
    }

    /// Reads a policy as IAM or S3 returns it.
    pub fn parse(text: &str) -> Result<Self, NotAPolicy> {
        Ok(serde_json::from_str(text)?)
    }

    /// The document as JSON, keys in sorted order.
    pub fn to_json(&self) -> Value {
        // Cannot fail: every map is keyed by strings and every leaf is a string (serde_json
        // fails only on other map keys or a failing `Serialize`), as `json!` relies on too.
        serde_json::to_value(self).expect("a policy document is JSON")
    }

    /// Whether `seen` (as IAM or S3 returns it) is this document, up to what AWS rewrites:
    /// key order, one-element lists as scalars, the order of statements and list items.
    pub fn same_as(&self, seen: &Value) -> bool {
        normalize_policy(seen) == normalize_policy(&self.to_json())
    }

    /// The document with `more` statements after its own.
    pub fn with(mut self, more: Vec<Statement>) -> Self {
        self.statements.extend(more);
        self
    }

    /// The statement with this `Sid`.
    pub fn statement(&self, sid: &str) -> Option<&Statement> {
        self.statements
            .iter()
            .find(|s| s.sid.as_deref() == Some(sid))
    }
}

/// The text sent to AWS and shown in status: keys in sorted order, so one document always has
/// one text.
impl fmt::Display for PolicyDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

/// A policy document as IAM returns it: URL-encoded (RFC 3986) by AWS, plain by some
/// endpoints.
pub fn iam_document_text(text: &str) -> String {
    if text.trim_start().starts_with('{') {
        text.to_owned()
    } else {
        percent_decode(text)
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b'+', ..) => {
                out.push(b' ');
                i += 1;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Canonical form of an IAM policy for comparison: AWS reorders keys, turns one-element arrays
/// into scalars and may reorder statements, none of which is drift. Compared as JSON rather
/// than as a [`PolicyDocument`], so that anything in an observed document, even what the types
/// do not model, counts.
pub fn normalize_policy(policy: &Value) -> Value {
    match policy {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalize_policy(v)))
                .collect(),
        ),
        Value::Array(items) if items.len() == 1 => normalize_policy(&items[0]),
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(normalize_policy).collect();
            items.sort_by_key(|v| v.to_string());
            Value::Array(items)
        }
        other => other.clone(),
    }
}

/// A value IAM accepts as one item or a list of them; each builder picks the form it writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(item) => std::slice::from_ref(item),
            OneOrMany::Many(items) => items,
        }
    }

    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(item) => vec![item],
            OneOrMany::Many(items) => items,
        }
    }
}

/// A list written as such, even with one item.
fn many<T: ToString>(items: impl IntoIterator<Item = T>) -> OneOrMany<String> {
    OneOrMany::Many(items.into_iter().map(|i| i.to_string()).collect())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    Allow,
    Deny,
}

/// Who a resource or trust policy statement is about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawPrincipal", into = "RawPrincipal")]
pub enum Principal {
    /// `"*"`: every principal, authenticated or not.
    Everyone,
    Named(Principals),
}

/// Principals by kind: `{"AWS": ..., "Service": ..., "Federated": ...}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Principals {
    #[serde(rename = "AWS", default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<OneOrMany<String>>,
    #[serde(rename = "Service", default, skip_serializing_if = "Option::is_none")]
    pub service: Option<OneOrMany<String>>,
    #[serde(rename = "Federated", default, skip_serializing_if = "Option::is_none")]
    pub federated: Option<OneOrMany<String>>,
}

impl Principal {
    /// An IAM principal (account, role, user) by ARN.
    pub fn aws(arn: impl ToString) -> Self {
        Principal::Named(Principals {
            aws: Some(OneOrMany::One(arn.to_string())),
            ..Principals::default()
        })
    }

    /// An AWS service, e.g. `logging.s3.amazonaws.com`.
    pub fn service(name: impl ToString) -> Self {
        Principal::Named(Principals {
            service: Some(OneOrMany::One(name.to_string())),
            ..Principals::default()
        })
    }

    /// An identity provider (an OIDC provider's ARN).
    pub fn federated(arn: impl ToString) -> Self {
        Principal::Named(Principals {
            federated: Some(OneOrMany::One(arn.to_string())),
            ..Principals::default()
        })
    }
}

/// `Principal` as JSON: the text `"*"` or an object.
#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum RawPrincipal {
    Text(String),
    Named(Principals),
}

/// Why a `Principal` text is refused: the only text IAM takes there is `*`.
#[derive(Debug, Error)]
#[error("principal {0:?} is neither \"*\" nor an object of principals")]
pub struct NotAPrincipal(String);

impl TryFrom<RawPrincipal> for Principal {
    type Error = NotAPrincipal;

    fn try_from(raw: RawPrincipal) -> Result<Self, NotAPrincipal> {
        match raw {
            RawPrincipal::Text(text) if text == "*" => Ok(Principal::Everyone),
            RawPrincipal::Text(text) => Err(NotAPrincipal(text)),
            RawPrincipal::Named(named) => Ok(Principal::Named(named)),
        }
    }
}

impl From<Principal> for RawPrincipal {
    fn from(principal: Principal) -> Self {
        match principal {
            Principal::Everyone => RawPrincipal::Text("*".to_owned()),
            Principal::Named(named) => RawPrincipal::Named(named),
        }
    }
}

/// One condition value. IAM compares condition values as text, so a JSON boolean or number
/// (`false`, `3600`) reads as the same value as its text (`"false"`, `"3600"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "String")]
pub struct ConditionValue(String);

impl ConditionValue {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a condition value is refused: IAM takes only strings, booleans and numbers there.
#[derive(Debug, Error)]
#[error("condition value {0} is not a string, boolean or number")]
pub struct NotAConditionValue(Value);

impl TryFrom<Value> for ConditionValue {
    type Error = NotAConditionValue;

    fn try_from(value: Value) -> Result<Self, NotAConditionValue> {
        match value {
            Value::String(text) => Ok(ConditionValue(text)),
            Value::Bool(b) => Ok(ConditionValue(b.to_string())),
            Value::Number(n) => Ok(ConditionValue(n.to_string())),
            other => Err(NotAConditionValue(other)),
        }
    }
}

impl From<ConditionValue> for String {
    fn from(value: ConditionValue) -> Self {
        value.0
    }
}

impl PartialEq<&str> for ConditionValue {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// `{operator: {condition key: value(s)}}`, e.g. `{"Bool": {"aws:SecureTransport": "false"}}`.
pub type Condition = BTreeMap<String, BTreeMap<String, OneOrMany<ConditionValue>>>;

/// One statement. Built with [`Statement::allow`] or [`Statement::deny`] and the setters below,
/// which write one item as a scalar and a list (even of one) as a list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Statement {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    pub effect: Effect,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<Principal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_principal: Option<Principal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<OneOrMany<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_action: Option<OneOrMany<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<OneOrMany<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_resource: Option<OneOrMany<String>>,
    #[serde(default, skip_serializing_if = "Condition::is_empty")]
    pub condition: Condition,
}

impl Statement {
    fn new(sid: &str, effect: Effect) -> Self {
        Statement {
            sid: Some(sid.to_owned()),
            effect,
            principal: None,
            not_principal: None,
            action: None,
            not_action: None,
            resource: None,
            not_resource: None,
            condition: Condition::new(),
        }
    }

    pub fn allow(sid: &str) -> Self {
        Statement::new(sid, Effect::Allow)
    }

    pub fn deny(sid: &str) -> Self {
        Statement::new(sid, Effect::Deny)
    }

    pub fn principal(self, principal: Principal) -> Self {
        Statement {
            principal: Some(principal),
            ..self
        }
    }

    pub fn action(self, action: &str) -> Self {
        Statement {
            action: Some(OneOrMany::One(action.to_owned())),
            ..self
        }
    }

    pub fn actions<T: ToString>(self, actions: impl IntoIterator<Item = T>) -> Self {
        Statement {
            action: Some(many(actions)),
            ..self
        }
    }

    pub fn resource(self, resource: impl ToString) -> Self {
        Statement {
            resource: Some(OneOrMany::One(resource.to_string())),
            ..self
        }
    }

    pub fn resources<T: ToString>(self, resources: impl IntoIterator<Item = T>) -> Self {
        Statement {
            resource: Some(many(resources)),
            ..self
        }
    }

    /// Adds `operator: {key: value}`, beside the operator's other keys.
    pub fn condition(self, operator: &str, key: impl ToString, value: impl ToString) -> Self {
        self.with_condition(
            operator,
            key,
            OneOrMany::One(ConditionValue(value.to_string())),
        )
    }

    /// Adds `operator: {key: [values]}`, a list even of one.
    pub fn condition_any<T: ToString>(
        self,
        operator: &str,
        key: impl ToString,
        values: impl IntoIterator<Item = T>,
    ) -> Self {
        let values = values
            .into_iter()
            .map(|v| ConditionValue(v.to_string()))
            .collect();
        self.with_condition(operator, key, OneOrMany::Many(values))
    }

    fn with_condition(
        mut self,
        operator: &str,
        key: impl ToString,
        values: OneOrMany<ConditionValue>,
    ) -> Self {
        self.condition
            .entry(operator.to_owned())
            .or_default()
            .insert(key.to_string(), values);
        self
    }

    /// The values this statement's condition tests `key` against with `operator`.
    pub fn condition_values(&self, operator: &str, key: &str) -> &[ConditionValue] {
        self.condition
            .get(operator)
            .and_then(|keys| keys.get(key))
            .map_or(&[], OneOrMany::as_slice)
    }

    /// The actions of `Action`; none for a statement with `NotAction`.
    pub fn actions_named(&self) -> &[String] {
        self.action.as_ref().map_or(&[], OneOrMany::as_slice)
    }

    /// The resources of `Resource`; none for a trust policy or a statement with `NotResource`.
    pub fn resources_named(&self) -> &[String] {
        self.resource.as_ref().map_or(&[], OneOrMany::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_scalars_and_lists_as_built() {
        let statement = Statement::deny("D")
            .principal(Principal::Everyone)
            .action("s3:*")
            .resources(["arn:aws:s3:::b"])
            .condition("Bool", "aws:SecureTransport", "false")
            .condition_any("StringNotEquals", "k", ["a"]);
        assert_eq!(
            serde_json::to_value(&statement).ok(),
            Some(json!({
                "Sid": "D",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": ["arn:aws:s3:::b"],
                "Condition": {
                    "Bool": {"aws:SecureTransport": "false"},
                    "StringNotEquals": {"k": ["a"]}
                }
            }))
        );
        let allow = Statement::allow("A").principal(Principal::service("logging.s3.amazonaws.com"));
        assert_eq!(
            serde_json::to_value(&allow).ok(),
            Some(
                json!({"Sid": "A", "Effect": "Allow", "Principal": {"Service": "logging.s3.amazonaws.com"}})
            )
        );
    }

    #[test]
    fn reads_what_aws_returns() {
        let text = r#"{
            "Id": "Policy1",
            "Statement": {
                "Effect": "Deny",
                "Principal": {"AWS": ["arn:aws:iam::1:root", "arn:aws:iam::2:root"], "Service": "s3.amazonaws.com"},
                "NotAction": "s3:GetObject",
                "NotResource": ["arn:aws:s3:::b/*"],
                "Condition": {"Bool": {"aws:SecureTransport": false}, "NumericLessThan": {"s3:TlsVersion": 1.2}}
            }
        }"#;
        let doc = PolicyDocument::parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(doc.version, "2008-10-17");
        assert_eq!(doc.id.as_deref(), Some("Policy1"));
        let [statement] = doc.statements.as_slice() else {
            panic!("one statement: {doc:?}");
        };
        assert_eq!(statement.sid, None);
        let Some(Principal::Named(named)) = &statement.principal else {
            panic!("named principals: {statement:?}");
        };
        assert_eq!(named.aws.as_ref().map(|a| a.as_slice().len()), Some(2));
        assert_eq!(
            statement.condition_values("Bool", "aws:SecureTransport"),
            [ConditionValue("false".into())]
        );
        assert_eq!(
            statement.condition_values("NumericLessThan", "s3:TlsVersion"),
            [ConditionValue("1.2".into())]
        );
        assert!(statement.actions_named().is_empty());
        assert_eq!(
            statement.not_resource.as_ref().map(OneOrMany::as_slice),
            Some(["arn:aws:s3:::b/*".to_owned()].as_slice())
        );
    }

    #[test]
    fn refuses_what_iam_would() {
        for bad in [
            r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "everyone"}]}"#,
            r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Maybe"}]}"#,
            r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Condition": {"Bool": {"k": {}}}}]}"#,
            r#"{"Version": "2012-10-17"}"#,
            "not json",
        ] {
            assert!(PolicyDocument::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_document_is_the_same_as_aws_rewrites_it() {
        let doc = PolicyDocument::new(vec![
            Statement::allow("A")
                .action("s3:GetObject")
                .resources(["r"]),
            Statement::deny("D").action("s3:*").resource("r"),
        ]);
        let mut seen = doc.to_json();
        if let Some(statements) = seen["Statement"].as_array_mut() {
            statements.reverse();
        }
        seen["Statement"][1]["Resource"] = json!("r");
        assert!(doc.same_as(&seen));
        seen["Statement"][0]["Effect"] = json!("Allow");
        assert!(!doc.same_as(&seen));
        assert_eq!(
            doc.to_string(),
            r#"{"Statement":[{"Action":"s3:GetObject","Effect":"Allow","Resource":["r"],"Sid":"A"},{"Action":"s3:*","Effect":"Deny","Resource":"r","Sid":"D"}],"Version":"2012-10-17"}"#
        );
    }
}
