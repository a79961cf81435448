//! The `tally-bench` binary: parses the command line and calls the library.

use clap::Parser;
use std::collections::BTreeMap;

use tally_bench::options::{Cli, Tool};
use tally_bench::summary::{Machine, Summary, Table};
use tally_bench::{pgbench, read_json, write_json};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.tool {
        None => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
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
