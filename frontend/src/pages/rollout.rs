//! One rollout: a column per wave with a cell per host coloured by state, the actions an
//! operator can take, and the rollout's live event log. Everything updates from the feed.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_params_map;
use std::collections::HashMap;

use shared::api::{HostCell, LogEvent, OperatorAction, RolloutDetail, RolloutHeader, WaveView};
use shared::log::LogKind;
use shared::state::{HostState, RolloutState};

use crate::api;
use crate::components::{ErrorNotice, RolloutBadge, StateBar, counts_text, host_state_class};
use crate::feed::{self, FeedIndicator, FeedStatus};

/// The kinds the log can be filtered by.
const FILTER_KINDS: [LogKind; 7] = [
    LogKind::HostEvent,
    LogKind::DispatchQueued,
    LogKind::HostHeld,
    LogKind::WaveAdvanced,
    LogKind::RolloutStateChanged,
    LogKind::OperatorAction,
    LogKind::HostStuck,
];

/// Log entries loaded at a time (the newest up to the snapshot, then older pages on demand).
const LOG_PAGE: u32 = 200;
/// Log entries kept on screen; past it the oldest go (and can be loaded again).
const LOG_LIMIT: usize = 2000;
/// Waves with more hosts than this show only the hosts that are not Converged (plus a count),
/// so a 10,000-host wave stays light.
const DENSE_LIMIT: usize = 1500;

/// One wave column: what does not change while the page is open.
#[derive(Clone)]
struct WaveMeta {
    index: Option<u32>,
    soak_minutes: u64,
    requires_approval: bool,
    cells: Vec<(String, RwSignal<HostCell>)>,
}

/// The page's live model: one signal per host cell, so a feed entry re-renders one cell (and
/// its wave's counts), never the whole page.
#[derive(Clone, Copy)]
struct Live {
    header: RwSignal<Option<RolloutHeader>>,
    waves: RwSignal<Vec<WaveMeta>>,
    cells: StoredValue<HashMap<String, RwSignal<HostCell>>>,
}

impl Live {
    fn new() -> Live {
        Live { header: RwSignal::new(None), waves: RwSignal::new(Vec::new()), cells: StoredValue::new(HashMap::new()) }
    }

    fn load(&self, detail: RolloutDetail) {
        let mut map = HashMap::new();
        let waves = detail
            .waves
            .into_iter()
            .map(|w: WaveView| {
                let cells = w
                    .hosts
                    .into_iter()
                    .map(|h| {
                        let name = h.hostname.to_string();
                        let signal = RwSignal::new(h);
                        map.insert(name.clone(), signal);
                        (name, signal)
                    })
                    .collect();
                WaveMeta { index: w.index, soak_minutes: w.soak_minutes, requires_approval: w.requires_approval, cells }
            })
            .collect();
        self.cells.set_value(map);
        self.waves.set(waves);
        self.header.set(Some(detail.header));
    }

    /// Applies one feed entry of this rollout.
    fn apply(&self, entry: &LogEvent) {
        let Ok(carried) = entry.carried::<HostCell, RolloutHeader>() else { return };
        if let Some(mut cell) = carried.record {
            if cell.state != HostState::Pending {
                cell.waiting_on = None;
            }
            if let Some(signal) = self.cells.with_value(|m| m.get(cell.hostname.as_str()).copied()) {
                signal.set(cell);
            }
        }
        if let Some(header) = carried.rollout {
            self.header.set(Some(header));
        }
    }
}

#[component]
fn Cell(cell: RwSignal<HostCell>, selected: RwSignal<Option<String>>) -> impl IntoView {
    let name = cell.with_untracked(|c| c.hostname.to_string());
    let (pick, attr) = (name.clone(), name.clone());
    view! {
        <button
            class=move || cell.with(|h| format!("cell {}{}{}", host_state_class(h.state), if h.stuck { " stuck" } else { "" }, if h.excused { " excused" } else { "" }))
            title=move || cell.with(|h| {
                let why = h.waiting_on.as_ref().map(|w| format!(" — waiting on {}: {}", w.gate, w.reason)).unwrap_or_default();
                format!("{}: {}{why}{}", h.hostname, h.state, if h.stuck { " — STUCK" } else { "" })
            })
            data-host=attr
            data-state=move || cell.with(|h| h.state.as_str())
            on:click=move |_| selected.set(Some(pick.clone()))
        >
            <span class="cell-name">{name}</span>
        </button>
    }
}

/// Runs an operator action with an optional reason; the label names it in the notice that
/// reports the outcome.
type Act = Callback<(OperatorAction, Option<String>, String)>;

#[component]
fn WaveColumn(
    meta: WaveMeta,
    live: Live,
    selected: RwSignal<Option<String>>,
    can_act: Signal<bool>,
    act: Act,
) -> impl IntoView {
    let cells: Vec<RwSignal<HostCell>> = meta.cells.iter().map(|(_, c)| *c).collect();
    let total = cells.len();
    let counts = {
        let cells = cells.clone();
        Memo::new(move |_| {
            let mut counts = std::collections::BTreeMap::new();
            for c in &cells {
                *counts.entry(c.with(|h| h.state)).or_insert(0u64) += 1;
            }
            counts
        })
    };
    let percent = move || {
        let converged = counts.with(|c| c.get(&HostState::Converged).copied().unwrap_or(0));
        if total == 0 { 0.0 } else { (converged as f64 * 1000.0 / total as f64).round() / 10.0 }
    };
    let index = meta.index;
    let is_current = move || live.header.with(|h| h.as_ref().map(|h| h.current_wave) == index && index.is_some());
    let approved =
        move || live.header.with(|h| h.as_ref().zip(index).is_some_and(|(h, i)| h.approved_waves.contains(&i)));
    let terminal = move || live.header.with(|h| h.as_ref().is_some_and(|h| h.state.is_terminal()));
    let rid = move || live.header.with(|h| h.as_ref().map(|h| h.rollout_id.clone()));
    let title = index.map_or("Unstaged".to_owned(), |i| format!("Wave {i}"));
    let requires = meta.requires_approval;
    let dense = total > DENSE_LIMIT;
    let approve_button = move || {
        let i = index?;
        (requires && !approved() && !terminal() && can_act.get()).then(|| {
            view! {
                <button class="button approve" id=format!("approve-{i}")
                    on:click=move |_| if let Some(rollout_id) = rid() {
                        act.run((OperatorAction::ApproveWave { rollout_id, wave: i }, None, format!("Approve wave {i}")))
                    }>
                    {format!("Approve wave {i}")}
                </button>
            }
        })
    };
    let shown = {
        let all = meta.cells.clone();
        move || -> Vec<(String, RwSignal<HostCell>)> {
            if dense {
                all.iter().filter(|(_, c)| c.with(|h| h.state != HostState::Converged)).cloned().collect()
            } else {
                all.clone()
            }
        }
    };
    view! {
        <div class=move || if is_current() { "wave wave-current" } else { "wave" } data-wave=index.map(|i| i.to_string()).unwrap_or("unstaged".into())>
            <div class="wave-head">
                <h3>{title}{move || is_current().then(|| view! { <span class="pill pill-live">"current"</span> })}</h3>
                <p class="muted small">
                    {format!("soak {} min", meta.soak_minutes)}
                    {move || requires.then(|| if approved() { " · approved" } else { " · needs approval" })}
                </p>
                {move || view! { <StateBar counts=counts.get() /> }}
                <p class="small"><strong class="pct">{move || format!("{}%", percent())}</strong>" converged · "<span class="muted">{move || counts.with(counts_text)}</span></p>
                {approve_button}
            </div>
            <div class={if total > 200 { "cells cells-dense" } else { "cells" }}>
                <For each=shown key=|(name, _)| name.clone() let((_, cell))>
                    <Cell cell=cell selected=selected />
                </For>
                {move || dense.then(|| {
                    let converged = counts.with(|c| c.get(&HostState::Converged).copied().unwrap_or(0));
                    (converged > 0).then(|| view! { <span class="muted small">{format!("+ {converged} converged")}</span> })
                })}
            </div>
        </div>
    }
}

#[component]
pub fn RolloutPage() -> impl IntoView {
    let params = use_params_map();
    let id = params.with_untracked(|p| p.get("id").unwrap_or_default());
    let live = Live::new();
    let load_error: RwSignal<Option<String>> = RwSignal::new(None);
    let log: RwSignal<Vec<LogEvent>> = RwSignal::new(Vec::new());
    // Whether entries older than the oldest shown may exist.
    let older = RwSignal::new(false);
    let status = RwSignal::new(FeedStatus::Connecting);
    let selected: RwSignal<Option<String>> = RwSignal::new(None);
    let notice: RwSignal<Option<Result<String, String>>> = RwSignal::new(None);
    let session = crate::session::Session::current();
    let can_act = Signal::derive(move || session.is_some_and(|s| s.can_act()));

    let owner = Owner::current();
    {
        let id = id.clone();
        spawn_local(async move {
            let snapshot = match api::rollout(&id).await {
                Ok(d) => d,
                Err(err) => {
                    load_error.set(Some(err.to_string()));
                    return;
                }
            };
            let as_of = snapshot.as_of;
            live.load(snapshot);
            // The newest entries up to the snapshot; the feed continues from there.
            if let Ok(page) = api::rollout_events_before(&id, as_of.saturating_add(1), LOG_PAGE).await {
                older.set(page.events.len() == LOG_PAGE as usize);
                log.set(page.events);
            }
            let on_entry = move |entry: LogEvent| {
                if entry.rollout_id.as_ref().map(|r| r.as_str()) != Some(id.as_str()) {
                    return;
                }
                live.apply(&entry);
                log.update(|l| {
                    l.push(entry);
                    if l.len() > LOG_LIMIT {
                        l.remove(0);
                        older.set(true);
                    }
                });
            };
            if let Some(owner) = owner {
                owner.with(|| feed::subscribe(Some(as_of), status, on_entry));
            }
        });
    }

    let act: Act = Callback::new(move |(action, reason, label): (OperatorAction, Option<String>, String)| {
        notice.set(None);
        spawn_local(async move {
            let result = api::act(&action, reason).await;
            notice.set(Some(result.map(|_| format!("{label}: done.")).map_err(|e| format!("{label}: {e}"))));
        });
    });

    let header = move || {
        let h = live.header.get()?;
        let rid = h.rollout_id.to_string();
        let waves = live.waves.with(|w| w.iter().filter(|w| w.index.is_some()).count()) as u32;
        let next = h.current_wave + 1;
        let id = h.rollout_id.clone();
        let halted_text = h
            .halt
            .as_ref()
            .filter(|_| h.state == RolloutState::Halted)
            .map(|halt| format!("Halted: {} failed — {}", halt.host, halt.reason));
        let button = move |css_id: &'static str, label: &'static str, action: OperatorAction, quiet: bool| {
            view! {
                <button class=if quiet { "button button-quiet" } else { "button" } id=css_id
                    on:click=move |_| act.run((action.clone(), None, label.to_owned()))>{label}</button>
            }
        };
        let actions = can_act.get().then(|| {
            view! {
                {(h.state == RolloutState::Active).then(|| button("pause", "Pause", OperatorAction::Pause { rollout_id: id.clone() }, true))}
                {(h.state == RolloutState::Paused).then(|| button("resume", "Resume", OperatorAction::Resume { rollout_id: id.clone() }, false))}
                {(h.state == RolloutState::Halted).then(|| button("clear-failure", "Clear failure", OperatorAction::ClearFailure { rollout_id: id.clone() }, false))}
                {(!h.state.is_terminal() && next < waves).then(|| {
                    let rollout_id = id.clone();
                    view! {
                        <button class="button button-quiet" id="promote" on:click=move |_| {
                            let force = web_sys::window()
                                .and_then(|w| w.confirm_with_message(&format!("Promote to wave {next}? OK forces it even if the current wave is not complete (logged as an override); Cancel promotes only if it is.")).ok())
                                .unwrap_or(false);
                            let action = OperatorAction::Promote { rollout_id: rollout_id.clone(), to_wave: next, force };
                            act.run((action, None, format!("Promote to wave {next}")));
                        }>{format!("Promote to wave {next}")}</button>
                    }
                })}
            }
        });
        Some(view! {
            <div class="rollout-head">
                <div>
                    <h1 id="rollout-title">{rid.clone()}</h1>
                    <p class="lede">
                        <RolloutBadge state=h.state />
                        " channel " <strong>{h.channel.to_string()}</strong>
                        " · current wave " <strong id="current-wave">{h.current_wave}</strong>
                        {format!(" of {waves}")}
                    </p>
                    {halted_text.map(|t| view! { <p class="notice notice-error" id="halt-reason">{t}</p> })}
                </div>
                <div class="actions">
                    <FeedIndicator status=status />
                    {actions}
                </div>
            </div>
        })
    };

    let host_panel = move || {
        let name = selected.get()?;
        let cell = live.cells.with_value(|m| m.get(&name).copied())?;
        let h = cell.get();
        let channel = live.header.with(|h| h.as_ref().map(|h| h.channel.clone()))?;
        let closure = h.target_closure.to_string();
        let quarantine = OperatorAction::Quarantine { channel, closure: h.target_closure.clone() };
        let reason = format!("quarantined from {name} on the dashboard");
        Some(view! {
            <div class="card host-panel" id="host-panel">
                <h3>{name.clone()}" "<leptos_router::components::A href=format!("/hosts/{name}") attr:class="small" attr:id="host-details">"details →"</leptos_router::components::A></h3>
                <p><span class=format!("dot {}", host_state_class(h.state))></span>{h.state.as_str()}{h.stuck.then_some(" · stuck")}{h.excused.then_some(" · excused")}</p>
                <p class="small muted">"target "<code>{closure.clone()}</code></p>
                {h.current_closure.map(|c| view! { <p class="small muted">"running "<code>{c.to_string()}</code></p> })}
                {h.waiting_on.map(|w| view! { <p class="small" id="waiting-on">"Why not updated: "<strong>{w.gate.as_str()}</strong>" — "{w.reason}</p> })}
                {can_act.get().then(|| view! {
                    <button class="button button-danger" id="quarantine-closure" on:click=move |_| act.run((quarantine.clone(), Some(reason.clone()), "Quarantine".into()))>"Quarantine this closure"</button>
                })}
            </div>
        })
    };

    let load_older = {
        let id = id.clone();
        move |_| {
            let id = id.clone();
            let Some(first) = log.with_untracked(|l| l.first().map(|e| e.seq)) else { return };
            spawn_local(async move {
                if let Ok(page) = api::rollout_events_before(&id, first, LOG_PAGE).await {
                    older.set(page.events.len() == LOG_PAGE as usize);
                    log.update(|l| {
                        let mut events = page.events;
                        events.append(l);
                        *l = events;
                    });
                }
            });
        }
    };

    let host_filter = RwSignal::new(String::new());
    let kind_filter = RwSignal::new(String::new());
    let log_view = move || {
        let host = host_filter.get();
        let kind = kind_filter.get();
        log.get()
            .into_iter()
            .rev()
            .filter(|e| host.is_empty() || e.host.as_ref().is_some_and(|h| h.as_str().contains(host.as_str())))
            .filter(|e| kind.is_empty() || e.kind.as_str() == kind)
            .map(|e| {
                let time = e.ts.format("%H:%M:%S").to_string();
                view! {
                    <li class="log-entry" data-seq=e.seq.to_string()>
                        <span class="log-time">{time}</span>
                        <span class="log-host">{e.host.as_ref().map(|h| h.to_string()).unwrap_or_default()}</span>
                        <span class="log-text">{crate::log::describe(&e)}</span>
                    </li>
                }
            })
            .collect_view()
    };

    view! {
        <section class="page" id="page-rollout">
            {move || load_error.get().map(|e| view! { <ErrorNotice message=e /> })}
            {header}
            {move || notice.get().map(|n| match n {
                Ok(m) => view! { <p class="notice notice-ok" id="action-result" role="status">{m}</p> }.into_any(),
                Err(m) => view! { <p class="notice notice-error" id="action-result" role="alert">{m}</p> }.into_any(),
            })}
            <div class="rollout-body">
                <div class="waves" id="waves">
                    {move || live.waves.get().into_iter().map(|meta| view! { <WaveColumn meta=meta live=live selected=selected can_act=can_act act=act /> }).collect_view()}
                </div>
                <aside class="side">
                    {host_panel}
                    <div class="card log">
                        <h3>"Event log"</h3>
                        <div class="log-filters">
                            <input id="log-host" placeholder="host" prop:value=move || host_filter.get() on:input=move |ev| host_filter.set(event_target_value(&ev)) />
                            <select id="log-kind" on:change=move |ev| kind_filter.set(event_target_value(&ev))>
                                <option value="">"all kinds"</option>
                                {FILTER_KINDS.map(|k| view! { <option value=k.as_str()>{k.as_str()}</option> }).collect_view()}
                            </select>
                        </div>
                        <ol class="log-list" id="event-log">{log_view}</ol>
                        {move || older.get().then(|| view! { <button class="button small" id="log-older" on:click=load_older.clone()>"Older entries"</button> })}
                    </div>
                </aside>
            </div>
        </section>
    }
}
