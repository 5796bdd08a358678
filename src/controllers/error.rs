use thiserror::Error;

use crate::cloud::CloudError;

/// Why a reconcile failed; `reason()` becomes the condition reason users see.
#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serializing status: {0}")]
    Json(#[from] serde_json::Error),
    #[error("bucket {bucket} still holds data; deletionPolicy Delete only removes an empty bucket")]
    DeletionBlocked { bucket: String },
    #[error(
        "access-log bucket {bucket} cannot be used: {why}; logs are never written to a bucket the operator does not own"
    )]
    LogBucketConflict { bucket: String, why: String },
    #[error("{what} cannot be used: {why}; evidence is only kept where the operator owns it")]
    EvidenceConflict { what: String, why: String },
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("cannot read random bytes for an ExternalId: {0}")]
    Random(String),
    #[error("Secret {secret} cannot be used for the ExternalId: {why}")]
    ExternalIdSecret { secret: String, why: String },
}

impl Error {
    /// Whether the Kubernetes API failed (a conflicting write, a restarting API server), as
    /// opposed to the cloud or the object itself: such failures pass in seconds.
    pub fn is_kubernetes_api(&self) -> bool {
        match self {
            Error::Kube(_) => true,
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.is_kubernetes_api(),
                _ => true,
            },
            _ => false,
        }
    }

    pub fn reason(&self) -> String {
        match self {
            Error::Cloud(e) => format!("Aws{}", e.code()),
            Error::Kube(_) => "KubernetesApiError".into(),
            Error::Json(_) => "InvalidObject".into(),
            Error::DeletionBlocked { .. } => "DeletionBlocked".into(),
            Error::LogBucketConflict { .. } => "LogBucketConflict".into(),
            Error::EvidenceConflict { .. } => "EvidenceConflict".into(),
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.reason(),
                _ => "FinalizerError".into(),
            },
            Error::MissingField(_) => "InvalidObject".into(),
            Error::Random(_) => "RandomUnavailable".into(),
            Error::ExternalIdSecret { .. } => "ExternalIdSecretInvalid".into(),
        }
    }
}
