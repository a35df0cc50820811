//! The agent's logic as a sans-IO state machine (SPEC §14): `handle(now, input) -> actions`.
//!
//! Inputs are what the world said (the control plane's answers, the activator's and the
//! probes' results, the passing of time); actions are what the agent wants done (persist the
//! intent, send a request, run an activator step or a probe). It reads no clock and does no
//! IO, so the same code runs on hosts (driven by [`crate::run`]'s HTTP client, the Nix activator
//! and real probes) and in the simulator (driven by a simulated activator), and is tested by
//! tables of inputs and expected actions.
//!
//! Rules the machine keeps:
//! - Every event carries the next seq, and the intent holding it is persisted (an action
//!   before the send) so a restart never reuses a seq.
//! - Events go out one at a time, in seq order; network errors and 503s are retried with
//!   exponential backoff and jitter (or after the `Retry-After` the control plane gave); a
//!   refusal (409 and other 4xx) is logged and never retried.
//! - One activator step runs at a time; a result for a step the machine no longer waits for is
//!   ignored.
//! - `replayFrom` queues every kept event after that seq again.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use shared::agent::{DispatchOrder, EventOutcome, EventRequest, HeartbeatRequest, HeartbeatResponse};
use shared::limits::{MAX_REASON_BYTES, MAX_STDERR_TAIL_BYTES};
use shared::manifest::HealthFailurePolicy;
use shared::state::{HostEvent, HostRolloutSnapshot, HostState, ProbeMode, ProbeStatus};
use shared::{Closure, Hostname, RolloutId};

use crate::intent::{Intent, Outcome, Stage};

/// How often the agent heartbeats before the control plane said otherwise.
pub const FIRST_HEARTBEAT_SECONDS: u64 = 30;
/// The longest heartbeat interval the agent accepts from the control plane.
pub const MAX_HEARTBEAT_SECONDS: u64 = 3600;
/// Rollback attempts before the agent gives up and leaves the host to an operator.
pub const ROLLBACK_ATTEMPTS: u32 = 3;

/// What the machine needs to know of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub hostname: Hostname,
    pub probes: Vec<ProbeSchedule>,
    /// May the agent reboot into a closure that needs it (`reboot = "allowed"`)?
    pub reboot_allowed: bool,
    /// The first retry waits about `retry_first`, each further one twice as long, at most
    /// `retry_max`.
    pub retry_first: Duration,
    pub retry_max: Duration,
    /// Multiplies the heartbeat interval the control plane asks for: 1 on hosts; the
    /// simulator's pace.
    pub heartbeat_scale: f64,
    /// Seeds the retry jitter (any value; hosts use a random one).
    pub jitter_seed: u64,
}

impl Settings {
    /// Defaults for a host: retries from 1 s up to 60 s, real heartbeat intervals.
    pub fn new(hostname: Hostname, probes: Vec<ProbeSchedule>, reboot_allowed: bool, jitter_seed: u64) -> Settings {
        Settings {
            hostname,
            probes,
            reboot_allowed,
            retry_first: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            heartbeat_scale: 1.0,
            jitter_seed,
        }
    }
}

/// When and how a probe runs, as far as the machine cares (what it checks is the driver's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSchedule {
    pub name: String,
    pub mode: ProbeMode,
    pub interval: Duration,
    /// Consecutive failures of an enforce probe that fail the host.
    pub fail_after: u32,
}

/// What the agent found on the host when it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The intent left by the previous run, if any.
    pub intent: Option<Intent>,
    /// What `/run/current-system` points at.
    pub current: Closure,
    /// What `/run/booted-system` points at (`None` when it cannot be read).
    pub booted: Option<Closure>,
    /// This boot's id (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Time passed (the wake-up the machine asked for, or any other).
    Tick,
    /// The answer to [`Action::SendHeartbeat`].
    Heartbeat(Result<HeartbeatResponse, SendError>),
    /// The answer to [`Action::SendEvent`] for the event `seq` of `rollout_id`.
    Event { rollout_id: RolloutId, seq: u64, result: Result<EventOutcome, SendError> },
    /// The result of the running [`Action::Activate`] step.
    Activator(StepResult),
    /// One run of the probe `name`.
    Probe { name: String, status: ProbeStatus, reason: Option<String> },
}

/// Why a request got no answer to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Network error, timeout, 5xx, 401 (clock or fleet not caught up yet): try again, after
    /// `after` when the control plane said (`Retry-After`).
    Retry { after: Option<Duration> },
    /// The control plane refused the request (409 and other 4xx): never sent again.
    Refused { status: u16, message: String },
}

/// An activator step to run; its result comes back as [`Input::Activator`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Fetch `target` into the Nix store (substituters, trusted keys) and check it is there.
    Realise { target: Closure },
    /// Set the system profile to `target` and switch to it (or stage it for the next boot
    /// when the kernel, initrd or modules differ from the booted system).
    Switch { target: Closure },
    /// Set the profile back to `to` and run that closure's `switch-to-configuration switch`.
    Rollback { to: Closure },
    /// Reboot the host (only with `reboot = "allowed"`).
    Reboot,
}

/// Why a fetch failed (SPEC §14 step 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchFailure {
    /// No trusted signature on the path.
    Signature,
    /// A substituter could not be reached.
    Network,
    /// No substituter has the path.
    Missing,
    Other,
}

impl FetchFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            FetchFailure::Signature => "signature",
            FetchFailure::Network => "network",
            FetchFailure::Missing => "missing",
            FetchFailure::Other => "other",
        }
    }
}

/// What an activator step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepResult {
    /// The target is in the store.
    Realised,
    /// The fetch failed.
    FetchFailed { class: FetchFailure, exit_code: i32, stderr_tail: String },
    /// The switch ran to its end: its exit code and what `/run/current-system` points at now.
    Switched { observed: Closure, exit_code: i32 },
    /// The switch did not finish (timed out, could not start).
    SwitchFailed { exit_code: i32, stderr_tail: String },
    /// The target was staged for the next boot because `component` differs.
    Staged { component: String },
    /// The rollback ran: its exit code and what runs now.
    RolledBack { observed: Closure, exit_code: i32, stderr_tail: String },
    /// The reboot could not be started.
    RebootFailed { message: String },
}

/// Something the driver should do, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write [`Agent::intent`] durably before doing anything after this action.
    Persist,
    SendHeartbeat(HeartbeatRequest),
    SendEvent(EventRequest),
    Activate(Step),
    /// Run the probe of that name; report with [`Input::Probe`].
    RunProbe(String),
    /// Tell the operator (journal).
    Log(Level, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ProbeRun {
    due: DateTime<Utc>,
    running: bool,
    failures_in_row: u32,
    last: Option<ProbeStatus>,
}

/// The agent. Build it with [`Agent::start`], then feed it inputs with [`Agent::handle`] and
/// wake it at [`Agent::next_wake`].
#[derive(Debug, Clone)]
pub struct Agent {
    settings: Settings,
    current: Closure,
    /// What the host booted, as found at start (a reboot starts the agent again).
    booted: Option<Closure>,
    boot_id: String,
    job: Option<Intent>,
    /// Events of the job to send, oldest first; the front one is in flight when `sending`.
    outbox: VecDeque<HostEvent>,
    sending: Option<u64>,
    event_failures: u32,
    event_retry_at: Option<DateTime<Utc>>,
    heartbeat_due: DateTime<Utc>,
    heartbeat_in_flight: bool,
    heartbeat_interval: Duration,
    heartbeat_failures: u32,
    probes: Vec<ProbeRun>,
    /// An activator step is running.
    stepping: Option<StepKind>,
    rollback_attempts: u32,
    rollback_retry_at: Option<DateTime<Utc>>,
    /// The intent changed since it was last persisted.
    dirty: bool,
    rng: u64,
    actions: Vec<Action>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StepKind {
    Realise,
    Switch,
    Rollback,
    Reboot,
}

impl Step {
    fn kind(&self) -> StepKind {
        match self {
            Step::Realise { .. } => StepKind::Realise,
            Step::Switch { .. } => StepKind::Switch,
            Step::Rollback { .. } => StepKind::Rollback,
            Step::Reboot => StepKind::Reboot,
        }
    }
}

/// `now + d`, saturating at the end of representable time.
fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d).ok().and_then(|d| now.checked_add_signed(d)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The last `max` bytes of `text` (on a character boundary).
fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

impl Agent {
    /// The agent as it starts: resumes the intent it found (reconciling it with what runs now)
    /// and heartbeats at once.
    pub fn start(settings: Settings, found: Found, now: DateTime<Utc>) -> (Agent, Vec<Action>) {
        let mut agent = Agent {
            rng: settings.jitter_seed | 1,
            probes: Vec::new(),
            settings,
            current: found.current,
            booted: found.booted,
            boot_id: found.boot_id,
            job: None,
            outbox: VecDeque::new(),
            sending: None,
            event_failures: 0,
            event_retry_at: None,
            heartbeat_due: now,
            heartbeat_in_flight: false,
            heartbeat_interval: Duration::from_secs(FIRST_HEARTBEAT_SECONDS),
            heartbeat_failures: 0,
            stepping: None,
            rollback_attempts: 0,
            rollback_retry_at: None,
            dirty: false,
            actions: Vec::new(),
        };
        if let Some(intent) = found.intent {
            agent.resume(now, intent, true);
        }
        agent.advance(now);
        let actions = std::mem::take(&mut agent.actions);
        (agent, actions)
    }

    /// Feeds one input; returns what to do, in order.
    pub fn handle(&mut self, now: DateTime<Utc>, input: Input) -> Vec<Action> {
        match input {
            Input::Tick => {}
            Input::Heartbeat(result) => self.on_heartbeat(now, result),
            Input::Event { rollout_id, seq, result } => self.on_event_answer(now, &rollout_id, seq, result),
            Input::Activator(result) => self.on_step(now, result),
            Input::Probe { name, status, reason } => self.on_probe(now, &name, status, reason),
        }
        self.advance(now);
        std::mem::take(&mut self.actions)
    }

    /// When the machine next has something to do unprompted (`None`: only inputs wake it).
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        let mut wake: Option<DateTime<Utc>> = None;
        let mut at = |t: DateTime<Utc>| wake = Some(wake.map_or(t, |w| w.min(t)));
        if !self.heartbeat_in_flight {
            at(self.heartbeat_due);
        }
        if self.sending.is_none() && !self.outbox.is_empty() {
            at(self.event_retry_at.unwrap_or(DateTime::<Utc>::MIN_UTC));
        }
        match self.job.as_ref().map(|j| (j.stage, j.soak_due_at)) {
            Some((Stage::Soaking, due)) => {
                if let Some(due) = due {
                    at(due);
                }
                self.probes.iter().filter(|p| !p.running).for_each(|p| at(p.due));
            }
            Some((Stage::RollingBack, _)) if self.stepping.is_none() => {
                at(self.rollback_retry_at.unwrap_or(DateTime::<Utc>::MIN_UTC));
            }
            _ => {}
        }
        wake
    }

    /// The job to persist (after [`Action::Persist`]).
    pub fn intent(&self) -> Option<&Intent> {
        self.job.as_ref()
    }

    /// What the host runs, as far as the agent knows.
    pub fn current(&self) -> &Closure {
        &self.current
    }

    /// Events not yet answered by the control plane, oldest first.
    pub fn unsent(&self) -> impl Iterator<Item = &HostEvent> {
        self.outbox.iter()
    }

    // ---- inputs ----

    fn on_heartbeat(&mut self, now: DateTime<Utc>, result: Result<HeartbeatResponse, SendError>) {
        self.heartbeat_in_flight = false;
        let answer = match result {
            Ok(answer) => answer,
            Err(SendError::Retry { after: hint }) => {
                self.heartbeat_failures = self.heartbeat_failures.saturating_add(1);
                self.heartbeat_due = after(now, self.backoff(self.heartbeat_failures, hint));
                return;
            }
            Err(SendError::Refused { status, message }) => {
                self.log(Level::Error, format!("heartbeat refused ({status}): {message}"));
                self.heartbeat_failures = self.heartbeat_failures.saturating_add(1);
                self.heartbeat_due =
                    after(now, self.backoff(self.heartbeat_failures, None).max(self.heartbeat_interval));
                return;
            }
        };
        self.heartbeat_failures = 0;
        let seconds = answer.next_heartbeat_seconds.clamp(1, MAX_HEARTBEAT_SECONDS);
        self.heartbeat_interval = Duration::from_secs(seconds).mul_f64(self.settings.heartbeat_scale.max(0.0));
        self.heartbeat_due = after(now, self.heartbeat_interval);
        if let Some(from) = answer.replay_from {
            self.replay(from);
        }
        for snapshot in &answer.bootstrap {
            self.learn(now, snapshot);
        }
        if let Some(dispatch) = answer.dispatch {
            self.on_dispatch(now, dispatch);
        }
    }

    fn on_event_answer(
        &mut self,
        now: DateTime<Utc>,
        rollout_id: &RolloutId,
        seq: u64,
        result: Result<EventOutcome, SendError>,
    ) {
        let ours = self.job.as_ref().is_some_and(|j| &j.rollout_id == rollout_id) && self.sending == Some(seq);
        if !ours {
            return; // An answer about an earlier job, or superseded by a replay.
        }
        self.sending = None;
        match result {
            Ok(_) => {
                self.event_failures = 0;
                self.event_retry_at = None;
                self.drop_sent(seq);
            }
            Err(SendError::Retry { after: hint }) => {
                self.event_failures = self.event_failures.saturating_add(1);
                self.event_retry_at = Some(after(now, self.backoff(self.event_failures, hint)));
            }
            Err(SendError::Refused { status, message }) => {
                self.log(
                    Level::Warn,
                    format!("event {seq} of {rollout_id} refused ({status}), not sent again: {message}"),
                );
                self.event_failures = 0;
                self.event_retry_at = None;
                self.drop_sent(seq);
            }
        }
    }

    fn drop_sent(&mut self, seq: u64) {
        if self.outbox.front().is_some_and(|e| e.seq() == seq) {
            self.outbox.pop_front();
        }
    }

    fn on_step(&mut self, now: DateTime<Utc>, result: StepResult) {
        let Some(stage) = self.job.as_ref().map(|j| j.stage) else { return };
        let expected = match &result {
            StepResult::Realised | StepResult::FetchFailed { .. } => StepKind::Realise,
            StepResult::Switched { .. } | StepResult::SwitchFailed { .. } | StepResult::Staged { .. } => {
                StepKind::Switch
            }
            StepResult::RolledBack { .. } => StepKind::Rollback,
            StepResult::RebootFailed { .. } => StepKind::Reboot,
        };
        if self.stepping != Some(expected) {
            self.log(Level::Warn, format!("ignored an activator result nobody waits for: {result:?}"));
            return;
        }
        self.stepping = None;
        match (stage, result) {
            (Stage::Fetching, StepResult::Realised) => {
                self.emit(|seq| HostEvent::ActivationStarted { seq, started_at: now });
                self.set_stage(Stage::Switching);
                let target = self.target();
                self.activate(Step::Switch { target });
            }
            (Stage::Fetching, StepResult::FetchFailed { class, exit_code, stderr_tail }) => {
                let text = format!("fetch failed ({}): {stderr_tail}", class.as_str());
                let stderr_tail = tail(&text, MAX_STDERR_TAIL_BYTES);
                self.emit(|seq| HostEvent::ActivationFailed { seq, exit_code, stderr_tail, failed_at: now });
                self.after_failure();
            }
            (Stage::Switching, StepResult::Switched { observed, exit_code }) => {
                self.completed(now, observed, exit_code)
            }
            (Stage::Switching, StepResult::SwitchFailed { exit_code, stderr_tail }) => {
                let stderr_tail = tail(&stderr_tail, MAX_STDERR_TAIL_BYTES);
                self.emit(|seq| HostEvent::ActivationFailed { seq, exit_code, stderr_tail, failed_at: now });
                self.after_failure();
            }
            (Stage::Switching, StepResult::Staged { component }) => {
                let component = tail(&component, shared::limits::MAX_COMPONENT_BYTES);
                self.emit(|seq| HostEvent::ActivationDeferred { seq, component: component.clone(), deferred_at: now });
                self.set_stage(Stage::Deferred);
                if self.settings.reboot_allowed {
                    self.log(Level::Info, format!("{component} differs from the booted system: rebooting"));
                    self.activate(Step::Reboot);
                } else {
                    self.log(
                        Level::Info,
                        format!("{component} differs from the booted system: staged for the next boot"),
                    );
                }
            }
            (Stage::RollingBack, StepResult::RolledBack { observed, exit_code, stderr_tail }) => {
                self.current = observed.clone();
                let previous = self.job.as_ref().map(|j| j.previous_closure.clone());
                if exit_code == 0 && previous.as_ref() == Some(&observed) {
                    self.rollback_attempts = 0;
                    self.rollback_retry_at = None;
                    self.emit(|seq| HostEvent::RollbackComplete { seq, reverted_to: observed, completed_at: now });
                    self.set_stage(Stage::Done(Outcome::Reverted));
                } else {
                    self.rollback_attempts = self.rollback_attempts.saturating_add(1);
                    let what = format!(
                        "rollback attempt {} of {ROLLBACK_ATTEMPTS} failed (exit {exit_code}, running {observed}): {}",
                        self.rollback_attempts,
                        tail(&stderr_tail, MAX_REASON_BYTES)
                    );
                    if self.rollback_attempts >= ROLLBACK_ATTEMPTS {
                        self.log(Level::Error, format!("{what}; giving up, the host needs an operator"));
                        self.set_stage(Stage::Done(Outcome::RollbackFailed));
                    } else {
                        self.log(Level::Warn, what);
                        self.rollback_retry_at = Some(after(now, self.backoff(self.rollback_attempts, None)));
                    }
                }
            }
            (Stage::Deferred, StepResult::RebootFailed { message }) => {
                self.log(Level::Error, format!("could not reboot into the staged closure: {message}"));
            }
            (stage, result) => {
                self.log(Level::Warn, format!("ignored {result:?} in stage {stage:?}"));
            }
        }
    }

    fn on_probe(&mut self, now: DateTime<Utc>, name: &str, status: ProbeStatus, reason: Option<String>) {
        let soaking = self.job.as_ref().is_some_and(|j| j.stage == Stage::Soaking);
        let Some(i) = self.settings.probes.iter().position(|p| p.name == name) else { return };
        let Some(run) = self.probes.get_mut(i) else { return };
        if !soaking || !run.running {
            return;
        }
        let spec = &self.settings.probes[i];
        run.running = false;
        run.due = after(now, spec.interval);
        run.last = Some(status);
        run.failures_in_row = if status == ProbeStatus::Fail { run.failures_in_row.saturating_add(1) } else { 0 };
        let (probe, mode) = (spec.name.clone(), spec.mode);
        let reason = reason.map(|r| tail(&r, MAX_REASON_BYTES));
        self.emit(|seq| HostEvent::ProbeResult { seq, probe, mode, status, observed_at: now, reason });
        let failing: Vec<String> = self
            .settings
            .probes
            .iter()
            .zip(&self.probes)
            .filter(|(spec, run)| spec.mode == ProbeMode::Enforce && run.failures_in_row >= spec.fail_after.max(1))
            .map(|(spec, _)| spec.name.clone())
            .collect();
        if !failing.is_empty() {
            let policy_applied = self.policy();
            self.log(Level::Warn, format!("enforce probes failing: {}", failing.join(", ")));
            self.emit(|seq| HostEvent::Failed { seq, failed_at: now, failing_probes: failing, policy_applied });
            self.after_failure();
        }
    }

    // ---- the job ----

    fn on_dispatch(&mut self, now: DateTime<Utc>, dispatch: DispatchOrder) {
        match &self.job {
            Some(job) if job.rollout_id == dispatch.rollout_id => return,
            Some(job) if !matches!(job.stage, Stage::Done(_)) => {
                let busy = job.rollout_id.clone();
                self.log(Level::Warn, format!("dispatch of {} ignored while {busy} is under way", dispatch.rollout_id));
                return;
            }
            _ => {}
        }
        self.log(Level::Info, format!("dispatch: {} → {}", dispatch.rollout_id, dispatch.target_closure));
        self.job = Some(Intent {
            rollout_id: dispatch.rollout_id,
            target_closure: dispatch.target_closure.clone(),
            previous_closure: self.current.clone(),
            boot_id: self.boot_id.clone(),
            soak_seconds: Some(dispatch.soak_seconds),
            on_health_failure: dispatch.on_health_failure,
            stage: Stage::Fetching,
            soak_due_at: None,
            next_seq: 1,
            events: Vec::new(),
        });
        self.reset_job_runtime();
        let current_closure = self.current.clone();
        self.emit(|seq| HostEvent::DispatchAck { seq, current_closure, received_at: now });
        self.activate(Step::Realise { target: dispatch.target_closure });
    }

    /// Picks up a job after a restart (SPEC §14 step 7): what finished while the agent was
    /// down is reported, not redone.
    fn resume(&mut self, now: DateTime<Utc>, intent: Intent, persisted: bool) {
        let (stage, target) = (intent.stage, intent.target_closure.clone());
        let rebooted = intent.boot_id != self.boot_id;
        self.log(Level::Info, format!("resuming {} ({stage:?}) at seq {}", intent.rollout_id, intent.next_seq));
        self.job = Some(intent);
        self.reset_job_runtime();
        self.dirty = !persisted;
        match stage {
            Stage::Fetching => self.activate(Step::Realise { target }),
            Stage::Switching if self.current == target => self.completed(now, target, 0),
            Stage::Switching => self.activate(Step::Switch { target }),
            Stage::Deferred if rebooted => {
                let observed = self.current.clone();
                let exit_code = i32::from(observed != target);
                self.completed(now, observed, exit_code);
            }
            Stage::Deferred if self.settings.reboot_allowed => self.activate(Step::Reboot),
            Stage::Deferred | Stage::Soaking | Stage::Done(_) => {}
            Stage::RollingBack => {
                let to = self.previous();
                self.activate(Step::Rollback { to });
            }
        }
        if stage == Stage::Soaking {
            self.start_probes(now);
        }
    }

    /// Takes what the control plane knows of a record: a job after losing the intent (state
    /// directory gone), or the soak end a job learnt without knowing it.
    fn learn(&mut self, now: DateTime<Utc>, snapshot: &HostRolloutSnapshot) {
        if let Some(job) = &mut self.job {
            if job.rollout_id == snapshot.rollout_id && job.soak_due_at.is_none() && snapshot.soak_due_at.is_some() {
                job.soak_due_at = snapshot.soak_due_at;
                self.dirty = true;
            }
            return;
        }
        let stage = match snapshot.state {
            HostState::Pending => return, // The dispatch comes with the heartbeat answer.
            HostState::Activating | HostState::Deferred if self.current == snapshot.target_closure => Stage::Switching,
            HostState::Activating | HostState::Deferred => Stage::Fetching,
            HostState::Soaking => Stage::Soaking,
            HostState::Failed => Stage::RollingBack,
            HostState::Converged | HostState::Reverted => return,
        };
        self.log(
            Level::Warn,
            format!("no intent for {}: resuming from the control plane's record", snapshot.rollout_id),
        );
        let intent = Intent {
            rollout_id: snapshot.rollout_id.clone(),
            target_closure: snapshot.target_closure.clone(),
            previous_closure: snapshot.current_closure_at_dispatch.clone().unwrap_or_else(|| self.current.clone()),
            boot_id: self.boot_id.clone(),
            // From the heartbeat's snapshot. Without them (`GET /agent/bootstrap` leaves them
            // out) the soak end is learnt from the record's `soakDueAt`, and a host whose state
            // was lost goes back to what it ran: the safe choice.
            soak_seconds: snapshot.soak_seconds,
            on_health_failure: snapshot.on_health_failure.unwrap_or(HealthFailurePolicy::RollbackAndHalt),
            stage,
            soak_due_at: snapshot.soak_due_at,
            next_seq: snapshot.last_event_seq.saturating_add(1),
            events: Vec::new(),
        };
        self.resume(now, intent, false);
    }

    fn reset_job_runtime(&mut self) {
        self.outbox.clear();
        self.sending = None;
        self.event_failures = 0;
        self.event_retry_at = None;
        self.probes.clear();
        self.stepping = None;
        self.rollback_attempts = 0;
        self.rollback_retry_at = None;
        self.dirty = true;
    }

    /// The switch (or the reboot) finished with `observed` running.
    fn completed(&mut self, now: DateTime<Utc>, observed: Closure, exit_code: i32) {
        self.current = observed.clone();
        let good = exit_code == 0 && observed == self.target();
        self.emit(|seq| HostEvent::ActivationCompleted {
            seq,
            observed_closure: observed,
            exit_code,
            completed_at: now,
        });
        if !good {
            self.log(Level::Warn, format!("activation ended with exit {exit_code} running {}", self.current));
            self.after_failure();
            return;
        }
        if let Some(job) = &mut self.job {
            // Without the dispatch's soak (a job resumed from the control plane's record), the
            // soak end is learnt from the record; until then the heartbeat names no rollout.
            job.soak_due_at = job.soak_seconds.map(|s| after(now, Duration::from_secs(s)));
            job.stage = Stage::Soaking;
            self.dirty = true;
        }
        self.start_probes(now);
    }

    /// An activation or the health checks failed: roll back or halt, as the policy says.
    fn after_failure(&mut self) {
        match self.policy() {
            HealthFailurePolicy::RollbackAndHalt => {
                self.set_stage(Stage::RollingBack);
                let to = self.previous();
                self.log(Level::Warn, format!("rolling back to {to}"));
                self.activate(Step::Rollback { to });
            }
            HealthFailurePolicy::Halt => {
                self.log(Level::Warn, "halted: the host stays as it is for an operator".to_owned());
                self.set_stage(Stage::Done(Outcome::Halted));
            }
        }
    }

    fn start_probes(&mut self, now: DateTime<Utc>) {
        self.probes = self
            .settings
            .probes
            .iter()
            .map(|_| ProbeRun { due: now, running: false, failures_in_row: 0, last: None })
            .collect();
    }

    // ---- time ----

    /// Does what is due at `now`, then sends what can be sent.
    fn advance(&mut self, now: DateTime<Utc>) {
        let stage = self.job.as_ref().map(|j| j.stage);
        if stage == Some(Stage::Soaking) {
            self.soak(now);
        }
        if stage == Some(Stage::RollingBack)
            && self.stepping.is_none()
            && self.rollback_retry_at.is_some_and(|t| t <= now)
        {
            self.rollback_retry_at = None;
            let to = self.previous();
            self.activate(Step::Rollback { to });
        }
        if !self.heartbeat_in_flight && self.heartbeat_due <= now {
            let request = self.heartbeat_request(now);
            self.heartbeat_in_flight = true;
            self.act(Action::SendHeartbeat(request));
        }
        if self.sending.is_none()
            && self.event_retry_at.is_none_or(|t| t <= now)
            && let (Some(event), Some(job)) = (self.outbox.front(), &self.job)
        {
            let request = EventRequest {
                hostname: self.settings.hostname.clone(),
                rollout_id: job.rollout_id.clone(),
                event: event.clone(),
            };
            self.sending = Some(event.seq());
            self.act(Action::SendEvent(request));
        }
        self.flush();
    }

    fn soak(&mut self, now: DateTime<Utc>) {
        let due = self.job.as_ref().and_then(|j| j.soak_due_at);
        let healthy = self
            .settings
            .probes
            .iter()
            .zip(&self.probes)
            .all(|(spec, run)| spec.mode == ProbeMode::Observe || run.last == Some(ProbeStatus::Pass));
        if healthy && due.is_some_and(|due| due <= now) {
            let current_closure = self.current.clone();
            self.emit(|seq| HostEvent::Converged { seq, converged_at: now, current_closure });
            self.set_stage(Stage::Done(Outcome::Converged));
            self.log(Level::Info, format!("converged on {}", self.current));
            return;
        }
        for i in 0..self.probes.len() {
            if !self.probes[i].running && self.probes[i].due <= now {
                self.probes[i].running = true;
                let name = self.settings.probes[i].name.clone();
                self.act(Action::RunProbe(name));
            }
        }
    }

    fn heartbeat_request(&self, now: DateTime<Utc>) -> HeartbeatRequest {
        // A job whose soak end is unknown names no rollout, so the answer brings the record.
        let job = self.job.as_ref().filter(|j| !(j.stage == Stage::Soaking && j.soak_due_at.is_none()));
        HeartbeatRequest {
            hostname: self.settings.hostname.clone(),
            current_closure: Some(self.current.clone()),
            booted_closure: self.booted.clone(),
            rollout_id: job.map(|j| j.rollout_id.clone()),
            last_event_seq: job.map(|j| j.next_seq.saturating_sub(1)),
            at: now,
        }
    }

    // ---- helpers ----

    /// Appends the event with the next seq to the job and the outbox.
    fn emit(&mut self, build: impl FnOnce(u64) -> HostEvent) {
        let Some(job) = &mut self.job else { return };
        let event = build(job.next_seq);
        job.next_seq = job.next_seq.saturating_add(1);
        job.events.push(event.clone());
        self.outbox.push_back(event);
        self.dirty = true;
    }

    /// Queues every kept event after `from` again, in order, when some of them were answered
    /// already (the control plane lost them). Events still in the outbox (the one in flight
    /// included) are not missing: they are on their way, and sending them twice would only
    /// earn duplicates.
    fn replay(&mut self, from: u64) {
        let Some(job) = &self.job else { return };
        let first_unanswered = self.outbox.front().map_or(job.next_seq, HostEvent::seq);
        if from.saturating_add(1) >= first_unanswered {
            return;
        }
        self.outbox = job.events.iter().filter(|e| e.seq() > from).cloned().collect();
        self.sending = None;
        self.event_retry_at = None;
    }

    fn set_stage(&mut self, stage: Stage) {
        if let Some(job) = &mut self.job {
            job.stage = stage;
            self.dirty = true;
        }
    }

    fn target(&self) -> Closure {
        self.job.as_ref().map_or_else(|| self.current.clone(), |j| j.target_closure.clone())
    }

    fn previous(&self) -> Closure {
        self.job.as_ref().map_or_else(|| self.current.clone(), |j| j.previous_closure.clone())
    }

    fn policy(&self) -> HealthFailurePolicy {
        self.job.as_ref().map_or(HealthFailurePolicy::RollbackAndHalt, |j| j.on_health_failure)
    }

    fn activate(&mut self, step: Step) {
        self.stepping = Some(step.kind());
        self.act(Action::Activate(step));
    }

    fn log(&mut self, level: Level, message: String) {
        self.actions.push(Action::Log(level, message));
    }

    /// Pushes an action that leaves the agent, persisting the intent first when it changed.
    fn act(&mut self, action: Action) {
        self.flush();
        self.actions.push(action);
    }

    fn flush(&mut self) {
        if self.dirty && self.job.is_some() {
            self.actions.push(Action::Persist);
        }
        self.dirty = false;
    }

    /// Exponential backoff with jitter for the `failures`-th failure in a row: about
    /// `retry_first · 2^(failures-1)`, at most `retry_max`, between half and all of it; or the
    /// control plane's `Retry-After` and a little jitter.
    fn backoff(&mut self, failures: u32, hint: Option<Duration>) -> Duration {
        let first = self.settings.retry_first;
        let ceiling = first
            .checked_mul(1u32 << failures.saturating_sub(1).min(20))
            .unwrap_or(self.settings.retry_max)
            .min(self.settings.retry_max);
        let fraction = self.random();
        match hint {
            Some(hint) => hint.saturating_add(first.mul_f64(fraction)),
            None => ceiling / 2 + (ceiling / 2).mul_f64(fraction),
        }
    }

    /// A number in [0, 1) from a xorshift of the jitter seed.
    fn random(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}
