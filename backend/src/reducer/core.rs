//! The applier: drives the engine's [`Controller`] with each input and turns the writes it
//! leaves into the rows of one transaction ([`Pending`], then [`Batch`]), with the
//! write-behind policy for host records. Nothing here does IO; answers are held back until
//! the batch committed (see [`super`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Duration, Utc};
use engine::controller::{Acted, Controller, LogRow as Logged, Restored, Write};
use engine::fleet::VerifiedFleet;
use engine::host::HostRecord;
use engine::records::Records;
use engine::rollout::Rollout;
use engine::state::ManifestSet;
use engine::verify::{Freshness, TrustRoots, verify_fleet, verify_manifest};
use shared::agent::{EventResponse, HeartbeatRequest, HeartbeatResponse};
use shared::api::{LogEvent, ManifestSummary, OperatorAction, OperatorOutcome};
use shared::log::{LogEntry, StoredPayload};
use shared::manifest::SignedArtifact;
use shared::state::{Gate, HostEvent, HostState};
use shared::{Hostname, RolloutId};

use super::input::{ManifestUpdate, ReducerError};
use crate::db::store::{self, Batch, Loaded, LogRow, ManifestWrite, QuarantineChange, QuarantineRow, RecordRow};

/// The fleet the agent routes authenticate against; replaced when a new fleet verifies.
pub type SharedFleet = Arc<RwLock<Option<Arc<VerifiedFleet>>>>;

/// What one group of inputs changed, to be committed together.
#[derive(Default)]
pub struct Pending {
    rollouts: BTreeSet<RolloutId>,
    records: BTreeSet<(RolloutId, Hostname)>,
    opened: BTreeSet<RolloutId>,
    log: Vec<LogRow>,
    /// Each record as its last log row in this group carries it.
    logged_records: HashMap<(RolloutId, Hostname), HostRecord>,
    quarantines: Vec<QuarantineChange>,
    /// The operators' policies as last changed in this group, rendered.
    policies: Option<String>,
    presence: BTreeMap<Hostname, store::PresenceRow>,
    manifests: Option<ManifestWrite>,
}

impl Pending {
    pub fn log_len(&self) -> usize {
        self.log.len()
    }
}

pub struct Core {
    controller: Controller,
    /// The artifacts of the manifests in force.
    manifest_artifacts: BTreeMap<RolloutId, SignedArtifact>,
    shared_fleet: SharedFleet,
    /// Each rollout as last handed to the writer: a host event marks its rollout touched, but
    /// the row is only rewritten when the rollout itself changed (most events change only the
    /// record, and every rewritten row is another page in the transaction).
    written_rollouts: HashMap<RolloutId, Rollout>,
    /// Records whose newest state so far only the event log holds (see [`RecordRow`]), and
    /// when every record was last written.
    unwritten: BTreeSet<(RolloutId, Hostname)>,
    records_written_at: Option<DateTime<Utc>>,
    /// The controller's writes for the input being applied (reused).
    out: Vec<Write>,
}

/// Deferred records are written once this many are waiting, or this long after the last
/// time they all were (and before their rollout ends, and when the reducer stops).
const UNWRITTEN_AT_MOST: usize = 4096;
const WRITE_RECORDS_EVERY: Duration = Duration::seconds(2);

impl Core {
    /// Rebuilds memory from the database. The persisted manifest set is re-verified for
    /// signature and consistency (not freshness); if it no longer verifies, it is dropped
    /// with an error in the log and the control plane waits for a new upload.
    pub fn from_loaded(
        loaded: Loaded,
        trust: Option<TrustRoots>,
        shared_fleet: SharedFleet,
        now: DateTime<Utc>,
    ) -> Core {
        let mut set = None;
        let mut manifest_artifacts = BTreeMap::new();
        if let Some(artifact) = loaded.fleet {
            match reverify(trust.as_ref(), &artifact, &loaded.manifests, now) {
                Ok(verified) => {
                    set = Some(verified);
                    manifest_artifacts = loaded.manifests.into_iter().collect();
                }
                Err(err) => {
                    tracing::error!(%err, "the persisted manifest set no longer verifies; waiting for a new upload")
                }
            }
        }
        let written_rollouts = loaded.rollouts.iter().map(|r| (r.id.clone(), r.clone())).collect();
        let restored = Restored {
            set,
            rollouts: loaded.rollouts,
            records: loaded.records,
            quarantines: loaded.quarantines.into_iter().map(|q| (q.channel, q.closure)).collect(),
            policies: loaded.policies,
            presence: loaded.presence,
        };
        let core = Core {
            controller: Controller::new(restored),
            manifest_artifacts,
            shared_fleet,
            written_rollouts,
            unwritten: BTreeSet::new(),
            records_written_at: None,
            out: Vec::new(),
        };
        core.share_fleet();
        core
    }

    /// Hands the fleet in force to the agent routes' authentication.
    fn share_fleet(&self) {
        if let (Some(fleet), Ok(mut shared)) = (self.controller.fleet(), self.shared_fleet.write()) {
            *shared = Some(fleet.clone());
        }
    }

    // ---- inputs: the controller decides, the writes it leaves are absorbed ----

    pub fn host_event(
        &mut self,
        pending: &mut Pending,
        now: DateTime<Utc>,
        host: &Hostname,
        rollout_id: &RolloutId,
        event: &HostEvent,
    ) -> Result<EventResponse, ReducerError> {
        let answer = self.controller.host_event(now, host, rollout_id, event, &mut self.out);
        self.absorb(pending);
        answer
    }

    pub fn heartbeat(&mut self, pending: &mut Pending, now: DateTime<Utc>, hb: &HeartbeatRequest) -> HeartbeatResponse {
        let answer = self.controller.heartbeat(now, hb, &mut self.out);
        self.absorb(pending);
        answer
    }

    /// A verified upload or manifests-dir set (see [`Controller::manifests`]); the artifacts
    /// of what came into force are written with it.
    pub fn manifests(
        &mut self,
        pending: &mut Pending,
        now: DateTime<Utc>,
        update: ManifestUpdate,
    ) -> Result<ManifestSummary, ReducerError> {
        let ManifestUpdate { set, fleet_artifact, manifest_artifacts, uploaded_by } = update;
        let summary = self.controller.manifests(now, set, uploaded_by, &mut self.out)?;
        self.absorb(pending);
        let in_force: Vec<RolloutId> =
            self.set().map(|s| s.in_acceptance_order().map(|m| m.id.clone()).collect()).unwrap_or_default();
        self.manifest_artifacts.extend(manifest_artifacts);
        self.manifest_artifacts.retain(|id, _| in_force.contains(id));
        pending.manifests = Some(ManifestWrite {
            fleet: fleet_artifact,
            fleet_hash: summary.fleet_hash.clone(),
            manifests: in_force
                .iter()
                .filter_map(|id| self.manifest_artifacts.get(id).map(|a| (id.clone(), a.clone())))
                .collect(),
            at: now,
        });
        self.share_fleet();
        Ok(summary)
    }

    /// An operator action: the message, and the position in `pending`'s log of the row
    /// recording it (its seq is known after the commit, see [`Core::operator_outcome`]).
    pub fn operator(
        &mut self,
        pending: &mut Pending,
        now: DateTime<Utc>,
        action: &OperatorAction,
        by: &str,
        reason: Option<&str>,
    ) -> Result<(usize, Acted), ReducerError> {
        let acted = self.controller.operator(now, action, by, reason, &mut self.out)?;
        self.absorb(pending);
        // The action's own row is the last one it wrote.
        Ok((pending.log.len().saturating_sub(1), acted))
    }

    /// Entries were archived: the entry that says so.
    pub fn archived(&mut self, pending: &mut Pending, now: DateTime<Utc>, archived: super::input::Archived) {
        let row = Logged {
            ts: now,
            rollout_id: None,
            host: None,
            channel: None,
            entry: archived.entry(),
            record: None,
            rollout: None,
        };
        render(pending, row);
    }

    pub fn operator_outcome(entries: &[LogEvent], index: usize, acted: Acted) -> OperatorOutcome {
        OperatorOutcome { seq: entries.get(index).map_or(0, |e| e.seq), message: acted.message, name: acted.name }
    }

    pub fn request_plan(&mut self) {
        self.controller.request_plan();
    }

    pub fn plan_due(&self) -> bool {
        self.controller.plan_due()
    }

    /// Whether the pass due covers every rollout (asked for, not only hosts moving).
    pub fn full_plan_due(&self) -> bool {
        self.controller.full_plan_due()
    }

    /// A plan pass (see [`Controller::plan`]); whether it covered every rollout.
    pub fn plan(&mut self, pending: &mut Pending, now: DateTime<Utc>) -> bool {
        let full = self.controller.plan(now, &mut self.out);
        self.absorb(pending);
        full
    }

    pub fn set(&self) -> Option<&Arc<ManifestSet>> {
        self.controller.set()
    }

    /// Counts for metrics: records by state, Pending holds by gate, stuck records.
    pub fn gauges(&self) -> (BTreeMap<HostState, i64>, BTreeMap<Gate, i64>, i64) {
        self.controller.gauges()
    }

    /// After a commit: records of terminal rollouts leave memory (the DB keeps them).
    pub fn prune(&mut self) {
        self.controller.prune();
    }

    // ---- the write set ----

    /// Turns the controller's writes into rows: each log row rendered once (the text is
    /// stored, fed to clients and served as it is), what it touched noted for [`Core::batch`],
    /// quarantine rows from the quarantine entries.
    fn absorb(&mut self, pending: &mut Pending) {
        for write in self.out.drain(..) {
            match write {
                Write::Log(row) => render(pending, *row),
                Write::Presence { host, at, closure, booted } => {
                    pending.presence.insert(host.clone(), store::PresenceRow { host, at, closure, booted });
                }
                // Plain data with string keys: rendering it cannot fail.
                Write::Policies(policies) => match serde_json::to_string(&policies) {
                    Ok(body) => pending.policies = Some(body),
                    Err(err) => tracing::error!(%err, "the operators' policies could not be rendered"),
                },
            }
        }
    }

    /// The rows to write for what `pending` touched, taken from memory as it is now.
    /// `stopping`: the last batch; every deferred record is written.
    pub fn batch(&mut self, pending: Pending, now: DateTime<Utc>, stopping: bool) -> Batch {
        let state = &self.controller.state;
        let mut batch = Batch::default();
        let mut rollouts = pending.rollouts;
        rollouts.extend(pending.opened.iter().cloned());
        rollouts.extend(pending.records.iter().map(|(r, _)| r.clone()));
        for id in &rollouts {
            let Some(rollout) = state.rollouts.get(id) else { continue };
            if self.written_rollouts.get(id) != Some(rollout) {
                self.written_rollouts.insert(id.clone(), rollout.clone());
                batch.rollouts.push(rollout.clone());
            }
        }
        // A record whose last log row in this group carries it as it is now is written later
        // (the row is its state until then); one that changed after its row, or has none, now.
        let mut records: BTreeMap<(RolloutId, Hostname), RecordRow> = BTreeMap::new();
        let mut write_all = stopping || batch.rollouts.iter().any(|r| r.state.is_terminal());
        for key in pending.records {
            let Some(record) = state.record(&key.0, &key.1) else { continue };
            match pending.logged_records.get(&key) {
                Some(logged) if logged == record => {
                    self.unwritten.insert(key);
                }
                logged => {
                    // An older state of it is in the log's tail: only a full write puts the
                    // table ahead of the tail again.
                    write_all |= logged.is_some() || self.unwritten.contains(&key);
                    records.insert(key, RecordRow::new(record));
                }
            }
        }
        for id in &pending.opened {
            for (host, record) in state.records.get(id).into_iter().flat_map(Records::iter) {
                let key = (id.clone(), host.clone());
                if !records.contains_key(&key) && !self.unwritten.contains(&key) {
                    records.insert(key, RecordRow::new(record));
                }
            }
        }
        let due = self.records_written_at.is_none_or(|at| now - at >= WRITE_RECORDS_EVERY);
        if write_all || self.unwritten.len() >= UNWRITTEN_AT_MOST || (due && !self.unwritten.is_empty()) {
            for key in std::mem::take(&mut self.unwritten) {
                if let Some(record) = state.record(&key.0, &key.1) {
                    records.insert(key, RecordRow::new(record));
                }
            }
            batch.records_through = true;
            self.records_written_at = Some(now);
        }
        // Nothing deferred: the table is whole through this batch's rows. Moving the snapshot
        // keeps the view's tail short when the log grows without record changes (hosts going
        // offline, a settled fleet), instead of until the next record is deferred and written.
        batch.records_through |= self.unwritten.is_empty() && !pending.log.is_empty();
        batch.records = records.into_values().collect();
        batch.quarantines = pending.quarantines;
        batch.policies = pending.policies;
        batch.presence = pending.presence.into_values().collect();
        batch.manifests = pending.manifests;
        batch.log = pending.log;
        batch
    }
}

/// One controller log row as stored, and what it touched.
fn render(pending: &mut Pending, row: Logged) {
    let Logged { ts, rollout_id, host, channel, entry, record, rollout } = row;
    let record_state = record.as_ref().map(|r| r.state);
    let payload = store::payload(&StoredPayload { entry: &entry, record: record.as_ref(), rollout: rollout.as_ref() });
    if let Some(id) = &rollout_id {
        pending.rollouts.insert(id.clone());
        if let Some(host) = &host {
            let key = (id.clone(), host.clone());
            pending.records.insert(key.clone());
            if let Some(record) = record {
                pending.logged_records.insert(key, record);
            }
        }
    }
    match (&entry, &channel) {
        (LogEntry::RolloutOpened(_), _) => {
            pending.opened.extend(rollout_id.clone());
        }
        (LogEntry::QuarantineAdded(q), Some(channel)) => {
            pending.quarantines.push(QuarantineChange::Add(QuarantineRow {
                channel: channel.clone(),
                closure: q.closure.clone(),
                reason: q.reason.clone(),
                by: q.by.clone(),
                at: ts,
                released_at: None,
                released_by: None,
                release_reason: None,
            }));
        }
        (LogEntry::QuarantineReleased(q), Some(channel)) => {
            pending.quarantines.push(QuarantineChange::Release {
                channel: channel.clone(),
                closure: q.closure.clone(),
                by: q.by.clone(),
                reason: q.reason.clone(),
                at: ts,
            });
        }
        _ => {}
    }
    pending.log.push(LogRow { ts, kind: entry.kind(), rollout_id, host, channel, payload, record_state });
}

/// Verifies a persisted manifest set again (signatures and consistency, not freshness: it was
/// fresh when accepted).
pub(crate) fn reverify(
    trust: Option<&TrustRoots>,
    fleet: &SignedArtifact,
    manifests: &[(RolloutId, SignedArtifact)],
    now: DateTime<Utc>,
) -> Result<ManifestSet, String> {
    let verified = verify_fleet(trust, fleet, now, Freshness::Skip).map_err(|e| format!("fleet: {e}"))?;
    let mut out = Vec::new();
    for (id, artifact) in manifests {
        out.push(
            verify_manifest(trust, artifact, &verified, Some(id), now, Freshness::Skip)
                .map_err(|e| format!("{id}: {e}"))?,
        );
    }
    Ok(ManifestSet::new(verified, out))
}

#[cfg(test)]
mod tests;
