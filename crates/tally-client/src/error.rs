//! The client's error: always carries one of the stable codes and a sentence a person understands.

use std::collections::BTreeMap;

use tally_proto::{ErrorCode, TallyError};

/// What a client call can fail with. [`ClientError::code`] is the stable code to switch on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The cluster answered with an error (the client's own checks are [`ClientError::Invalid`]).
    /// A status without the ledger's code (a connection's failure or reset) is `unavailable`
    /// or `internal` with the detail `outcome`: `unknown` ([`ClientError::outcome_unknown`]):
    /// a write may then have been applied, and sending it again with the same ids is safe (a
    /// usage event settled before is answered `duplicate`).
    #[error("{0}")]
    Api(Box<TallyError>),
    /// Every attempt failed with a transient error (no leader, unreachable nodes, deadlines).
    /// The outcome of a write is unknown; retrying it with the same ids is safe.
    #[error("{}: gave up after {attempts} attempts in {elapsed_ms} ms; last error from {endpoint}: {}", last.code, last.message)]
    RetriesExhausted {
        attempts: u32,
        elapsed_ms: u64,
        endpoint: String,
        last: Box<TallyError>,
    },
    /// An endpoint given to the client is not a usable address.
    #[error("invalid_argument: endpoint {endpoint:?} {reason}")]
    Endpoint { endpoint: String, reason: String },
    /// A reply that breaks the API contract (a missing field, an amount that does not parse).
    /// The request was answered, so a write may have been applied.
    #[error("internal: the server's reply is malformed: {0}")]
    Protocol(String),
    /// The client's own checks refused the request before anything was sent (the same
    /// checks, codes and messages as the server's: `invalid_argument` naming the field and the
    /// reason, `request_too_large`).
    #[error("{0}")]
    Invalid(Box<TallyError>),
}

/// The client's own check of a request, before it is sent: a refusal is [`ClientError::Invalid`].
pub(crate) fn checked_locally<T>(result: Result<T, TallyError>) -> Result<T, ClientError> {
    result.map_err(|error| ClientError::Invalid(Box::new(error)))
}

impl ClientError {
    /// The stable code (`insufficient_funds`, `not_leader`, `unavailable`...).
    pub fn code(&self) -> ErrorCode {
        match self {
            ClientError::Api(error) => error.code,
            ClientError::RetriesExhausted { last, .. } => last.code,
            ClientError::Invalid(error) => error.code,
            ClientError::Endpoint { .. } => ErrorCode::InvalidArgument,
            ClientError::Protocol(_) => ErrorCode::Internal,
        }
    }

    /// Whether the client refused the call itself, before sending anything.
    pub fn is_local(&self) -> bool {
        matches!(self, ClientError::Invalid(_) | ClientError::Endpoint { .. })
    }

    /// The message without the code prefix.
    pub fn message(&self) -> String {
        match self {
            ClientError::Api(error) => error.message.clone(),
            ClientError::RetriesExhausted {
                attempts,
                elapsed_ms,
                endpoint,
                last,
            } => format!(
                "gave up after {attempts} attempts in {elapsed_ms} ms; last error from {endpoint}: {}",
                last.message
            ),
            ClientError::Endpoint { endpoint, reason } => format!("endpoint {endpoint:?} {reason}"),
            ClientError::Protocol(message) => {
                format!("the server's reply is malformed: {message}")
            }
            ClientError::Invalid(error) => error.message.clone(),
        }
    }

    /// Machine-readable details (`field`/`reason`, `available`/`required`...), when any.
    pub fn details(&self) -> BTreeMap<String, String> {
        match self {
            ClientError::Api(error)
            | ClientError::Invalid(error)
            | ClientError::RetriesExhausted { last: error, .. } => error.details.clone(),
            _ => BTreeMap::new(),
        }
    }

    /// Whether the call may have been applied though it failed: a transient error, or an
    /// error from a failed or reset connection or an unreadable reply (detail `outcome`:
    /// `unknown`). Send such a write again with the same ids, never under new ones.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ClientError::Api(error) | ClientError::RetriesExhausted { last: error, .. } => {
                error.outcome_unknown()
            }
            ClientError::Protocol(_) => true,
            ClientError::Invalid(_) | ClientError::Endpoint { .. } => false,
        }
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ClientError::RetriesExhausted { .. }) || self.code().is_transient()
    }
}

impl From<TallyError> for ClientError {
    fn from(error: TallyError) -> Self {
        ClientError::Api(Box::new(error))
    }
}

impl From<tally_core::InvalidInput> for ClientError {
    fn from(error: tally_core::InvalidInput) -> Self {
        ClientError::Invalid(Box::new(error.into()))
    }
}
