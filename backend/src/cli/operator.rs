//! `fleetwave operator add`: creates an operator or viewer and prints its token, once, alone on
//! the last line of stdout. Only the token's hash is stored. `operator list` shows who can
//! sign in; `operator revoke` ends a token and its sessions at once.

use anyhow::Context;

use crate::db::auth::{new_token, token_hash};
use crate::db::{self, auth::Role};

#[derive(Debug, clap::Subcommand)]
pub enum OperatorCommand {
    /// Create an operator (or viewer) and print its token.
    Add(AddArgs),
    /// List operators and viewers: role, when added, revoked or not, live sessions.
    List(DbArgs),
    /// Revoke an operator's token and end its sessions (its name stays, naming its actions).
    Revoke(RevokeArgs),
}

#[derive(Debug, clap::Args)]
pub struct DbArgs {
    /// The control plane's database: a SQLite file or a postgres:// URL. Default: ./fleetwave.db.
    #[arg(long, env = "FLEETWAVE_DB", default_value = "fleetwave.db")]
    pub db: crate::db::DbTarget,
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// The control plane's database: a SQLite file or a postgres:// URL. Default: ./fleetwave.db.
    #[arg(long, env = "FLEETWAVE_DB", default_value = "fleetwave.db")]
    pub db: crate::db::DbTarget,
    /// The operator (or viewer) to revoke.
    #[arg(long)]
    pub name: String,
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The control plane's database: a SQLite file or a postgres:// URL. Default: ./fleetwave.db.
    #[arg(long, env = "FLEETWAVE_DB", default_value = "fleetwave.db")]
    pub db: crate::db::DbTarget,
    /// A unique name, recorded with every action this operator takes.
    #[arg(long)]
    pub name: String,
    /// `operator` (reads and actions) or `viewer` (reads only).
    #[arg(long, value_enum)]
    pub role: Role,
}

pub async fn run(command: OperatorCommand) -> anyhow::Result<()> {
    match command {
        OperatorCommand::Add(args) => {
            let name = args.name.trim();
            let max = shared::limits::MAX_OPERATOR_NAME_BYTES;
            anyhow::ensure!(!name.is_empty() && name.len() <= max, "--name must be 1–{max} bytes");
            let pool = db::open(&args.db).await?;
            let token = new_token();
            db::auth::add_operator(&pool, name, args.role, &token_hash(&token), chrono::Utc::now())
                .await
                .with_context(|| format!("cannot add `{name}` (is the name already taken?)"))?;
            pool.close().await;
            eprintln!("added {} `{name}`; the token is shown once:", args.role.as_str());
            println!("{token}");
            Ok(())
        }
        OperatorCommand::List(args) => {
            let pool = db::open(&args.db).await?;
            let operators = db::auth::list_operators(&pool, chrono::Utc::now()).await?;
            pool.close().await;
            let width = operators.iter().map(|o| o.name.len()).max().unwrap_or(4).max(4);
            println!("{:width$}  {:8}  {:24}  {:24}  SESSIONS", "NAME", "ROLE", "ADDED", "REVOKED");
            for o in operators {
                let revoked = o.revoked_at.as_deref().unwrap_or("-");
                println!("{:width$}  {:8}  {:24}  {:24}  {}", o.name, o.role, o.created_at, revoked, o.live_sessions);
            }
            Ok(())
        }
        OperatorCommand::Revoke(args) => {
            let pool = db::open(&args.db).await?;
            let revoked = db::auth::revoke_operator(&pool, args.name.trim(), chrono::Utc::now()).await?;
            pool.close().await;
            anyhow::ensure!(revoked, "there is no operator `{}` that is not revoked already", args.name.trim());
            eprintln!("revoked `{}`: its token and sessions no longer work", args.name.trim());
            Ok(())
        }
    }
}
