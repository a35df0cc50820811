//! `fleetwave log verify`: checks the event log's hash chain and names the first entry that
//! breaks it (exit 1). `fleetwave log export --from --to`: entries as JSON lines for
//! auditors, each with its hash (SPEC §16).

use std::io::Write;

use anyhow::Context;

use crate::db::{self, chain};

#[derive(Debug, clap::Subcommand)]
pub enum LogCommand {
    /// Check the event log's hash chain and name the first broken entry: with --archive, from
    /// seq 1 through the sealed segments and on through the database as one chain; without,
    /// the database's entries from the newest seal's head.
    Verify(VerifyArgs),
    /// Write entries FROM..=TO as JSON lines (seq, ts, kind, rolloutId, host, channel,
    /// payload, hash): line n's hash is SHA-256 over line n−1's hash and line n without its
    /// hash in RFC 8785 canonical form.
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The control plane's database: a SQLite file or a postgres:// URL. Default: ./fleetwave.db.
    #[arg(long, env = "FLEETWAVE_DB", default_value = "fleetwave.db")]
    pub db: crate::db::DbTarget,
    /// The log archive (the server's --log-archive-dir): check its sealed segments too.
    #[arg(long)]
    pub archive: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The control plane's database: a SQLite file or a postgres:// URL. Default: ./fleetwave.db.
    #[arg(long, env = "FLEETWAVE_DB", default_value = "fleetwave.db")]
    pub db: crate::db::DbTarget,
    /// The first seq to write. Default: the first the database holds.
    #[arg(long)]
    pub from: Option<i64>,
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
            let verified = chain::verify(&store, args.archive.as_deref()).await;
            store.close().await;
            let verified = verified?;
            let mut whence = match (&args.archive, verified.sealed_through) {
                (Some(_), _) => format!(" ({} archive segments and the database)", verified.segments),
                (None, 0) => String::new(),
                (None, through) => {
                    format!(" (from the seal of seq 1–{through}; --archive checks the sealed entries too)")
                }
            };
            if verified.anchored > 0 {
                whence.push_str(&format!(
                    "; {} entries after compacted observations taken on their stored hash (--archive checks them)",
                    verified.anchored
                ));
            }
            match verified.range {
                Some((first, last)) => println!(
                    "log verified: {} entries, seq {first}–{last}, head {}{whence}",
                    verified.entries,
                    engine::chain::hex(&verified.head)
                ),
                None => println!("log verified: no entries{whence}"),
            }
            Ok(())
        }
        LogCommand::Export(args) => {
            let from = args.from.unwrap_or(1);
            anyhow::ensure!(from >= 1 && from <= args.to, "--from must be ≥ 1 and ≤ --to");
            let store = db::open(&args.db).await?;
            if let Some(first) = db::retention::sealed_before(&store, from).await?
                && args.from.is_some()
            {
                store.close().await;
                anyhow::bail!(
                    "entries before seq {first} were sealed into the log archive (the server's --log-archive-dir): \
                     their segments are JSON lines of the same form (zstd -d); the database holds seq {first} on"
                );
            }
            let mut out: Box<dyn Write> = match &args.out {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let lines = chain::export(&store, from, args.to, &mut out).await;
            store.close().await;
            let lines = lines?;
            eprintln!("exported {lines} entries");
            Ok(())
        }
    }
}
