//! Operator actions (SPEC §7) and quarantines.

use chrono::{DateTime, Utc};
use shared::ErrorCode;
use shared::api::OperatorAction;
use shared::log::{self, LogEntry};
use shared::state::AdvancedBy;
use shared::{Channel, Closure, RolloutId};

use shared::manifest::Selector;
use shared::policy::{
    Freeze, FreezeSource, MAX_ACTION_REASON_BYTES, MAX_FREEZE_NAME_BYTES, MAX_OPERATOR_FREEZES, MAX_SELECTOR_ITEMS,
    Suspension, valid_freeze_name,
};

use super::{Controller, Refusal, Write, rejected};
use crate::fleet::VerifiedFleet;
use crate::rollout::RolloutInput;

/// What an operator's action did: in words, and the name it chose (a freeze's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acted {
    pub message: String,
    pub name: Option<String>,
}

fn invalid(message: String) -> Refusal {
    Refusal::Invalid { code: ErrorCode::InvalidBody, message }
}

/// A reason is required where the dashboard shows it to everyone (freezes, suspensions).
fn required(reason: &str, what: &str) -> Result<(), Refusal> {
    if reason.trim().is_empty() {
        return Err(invalid(format!("reason: {what} needs a reason (it is shown to every operator)")));
    }
    Ok(())
}

impl Controller {
    /// Applies an operator's action; answers what was done. The last row it writes is the
    /// `OperatorAction` entry recording it.
    pub fn operator(
        &mut self,
        now: DateTime<Utc>,
        action: &OperatorAction,
        by: &str,
        reason: Option<&str>,
        out: &mut Vec<Write>,
    ) -> Result<Acted, Refusal> {
        let mut named = None;
        // As for agents (SPEC §9.1): no verified fleet yet is "not ready", 503.
        let Some(set) = self.set.clone() else {
            return Err(Refusal::Unavailable("There is no verified fleet yet: upload one first.".into()));
        };
        let reason_text = reason.unwrap_or("").to_owned();
        if reason_text.len() > MAX_ACTION_REASON_BYTES {
            return Err(Refusal::Invalid {
                code: ErrorCode::LimitExceeded,
                message: format!("reason: {} bytes, at most {MAX_ACTION_REASON_BYTES}", reason_text.len()),
            });
        }
        let (channel, message) = match action {
            OperatorAction::Quarantine { channel, closure } => {
                if !set.fleet.doc.channels.contains_key(channel) {
                    return Err(rejected(ErrorCode::UnknownChannel, format!("There is no channel {channel}.")));
                }
                let why = if reason_text.is_empty() { format!("quarantined by {by}") } else { reason_text.clone() };
                if !self.add_quarantine(now, channel.clone(), closure.clone(), why, by.to_owned(), out) {
                    return Err(rejected(
                        ErrorCode::AlreadyQuarantined,
                        format!("{closure} is already quarantined on {channel}."),
                    ));
                }
                (Some(channel.clone()), format!("{closure} quarantined on {channel}"))
            }
            OperatorAction::Release { channel, closure } => {
                if !self.quarantines.remove(&(channel.clone(), closure.clone())) {
                    return Err(rejected(
                        ErrorCode::NotQuarantined,
                        format!("{closure} is not quarantined on {channel}."),
                    ));
                }
                let entry = LogEntry::QuarantineReleased(log::QuarantineChange {
                    closure: closure.clone(),
                    reason: reason_text,
                    by: by.to_owned(),
                });
                Self::note(now, None, None, Some(channel.clone()), entry, out);
                (Some(channel.clone()), format!("{closure} released on {channel}"))
            }
            OperatorAction::ApproveWave { rollout_id, wave } => {
                self.rollout_action(&set.fleet, now, rollout_id, RolloutInput::Approve { wave: *wave }, out)?
            }
            OperatorAction::Promote { rollout_id, to_wave, force } => {
                let input = RolloutInput::AdvanceWave { to: *to_wave, by: AdvancedBy::Operator, force: *force };
                self.rollout_action(&set.fleet, now, rollout_id, input, out)?
            }
            OperatorAction::Pause { rollout_id } => {
                self.rollout_action(&set.fleet, now, rollout_id, RolloutInput::Pause, out)?
            }
            OperatorAction::Resume { rollout_id } => {
                self.rollout_action(&set.fleet, now, rollout_id, RolloutInput::Resume, out)?
            }
            OperatorAction::ClearFailure { rollout_id } => {
                self.rollout_action(&set.fleet, now, rollout_id, RolloutInput::ClearFailure, out)?
            }
            OperatorAction::Freeze { name, selector, until } => {
                let name = self.freeze(&set.fleet, now, name.as_deref(), selector, *until, by, &reason_text, out)?;
                let message = format!("freeze {name} in force");
                named = Some(name);
                (None, message)
            }
            OperatorAction::Unfreeze { name } => {
                self.unfreeze(&set.fleet, now, name, by, &reason_text, out)?;
                (None, format!("freeze {name} released"))
            }
            OperatorAction::SuspendHost { hostname } => {
                let Some(host) = set.fleet.doc.hosts.get(hostname) else {
                    return Err(rejected(ErrorCode::UnknownHost, format!("The fleet has no host {hostname}.")));
                };
                required(&reason_text, "suspending a host")?;
                if self.state.policies.suspended.contains_key(hostname) {
                    return Err(rejected(ErrorCode::AlreadySuspended, format!("{hostname} is already suspended.")));
                }
                // At the time its log entry carries (milliseconds), so replaying the log gives
                // the same suspension.
                let at = chrono::SubsecRound::trunc_subsecs(now, 3);
                let suspension = Suspension { reason: reason_text.clone(), by: by.to_owned(), at };
                self.state.policies.suspended.insert(hostname.clone(), suspension);
                let entry =
                    LogEntry::HostSuspended(log::SuspensionChange { by: by.to_owned(), reason: reason_text.clone() });
                Self::note(now, None, Some(hostname.clone()), Some(host.channel.clone()), entry, out);
                self.policies_changed(out);
                (Some(host.channel.clone()), format!("{hostname} suspended"))
            }
            OperatorAction::ResumeHost { hostname } => {
                if self.state.policies.suspended.remove(hostname).is_none() {
                    return Err(rejected(ErrorCode::NotSuspended, format!("{hostname} is not suspended.")));
                }
                let channel = set.fleet.doc.hosts.get(hostname).map(|h| h.channel.clone());
                let entry =
                    LogEntry::HostResumed(log::SuspensionChange { by: by.to_owned(), reason: reason_text.clone() });
                Self::note(now, None, Some(hostname.clone()), channel.clone(), entry, out);
                self.policies_changed(out);
                (channel, format!("{hostname} resumed"))
            }
        };
        let entry = LogEntry::OperatorAction(log::OperatorActed {
            action: action.clone(),
            operator: by.to_owned(),
            reason: reason.map(str::to_owned),
            forced: matches!(action, OperatorAction::Promote { force: true, .. }),
        });
        let host = match action {
            OperatorAction::SuspendHost { hostname } | OperatorAction::ResumeHost { hostname } => {
                Some(hostname.clone())
            }
            _ => None,
        };
        Self::note(now, action.rollout_id().cloned(), host, channel, entry, out);
        self.replan = true;
        Ok(Acted { message, name: named })
    }

    /// Stops the line for the hosts `selector` picks (every host without one): SPEC §17.
    /// Answers the freeze's name.
    #[allow(clippy::too_many_arguments)]
    fn freeze(
        &mut self,
        fleet: &VerifiedFleet,
        now: DateTime<Utc>,
        name: Option<&str>,
        selector: &Option<Selector>,
        until: Option<DateTime<Utc>>,
        by: &str,
        reason: &str,
        out: &mut Vec<Write>,
    ) -> Result<String, Refusal> {
        required(reason, "a freeze")?;
        if let Some(until) = until
            && until <= now
        {
            return Err(invalid(format!("until: {until} is not in the future")));
        }
        if let Some(selector) = selector {
            let items = selector.hosts.as_ref().map_or(0, Vec::len)
                + selector.tags.as_ref().map_or(0, Vec::len)
                + selector.tags_any.as_ref().map_or(0, Vec::len);
            if items > MAX_SELECTOR_ITEMS {
                return Err(invalid(format!("selector: {items} hosts and tags, at most {MAX_SELECTOR_ITEMS}")));
            }
            if !fleet.doc.hosts.iter().any(|(hostname, host)| selector.matches(hostname, host)) {
                return Err(invalid("selector: selects no host of the fleet".to_owned()));
            }
        }
        // Counted without the run-out ones, which leave the document once this one is in
        // (a refusal changes nothing).
        if self.state.policies.freezes.iter().filter(|f| f.in_force(now)).count() >= MAX_OPERATOR_FREEZES {
            return Err(rejected(
                ErrorCode::LimitExceeded,
                format!("{MAX_OPERATOR_FREEZES} operator freezes are in force; release one first."),
            ));
        }
        let taken = |candidate: &str| {
            self.state.policies.freezes.iter().any(|f| f.name == candidate && f.in_force(now))
                || fleet.freezes.iter().any(|f| f.name == candidate && f.in_force(now))
        };
        let name = match name {
            Some(name) => {
                if !valid_freeze_name(name) {
                    return Err(invalid(format!(
                        "name: `{name}` is not 1–{MAX_FREEZE_NAME_BYTES} characters of A–Z, a–z, 0–9, `.`, `_`, `-`"
                    )));
                }
                if taken(name) {
                    return Err(rejected(ErrorCode::AlreadyFrozen, format!("A freeze named {name} is in force.")));
                }
                name.to_owned()
            }
            None => {
                let base = format!("stop-the-line-{}", now.format("%Y%m%d-%H%M%S"));
                (1..)
                    .map(|n| if n == 1 { base.clone() } else { format!("{base}-{n}") })
                    .find(|c| !taken(c))
                    .unwrap_or(base)
            }
        };
        let freeze = Freeze {
            name: name.clone(),
            source: FreezeSource::Operator,
            selector: selector.clone(),
            from: now,
            until,
            reason: reason.to_owned(),
            by: Some(by.to_owned()),
        };
        // Run-out freezes leave the document (the log keeps them).
        self.state.policies.freezes.retain(|f| f.in_force(now));
        self.state.policies.freezes.push(freeze.clone());
        Self::note(now, None, None, None, LogEntry::FreezeStarted(Box::new(freeze)), out);
        self.policies_changed(out);
        Ok(name)
    }

    /// Releases an operator's freeze that is in force.
    fn unfreeze(
        &mut self,
        fleet: &VerifiedFleet,
        now: DateTime<Utc>,
        name: &str,
        by: &str,
        reason: &str,
        out: &mut Vec<Write>,
    ) -> Result<(), Refusal> {
        let Some(i) = self.state.policies.freezes.iter().position(|f| f.name == name && f.in_force(now)) else {
            let message = if fleet.freezes.iter().any(|f| f.name == name) {
                format!("The freeze {name} is in the signed fleet document: a fleet without it lifts it.")
            } else {
                format!("No operator freeze named {name} is in force.")
            };
            return Err(rejected(ErrorCode::UnknownFreeze, message));
        };
        self.state.policies.freezes.remove(i);
        self.state.policies.freezes.retain(|f| f.in_force(now));
        let entry = LogEntry::FreezeReleased(log::FreezeReleased {
            name: name.to_owned(),
            by: by.to_owned(),
            reason: reason.to_owned(),
        });
        Self::note(now, None, None, None, entry, out);
        self.policies_changed(out);
        Ok(())
    }

    /// The policies changed: stored anew with this group, and every rollout planned again
    /// (dispatches not picked up yet are withdrawn from hosts now held; a suspended host may
    /// complete a wave or a rollout).
    fn policies_changed(&mut self, out: &mut Vec<Write>) {
        out.push(Write::Policies(self.state.policies.clone()));
        self.replan = true;
    }

    /// An action on one rollout: the rollout's channel and what was done.
    fn rollout_action(
        &mut self,
        fleet: &VerifiedFleet,
        now: DateTime<Utc>,
        id: &RolloutId,
        input: RolloutInput,
        out: &mut Vec<Write>,
    ) -> Result<(Option<Channel>, String), Refusal> {
        if !self.state.rollouts.contains_key(id) {
            return Err(rejected(ErrorCode::UnknownRollout, format!("There is no rollout {id}.")));
        }
        let effects = self
            .state
            .apply_rollout_input(fleet, id, &input, now)
            .map_err(|e| rejected(ErrorCode::NotApplicable, e.to_string()))?;
        self.absorb(now, effects, out);
        let channel = self.state.rollouts.get(id).map(|r| r.channel.clone());
        Ok((channel, format!("{} applied to {id}", input.kind())))
    }

    /// Quarantines `closure` on `channel` unless it already is: dispatches not yet picked up
    /// are withdrawn, and the next pass holds its Pending hosts. False if it already was.
    pub(super) fn add_quarantine(
        &mut self,
        now: DateTime<Utc>,
        channel: Channel,
        closure: Closure,
        reason: String,
        by: String,
        out: &mut Vec<Write>,
    ) -> bool {
        if !self.quarantines.insert((channel.clone(), closure.clone())) {
            return false;
        }
        let withdrawn = self.state.withdraw_dispatches_of(&channel, &closure, now);
        let entry = LogEntry::QuarantineAdded(log::QuarantineChange { closure, reason, by });
        Self::note(now, None, None, Some(channel), entry, out);
        self.absorb(now, withdrawn, out);
        self.replan = true;
        true
    }
}
