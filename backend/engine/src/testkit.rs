//! Builders for tests and benchmarks: fleets, deterministic keys, a fixed clock. Compiled only
//! with the `testkit` feature; nothing in production code uses it.

use chrono::{DateTime, Duration, TimeZone, Utc};
use ed25519_dalek::SigningKey;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use shared::manifest::{SignedArtifact, TrustConfig};

use shared::log::LogEntry;

use crate::controller::{LogRow, Write};
use crate::fleet::VerifiedFleet;
use crate::planner::PlanAction;
use crate::release;
use crate::sign::{public_key_b64, sign_value};
use crate::state::ManifestSet;
use crate::verify::{Freshness, TrustRoots, VerifiedManifest, verify_fleet, verify_manifest};

/// The fixed "now" of tests: 2026-11-26T12:00:00Z.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).single().unwrap_or_default()
}

/// `t0() + secs` seconds.
pub fn at(secs: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(secs)
}

/// A deterministic key derived from a label (never use outside tests).
pub fn key(label: &str) -> SigningKey {
    let seed: [u8; 32] = Sha256::digest(label.as_bytes()).into();
    SigningKey::from_bytes(&seed)
}

pub fn ci_key() -> SigningKey {
    key("ci-release-key")
}

pub fn host_key(host: &str) -> SigningKey {
    key(&format!("host:{host}"))
}

pub fn trust_config(key: &SigningKey) -> TrustConfig {
    serde_json::from_value(json!({
        "schemaVersion": 1,
        "ciReleaseKey": { "current": public_key_b64(key) },
        "freshnessWindowMinutes": 1440
    }))
    .unwrap_or_else(|e| panic!("testkit trust config: {e}"))
}

pub fn trust() -> TrustRoots {
    TrustRoots::from_config(&trust_config(&ci_key())).unwrap_or_else(|e| panic!("testkit trust roots: {e}"))
}

pub fn sign(document: &Value) -> SignedArtifact {
    sign_value(&ci_key(), document).unwrap_or_else(|e| panic!("testkit sign: {e}")).artifact()
}

/// A fleet document under construction. Hosts get deterministic keys and, by default, the
/// closure `/nix/store/<host>-v1`.
#[derive(Debug, Clone)]
pub struct FleetBuilder {
    doc: Value,
}

impl Default for FleetBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn obj<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    let Value::Object(map) = v else { panic!("testkit: not an object") };
    match map.entry(key).or_insert_with(|| json!({})) {
        Value::Object(inner) => inner,
        _ => panic!("testkit: {key} is not an object"),
    }
}

fn arr<'a>(v: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    let Value::Object(map) = v else { panic!("testkit: not an object") };
    match map.entry(key).or_insert_with(|| json!([])) {
        Value::Array(inner) => inner,
        _ => panic!("testkit: {key} is not an array"),
    }
}

impl FleetBuilder {
    pub fn new() -> Self {
        FleetBuilder {
            doc: json!({
                "schemaVersion": 1,
                "meta": { "signedAt": t0().to_rfc3339(), "ciCommit": "c0ffee" },
                "hosts": {}, "channels": {}, "rolloutPolicies": {}
            }),
        }
    }

    /// A policy: one entry per wave `(soakMinutes, requiresApproval)`.
    pub fn policy(mut self, name: &str, waves: &[(u64, bool)], on_failure: &str, stuck_after_minutes: u64) -> Self {
        let waves: Vec<Value> =
            waves.iter().map(|(soak, approval)| json!({"soakMinutes": soak, "requiresApproval": approval})).collect();
        obj(&mut self.doc, "rolloutPolicies").insert(
            name.into(),
            json!({ "waves": waves, "onHealthFailure": on_failure, "stuckAfterMinutes": stuck_after_minutes }),
        );
        self
    }

    pub fn channel(mut self, name: &str, policy: &str) -> Self {
        obj(&mut self.doc, "channels").insert(name.into(), json!({ "rolloutPolicy": policy }));
        self
    }

    pub fn host(self, name: &str, channel: &str, tags: &[&str]) -> Self {
        let closure = format!("/nix/store/{name}-v1");
        self.host_with_closure(name, channel, tags, Some(&closure))
    }

    pub fn host_with_closure(mut self, name: &str, channel: &str, tags: &[&str], closure: Option<&str>) -> Self {
        let mut entry = json!({ "channel": channel, "tags": tags, "pubkey": public_key_b64(&host_key(name)) });
        if let (Some(c), Value::Object(m)) = (closure, &mut entry) {
            m.insert("closure".into(), json!(c));
        }
        obj(&mut self.doc, "hosts").insert(name.into(), entry);
        self
    }

    /// Sets the closure every host of `channel` should run (a new release).
    pub fn release_closures(mut self, channel: &str, suffix: &str) -> Self {
        for (name, host) in obj(&mut self.doc, "hosts").iter_mut() {
            if host["channel"] == channel {
                host["closure"] = json!(format!("/nix/store/{name}-{suffix}"));
            }
        }
        self
    }

    pub fn waves(mut self, channel: &str, waves: &[&[&str]]) -> Self {
        let waves: Vec<Value> = waves.iter().map(|hosts| json!({ "hosts": hosts })).collect();
        obj(&mut self.doc, "waves").insert(channel.into(), json!(waves));
        self
    }

    pub fn edge(mut self, gates: &str, gated: &str) -> Self {
        arr(&mut self.doc, "edges").push(json!({ "gates": gates, "gated": gated }));
        self
    }

    pub fn channel_edge(mut self, gates: &str, gated: &str) -> Self {
        arr(&mut self.doc, "channelEdges").push(json!({ "gates": gates, "gated": gated }));
        self
    }

    pub fn budget(mut self, name: &str, selector: Value, max_in_flight: u32) -> Self {
        arr(&mut self.doc, "disruptionBudgets")
            .push(json!({ "name": name, "selector": selector, "maxInFlight": max_in_flight }));
        self
    }

    /// A signed freeze (SPEC §17; makes the document schemaVersion 2).
    pub fn freeze(mut self, name: &str, selector: Value, from: DateTime<Utc>, to: DateTime<Utc>, reason: &str) -> Self {
        self.doc["schemaVersion"] = json!(2);
        arr(&mut self.doc, "freezes")
            .push(json!({ "name": name, "selector": selector, "from": from, "to": to, "reason": reason }));
        self
    }

    /// A maintenance window (SPEC §17; makes the document schemaVersion 2).
    pub fn window(mut self, name: &str, selector: Value, days: &[&str], start: &str, end: &str, tz: &str) -> Self {
        self.doc["schemaVersion"] = json!(2);
        arr(&mut self.doc, "maintenanceWindows").push(json!({
            "name": name, "selector": selector, "days": days, "start": start, "end": end, "timezone": tz
        }));
        self
    }

    /// Sets `maxFailures` of wave `wave` of `policy` (a count or `"10%"`; schemaVersion 2).
    pub fn max_failures(mut self, policy: &str, wave: usize, max: Value) -> Self {
        self.doc["schemaVersion"] = json!(2);
        self.doc["rolloutPolicies"][policy]["waves"][wave]["maxFailures"] = max;
        self
    }

    pub fn commit(mut self, commit: &str) -> Self {
        self.doc["meta"]["ciCommit"] = json!(commit);
        self
    }

    pub fn document(&self) -> Value {
        self.doc.clone()
    }

    /// Signs and verifies the fleet (at `t0`).
    pub fn verified(&self) -> VerifiedFleet {
        verify_fleet(Some(&trust()), &sign(&self.doc), t0(), Freshness::Check)
            .unwrap_or_else(|e| panic!("testkit fleet: {e}"))
    }

    /// The verified fleet plus the release manifests of `commit`, signed at `signed_at`.
    pub fn release(&self, commit: &str, signed_at: DateTime<Utc>) -> (VerifiedFleet, Vec<VerifiedManifest>) {
        let fleet = self.verified();
        let manifests = release::project(&fleet, commit, signed_at)
            .unwrap_or_else(|e| panic!("testkit release: {e}"))
            .into_values()
            .map(|m| {
                let value = serde_json::to_value(&m).unwrap_or_else(|e| panic!("testkit manifest: {e}"));
                verify_manifest(Some(&trust()), &sign(&value), &fleet, None, t0(), Freshness::Skip)
                    .unwrap_or_else(|e| panic!("testkit manifest: {e}"))
            })
            .collect();
        (fleet, manifests)
    }

    /// A manifest set with this fleet and its release `commit` signed at `t0`.
    pub fn manifest_set(&self, commit: &str) -> ManifestSet {
        let (fleet, manifests) = self.release(commit, t0());
        ManifestSet::new(fleet, manifests)
    }
}

/// The control plane's [`Controller`](crate::controller::Controller) with a clock that tests
/// move by hand and agents' seqs counted for them. Derefs to the controller.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub controller: crate::controller::Controller,
    pub now: DateTime<Utc>,
    seqs: std::collections::HashMap<(String, String), u64>,
}

impl std::ops::Deref for Scenario {
    type Target = crate::controller::Controller;

    fn deref(&self) -> &Self::Target {
        &self.controller
    }
}

impl std::ops::DerefMut for Scenario {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.controller
    }
}

impl Scenario {
    pub fn new(set: ManifestSet) -> Scenario {
        let restored = crate::controller::Restored { set: Some(set), ..Default::default() };
        Scenario { controller: crate::controller::Controller::new(restored), now: t0(), seqs: Default::default() }
    }

    /// The manifest set in force.
    pub fn set(&self) -> &ManifestSet {
        self.controller.set().unwrap_or_else(|| panic!("the scenario has no manifest set"))
    }

    /// Uploads a verified manifest set, as `POST /api/v1/manifests` does.
    pub fn upload(&mut self, set: ManifestSet) -> shared::api::ManifestSummary {
        let now = self.now;
        self.controller
            .manifests(now, set, Some("testkit".into()), &mut Vec::new())
            .unwrap_or_else(|e| panic!("testkit upload: {e}"))
    }

    /// What a plan pass would do now, without doing it.
    pub fn plan(&self) -> Vec<crate::planner::PlanAction> {
        crate::planner::plan_next(self.set(), &self.state, &self.quarantines, self.now)
    }

    /// A full plan pass through the controller (as on a plan tick): the planner actions it
    /// applied, read back from the log rows they wrote (an unchanged hold writes none, and
    /// the planner does not repeat one).
    pub fn tick(&mut self) -> Vec<PlanAction> {
        let mut out = Vec::new();
        self.controller.request_plan();
        let now = self.now;
        self.controller.plan(now, &mut out);
        rows(out).into_iter().filter_map(applied_action).collect()
    }

    /// A heartbeat from `host` naming no rollout and no closure, through the controller:
    /// the interval its answer asks for.
    pub fn heartbeat_interval(&mut self, host: &str) -> u64 {
        let now = self.now;
        let request = shared::agent::HeartbeatRequest {
            hostname: Self::host(host),
            current_closure: None,
            booted_closure: None,
            rollout_id: None,
            last_event_seq: None,
            at: now,
        };
        self.controller.heartbeat(now, &request, &mut Vec::new()).next_heartbeat_seconds
    }

    pub fn advance(&mut self, seconds: i64) {
        self.now += Duration::seconds(seconds);
    }

    pub fn rid(id: &str) -> shared::RolloutId {
        shared::RolloutId::parse(id).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn host(name: &str) -> shared::Hostname {
        shared::Hostname::parse(name).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn record(&self, rollout: &str, host: &str) -> &crate::host::HostRecord {
        self.state
            .record(&Self::rid(rollout), &Self::host(host))
            .unwrap_or_else(|| panic!("no record {rollout}/{host}"))
    }

    pub fn rollout(&self, rollout: &str) -> &crate::rollout::Rollout {
        self.state.rollouts.get(&Self::rid(rollout)).unwrap_or_else(|| panic!("no rollout {rollout}"))
    }

    /// Sends an event (`fields` without kind and seq; the next seq is added) as the agent
    /// would, through the controller: the log rows it wrote. (The reducer would plan the
    /// rollout next, since a host moved; a scenario plans when the test calls [`Self::tick`].)
    pub fn send(
        &mut self,
        rollout: &str,
        host: &str,
        kind: &str,
        mut fields: Value,
    ) -> Result<Vec<LogRow>, crate::controller::Refusal> {
        let seq = self.seqs.entry((rollout.into(), host.into())).or_insert(0);
        *seq += 1;
        fields["kind"] = json!(kind);
        fields["seq"] = json!(*seq);
        let event: shared::state::HostEvent =
            serde_json::from_value(fields).unwrap_or_else(|e| panic!("testkit event: {e}"));
        let mut out = Vec::new();
        let now = self.now;
        self.controller.host_event(now, &Self::host(host), &Self::rid(rollout), &event, &mut out)?;
        Ok(rows(out))
    }

    /// An operator's action through the controller, as `bob` (the reducer plans next; a
    /// scenario plans when the test calls [`Self::tick`]).
    pub fn act(
        &mut self,
        action: shared::api::OperatorAction,
        reason: &str,
    ) -> Result<crate::controller::Acted, crate::controller::Refusal> {
        let now = self.now;
        self.controller.operator(now, &action, "bob", Some(reason), &mut Vec::new())
    }

    /// Drives a dispatched host through ack and activation into Soaking.
    pub fn activate(&mut self, rollout: &str, host: &str) {
        let target = self.record(rollout, host).target_closure.clone();
        let now = self.now;
        self.send(rollout, host, "DispatchAck", json!({"currentClosure": "/nix/store/old", "receivedAt": now}))
            .unwrap_or_else(|e| panic!("{e}"));
        self.send(
            rollout,
            host,
            "ActivationCompleted",
            json!({"observedClosure": target, "exitCode": 0, "completedAt": now}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Drives a host from its dispatch (or from Soaking) to Converged (the clock jumps over
    /// its soak).
    pub fn converge(&mut self, rollout: &str, host: &str) {
        if self.record(rollout, host).state == shared::state::HostState::Pending {
            self.activate(rollout, host);
        }
        let record = self.record(rollout, host);
        let (target, due) = (record.target_closure.clone(), record.soak_due_at.unwrap_or(self.now));
        if due > self.now {
            self.now = due;
        }
        let now = self.now;
        self.send(rollout, host, "Converged", json!({"convergedAt": now, "currentClosure": target}))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Hosts the actions dispatched, in order.
    pub fn dispatched(actions: &[PlanAction]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                PlanAction::QueueDispatch { host, .. } => Some(host.to_string()),
                _ => None,
            })
            .collect()
    }
}

/// The planner action a log row records, if it records one.
fn applied_action(row: LogRow) -> Option<PlanAction> {
    let rollout_id = row.rollout_id?;
    Some(match row.entry {
        LogEntry::RolloutOpened(_) => PlanAction::OpenRollout { rollout_id },
        LogEntry::WaveAdvanced(w) => PlanAction::AdvanceWave { rollout_id, to: w.to },
        LogEntry::DispatchQueued(d) => PlanAction::QueueDispatch {
            host: row.host?,
            rollout_id,
            target_closure: d.target_closure,
            soak_seconds: d.soak_seconds,
        },
        LogEntry::HostHeld(h) => {
            PlanAction::Hold { host: row.host?, rollout_id, gate: h.gate, reason: h.reason.into(), until: h.until }
        }
        _ => return None,
    })
}

/// The log rows among a controller's writes.
fn rows(writes: Vec<Write>) -> Vec<LogRow> {
    writes
        .into_iter()
        .filter_map(|w| match w {
            Write::Log(row) => Some(*row),
            Write::Presence { .. } | Write::Policies(_) => None,
        })
        .collect()
}
