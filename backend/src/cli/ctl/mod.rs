//! `fleetwave ctl`: the operator API from a terminal (SPEC §18). Tables for people, `--json`
//! for scripts, and exit codes that say what happened: 0 done, 1 refused (the server's reason
//! printed), 2 usage, 3 unreachable, 4 a watched rollout halted or was superseded.

mod client;
mod show;
mod watch;

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::api::{
    ApproveBody, AuditEntry, FleetOverview, OperatorOutcome, PromoteBody, QuarantineBody, Quarantines, ReasonBody,
    RolloutDetail, RolloutSummary,
};
use shared::manifest::Selector;
use shared::policy::{FreezeBody, Freezes, ReleaseFreezeBody, SuspendBody};
use shared::{Channel, Closure, Hostname, RolloutId};

use client::Client;
pub use client::CtlError;
use show::Paint;

#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// The control plane, e.g. https://fleetwave.example.org.
    #[arg(long, env = "FLEETWAVE_URL", global = true, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An operator's (or, for reads, a viewer's) token.
    #[arg(long, env = "FLEETWAVE_TOKEN", global = true, hide_env_values = true, default_value = "")]
    pub token: String,
    /// Print the API's JSON instead of tables (one JSON document, or one per line for
    /// `watch`).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// The fleet at a glance: freezes in force, each channel's current rollout.
    Status,
    /// Rollouts, newest first.
    Rollouts {
        /// How many (1–1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One rollout: its waves, and every host not converged with what it waits on.
    Rollout { id: RolloutId },
    /// Approve a wave that requires approval.
    Approve {
        id: RolloutId,
        #[arg(long)]
        wave: u32,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Open a later wave (one at a time unless --force overrides the wave gate).
    Promote {
        id: RolloutId,
        #[arg(long)]
        to_wave: u32,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Pause a rollout: nothing new is dispatched.
    Pause {
        id: RolloutId,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a paused or halted rollout.
    Resume {
        id: RolloutId,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Excuse a rollout's failed hosts so that waves and completion go on.
    ClearFailure {
        id: RolloutId,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Quarantine a closure on a channel: no host of it is sent there.
    Quarantine {
        #[arg(long)]
        channel: Channel,
        #[arg(long)]
        closure: Closure,
        #[arg(long)]
        reason: String,
    },
    /// Release a quarantined closure.
    Release {
        #[arg(long)]
        channel: Channel,
        #[arg(long)]
        closure: Closure,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Stop the line: nothing new starts on the hosts selected (the whole fleet without a
    /// selector) until released or --until / --for.
    Freeze {
        /// A name to release it by (chosen by the server without one).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        channel: Option<Channel>,
        /// A host (repeatable).
        #[arg(long = "host")]
        hosts: Vec<Hostname>,
        /// Hosts with every one of these tags (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// When it ends by itself (RFC 3339).
        #[arg(long, conflicts_with = "for_")]
        until: Option<DateTime<Utc>>,
        /// How long it lasts: 30m, 4h, 2d.
        #[arg(long = "for", value_parser = parse_span)]
        for_: Option<chrono::Duration>,
        #[arg(long)]
        reason: String,
    },
    /// Release an operator's freeze.
    Unfreeze {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Take a host out of every rollout (it finishes what it is doing).
    SuspendHost {
        host: Hostname,
        #[arg(long)]
        reason: String,
    },
    /// Put a suspended host back into its rollouts.
    ResumeHost {
        host: Hostname,
        #[arg(long)]
        reason: String,
    },
    /// Follow the live feed: one rollout with a progress bar per wave (exit 0 when it
    /// completes, 4 when it halts), or every entry of the fleet.
    Watch { id: Option<RolloutId> },
    /// What people did (operator actions, uploads, quarantines, freezes, suspensions), oldest
    /// first; with --json the server's JSON lines as they come, for an auditor's archive.
    Audit {
        /// From this time (RFC 3339).
        #[arg(long)]
        from: Option<DateTime<Utc>>,
        /// Before this time (RFC 3339).
        #[arg(long)]
        to: Option<DateTime<Utc>>,
        /// Only this operator's.
        #[arg(long)]
        actor: Option<String>,
    },
}

/// Streams the audit: JSON lines straight through with --json, else a table at the end.
async fn audit(client: &Client, path: &str, as_json: bool, now: DateTime<Utc>) -> Result<String, CtlError> {
    use futures_util::StreamExt as _;
    let response = client.stream(path, None).await?;
    let mut body = response.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    let mut entries: Vec<AuditEntry> = Vec::new();
    let take_line = |line: &[u8], entries: &mut Vec<AuditEntry>| -> Result<(), CtlError> {
        if line.is_empty() {
            return Ok(());
        }
        if as_json {
            println!("{}", String::from_utf8_lossy(line));
            return Ok(());
        }
        let entry = serde_json::from_slice(line).map_err(|e| CtlError::Refused {
            status: 200,
            code: "unreadable-answer".into(),
            message: format!("an audit line is not what this ctl expects: {e}"),
        })?;
        entries.push(entry);
        Ok(())
    };
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| CtlError::Unreachable {
            url: client.base_url().into(),
            reason: format!("the audit broke off: {e}"),
        })?;
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            take_line(&line[..line.len() - 1], &mut entries)?;
        }
    }
    take_line(&pending, &mut entries)?;
    Ok(if as_json { String::new() } else { show::audit(&entries, now) })
}

/// Percent-encodes a query value.
fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// "30m", "4h", "2d", "90s".
fn parse_span(text: &str) -> Result<chrono::Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().map_err(|_| format!("`{text}`: expected a number and s, m, h or d (e.g. 4h)"))?;
    let span = match unit {
        "s" => chrono::Duration::try_seconds(n),
        "m" => chrono::Duration::try_minutes(n),
        "h" => chrono::Duration::try_hours(n),
        "d" => chrono::Duration::try_days(n),
        _ => None,
    };
    span.filter(|s| *s > chrono::Duration::zero())
        .ok_or_else(|| format!("`{text}`: expected a positive span like 30m, 4h or 2d"))
}

/// Runs one ctl command and says how it went as the exit code.
pub fn main(args: CtlArgs) -> ExitCode {
    let result = super::run_async(async move { Ok(run(args).await) });
    let result = match result {
        Ok(result) => result,
        Err(err) => Err(CtlError::Unreachable { url: String::new(), reason: format!("{err:#}") }),
    };
    match result {
        Ok(text) => {
            print_out(&text);
            ExitCode::SUCCESS
        }
        Err(err) => {
            let prefix = match err {
                CtlError::Refused { .. } => "refused",
                CtlError::Unreachable { .. } => "unreachable",
                CtlError::Usage(_) => "usage",
                CtlError::Ended(_) => "ended",
            };
            eprintln!("{prefix}: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn print_out(text: &str) {
    if text.is_empty() {
        return;
    }
    if text.ends_with('\n') { print!("{text}") } else { println!("{text}") }
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// A request body as JSON.
fn body(value: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

async fn run(args: CtlArgs) -> Result<String, CtlError> {
    let client = Client::new(&args.url, &args.token)?;
    let paint = Paint { colour: !args.json && show::colour_on_stdout() };
    let now = Utc::now();
    let as_json = args.json;
    // An action: POST it, print what the server did.
    let act = |path: String, body: serde_json::Value| {
        let client = client.clone();
        async move {
            let outcome: OperatorOutcome = client.post(&path, &body).await?;
            Ok::<_, CtlError>(if as_json { json(&outcome) } else { show::outcome(&outcome) })
        }
    };
    match args.command {
        CtlCommand::Status => {
            let fleet: FleetOverview = client.get("/fleet").await?;
            let rollouts: Vec<RolloutSummary> = client.get("/rollouts?limit=1000").await?;
            let freezes: Freezes = client.get("/freezes").await?;
            let quarantines: Quarantines = client.get("/quarantines?limit=1").await?;
            if as_json {
                let current: Vec<&RolloutSummary> = rollouts
                    .iter()
                    .filter(|r| fleet.channels.iter().any(|c| c.current_rollout.as_ref() == Some(&r.header.rollout_id)))
                    .collect();
                return Ok(json(&serde_json::json!({
                    "fleet": fleet, "currentRollouts": current, "freezes": freezes.active,
                    "quarantines": quarantines.active,
                })));
            }
            Ok(show::status(paint, &fleet, &rollouts, &freezes.active, quarantines.active.len(), now))
        }
        CtlCommand::Rollouts { limit } => {
            if !(1..=1000).contains(&limit) {
                return Err(CtlError::Usage("--limit must be 1–1000".into()));
            }
            let rollouts: Vec<RolloutSummary> = client.get(&format!("/rollouts?limit={limit}")).await?;
            Ok(if as_json { json(&rollouts) } else { show::rollouts(paint, &rollouts, now) })
        }
        CtlCommand::Rollout { id } => {
            let detail: RolloutDetail = client.get(&format!("/rollouts/{}", id.as_str())).await?;
            Ok(if as_json { json(&detail) } else { show::rollout(paint, &detail, now) })
        }
        CtlCommand::Approve { id, wave, reason } => {
            act(format!("/rollouts/{}/approve", id.as_str()), body(&ApproveBody { wave, reason })).await
        }
        CtlCommand::Promote { id, to_wave, force, reason } => {
            act(format!("/rollouts/{}/promote", id.as_str()), body(&PromoteBody { to_wave, force, reason })).await
        }
        CtlCommand::Pause { id, reason } => {
            act(format!("/rollouts/{}/pause", id.as_str()), body(&ReasonBody { reason })).await
        }
        CtlCommand::Resume { id, reason } => {
            act(format!("/rollouts/{}/resume", id.as_str()), body(&ReasonBody { reason })).await
        }
        CtlCommand::ClearFailure { id, reason } => {
            act(format!("/rollouts/{}/clear-failure", id.as_str()), body(&ReasonBody { reason })).await
        }
        CtlCommand::Quarantine { channel, closure, reason } => {
            act("/quarantines".into(), body(&QuarantineBody { channel, closure, reason: Some(reason) })).await
        }
        CtlCommand::Release { channel, closure, reason } => {
            act("/quarantines/release".into(), body(&QuarantineBody { channel, closure, reason })).await
        }
        CtlCommand::Freeze { name, channel, hosts, tags, until, for_, reason } => {
            let until = match (until, for_) {
                (Some(until), _) => Some(until),
                (None, Some(span)) => Some(
                    now.checked_add_signed(span)
                        .ok_or_else(|| CtlError::Usage("--for: too far in the future".into()))?,
                ),
                (None, None) => None,
            };
            let selector = (channel.is_some() || !hosts.is_empty() || !tags.is_empty()).then(|| Selector {
                channel,
                hosts: (!hosts.is_empty()).then_some(hosts),
                tags: (!tags.is_empty()).then_some(tags),
                ..Selector::default()
            });
            act("/freezes".into(), body(&FreezeBody { name, selector, until, reason })).await
        }
        CtlCommand::Unfreeze { name, reason } => {
            act("/freezes/release".into(), body(&ReleaseFreezeBody { name, reason })).await
        }
        CtlCommand::SuspendHost { host, reason } => {
            act(format!("/hosts/{}/suspend", host.as_str()), body(&SuspendBody { reason })).await
        }
        CtlCommand::ResumeHost { host, reason } => {
            act(format!("/hosts/{}/resume", host.as_str()), body(&SuspendBody { reason })).await
        }
        CtlCommand::Watch { id } => watch::watch(&client, id, as_json, paint).await,
        CtlCommand::Audit { from, to, actor } => {
            let mut query = Vec::new();
            for (name, value) in
                [("from", from.map(|t| t.to_rfc3339())), ("to", to.map(|t| t.to_rfc3339())), ("actor", actor)]
            {
                if let Some(value) = value {
                    query.push(format!("{name}={}", urlencode(&value)));
                }
            }
            let path = if query.is_empty() { "/audit".to_owned() } else { format!("/audit?{}", query.join("&")) };
            audit(&client, &path, as_json, now).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_operators_write_them() {
        assert_eq!(parse_span("30m"), Ok(chrono::Duration::minutes(30)));
        assert_eq!(parse_span("4h"), Ok(chrono::Duration::hours(4)));
        assert_eq!(parse_span("2d"), Ok(chrono::Duration::days(2)));
        for bad in ["", "4", "h", "0h", "-1h", "4w", "99999999999999999999d"] {
            assert!(parse_span(bad).is_err(), "{bad}");
        }
    }
}
