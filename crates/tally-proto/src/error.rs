//! Stable error codes at the API edge, and how a gRPC status carries them.
//!
//! A failed call is a `tonic::Status` with:
//! - the gRPC code from [`ErrorCode::grpc_code`] (so generic gRPC tooling behaves sensibly);
//! - metadata `tally-code` = [`ErrorCode::as_str`] (readable by tools that see only headers);
//! - for `not_leader`, metadata `tally-leader-id` and `tally-leader-addr` when known;
//! - `details` = a prost-encoded [`v1::ErrorInfo`] with the message and machine-readable
//!   details (`field`/`reason`, `available`/`required`, ...).
//!
//! [`TallyError::to_status`] builds such a status and [`TallyError::from_status`] parses one
//! back, falling back on the gRPC code for statuses that did not come from a tallyd (a refused
//! connection, a deadline the client itself enforced).

use std::collections::BTreeMap;
use std::fmt;

use prost::Message;
use tally_core::{InvalidInput, Reason};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use crate::v1;

/// The detail an error carries when whether its request was applied is not known (a
/// connection failed or was reset under it, a reply could not be read): [`OUTCOME_UNKNOWN`].
/// A write answered so may have been applied; send it again with the same ids.
pub const OUTCOME_DETAIL: &str = "outcome";
/// See [`OUTCOME_DETAIL`].
pub const OUTCOME_UNKNOWN: &str = "unknown";

/// Metadata key of the stable code.
pub const CODE_METADATA_KEY: &str = "tally-code";
/// Metadata key of the leader's node id on `not_leader`.
pub const LEADER_ID_METADATA_KEY: &str = "tally-leader-id";
/// Metadata key of the leader's client address on `not_leader`.
pub const LEADER_ADDR_METADATA_KEY: &str = "tally-leader-addr";

/// The stable error codes. Clients may switch on them; they never change meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorCode {
    InvalidArgument,
    NotLeader,
    InsufficientFunds,
    UnknownAccount,
    AccountFrozen,
    AccountClosed,
    NoRate,
    OutsideTimeWindow,
    AlreadyExists,
    UnknownAsset,
    UnknownGrant,
    UnknownHold,
    UnknownPriceBook,
    EffectiveInPast,
    Overflow,
    NotInitialized,
    BatchAborted,
    Unavailable,
    DeadlineExceeded,
    RequestTooLarge,
    Internal,
}

impl ErrorCode {
    /// Every code, in documentation order.
    pub const ALL: [ErrorCode; 21] = [
        ErrorCode::InvalidArgument,
        ErrorCode::NotLeader,
        ErrorCode::InsufficientFunds,
        ErrorCode::UnknownAccount,
        ErrorCode::AccountFrozen,
        ErrorCode::AccountClosed,
        ErrorCode::NoRate,
        ErrorCode::OutsideTimeWindow,
        ErrorCode::AlreadyExists,
        ErrorCode::UnknownAsset,
        ErrorCode::UnknownGrant,
        ErrorCode::UnknownHold,
        ErrorCode::UnknownPriceBook,
        ErrorCode::EffectiveInPast,
        ErrorCode::Overflow,
        ErrorCode::NotInitialized,
        ErrorCode::BatchAborted,
        ErrorCode::Unavailable,
        ErrorCode::DeadlineExceeded,
        ErrorCode::RequestTooLarge,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::InsufficientFunds => "insufficient_funds",
            ErrorCode::UnknownAccount => "unknown_account",
            ErrorCode::AccountFrozen => "account_frozen",
            ErrorCode::AccountClosed => "account_closed",
            ErrorCode::NoRate => "no_rate",
            ErrorCode::OutsideTimeWindow => "outside_time_window",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::UnknownAsset => "unknown_asset",
            ErrorCode::UnknownGrant => "unknown_grant",
            ErrorCode::UnknownHold => "unknown_hold",
            ErrorCode::UnknownPriceBook => "unknown_price_book",
            ErrorCode::EffectiveInPast => "effective_in_past",
            ErrorCode::Overflow => "overflow",
            ErrorCode::NotInitialized => "not_initialized",
            ErrorCode::BatchAborted => "batch_aborted",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
            ErrorCode::RequestTooLarge => "request_too_large",
            ErrorCode::Internal => "internal",
        }
    }

    /// The code named `text`, if it is one of ours.
    pub fn parse(text: &str) -> Option<ErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == text)
    }

    /// The gRPC status code this error travels with.
    pub fn grpc_code(self) -> Code {
        match self {
            ErrorCode::InvalidArgument => Code::InvalidArgument,
            // UNAVAILABLE, so that generic gRPC clients treat it as "try another endpoint".
            ErrorCode::NotLeader | ErrorCode::Unavailable => Code::Unavailable,
            ErrorCode::InsufficientFunds
            | ErrorCode::AccountFrozen
            | ErrorCode::AccountClosed
            | ErrorCode::NoRate
            | ErrorCode::EffectiveInPast
            | ErrorCode::NotInitialized => Code::FailedPrecondition,
            ErrorCode::UnknownAccount
            | ErrorCode::UnknownAsset
            | ErrorCode::UnknownGrant
            | ErrorCode::UnknownHold
            | ErrorCode::UnknownPriceBook => Code::NotFound,
            ErrorCode::OutsideTimeWindow | ErrorCode::Overflow => Code::OutOfRange,
            ErrorCode::AlreadyExists => Code::AlreadyExists,
            ErrorCode::BatchAborted => Code::Aborted,
            ErrorCode::DeadlineExceeded => Code::DeadlineExceeded,
            ErrorCode::RequestTooLarge => Code::ResourceExhausted,
            ErrorCode::Internal => Code::Internal,
        }
    }

    /// Whether retrying the same call (with the same ids) may succeed without changing it.
    /// Always safe for writes: the ledger deduplicates by id. `not_initialized` is included:
    /// a new cluster applies its Init entry by itself moments after electing a leader.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorCode::NotLeader
                | ErrorCode::Unavailable
                | ErrorCode::DeadlineExceeded
                | ErrorCode::NotInitialized
        )
    }

    /// The code for a core business rejection.
    pub fn of_reason(reason: &Reason) -> ErrorCode {
        // Core's `Reason::code()` is the source of truth for the names.
        ErrorCode::parse(reason.code()).unwrap_or(ErrorCode::Internal)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API error with its stable code: what a server returns and what a client gets back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TallyError {
    pub code: ErrorCode,
    pub message: String,
    pub details: BTreeMap<String, String>,
    /// For `not_leader`: the current leader, when known.
    pub leader_id: Option<u64>,
    pub leader_addr: Option<String>,
}

impl TallyError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        TallyError {
            code,
            message: message.into(),
            details: BTreeMap::new(),
            leader_id: None,
            leader_addr: None,
        }
    }

    pub fn with_detail(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }

    /// This node is not the leader; `leader_addr` is the leader's client address when known.
    pub fn not_leader(leader_id: Option<u64>, leader_addr: Option<String>) -> Self {
        let message = match (&leader_id, &leader_addr) {
            (Some(id), Some(addr)) => {
                format!("this node is not the leader; node {id} at {addr} is")
            }
            (Some(id), None) => format!("this node is not the leader; node {id} is"),
            _ => "this node is not the leader and knows of no leader right now".to_string(),
        };
        TallyError {
            leader_id,
            leader_addr,
            ..TallyError::new(ErrorCode::NotLeader, message)
        }
    }

    /// A business rejection from core, with its machine-readable details.
    pub fn from_reason(reason: &Reason) -> Self {
        TallyError {
            details: crate::convert::reason_details(reason),
            ..TallyError::new(ErrorCode::of_reason(reason), reason.message())
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        TallyError::new(ErrorCode::Internal, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        TallyError::new(ErrorCode::Unavailable, message)
    }

    pub fn request_too_large(message: impl Into<String>) -> Self {
        TallyError::new(ErrorCode::RequestTooLarge, message)
    }

    /// Marks that whether the request was applied is not known ([`OUTCOME_DETAIL`]).
    pub fn with_outcome_unknown(self) -> Self {
        self.with_detail(OUTCOME_DETAIL, OUTCOME_UNKNOWN)
    }

    /// Whether the request may have been applied though this error came back: a write
    /// answered so is sent again with the same ids, never anew.
    pub fn outcome_unknown(&self) -> bool {
        self.code.is_transient()
            || self.details.get(OUTCOME_DETAIL).map(String::as_str) == Some(OUTCOME_UNKNOWN)
    }

    /// The field the error is about, for `invalid_argument`.
    pub fn field(&self) -> Option<&str> {
        self.details.get("field").map(String::as_str)
    }

    pub fn to_error_info(&self) -> v1::ErrorInfo {
        v1::ErrorInfo {
            code: self.code.as_str().to_string(),
            message: self.message.clone(),
            details: self.details.clone(),
            leader_id: self.leader_id,
            leader_addr: self.leader_addr.clone(),
        }
    }

    /// The gRPC status carrying this error (see the module docs).
    pub fn to_status(&self) -> Status {
        let mut metadata = MetadataMap::new();
        metadata.insert(
            CODE_METADATA_KEY,
            MetadataValue::from_static(self.code.as_str()),
        );
        if let Some(leader_id) = self.leader_id {
            metadata.insert(LEADER_ID_METADATA_KEY, MetadataValue::from(leader_id));
        }
        if let Some(addr) = &self.leader_addr {
            // An address that is not a valid header value is left out rather than failing
            // the whole error; it is still in the details.
            if let Ok(value) = addr.parse() {
                metadata.insert(LEADER_ADDR_METADATA_KEY, value);
            }
        }
        let details = self.to_error_info().encode_to_vec();
        Status::with_details_and_metadata(
            self.code.grpc_code(),
            self.message.clone(),
            details.into(),
            metadata,
        )
    }

    /// Parses a status back. Statuses without Tally details (transport failures, statuses from
    /// a proxy) get a code derived from the gRPC code.
    pub fn from_status(status: &Status) -> Self {
        if !status.details().is_empty() {
            if let Ok(info) = v1::ErrorInfo::decode(status.details()) {
                if let Some(code) = ErrorCode::parse(&info.code) {
                    return TallyError {
                        code,
                        message: info.message,
                        details: info.details,
                        leader_id: info.leader_id,
                        leader_addr: info.leader_addr,
                    };
                }
            }
        }
        let metadata = status.metadata();
        let from_metadata = metadata
            .get(CODE_METADATA_KEY)
            .and_then(|value| value.to_str().ok())
            .and_then(ErrorCode::parse);
        let code = from_metadata.unwrap_or(match status.code() {
            Code::InvalidArgument => ErrorCode::InvalidArgument,
            Code::DeadlineExceeded | Code::Cancelled => ErrorCode::DeadlineExceeded,
            // RESOURCE_EXHAUSTED without a Tally code is HTTP/2 pushing back (a GOAWAY with
            // ENHANCE_YOUR_CALM): the connection's fault, not the request's.
            Code::Unavailable | Code::Unknown | Code::ResourceExhausted => ErrorCode::Unavailable,
            // tonic's message limit: a node refused to read a request that large.
            Code::OutOfRange => ErrorCode::RequestTooLarge,
            // Anything else without a Tally code did not come from a tallyd's API layer; do
            // not guess a business meaning for it.
            _ => ErrorCode::Internal,
        });
        let mut details = BTreeMap::new();
        if from_metadata.is_none()
            && matches!(
                code,
                ErrorCode::Unavailable | ErrorCode::DeadlineExceeded | ErrorCode::Internal
            )
        {
            // A connection's failure, or a reset: the request may or may not have been applied.
            details.insert(OUTCOME_DETAIL.to_string(), OUTCOME_UNKNOWN.to_string());
        }
        TallyError {
            details,
            leader_id: metadata
                .get(LEADER_ID_METADATA_KEY)
                .and_then(|value| value.to_str().ok())
                .and_then(|text| text.parse().ok()),
            leader_addr: metadata
                .get(LEADER_ADDR_METADATA_KEY)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string),
            ..TallyError::new(code, status.message())
        }
    }
}

impl From<InvalidInput> for TallyError {
    fn from(error: InvalidInput) -> Self {
        TallyError::new(ErrorCode::InvalidArgument, error.to_string())
            .with_detail("field", error.field)
            .with_detail("reason", error.reason)
    }
}

impl From<TallyError> for Status {
    fn from(error: TallyError) -> Status {
        error.to_status()
    }
}

impl From<Status> for TallyError {
    fn from(status: Status) -> TallyError {
        TallyError::from_status(&status)
    }
}

impl fmt::Display for TallyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for TallyError {}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::{AccountId, Amount};

    #[test]
    fn codes_round_trip_and_match_core() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::parse("nope"), None);
        let reasons = [
            Reason::InsufficientFunds {
                available: Amount::from_i64(1),
                required: Amount::from_i64(2),
            },
            Reason::UnknownAccount {
                account: AccountId::new("a").unwrap(),
            },
            Reason::NotInitialized,
            Reason::BatchAborted { failed_index: 3 },
            Reason::InvalidInput(InvalidInput::new("x", "y")),
        ];
        for reason in &reasons {
            assert_ne!(
                ErrorCode::of_reason(reason),
                ErrorCode::Internal,
                "{reason:?}"
            );
            assert_eq!(ErrorCode::of_reason(reason).as_str(), reason.code());
        }
    }

    #[test]
    fn status_round_trip_keeps_code_details_and_leader() {
        let error = TallyError::from_reason(&Reason::InsufficientFunds {
            available: Amount::parse("a", "1.5").unwrap(),
            required: Amount::from_i64(2),
        });
        let status = error.to_status();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.metadata().get(CODE_METADATA_KEY).unwrap(),
            "insufficient_funds"
        );
        let back = TallyError::from_status(&status);
        assert_eq!(back, error);
        assert_eq!(back.details["available"], "1.5");
        assert_eq!(back.details["required"], "2");

        let not_leader = TallyError::not_leader(Some(2), Some("127.0.0.1:7002".to_string()));
        let status = not_leader.to_status();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.metadata().get(LEADER_ID_METADATA_KEY).unwrap(), "2");
        assert_eq!(
            status.metadata().get(LEADER_ADDR_METADATA_KEY).unwrap(),
            "127.0.0.1:7002"
        );
        let back = TallyError::from_status(&status);
        assert_eq!(back.code, ErrorCode::NotLeader);
        assert_eq!(back.leader_addr.as_deref(), Some("127.0.0.1:7002"));
        assert!(back.code.is_transient());
    }

    #[test]
    fn foreign_statuses_map_by_grpc_code_or_metadata() {
        let back = TallyError::from_status(&Status::unavailable("connection refused"));
        assert_eq!(back.code, ErrorCode::Unavailable);
        assert_eq!(back.message, "connection refused");
        let back = TallyError::from_status(&Status::deadline_exceeded("late"));
        assert_eq!(back.code, ErrorCode::DeadlineExceeded);
        // A GOAWAY(ENHANCE_YOUR_CALM) is the connection's, not a refusal of the request
        // (`request_too_large`, "nothing was applied"): transient, outcome unknown. A bare
        // INTERNAL (a reset) leaves the outcome unknown too; tonic's message limit on a
        // request is a refusal.
        let back = TallyError::from_status(&Status::resource_exhausted("h2 protocol error"));
        assert_eq!(back.code, ErrorCode::Unavailable);
        assert!(back.outcome_unknown());
        let back = TallyError::from_status(&Status::internal("h2 protocol error"));
        assert_eq!(back.code, ErrorCode::Internal);
        assert_eq!(
            back.details.get(OUTCOME_DETAIL).map(String::as_str),
            Some("unknown")
        );
        let back = TallyError::from_status(&Status::out_of_range("decoded message too large"));
        assert_eq!(back.code, ErrorCode::RequestTooLarge);
        assert!(!back.outcome_unknown());
        // A coded refusal is what it says.
        let refused = TallyError::from_status(
            &TallyError::new(ErrorCode::InsufficientFunds, "no").to_status(),
        );
        assert!(!refused.outcome_unknown());

        // Only metadata, no details (e.g. a proxy re-wrapped the status).
        let mut metadata = MetadataMap::new();
        metadata.insert(CODE_METADATA_KEY, MetadataValue::from_static("not_leader"));
        metadata.insert(LEADER_ID_METADATA_KEY, MetadataValue::from(3u64));
        let status = Status::with_metadata(Code::Unavailable, "not leader", metadata);
        let back = TallyError::from_status(&status);
        assert_eq!(back.code, ErrorCode::NotLeader);
        assert_eq!(back.leader_id, Some(3));
    }

    #[test]
    fn invalid_input_names_field_and_reason() {
        let error = TallyError::from(InvalidInput::new(
            "events[3].quantity",
            "must be >= 0, got -1",
        ));
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        assert_eq!(error.message, "events[3].quantity: must be >= 0, got -1");
        assert_eq!(error.field(), Some("events[3].quantity"));
        assert_eq!(error.to_status().code(), Code::InvalidArgument);
    }
}
