//! The reducer: the one task that changes rollout state (SPEC §6).
//!
//! Routes send it a [`ReducerInput`] and wait on a oneshot reply. The task takes whatever
//! inputs are queued (up to [`MAX_GROUP`]), runs each through the pure engine in memory
//! ([`core::Core`]), writes everything they changed plus their event-log rows in **one**
//! transaction (group commit, handed to the [`Writer`] in one piece; the next group is
//! applied while it commits), and only after that transaction committed sends the replies and
//! publishes the entries to the live feed. If the commit fails, every reply in the group gets
//! a 503 and memory is rebuilt from the database, so nothing is ever answered `applied` that
//! is not durable. A commit fenced by a newer leader epoch (PostgreSQL, SPEC §15) stops the
//! reducer instead: this replica no longer leads.

pub mod core;
pub mod input;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use shared::state::Gate;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use self::core::SharedFleet;
use self::core::{Core, Pending};
pub use self::input::{Archived, ManifestUpdate, ReducerError, ReducerInput, Reply};
use crate::db::writer::{Committed, WriteError, Writer};
use crate::db::{Store, store};
use crate::feed::FeedHub;
use crate::metrics::Metrics;
use crate::signatures::ReplayCache;
use crate::trust::SharedTrust;
use shared::api::LogEvent;

/// Most inputs taken into one transaction.
pub const MAX_GROUP: usize = 512;
/// Groups between "applied in memory" and "answered": one committing, one being applied.
const PIPELINE_DEPTH: usize = 2;
/// After a plan pass took `d`, the next pass over the rollouts hosts moved in waits until
/// `d × this` has passed (a full pass never waits): passes then take at most a quarter of the
/// reducer's time. A 100,000-host rollout's pass takes ~10 ms and ran after every group that
/// moved a host — most of the reducer's time while that rollout converged; a small fleet's
/// takes microseconds and is never held back noticeably.
const MOVED_PASS_SPACING: u32 = 3;
/// Inputs that may wait for the reducer; senders wait (back-pressure) beyond this.
const QUEUE: usize = 8192;
/// Signatures of requests that changed nothing wait this long at most for a batch with other
/// writes before they are stored on their own.
const SIGNATURES_EVERY: Duration = Duration::from_secs(1);
/// How often a batch also deletes the stored signatures that expired.
const PURGE_SIGNATURES_EVERY: Duration = Duration::from_secs(10);
/// Retry intervals of the reload after a failed commit.
const RELOAD_FIRST_WAIT: Duration = Duration::from_millis(100);
const RELOAD_LAST_WAIT: Duration = Duration::from_secs(5);

type Responder = Box<dyn FnOnce(Option<&[LogEvent]>) + Send>;

/// Sends inputs to the reducer. Cheap to clone.
#[derive(Clone)]
pub struct ReducerHandle {
    tx: mpsc::Sender<ReducerInput>,
    metrics: Arc<Metrics>,
    running: Arc<AtomicBool>,
    reloading: Arc<AtomicBool>,
    deposed: Arc<AtomicBool>,
}

impl ReducerHandle {
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// True once a commit was fenced: another replica leads, and this reducer stopped.
    pub fn is_deposed(&self) -> bool {
        self.deposed.load(Ordering::Acquire)
    }

    /// True while memory is being reloaded after a failed commit (every input is refused).
    pub fn is_reloading(&self) -> bool {
        self.reloading.load(Ordering::Acquire)
    }

    /// Sends one input and waits for its answer (given only after its transaction committed).
    pub async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> ReducerInput) -> Result<T, ReducerError> {
        let (reply, answer) = oneshot::channel();
        self.submit(make(reply)).await?;
        answer.await.unwrap_or_else(|_| Err(ReducerError::Unavailable("The reducer stopped before answering.".into())))
    }

    /// Sends an input that needs no answer (plan ticks, manifest polls).
    pub async fn submit(&self, input: ReducerInput) -> Result<(), ReducerError> {
        if !self.is_running() {
            return Err(ReducerError::Unavailable("The control plane is not running.".into()));
        }
        self.metrics.queue_depth.inc();
        self.tx.send(input).await.map_err(|_| {
            self.metrics.queue_depth.dec();
            ReducerError::Unavailable("The control plane is shutting down.".into())
        })
    }
}

pub struct ReducerConfig {
    pub plan_tick: Duration,
    pub clock: crate::clock::Clock,
    /// The replay cache of signed agent requests: the reducer stores the signatures of the
    /// writes it commits, and restores the stored ones when it loads.
    pub signatures: Arc<ReplayCache>,
}

/// Where the reducer is, as the routes see it: in a single process always; in a cluster only
/// on the leader, from the moment it loaded state until it steps down. Cheap to clone.
#[derive(Clone, Default)]
pub struct ReducerSlot(Arc<std::sync::RwLock<Option<ReducerHandle>>>);

impl ReducerSlot {
    pub fn set(&self, handle: Option<ReducerHandle>) {
        if let Ok(mut slot) = self.0.write() {
            *slot = handle;
        }
    }

    pub fn get(&self) -> Option<ReducerHandle> {
        self.0.read().ok().and_then(|slot| slot.clone())
    }

    /// [`ReducerHandle::ask`], or `Unavailable` where no reducer runs.
    pub async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> ReducerInput) -> Result<T, ReducerError> {
        match self.get() {
            Some(handle) => handle.ask(make).await,
            None => Err(not_leading()),
        }
    }

    /// [`ReducerHandle::submit`], or `Unavailable` where no reducer runs.
    pub async fn submit(&self, input: ReducerInput) -> Result<(), ReducerError> {
        match self.get() {
            Some(handle) => handle.submit(input).await,
            None => Err(not_leading()),
        }
    }
}

fn not_leading() -> ReducerError {
    ReducerError::Unavailable("This replica is not the leader (or has just stopped leading); try again.".into())
}

/// The database as the reducer uses it: reads through the pool, writes through the writer.
pub struct Storage {
    pub store: Store,
    pub writer: Writer,
}

/// Loads state from the database and starts the reducer task. It publishes what it commits to
/// `feed` when given one (a single process; in a cluster every replica's feed reads the log).
pub async fn spawn(
    Storage { store, writer }: Storage,
    trust: SharedTrust,
    shared_fleet: SharedFleet,
    feed: Option<FeedHub>,
    metrics: Arc<Metrics>,
    config: ReducerConfig,
    shutdown: CancellationToken,
) -> Result<(ReducerHandle, JoinHandle<()>), sqlx::Error> {
    // Entries written before the log's hash chain existed are hashed before any is added.
    crate::db::chain::backfill(&store).await?;
    let (mut loaded, source) = crate::db::startup::load_from(&store).await?;
    tracing::info!(?source, rollouts = loaded.rollouts.len(), records = loaded.records.len(), "state loaded");
    config.signatures.restore(std::mem::take(&mut loaded.signatures), config.clock.now().timestamp());
    let core = Core::from_loaded(loaded, trust_now(&trust), shared_fleet.clone(), config.clock.now());
    let (tx, rx) = mpsc::channel(QUEUE);
    let running = Arc::new(AtomicBool::new(true));
    let reloading = Arc::new(AtomicBool::new(false));
    let deposed = Arc::new(AtomicBool::new(false));
    let handle = ReducerHandle {
        tx,
        metrics: metrics.clone(),
        running: running.clone(),
        reloading: reloading.clone(),
        deposed: deposed.clone(),
    };
    let clock = config.clock.clone();
    let signatures = config.signatures.clone();
    let reducer = Reducer {
        core,
        store,
        writer,
        feed,
        metrics,
        trust,
        shared_fleet,
        running,
        reloading,
        deposed,
        clock,
        signatures,
        signatures_stored_at: Instant::now(),
        signatures_purged_at: Instant::now(),
        moved_pass_at: None,
    };
    let task = tokio::spawn(reducer.run(rx, config, shutdown));
    Ok((handle, task))
}

struct Reducer {
    core: Core,
    /// Reads (loading state after a failed commit).
    store: Store,
    /// The only writer of rollout state.
    writer: Writer,
    feed: Option<FeedHub>,
    metrics: Arc<Metrics>,
    trust: SharedTrust,
    shared_fleet: SharedFleet,
    running: Arc<AtomicBool>,
    /// Set while memory is reloaded after a failed commit (`/readyz` fails meanwhile).
    reloading: Arc<AtomicBool>,
    /// Set when a commit was fenced: another replica leads.
    deposed: Arc<AtomicBool>,
    /// The one clock the reducer reads (tests move it).
    clock: crate::clock::Clock,
    /// Signatures of accepted agent writes, stored with each batch, and when a batch last
    /// stored some.
    signatures: Arc<ReplayCache>,
    signatures_stored_at: Instant,
    /// When a batch last deleted the stored signatures that expired.
    signatures_purged_at: Instant,
    /// Before this (set after every plan pass), a pass only over the rollouts hosts moved in
    /// waits ([`MOVED_PASS_SPACING`]).
    moved_pass_at: Option<Instant>,
}

fn trust_now(trust: &SharedTrust) -> Option<engine::verify::TrustRoots> {
    trust.read().ok().and_then(|t| t.as_deref().cloned())
}

/// A group whose writes are with the writer: answered when its commit comes back.
struct InFlight {
    commit: oneshot::Receiver<Committed>,
    responders: Vec<Responder>,
    gauges: Vec<Reply<()>>,
    inputs: usize,
    writes: bool,
    sent: Instant,
}

impl Reducer {
    /// The loop. Group N+1 is applied in memory while group N's transaction commits (the
    /// writer takes batches in order), so the reducer's work and SQLite's overlap; every reply
    /// still waits for its own group's commit, and a group is only written if every group
    /// before it was (see [`Writer`]).
    async fn run(mut self, mut rx: mpsc::Receiver<ReducerInput>, config: ReducerConfig, shutdown: CancellationToken) {
        // However the task ends (a panic included), senders learn that it stopped.
        let _stopped = StopFlag(self.running.clone());
        let mut tick = tokio::time::interval(config.plan_tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A first pass at start: opens what the persisted set allows, re-flags stuck hosts.
        let mut group = vec![ReducerInput::PlanTick { reply: None }];
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut stopping = false;
        // Set when the process stops before memory could be reloaded after a failed commit.
        let mut stale = false;
        // Set when a pass held back by [`MOVED_PASS_SPACING`] is due and no input came.
        let mut plan_now = false;
        let clock = self.clock.clone();
        loop {
            if !group.is_empty() || std::mem::take(&mut plan_now) {
                let sent = self.apply_group(std::mem::take(&mut group), clock.now(), in_flight.is_empty());
                in_flight.push_back(sent);
                continue;
            }
            let may_take = !stopping && in_flight.len() < PIPELINE_DEPTH;
            if !may_take && in_flight.is_empty() {
                break;
            }
            let held_back = self.moved_pass_at.filter(|_| self.core.plan_due());
            let pass_at = tokio::time::Instant::from_std(held_back.unwrap_or_else(Instant::now));
            tokio::select! {
                // Answers first: they free a pipeline slot and unblock agents.
                biased;
                committed = oldest(&mut in_flight) => {
                    if !self.settle(&mut in_flight, committed).await {
                        // Memory holds changes the database does not: nothing is answered
                        // from it until it was reloaded — unless another replica leads now,
                        // and this one stops.
                        if self.deposed.load(Ordering::Acquire) {
                            tracing::warn!("another replica leads now; this reducer stops");
                            stale = true;
                            stopping = true;
                        } else if !self.reload(&mut rx, &shutdown).await {
                            stale = true;
                            stopping = true;
                        }
                    }
                }
                () = shutdown.cancelled(), if may_take => stopping = true,
                _ = tick.tick(), if may_take => group.push(ReducerInput::PlanTick { reply: None }),
                () = tokio::time::sleep_until(pass_at), if may_take && held_back.is_some() => plan_now = true,
                input = rx.recv(), if may_take => match input {
                    Some(input) => { self.metrics.queue_depth.dec(); group.push(input) }
                    None => stopping = true,
                },
            }
            if !group.is_empty() {
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(input) => {
                            self.metrics.queue_depth.dec();
                            group.push(input);
                        }
                        Err(_) => break,
                    }
                }
            }
        }
        // Records still deferred are written, so the table is whole at rest (after a crash
        // the next start takes them from the log instead). Stale memory writes nothing.
        let mut last = self.core.batch(Pending::default(), clock.now(), true);
        self.add_signatures(&mut last, clock.now(), true);
        if !stale
            && !last.is_empty()
            && let Err(err) = self.writer.commit(last).await
        {
            tracing::warn!(%err, "cannot write the deferred records; the next start takes them from the log");
        }
        // Stop accepting; what is still queued gets a 503, nothing half-done.
        self.running.store(false, Ordering::Release);
        rx.close();
        while let Ok(input) = rx.try_recv() {
            self.metrics.queue_depth.dec();
            refuse(input, "The control plane is shutting down.");
        }
        tracing::info!("reducer stopped");
    }

    /// Applies one group in memory and hands its writes to the writer. Returns the group in
    /// flight. `nothing_ahead`: no earlier group awaits its commit.
    fn apply_group(&mut self, group: Vec<ReducerInput>, now: chrono::DateTime<Utc>, nothing_ahead: bool) -> InFlight {
        let turn = Instant::now();
        let mut pending = Pending::default();
        let mut responders: Vec<Responder> = Vec::with_capacity(group.len());
        let mut gauges = Vec::new();
        let inputs = group.len();
        for input in group {
            self.metrics.inputs.get_or_create(&Metrics::label("kind", input.kind())).inc();
            match input {
                ReducerInput::RefreshGauges { reply } => gauges.push(reply),
                ReducerInput::PlanTick { reply } => {
                    self.core.request_plan();
                    if let Some(reply) = reply {
                        responders.push(respond(reply, Ok(())));
                    }
                }
                ReducerInput::HostEvent { host, rollout_id, event, reply } => {
                    let answer = self.core.host_event(&mut pending, now, &host, &rollout_id, &event);
                    responders.push(respond(reply, answer));
                }
                ReducerInput::Heartbeat { heartbeat, reply } => {
                    let answer = self.core.heartbeat(&mut pending, now, &heartbeat);
                    responders.push(respond(reply, Ok(answer)));
                }
                ReducerInput::ManifestSetUpdated { update, reply } => {
                    let summary = self.core.manifests(&mut pending, now, *update);
                    match reply {
                        Some(reply) => responders.push(respond(reply, summary)),
                        None => {
                            if let Err(err) = summary {
                                tracing::error!(%err, "manifest set refused; the set in force stays");
                            }
                        }
                    }
                }
                ReducerInput::Archived { entry, reply } => {
                    self.core.archived(&mut pending, now, entry);
                    responders.push(respond(reply, Ok(())));
                }
                ReducerInput::Operator { action, by, reason, reply } => {
                    match self.core.operator(&mut pending, now, &action, &by, reason.as_deref()) {
                        Ok((index, message)) => responders.push(Box::new(move |committed: Option<&[LogEvent]>| {
                            let answer = match committed {
                                Some(entries) => Ok(Core::operator_outcome(entries, index, message)),
                                None => Err(not_committed()),
                            };
                            let _ = reply.send(answer);
                        })),
                        Err(err) => responders.push(respond(reply, Err(err))),
                    }
                }
            }
        }
        let started = Instant::now();
        let held_back = self.moved_pass_at.is_some_and(|at| started < at) && !self.core.full_plan_due();
        if self.core.plan_due() && !held_back {
            let full = self.core.plan(&mut pending, now);
            let took = started.elapsed();
            let histogram = if full { &self.metrics.plan_seconds } else { &self.metrics.plan_moved_seconds };
            histogram.observe(took.as_secs_f64());
            self.moved_pass_at = Some(started + took + took * MOVED_PASS_SPACING);
        }
        let mut batch = self.core.batch(pending, now, false);
        self.add_signatures(&mut batch, now, false);
        self.core.prune();
        let writes = !batch.is_empty();
        // A group that writes nothing still waits for the commits before it (its answers may
        // rest on them), so it goes through the writer's queue — unless nothing is ahead of it.
        let commit = if writes || !nothing_ahead {
            self.writer.submit(batch)
        } else {
            let (done, commit) = oneshot::channel();
            let _ = done.send(Ok(Vec::new()));
            commit
        };
        self.metrics.turn_seconds.observe(turn.elapsed().as_secs_f64());
        InFlight { commit, responders, gauges, inputs, writes, sent: Instant::now() }
    }

    /// The signatures of the agent writes accepted since the last batch go with this one (the
    /// writes they carried are in it or an earlier one); expired ones are deleted meanwhile.
    /// A group that writes nothing else (heartbeats of a settled fleet) does not commit a
    /// transaction for its signatures alone more than once a [`SIGNATURES_EVERY`]: their
    /// requests changed nothing, so one replayed after a crash changes nothing either.
    fn add_signatures(&mut self, batch: &mut store::Batch, now: chrono::DateTime<Utc>, stopping: bool) {
        if batch.is_empty() && !stopping && self.signatures_stored_at.elapsed() < SIGNATURES_EVERY {
            return;
        }
        batch.signatures = self.signatures.take_pending();
        if !batch.signatures.is_empty() {
            self.signatures_stored_at = Instant::now();
        }
        if self.signatures_purged_at.elapsed() >= PURGE_SIGNATURES_EVERY {
            batch.signatures_expire_before = Some(now.timestamp());
            self.signatures_purged_at = Instant::now();
        }
    }

    /// The oldest group's commit came back: answer it. After a failure every later group in
    /// flight is refused too (it was built on the lost changes) and false is returned: memory
    /// is ahead of the database and must be reloaded before anything else is answered.
    async fn settle(&mut self, in_flight: &mut VecDeque<InFlight>, committed: Committed) -> bool {
        let Some(group) = in_flight.pop_front() else { return true };
        if group.writes {
            self.metrics.tx_seconds.observe(group.sent.elapsed().as_secs_f64());
            self.metrics.tx_inputs.observe(group.inputs as f64);
        }
        match committed {
            Ok(entries) => {
                for responder in group.responders {
                    responder(Some(&entries));
                }
                if let Some(feed) = &self.feed {
                    feed.publish(&entries);
                }
                self.answer_gauges(group.gauges);
                true
            }
            Err(err) => {
                if err.is_fenced() {
                    tracing::error!(%err, "commit fenced; answering 503");
                    self.deposed.store(true, Ordering::Release);
                } else {
                    tracing::error!(%err, "commit failed; answering 503 and reloading state from the database");
                }
                let mut refused = vec![group];
                while let Some(mut later) = in_flight.pop_front() {
                    let _ = (&mut later.commit).await;
                    refused.push(later);
                }
                for group in refused {
                    for responder in group.responders {
                        responder(None);
                    }
                    self.answer_gauges(group.gauges);
                }
                false
            }
        }
    }

    fn answer_gauges(&self, replies: Vec<Reply<()>>) {
        if replies.is_empty() {
            return;
        }
        self.update_gauges();
        for reply in replies {
            let _ = reply.send(Ok(()));
        }
    }

    /// Rebuilds memory from the database after a failed commit, retrying (100 ms doubling to
    /// 5 s) for as long as the database refuses; meanwhile every input is answered 503, since
    /// memory holds changes that were never stored (answering from it could call an event
    /// that is in no log row a `duplicate`). Then the writer accepts batches again. False if
    /// the process stopped first.
    async fn reload(&mut self, rx: &mut mpsc::Receiver<ReducerInput>, shutdown: &CancellationToken) -> bool {
        let mut wait = RELOAD_FIRST_WAIT;
        self.reloading.store(true, Ordering::Release);
        loop {
            match crate::db::startup::load(&self.store).await {
                Ok(mut loaded) => {
                    self.signatures.restore(std::mem::take(&mut loaded.signatures), self.clock.now().timestamp());
                    self.core =
                        Core::from_loaded(loaded, trust_now(&self.trust), self.shared_fleet.clone(), self.clock.now());
                    self.writer.reset();
                    self.reloading.store(false, Ordering::Release);
                    tracing::info!("state reloaded from the database; accepting inputs again");
                    return true;
                }
                Err(err) => tracing::error!(
                    %err,
                    retry_in = ?wait,
                    "cannot reload state after a failed commit; refusing every input until it loads"
                ),
            }
            let retry = tokio::time::sleep(wait);
            tokio::pin!(retry);
            loop {
                tokio::select! {
                    () = &mut retry => break,
                    () = shutdown.cancelled() => return false,
                    input = rx.recv() => match input {
                        Some(input) => {
                            self.metrics.queue_depth.dec();
                            refuse(input, "The control plane is reloading its state after a failed write; try again.");
                        }
                        None => return false,
                    },
                }
            }
            wait = (wait * 2).min(RELOAD_LAST_WAIT);
        }
    }

    fn update_gauges(&self) {
        let (by_state, by_gate, stuck) = self.core.gauges();
        self.metrics.stuck.set(stuck);
        for (state, n) in by_state {
            self.metrics.hosts_by_state.get_or_create(&Metrics::label("state", state.as_str())).set(n);
        }
        for gate in Gate::ALL {
            self.metrics
                .holds_by_gate
                .get_or_create(&Metrics::label("gate", gate.as_str()))
                .set(by_gate.get(&gate).copied().unwrap_or(0));
        }
    }
}

/// Clears the reducer's `running` flag when dropped: on a normal stop and on a panic alike.
struct StopFlag(Arc<AtomicBool>);

impl Drop for StopFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The commit of the oldest group in flight (pending forever when none is, so `select!` can
/// guard it).
async fn oldest(in_flight: &mut VecDeque<InFlight>) -> Committed {
    match in_flight.front_mut() {
        Some(group) => (&mut group.commit).await.unwrap_or(Err(WriteError::Stopped)),
        None => std::future::pending().await,
    }
}

fn not_committed() -> ReducerError {
    ReducerError::Unavailable("The change could not be stored; try again.".into())
}

/// A responder that sends `answer` once the group committed, or 503 if it did not.
fn respond<T: Send + 'static>(reply: Reply<T>, answer: Result<T, ReducerError>) -> Responder {
    Box::new(move |committed: Option<&[LogEvent]>| {
        let _ = reply.send(if committed.is_some() { answer } else { Err(not_committed()) });
    })
}

fn refuse(input: ReducerInput, why: &str) {
    let err = || ReducerError::Unavailable(why.to_owned());
    match input {
        ReducerInput::HostEvent { reply, .. } => drop(reply.send(Err(err()))),
        ReducerInput::Heartbeat { reply, .. } => drop(reply.send(Err(err()))),
        ReducerInput::ManifestSetUpdated { reply: Some(reply), .. } => drop(reply.send(Err(err()))),
        ReducerInput::Operator { reply, .. } => drop(reply.send(Err(err()))),
        ReducerInput::Archived { reply, .. } => drop(reply.send(Err(err()))),
        ReducerInput::PlanTick { reply: Some(reply) } => drop(reply.send(Err(err()))),
        ReducerInput::RefreshGauges { reply } => drop(reply.send(Err(err()))),
        ReducerInput::ManifestSetUpdated { reply: None, .. } | ReducerInput::PlanTick { reply: None } => {}
    }
}
