//! The store's error type, and its conversion into openraft's `StorageError`.

use std::path::PathBuf;

use openraft::{AnyError, StorageError, StorageIOError};

use crate::types::NodeId;

/// Everything that can go wrong in the store. Every variant names what was being done, so a
/// node that stops on a storage error says why.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sled {op}: {source}")]
    Sled {
        op: &'static str,
        #[source]
        source: sled::Error,
    },
    #[error("cannot encode {what}: {reason}")]
    Encode { what: &'static str, reason: String },
    #[error("corrupt {what}: {reason}")]
    Corrupt { what: &'static str, reason: String },
    #[error(
        "{what} has format version {version}; this build reads only version {supported} \
         (written by another tallyd build: move the data directory aside, or for a local \
         cluster run `make clean-data`)"
    )]
    UnknownVersion {
        what: &'static str,
        version: u8,
        supported: u8,
    },
    #[error("storage task failed: {0}")]
    Task(String),
    #[error("invalid argument {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sled(op: &'static str) -> impl FnOnce(sled::Error) -> Self {
        move |source| StoreError::Sled { op, source }
    }
}

/// Which openraft storage subject an error is reported against; openraft only uses it in the
/// message of the fatal error it stops the node with.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Subject {
    ReadLogs,
    WriteLogs,
    WriteVote,
    WriteStateMachine,
    ReadSnapshot,
    WriteSnapshot,
}

pub(crate) fn to_storage(subject: Subject, e: StoreError) -> StorageError<NodeId> {
    let any = AnyError::new(&e);
    let io = match subject {
        Subject::ReadLogs => StorageIOError::read_logs(any),
        Subject::WriteLogs => StorageIOError::write_logs(any),
        Subject::WriteVote => StorageIOError::write_vote(any),
        Subject::WriteStateMachine => StorageIOError::write_state_machine(any),
        Subject::ReadSnapshot => StorageIOError::read_snapshot(None, any),
        Subject::WriteSnapshot => StorageIOError::write_snapshot(None, any),
    };
    StorageError::IO { source: io }
}

/// Shorthand: `result.map_err(sto(Subject::WriteLogs))?`.
pub(crate) fn sto(subject: Subject) -> impl FnOnce(StoreError) -> StorageError<NodeId> {
    move |e| to_storage(subject, e)
}
