use std::path::PathBuf;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use thiserror::Error;

/// A failed cloud call, with what AWS said.
#[derive(Debug, Error)]
pub enum CloudError {
    #[error("{service} {operation} failed: {code}: {message}")]
    Api {
        service: &'static str,
        operation: &'static str,
        code: String,
        message: String,
        status: Option<u16>,
    },
    #[error("cannot read CA bundle {path}: {source}")]
    CaBundle {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("building {0} request: {1}")]
    Build(&'static str, String),
    #[error("{service} {operation} returned no {field}")]
    Incomplete {
        service: &'static str,
        operation: &'static str,
        field: &'static str,
    },
}

/// The error type of any SDK operation.
pub trait OperationError: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static {}
impl<T: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static> OperationError for T {}

/// A failed SDK call, as every adapter receives it.
pub type SdkFailure<E> = SdkError<E, Response>;

impl CloudError {
    pub fn from_sdk<E: OperationError>(
        service: &'static str,
        operation: &'static str,
        err: SdkFailure<E>,
    ) -> Self {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_owned).unwrap_or_else(|| match &err {
            SdkError::TimeoutError(_) => "Timeout".into(),
            SdkError::DispatchFailure(_) => "DispatchFailure".into(),
            _ => status.map_or_else(|| "Unknown".into(), |s| format!("HTTP{s}")),
        });
        let message = err
            .message()
            .map(str::to_owned)
            .unwrap_or_else(|| DisplayErrorContext(&err).to_string());
        CloudError::Api {
            service,
            operation,
            code,
            message,
            status,
        }
    }

    /// The AWS error code, e.g. `AccessDenied`, `NoSuchBucket`.
    pub fn code(&self) -> &str {
        match self {
            CloudError::Api { code, .. } => code,
            CloudError::CaBundle { .. } | CloudError::Tls(_) => "TlsConfiguration",
            CloudError::Build(..) => "InvalidRequest",
            CloudError::Incomplete { .. } => "IncompleteResponse",
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            CloudError::Api { status, .. } => *status,
            _ => None,
        }
    }

    /// Whether AWS refused the caller (HTTP 403, `AccessDenied` or `AccessDeniedException`).
    pub fn is_denied(&self) -> bool {
        // KMS says `AccessDeniedException`, with HTTP 400.
        self.status() == Some(403)
            || matches!(self.code(), "AccessDenied" | "AccessDeniedException")
    }

    /// Whether the error says the thing asked about does not exist.
    pub fn is_not_found(&self, codes: &[&str]) -> bool {
        codes.contains(&self.code())
    }
}
