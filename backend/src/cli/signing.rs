//! `fleetwave keygen`, `sign` and `release`: what CI runs to produce signed inputs.
//! Artifacts are written as their RFC 8785 canonical bytes, so the same input and key give
//! byte-identical output.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::SigningKey;
use engine::sign::{decode_signing_key, encode_signing_key, public_key_b64, sign_value};
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Writes PREFIX.key (secret seed, mode 0600) and PREFIX.pub (public key), both base64.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace existing key files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The secret key file written by `fleetwave keygen`.
    #[arg(long)]
    pub key: PathBuf,
    /// The JSON document to sign; the signature goes to FILE.sig.
    pub file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    /// The fleet document (unsigned JSON, SPEC §2.3). Its meta.ciCommit is the release ref.
    #[arg(long)]
    pub fleet: PathBuf,
    /// The CI release secret key file.
    #[arg(long)]
    pub key: PathBuf,
    /// Output directory: fleet.json(.sig) and rollouts/{channel}@{ref}.json(.sig).
    #[arg(long)]
    pub out: PathBuf,
    /// Signing time (RFC 3339) when the document has no meta.signedAt. Default: now.
    #[arg(long)]
    pub signed_at: Option<DateTime<Utc>>,
    /// The previous release (its directory, fleet document or a rollout manifest): each
    /// manifest then says what changes in its closures (`nix store diff-closures`, where Nix
    /// has both closures), shown in the dashboard's approve and promote dialogs.
    #[arg(long)]
    pub diff_from: Option<PathBuf>,
    /// The `nix` command for --diff-from.
    #[arg(long, default_value = "nix")]
    pub nix: PathBuf,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let (secret, public) = (with_suffix(&args.out, ".key"), with_suffix(&args.out, ".pub"));
    let mut options = fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if args.force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options
        .open(&secret)
        .with_context(|| format!("cannot create {} (use --force to replace an existing key)", secret.display()))?;
    writeln!(file, "{}", encode_signing_key(&key))?;
    fs::write(&public, format!("{}\n", public_key_b64(&key)))
        .with_context(|| format!("cannot write {}", public.display()))?;
    println!("{}", public_key_b64(&key));
    eprintln!("wrote {} and {}", secret.display(), public.display());
    Ok(())
}

pub fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read the key {}", path.display()))?;
    decode_signing_key(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", path.display()))
}

pub fn sign(args: SignArgs) -> anyhow::Result<()> {
    let key = read_key(&args.key)?;
    let document = read_json(&args.file)?;
    let signed = sign_value(&key, &document).map_err(anyhow::Error::msg)?;
    let sig = with_suffix(&args.file, ".sig");
    fs::write(&sig, format!("{}\n", signed.signature_b64()))
        .with_context(|| format!("cannot write {}", sig.display()))?;
    eprintln!("signed {} → {}", args.file.display(), sig.display());
    Ok(())
}

pub fn release(args: ReleaseArgs) -> anyhow::Result<()> {
    let key = read_key(&args.key)?;
    let mut document = read_json(&args.fleet)?;
    let signed_at = args.signed_at.unwrap_or_else(Utc::now);
    let meta =
        document.get_mut("meta").and_then(Value::as_object_mut).context("the fleet document has no `meta` object")?;
    if meta.get("signedAt").is_none_or(Value::is_null) {
        meta.insert("signedAt".into(), Value::String(signed_at.to_rfc3339_opts(SecondsFormat::Secs, true)));
    }
    let changes = match &args.diff_from {
        Some(old) => {
            let before = super::diff::previous_closures(old)?;
            let typed: shared::manifest::FleetDocument =
                serde_json::from_value(document.clone()).context("not a valid fleet document")?;
            let now: std::collections::BTreeMap<_, _> =
                typed.hosts.into_iter().filter_map(|(name, host)| Some((name, host.closure?))).collect();
            super::diff::summaries(&args.nix, &super::diff::pairs(&before, &now))
        }
        None => Default::default(),
    };
    let out = engine::release::sign_release_with_changes(&key, &document, &changes).map_err(anyhow::Error::msg)?;
    crate::manifests::write_release(&args.out, &out)?;
    for (closure, summary) in &changes {
        eprintln!("{closure}: {} package changes", summary.changes.len());
    }
    println!("fleet.json  fleetHash {}", out.fleet_hash);
    for (id, _) in &out.manifests {
        println!("rollouts/{id}.json");
    }
    Ok(())
}
