//! Plan passes: planner actions and completion checks, and how far a pass must look.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use shared::state::{Gate, HostState, RolloutState};
use shared::{Channel, RolloutId};

use super::{Controller, Write};
use crate::planner::{Pass, PlanAction, plan_pass};
use crate::rollout::RolloutInput;
use crate::state::ManifestSet;

/// New holds one pass applies at most; the rest wait for the next pass, which the rollouts
/// they belong to are marked for (as if their hosts had moved). Opening a 100,000-host
/// rollout of ten waves holds 90,000 hosts for later waves, each with a log row carrying its
/// record: in one pass, one transaction's rows were a third of the server's peak memory.
pub const HOLDS_PER_PASS: usize = 10_000;

/// [`HOLDS_PER_PASS`] unless a test asks for fewer.
#[derive(Debug, Clone, Copy)]
pub(super) struct HoldsPerPass(usize);

impl Default for HoldsPerPass {
    fn default() -> Self {
        HoldsPerPass(HOLDS_PER_PASS)
    }
}

impl Controller {
    /// Caps the new holds of one pass at `holds` instead of [`HOLDS_PER_PASS`] (tests show the
    /// cap on small fleets).
    pub fn cap_holds_per_pass(&mut self, holds: usize) {
        self.holds_per_pass = HoldsPerPass(holds);
    }

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
        let mut holds = 0;
        let mut held_over = BTreeSet::new();
        for _ in 0..4 {
            moved.append(&mut self.moved);
            let scope = (!full).then(|| self.moved_scope(&set, &moved, &opened));
            let Pass { actions, budget_held } = plan_pass(&set, &self.state, &self.quarantines, now, scope.as_ref());
            let mut again = false;
            for action in &actions {
                if let PlanAction::Hold { rollout_id, .. } = action {
                    holds += 1;
                    if holds > self.holds_per_pass.0 {
                        held_over.insert(rollout_id.clone());
                        continue;
                    }
                }
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
            match &scope {
                Some(scope) => self.budget_held.retain(|id| !scope.contains(id)),
                None => self.budget_held.clear(),
            }
            self.budget_held.extend(budget_held);
            if !again {
                break;
            }
        }
        // What moved during the pass was planned by it; holds over the cap wait for the next.
        self.moved.clear();
        self.moved.append(&mut held_over);
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

    /// Reads which rollouts have a Pending host held by a budget from the records (at start;
    /// after that, each pass says).
    pub(super) fn note_budget_holds(&mut self) {
        self.budget_held = (self.state.records.iter())
            .filter(|(id, records)| {
                self.state.rollouts.get(*id).is_some_and(|r| !r.state.is_terminal())
                    && records.values().any(|r| {
                        r.state == HostState::Pending
                            && r.dispatch.is_none()
                            && r.waiting_on.as_ref().is_some_and(|w| w.gate == Gate::Budget)
                    })
            })
            .map(|(id, _)| id.clone())
            .collect();
    }
}
