//! `fleetwave log verify`: checks the event log's hash chain and names the first entry that
//! breaks it (exit 1). `fleetwave log export --from --to`: entries as JSON lines for
//! auditors, each with its hash (SPEC §16).

use std::io::Write;

use anyhow::Context;

use crate::db::{self, chain};

#[derive(Debug, clap::Subcommand)]
pub enum LogCommand {
    /// Check the event log's hash chain from its first entry; name the first broken entry.
    Verify(super::operator::DbArgs),
    /// Write entries FROM..=TO as JSON lines (seq, ts, kind, rolloutId, host, channel,
    /// payload, hash): line n's hash is SHA-256 over line n−1's hash and line n without its
    /// hash in RFC 8785 canonical form.
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The control plane's database: a SQLite file or a postgres:// URL. Default: ./fleetwave.db.
    #[arg(long, env = "FLEETWAVE_DB", default_value = "fleetwave.db")]
    pub db: crate::db::DbTarget,
    /// The first seq to write. Default: the log's first.
    #[arg(long, default_value_t = 1)]
    pub from: i64,
    /// The last seq to write. Default: the log's last.
    #[arg(long, default_value_t = i64::MAX)]
    pub to: i64,
    /// Write to this file instead of stdout.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

pub async fn run(command: LogCommand) -> anyhow::Result<()> {
    match command {
        LogCommand::Verify(args) => {
            let store = db::open(&args.db).await?;
            let verified = chain::verify(&store).await;
            store.close().await;
            let verified = verified?;
            match verified.range {
                Some((first, last)) => println!(
                    "log verified: {} entries, seq {first}–{last}, head {}",
                    verified.entries,
                    engine::chain::hex(&verified.head)
                ),
                None => println!("log verified: no entries"),
            }
            Ok(())
        }
        LogCommand::Export(args) => {
            anyhow::ensure!(args.from >= 1 && args.from <= args.to, "--from must be ≥ 1 and ≤ --to");
            let store = db::open(&args.db).await?;
            let mut out: Box<dyn Write> = match &args.out {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let lines = chain::export(&store, args.from, args.to, &mut out).await;
            store.close().await;
            let lines = lines?;
            eprintln!("exported {lines} entries");
            Ok(())
        }
    }
}
