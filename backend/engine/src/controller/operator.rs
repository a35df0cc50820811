//! Operator actions (SPEC §7) and quarantines.

use chrono::{DateTime, Utc};
use shared::ErrorCode;
use shared::api::OperatorAction;
use shared::log::{self, LogEntry};
use shared::state::AdvancedBy;
use shared::{Channel, Closure, RolloutId};

use super::{Controller, Refusal, Write, rejected};
use crate::fleet::VerifiedFleet;
use crate::rollout::RolloutInput;

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
    ) -> Result<String, Refusal> {
        // As for agents (SPEC §9.1): no verified fleet yet is "not ready", 503.
        let Some(set) = self.set.clone() else {
            return Err(Refusal::Unavailable("There is no verified fleet yet: upload one first.".into()));
        };
        let reason_text = reason.unwrap_or("").to_owned();
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
        };
        let entry = LogEntry::OperatorAction(log::OperatorActed {
            action: action.clone(),
            operator: by.to_owned(),
            reason: reason.map(str::to_owned),
            forced: matches!(action, OperatorAction::Promote { force: true, .. }),
        });
        Self::note(now, action.rollout_id().cloned(), None, channel, entry, out);
        self.replan = true;
        Ok(message)
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
