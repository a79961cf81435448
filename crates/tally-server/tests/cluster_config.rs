//! The shipped configurations in `cluster-config/` must load: a typo there breaks `make run`.

use std::path::PathBuf;

use tally_server::config::Config;

fn cluster_config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../cluster-config")
}

#[test]
fn local_cluster_configs_load_and_agree() {
    let mut configs = Vec::new();
    for node in 1..=3u64 {
        let path = cluster_config_dir().join(format!("node-{node}.toml"));
        let config = Config::from_file(&path).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(config.node_id, node);
        assert_eq!(config.client_addr, format!("127.0.0.1:710{node}"));
        assert_eq!(config.peer_addr, format!("127.0.0.1:720{node}"));
        assert_eq!(config.metrics_addr, format!("127.0.0.1:730{node}"));
        assert_eq!(
            config.data_dir,
            PathBuf::from(format!("./data/node-{node}"))
        );
        configs.push(config);
    }
    // Every node must be created with the same members and the same ledger settings.
    for config in &configs[1..] {
        assert_eq!(config.initial_members, configs[0].initial_members);
        assert_eq!(config.ledger, configs[0].ledger);
    }
    assert_eq!(configs[0].bootstrap_node_id(), Some(1));
}

#[test]
fn example_hosts_config_loads() {
    let config = Config::from_file(&cluster_config_dir().join("example-hosts.toml"))
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.initial_members.len(), 3);
    assert_eq!(config.advertised_client_addr(), "tally-1.internal:7101");
}
