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
    #[error("{0}; backups are only kept where the operator owns them")]
    BackupConflict(#[from] crate::plan::backup::BackupConflict),
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
    /// The error a reconcile step returned, looked for through the finalizer that ran the step;
    /// the finalizer's own failure otherwise.
    pub fn origin(&self) -> &Error {
        match self {
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.origin(),
                _ => self,
            },
            _ => self,
        }
    }

    /// Whether the Kubernetes API failed (a conflicting write, a restarting API server), as
    /// opposed to the cloud or the object itself: such failures pass in seconds. The finalizer's
    /// own failures are writes of the finalizer list.
    pub fn is_kubernetes_api(&self) -> bool {
        matches!(self.origin(), Error::Kube(_) | Error::Finalizer(_))
    }

    pub fn reason(&self) -> String {
        match self.origin() {
            Error::Cloud(e) => format!("Aws{}", e.code()),
            Error::Kube(_) => "KubernetesApiError".into(),
            Error::Json(_) => "InvalidObject".into(),
            Error::DeletionBlocked { .. } => "DeletionBlocked".into(),
            Error::LogBucketConflict { .. } => "LogBucketConflict".into(),
            Error::EvidenceConflict { .. } => "EvidenceConflict".into(),
            Error::BackupConflict(_) => "BackupConflict".into(),
            Error::Finalizer(_) => "FinalizerError".into(),
            Error::MissingField(_) => "InvalidObject".into(),
            Error::Random(_) => "RandomUnavailable".into(),
            Error::ExternalIdSecret { .. } => "ExternalIdSecretInvalid".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::finalizer;

    use super::Error;

    fn in_cleanup(e: Error) -> Error {
        Error::Finalizer(Box::new(finalizer::Error::CleanupFailed(e)))
    }

    #[test]
    fn a_step_error_is_seen_through_the_finalizer() {
        let blocked = in_cleanup(Error::DeletionBlocked { bucket: "b".into() });
        assert!(matches!(blocked.origin(), Error::DeletionBlocked { .. }));
        assert_eq!(blocked.reason(), "DeletionBlocked");
        assert!(!blocked.is_kubernetes_api());
        assert_eq!(
            in_cleanup(Error::MissingField("x")).reason(),
            "InvalidObject"
        );
    }

    #[test]
    fn the_finalizers_own_failure_is_a_kubernetes_api_one() {
        let own = Error::Finalizer(Box::new(finalizer::Error::UnnamedObject));
        assert!(matches!(own.origin(), Error::Finalizer(_)));
        assert_eq!(own.reason(), "FinalizerError");
        assert!(own.is_kubernetes_api());
    }
}
