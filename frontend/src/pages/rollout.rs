//! One rollout: a column per wave with a cell per host coloured by state, the actions an
//! operator can take, and the rollout's live event log. Everything updates from the feed.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_params_map;
use serde_json::json;
use shared::api::{HostCell, LogEvent, RolloutDetail, RolloutHeader, WaveView};
use shared::state::{HostState, RolloutState};

use crate::api;
use crate::components::{ErrorNotice, RolloutBadge, StateBar, counts_text, host_state_class};
use crate::feed::{self, FeedIndicator, FeedStatus};

/// Log entries kept on screen.
const LOG_LIMIT: usize = 400;
/// Waves with more hosts than this show only the hosts that are not Converged (plus a count),
/// so a 10,000-host wave stays light.
const DENSE_LIMIT: usize = 1500;

fn recount(wave: &mut WaveView) {
    wave.counts.clear();
    for h in &wave.hosts {
        *wave.counts.entry(h.state).or_insert(0) += 1;
    }
    let converged = wave.counts.get(&HostState::Converged).copied().unwrap_or(0);
    wave.converged_percent =
        if wave.hosts.is_empty() { 0.0 } else { (converged as f64 * 1000.0 / wave.hosts.len() as f64).round() / 10.0 };
}

/// Applies one feed entry to the rendered snapshot.
fn apply(detail: &mut RolloutDetail, entry: &LogEvent) {
    if entry.rollout_id.as_deref() != Some(detail.header.rollout_id.as_str()) {
        return;
    }
    if let Some(Ok(mut cell)) = entry.payload.get("record").map(|r| serde_json::from_value::<HostCell>(r.clone())) {
        if cell.state != HostState::Pending {
            cell.waiting_on = None;
        }
        for wave in &mut detail.waves {
            if let Some(slot) = wave.hosts.iter_mut().find(|h| h.hostname == cell.hostname) {
                *slot = cell;
                recount(wave);
                break;
            }
        }
    }
    if let Some(Ok(header)) = entry.payload.get("rollout").map(|r| serde_json::from_value::<RolloutHeader>(r.clone())) {
        for wave in &mut detail.waves {
            wave.approved = wave.index.is_some_and(|i| header.approved_waves.contains(&i));
        }
        detail.header = header;
    }
    detail.as_of = detail.as_of.max(entry.seq);
}

fn describe(entry: &LogEvent) -> String {
    let p = &entry.payload;
    match entry.kind.as_str() {
        "HostEvent" => {
            let kind = p["event"]["kind"].as_str().unwrap_or("?");
            let synth = if p["synthesized"] == true { " (from heartbeat)" } else { "" };
            format!("{kind}{synth}: {} → {}", p["from"].as_str().unwrap_or(""), p["to"].as_str().unwrap_or(""))
        }
        "HostHeld" => format!("held by {}: {}", p["gate"].as_str().unwrap_or(""), p["reason"].as_str().unwrap_or("")),
        "DispatchQueued" => "dispatch queued".into(),
        "WaveAdvanced" => format!("wave {} → {} ({})", p["from"], p["to"], p["by"].as_str().unwrap_or("")),
        "RolloutStateChanged" => {
            format!("rollout {} → {}", p["from"].as_str().unwrap_or(""), p["to"].as_str().unwrap_or(""))
        }
        "OperatorAction" => format!(
            "{} by {}{}",
            p["action"]["action"].as_str().unwrap_or("action"),
            p["operator"].as_str().unwrap_or("?"),
            p["reason"].as_str().map(|r| format!(": {r}")).unwrap_or_default()
        ),
        other => other.to_owned(),
    }
}

#[component]
pub fn RolloutPage() -> impl IntoView {
    let params = use_params_map();
    let id = params.with_untracked(|p| p.get("id").unwrap_or_default());
    let detail: RwSignal<Option<RolloutDetail>> = RwSignal::new(None);
    let load_error: RwSignal<Option<String>> = RwSignal::new(None);
    let log: RwSignal<Vec<LogEvent>> = RwSignal::new(Vec::new());
    let status = RwSignal::new(FeedStatus::Connecting);
    let selected: RwSignal<Option<String>> = RwSignal::new(None);
    let notice: RwSignal<Option<Result<String, String>>> = RwSignal::new(None);
    let me = LocalResource::new(api::whoami);
    let can_act = move || matches!(me.get(), Some(Ok(w)) if w.role == "operator");

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
            detail.set(Some(snapshot));
            if let Ok(page) = api::rollout_events(&id, 0, 1000).await {
                let mut events: Vec<LogEvent> = page.events.into_iter().filter(|e| e.seq <= as_of).collect();
                let start = events.len().saturating_sub(LOG_LIMIT);
                events.drain(..start);
                log.set(events);
            }
            let on_entry = move |entry: LogEvent| {
                if entry.rollout_id.as_deref() != Some(id.as_str()) {
                    return;
                }
                detail.update(|d| {
                    if let Some(d) = d {
                        apply(d, &entry);
                    }
                });
                log.update(|l| {
                    l.push(entry);
                    if l.len() > LOG_LIMIT {
                        l.remove(0);
                    }
                });
            };
            if let Some(owner) = owner {
                owner.with(|| feed::subscribe(as_of, status, on_entry));
            }
        });
    }

    let act = move |path: String, body: serde_json::Value, label: String| {
        notice.set(None);
        spawn_local(async move {
            let result = api::act(&path, body).await;
            notice.set(Some(result.map(|_| format!("{label}: done.")).map_err(|e| format!("{label}: {e}"))));
        });
    };

    let header = move || {
        detail.get().map(|d| {
            let h = d.header.clone();
            let rid = h.rollout_id.to_string();
            let waves = d.waves.iter().filter(|w| w.index.is_some()).count() as u32;
            let next = h.current_wave + 1;
            let base = format!("/api/v1/rollouts/{rid}");
            let (b1, b2, b3, b4) = (base.clone(), base.clone(), base.clone(), base);
            let halted_text = h.halt.as_ref().map(|halt| format!("Halted: {} failed — {}", halt.host, halt.reason));
            view! {
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
                        <Show when=can_act>
                            {
                                let (b1, b2, b3, b4) = (b1.clone(), b2.clone(), b3.clone(), b4.clone());
                                view! {
                                    {(h.state == RolloutState::Active).then(|| { let p = format!("{b1}/pause"); view! { <button class="button button-quiet" id="pause" on:click=move |_| act(p.clone(), json!({}), "Pause".into())>"Pause"</button> } })}
                                    {(h.state == RolloutState::Paused).then(|| { let p = format!("{b2}/resume"); view! { <button class="button" id="resume" on:click=move |_| act(p.clone(), json!({}), "Resume".into())>"Resume"</button> } })}
                                    {(h.state == RolloutState::Halted).then(|| { let p = format!("{b3}/clear-failure"); view! { <button class="button" id="clear-failure" on:click=move |_| act(p.clone(), json!({}), "Clear failure".into())>"Clear failure"</button> } })}
                                    {(!h.state.is_terminal() && next < waves).then(|| {
                                        let p = format!("{b4}/promote");
                                        view! {
                                            <button class="button button-quiet" id="promote" on:click=move |_| {
                                                let force = web_sys::window()
                                                    .and_then(|w| w.confirm_with_message(&format!("Promote to wave {next}? OK forces it even if the current wave is not complete (logged as an override); Cancel promotes only if it is.")).ok())
                                                    .unwrap_or(false);
                                                act(p.clone(), json!({"toWave": next, "force": force}), format!("Promote to wave {next}"));
                                            }>{format!("Promote to wave {next}")}</button>
                                        }
                                    })}
                                }
                            }
                        </Show>
                    </div>
                </div>
            }
        })
    };

    let waves = move || {
        detail.get().map(|d| {
            let rid = d.header.rollout_id.to_string();
            let current = d.header.current_wave;
            let terminal = d.header.state.is_terminal();
            d.waves
                .into_iter()
                .map(|w| {
                    let is_current = w.index == Some(current);
                    let title = match w.index {
                        Some(i) => format!("Wave {i}"),
                        None => "Unstaged".into(),
                    };
                    let approve = (w.requires_approval && !w.approved && !terminal)
                        .then_some(w.index)
                        .flatten()
                        .map(|i| {
                            let path = format!("/api/v1/rollouts/{rid}/approve");
                            view! {
                                <Show when=can_act>
                                    {
                                        let path = path.clone();
                                        view! { <button class="button approve" id=format!("approve-{i}") on:click=move |_| act(path.clone(), json!({"wave": i}), format!("Approve wave {i}"))>{format!("Approve wave {i}")}</button> }
                                    }
                                </Show>
                            }
                        });
                    let approval = if w.requires_approval {
                        if w.approved { "approved" } else { "needs approval" }
                    } else {
                        ""
                    };
                    let total = w.hosts.len();
                    let dense = total > DENSE_LIMIT;
                    let shown: Vec<HostCell> = if dense { w.hosts.iter().filter(|h| h.state != HostState::Converged).cloned().collect() } else { w.hosts.clone() };
                    let hidden = total - shown.len();
                    view! {
                        <div class={if is_current { "wave wave-current" } else { "wave" }} data-wave=w.index.map(|i| i.to_string()).unwrap_or("unstaged".into())>
                            <div class="wave-head">
                                <h3>{title}{is_current.then(|| view! { <span class="pill pill-live">"current"</span> })}</h3>
                                <p class="muted small">{format!("soak {} min", w.soak_minutes)}{(!approval.is_empty()).then(|| format!(" · {approval}"))}</p>
                                <StateBar counts=w.counts.clone() />
                                <p class="small"><strong class="pct">{format!("{}%", w.converged_percent)}</strong>" converged · "<span class="muted">{counts_text(&w.counts)}</span></p>
                                {approve}
                            </div>
                            <div class={if total > 200 { "cells cells-dense" } else { "cells" }}>
                                {shown.into_iter().map(|h| {
                                    let name = h.hostname.to_string();
                                    let why = h.waiting_on.as_ref().map(|w| format!(" — waiting on {}: {}", w.gate, w.reason)).unwrap_or_default();
                                    let tip = format!("{name}: {}{why}{}", h.state, if h.stuck { " — STUCK" } else { "" });
                                    let class = format!("cell {}{}{}", host_state_class(h.state), if h.stuck { " stuck" } else { "" }, if h.excused { " excused" } else { "" });
                                    let (pick, attr) = (name.clone(), name.clone());
                                    view! {
                                        <button class=class title=tip data-host=attr data-state=h.state.as_str() on:click=move |_| selected.set(Some(pick.clone()))>
                                            <span class="cell-name">{name}</span>
                                        </button>
                                    }
                                }).collect_view()}
                                {(hidden > 0).then(|| view! { <span class="muted small">{format!("+ {hidden} converged")}</span> })}
                            </div>
                        </div>
                    }
                })
                .collect_view()
        })
    };

    let host_panel = move || {
        let name = selected.get()?;
        let d = detail.get()?;
        let cell = d.waves.iter().flat_map(|w| w.hosts.iter()).find(|h| h.hostname.as_str() == name)?.clone();
        let channel = d.header.channel.to_string();
        let closure = cell.target_closure.to_string();
        let body = json!({"channel": channel, "closure": closure, "reason": format!("quarantined from {name} on the dashboard")});
        Some(view! {
            <div class="card host-panel" id="host-panel">
                <h3>{name.clone()}</h3>
                <p><span class=format!("dot {}", host_state_class(cell.state))></span>{cell.state.as_str()}{cell.stuck.then_some(" · stuck")}{cell.excused.then_some(" · excused")}</p>
                <p class="small muted">"target "<code>{closure.clone()}</code></p>
                {cell.current_closure.map(|c| view! { <p class="small muted">"running "<code>{c.to_string()}</code></p> })}
                {cell.waiting_on.map(|w| view! { <p class="small" id="waiting-on">"Why not updated: "<strong>{w.gate.as_str()}</strong>" — "{w.reason}</p> })}
                <Show when=can_act>
                    {
                        let body = body.clone();
                        view! { <button class="button button-danger" id="quarantine-closure" on:click=move |_| act("/api/v1/quarantines".into(), body.clone(), "Quarantine".into())>"Quarantine this closure"</button> }
                    }
                </Show>
            </div>
        })
    };

    let host_filter = RwSignal::new(String::new());
    let kind_filter = RwSignal::new(String::new());
    let log_view = move || {
        let host = host_filter.get();
        let kind = kind_filter.get();
        log.get()
            .into_iter()
            .rev()
            .filter(|e| host.is_empty() || e.host.as_deref().is_some_and(|h| h.contains(host.as_str())))
            .filter(|e| kind.is_empty() || e.kind == kind)
            .take(200)
            .map(|e| {
                let time = e.ts.format("%H:%M:%S").to_string();
                view! {
                    <li class="log-entry" data-seq=e.seq.to_string()>
                        <span class="log-time">{time}</span>
                        <span class="log-host">{e.host.clone().unwrap_or_default()}</span>
                        <span class="log-text">{describe(&e)}</span>
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
                <div class="waves" id="waves">{waves}</div>
                <aside class="side">
                    {host_panel}
                    <div class="card log">
                        <h3>"Event log"</h3>
                        <div class="log-filters">
                            <input id="log-host" placeholder="host" prop:value=move || host_filter.get() on:input=move |ev| host_filter.set(event_target_value(&ev)) />
                            <select id="log-kind" on:change=move |ev| kind_filter.set(event_target_value(&ev))>
                                <option value="">"all kinds"</option>
                                {["HostEvent", "DispatchQueued", "HostHeld", "WaveAdvanced", "RolloutStateChanged", "OperatorAction", "HostStuck"].map(|k| view! { <option value=k>{k}</option> }).collect_view()}
                            </select>
                        </div>
                        <ol class="log-list" id="event-log">{log_view}</ol>
                    </div>
                </aside>
            </div>
        </section>
    }
}
