//! `fleetwave operator add`: creates an operator or viewer and prints its token, once, alone on
//! the last line of stdout. Only the token's hash is stored.

use std::path::PathBuf;

use anyhow::Context;

use crate::db::{self, auth::Role};
use crate::http::operator_auth::{new_token, token_hash};

#[derive(Debug, clap::Subcommand)]
pub enum OperatorCommand {
    /// Create an operator (or viewer) and print its token.
    Add(AddArgs),
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The control plane's database. Default: ./fleetwave.db.
    #[arg(long, env = "FLEETWAVE_DB", default_value = "fleetwave.db")]
    pub db: PathBuf,
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
            anyhow::ensure!(!name.is_empty() && name.len() <= 64, "--name must be 1–64 characters");
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
    }
}
