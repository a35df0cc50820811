//! Plan passes: planner actions and completion checks, and how far a pass must look.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use shared::state::{Gate, HostState, RolloutState};
use shared::{Channel, RolloutId};

use super::{Controller, Write};
use crate::planner::{PlanAction, plan_rollouts};
use crate::rollout::RolloutInput;
use crate::state::ManifestSet;

impl Controller {
    /// Asks for a pass over every rollout (a plan tick).
    pub fn request_plan(&mut self) {
        self.replan = true;
    }

    /// Whether a pass is due: one was asked for, or hosts moved since the last one.
    pub fn plan_due(&self) -> bool {
        self.replan || !self.moved.is_empty()
    }

    /// Whether a full pass was asked for (a plan tick, manifests, an operator action, a
    /// quarantine), not only a pass over the rollouts hosts moved in.
    pub fn full_plan_due(&self) -> bool {
        self.replan
    }

    /// A plan pass: planner actions and completion checks, again at once when a rollout
    /// opened or completed (a successor channel may go on). When a full pass was asked for
    /// (plan tick, manifests, operator actions, quarantines) it covers every rollout and also
    /// flags stuck hosts and takes silent hosts offline (both depend on time alone); when only
    /// hosts moved, it covers the rollouts they moved in and those they can unblock
    /// ([`Controller::moved_scope`]), so its cost follows what changed, not the fleet's size.
    /// Returns whether it covered everything.
    pub fn plan(&mut self, now: DateTime<Utc>, out: &mut Vec<Write>) -> bool {
        let full = std::mem::take(&mut self.replan);
        let mut moved = std::mem::take(&mut self.moved);
        let Some(set) = self.set.clone() else { return full };
        if full {
            let stuck = self.state.detect_stuck(&set.fleet, now);
            self.absorb(now, stuck, out);
        }
        let mut opened = BTreeSet::new();
        for _ in 0..4 {
            moved.append(&mut self.moved);
            let scope = (!full).then(|| self.moved_scope(&set, &moved, &opened));
            let actions = plan_rollouts(&set, &self.state, &self.quarantines, now, scope.as_ref());
            let mut again = false;
            for action in &actions {
                if let PlanAction::OpenRollout { rollout_id } = action {
                    again = true;
                    self.rollouts_of_host = None;
                    opened.insert(rollout_id.clone());
                }
                let effects = crate::planner::apply(&mut self.state, &set, action, now);
                self.absorb(now, effects, out);
            }
            let active: Vec<RolloutId> = self
                .state
                .rollouts
                .iter()
                .filter(|(id, r)| r.state == RolloutState::Active && scope.as_ref().is_none_or(|s| s.contains(*id)))
                .map(|(id, _)| id.clone())
                .collect();
            for id in active {
                if let Ok(effects) = self.state.apply_rollout_input(&set.fleet, &id, &RolloutInput::Evaluate, now) {
                    again |= self.state.rollouts.get(&id).is_some_and(|r| r.state == RolloutState::Completed);
                    self.absorb(now, effects, out);
                }
            }
            self.note_budget_holds(scope.as_ref());
            if !again {
                break;
            }
        }
        // What moved during the pass was planned by it.
        self.moved.clear();
        if full {
            self.mark_offline(now, out);
        }
        full
    }

    /// What a pass after hosts moved must look at: the rollouts they moved in and rollouts
    /// opened in this pass, every rollout with a host held by a budget (a host leaving
    /// Activating or Soaking frees budget anywhere), and the rollouts of channels gated by the
    /// channels of those rollouts (one may have completed). Nothing else can have an action:
    /// their records, gates and wave state did not change.
    fn moved_scope(
        &self,
        set: &ManifestSet,
        moved: &BTreeSet<RolloutId>,
        opened: &BTreeSet<RolloutId>,
    ) -> BTreeSet<RolloutId> {
        let mut scope: BTreeSet<RolloutId> = moved.iter().chain(opened).cloned().collect();
        scope.extend(self.budget_held.iter().cloned());
        let channels: BTreeSet<&Channel> =
            scope.iter().filter_map(|id| self.state.rollouts.get(id)).map(|r| &r.channel).collect();
        let gated: Vec<&Channel> =
            set.fleet.doc.channel_edges.iter().filter(|e| channels.contains(&e.gates)).map(|e| &e.gated).collect();
        for channel in gated {
            if let Some(rollout) = self.state.current_rollout(channel) {
                scope.insert(rollout.id.clone());
            }
        }
        scope
    }

    /// Re-reads which of the rollouts in `scope` (every rollout when `None`) have a Pending host
    /// held by a budget.
    pub(super) fn note_budget_holds(&mut self, scope: Option<&BTreeSet<RolloutId>>) {
        let ids: Vec<RolloutId> = match scope {
            Some(ids) => ids.iter().cloned().collect(),
            None => {
                self.budget_held.clear();
                self.state.records.keys().cloned().collect()
            }
        };
        for id in ids {
            let held = self.state.rollouts.get(&id).is_some_and(|r| !r.state.is_terminal())
                && self.state.records.get(&id).is_some_and(|records| {
                    records.values().any(|r| {
                        r.state == HostState::Pending
                            && r.dispatch.is_none()
                            && r.waiting_on.as_ref().is_some_and(|w| w.gate == Gate::Budget)
                    })
                });
            if held {
                self.budget_held.insert(id);
            } else {
                self.budget_held.remove(&id);
            }
        }
    }
}
