//! The `tally-bench` binary: parses the command line and calls the library.

use clap::Parser;
use std::collections::BTreeMap;

use tally_bench::options::{Cli, Tool};
use tally_bench::summary::{Machine, Summary, Table};
use tally_bench::{pgbench, read_json, write_json};

/// mimalloc, as in `tallyd`: the generator builds and drops thousands of small messages a
/// second, and under glibc's malloc a third of its CPU went to malloc and free (perf, 16 x 100),
/// CPU taken from the nodes it measures when they share a machine.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.tool {
        None => {
            // One thread: the clients are tasks that mostly wait, and keeping them, their
            // connections and tonic's buffer tasks on one thread saves the cross-thread
            // wake-ups of a work-stealing pool (client CPU per event at 64 x 1: 58 -> 41 us,
            // at 16 x 100: 3.6 -> 2.6 us). A reply that arrives while the thread encodes
            // another request waits for it, so its latency includes that.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let summary = runtime.block_on(tally_bench::run(cli.run))?;
            if summary.is_some_and(|summary| summary.settled == 0) {
                anyhow::bail!("no event settled");
            }
            Ok(())
        }
        Some(Tool::Table {
            system,
            memory,
            note,
            out,
            files,
        }) => {
            let mut peak_memory_kib = BTreeMap::new();
            for pair in memory {
                let Some((name, kib)) = pair.split_once('=') else {
                    anyhow::bail!("--memory {pair:?}: expected NAME=KIB");
                };
                let kib: u64 = kib
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--memory {pair:?}: KIB is not a number"))?;
                peak_memory_kib.insert(name.to_string(), kib);
            }
            let runs = files
                .iter()
                .map(|path| read_json::<Summary>(path))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let table = Table {
                system,
                note,
                machine: Machine::this_one(),
                peak_memory_kib,
                runs,
            };
            print!("{}", table.render());
            if let Some(path) = out {
                write_json(&path, &table)?;
            }
            Ok(())
        }
        Some(Tool::Pgbench {
            label,
            clients,
            accounts,
            warmup,
            failed,
            out,
            logs,
        }) => {
            let summary = pgbench::summarize(label, clients, accounts, warmup, failed, &logs)?;
            print!("{}", summary.report());
            if let Some(path) = out {
                write_json(&path, &summary)?;
            }
            Ok(())
        }
        Some(Tool::Compare { tally, peer }) => {
            let tally: Table = read_json(&tally)?;
            let peer: Table = read_json(&peer)?;
            print!("{}", tally.compare(&peer));
            Ok(())
        }
    }
}
