//! openraft's own storage conformance suite, run against the sled store in fresh temp dirs.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use tally_store::{LogStore, NodeId, StateMachineStore, TypeConfig};
use tempfile::TempDir;

struct TempStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) = tally_store::open(dir.path()).expect("open store");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(TempStoreBuilder).expect("openraft storage suite");
}
