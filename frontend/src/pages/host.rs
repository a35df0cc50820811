//! One host, for finding out what happened to it: where it is, what it runs, when it came
//! and went, whether it is suspended (with the operator's suspend and resume), its records
//! across rollouts with why each is not updated (and a quarantine of a record's closure), and
//! its events in full: probe verdicts with their reasons, exit codes and the stderr tail of a
//! failed activation, deferrals, who acted.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;
use shared::api::{LogEvent, OperatorAction};
use shared::log::{LogEntry, LogKind};
use shared::state::HostState;

use crate::api;
use crate::components::{CallErrorNotice, SuspendDialog, TimeStamp, host_state_class, waiting_text};

/// Online/offline changes listed (the newest).
const PRESENCE_SHOWN: usize = 10;

#[component]
pub fn HostPage() -> impl IntoView {
    let params = use_params_map();
    let name = params.with_untracked(|p| p.get("name").unwrap_or_default());
    let detail = {
        let name = name.clone();
        LocalResource::new(move || {
            let name = name.clone();
            async move { api::host(&name).await }
        })
    };
    let session = crate::session::Session::current();
    let can_act = move || session.is_some_and(|s| s.can_act());
    let open = RwSignal::new(false);
    let suspending = RwSignal::new(true);
    let notice: RwSignal<Option<Result<String, String>>> = RwSignal::new(None);
    let confirm = {
        let name = name.clone();
        Callback::new(move |(reason, _): (String, Option<i64>)| {
            let Ok(hostname) = shared::Hostname::parse(name.clone()) else { return };
            let suspend = suspending.get_untracked();
            spawn_local(async move {
                let action = if suspend {
                    OperatorAction::SuspendHost { hostname: hostname.clone() }
                } else {
                    OperatorAction::ResumeHost { hostname: hostname.clone() }
                };
                let done = if suspend { "suspended" } else { "resumed" };
                let result = api::act(&action, Some(reason)).await;
                notice.set(Some(result.map(|_| format!("{hostname} {done}.")).map_err(|e| e.to_string())));
                detail.refetch();
            });
        })
    };
    let quarantine = {
        let name = name.clone();
        move |action: OperatorAction, closure: String| {
            let reason = format!("quarantined from {name}'s page on the dashboard");
            spawn_local(async move {
                let result = api::act(&action, Some(reason)).await;
                notice.set(Some(result.map(|_| format!("{closure} quarantined.")).map_err(|e| e.to_string())));
                detail.refetch();
            });
        }
    };
    let host = {
        let name = name.clone();
        Signal::derive(move || name.clone())
    };
    view! {
        <section class="page" id="page-host">
            {move || notice.get().map(|n| match n {
                Ok(m) => view! { <p class="notice notice-ok" id="action-result" role="status">{m}</p> }.into_any(),
                Err(m) => view! { <p class="notice notice-error" id="action-result" role="alert">{m}</p> }.into_any(),
            })}
            <SuspendDialog open=open host=host suspending=suspending on_confirm=confirm />
            {move || match detail.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(Err(err)) => view! { <CallErrorNotice err=err /> }.into_any(),
                Some(Ok(d)) => {
                    let h = d.host;
                    let now = crate::policies::browser_now();
                    let suspended = h.suspended.is_some();
                    let channel = h.channel.clone();
                    let presence: Vec<LogEvent> = d.events.iter().rev()
                        .filter(|e| matches!(e.kind, LogKind::HostOnline | LogKind::HostOffline))
                        .take(PRESENCE_SHOWN).cloned().collect();
                    let quarantine = quarantine.clone();
                    view! {
                        <h1 id="host-title">{h.hostname.to_string()}</h1>
                        <p class="lede">
                            <span class=if h.online { "pill pill-live" } else { "pill pill-warn" }>{if h.online { "online" } else { "offline" }}</span>
                            " channel " <strong>{h.channel.to_string()}</strong>
                            {(!h.tags.is_empty()).then(|| format!(" · tags {}", h.tags.join(", ")))}
                        </p>
                        {h.suspended.map(|s| view! {
                            <p class="notice notice-warn" id="host-suspended">
                                <strong>"Suspended"</strong>{format!(" by {} at {}: {}. Every rollout skips this host until it is resumed.", s.by, s.at.format("%Y-%m-%d %H:%M UTC"), s.reason)}
                            </p>
                        })}
                        <Show when=can_act>
                            <p><button class="button button-quiet" id=if suspended { "resume-host" } else { "suspend-host" } on:click=move |_| {
                                suspending.set(!suspended);
                                open.set(true);
                            }>{if suspended { "Resume host" } else { "Suspend host" }}</button></p>
                        </Show>
                        <dl class="facts" id="host-facts">
                            <dt>"Running"</dt>
                            <dd><code id="host-current">{h.current_closure.as_ref().map(|c| c.to_string()).unwrap_or_else(|| "unknown (no heartbeat yet)".into())}</code></dd>
                            <dt>"Booted"</dt>
                            <dd id="host-booted">{match (&d.booted_closure, &h.current_closure) {
                                (None, _) => view! { <span class="muted">"not said (no heartbeat yet, or an agent that does not tell)"</span> }.into_any(),
                                (Some(b), Some(c)) if b == c => view! { <span>"what it runs"</span> }.into_any(),
                                (Some(b), _) => view! { <code>{b.to_string()}</code>" "<span class="small muted">"— not what it runs: switched since it booted"</span> }.into_any(),
                            }}</dd>
                            <dt>"Last heartbeat"</dt>
                            <dd>{h.last_heartbeat_at.map(|t| format!("{} ({})", shared::words::relative(t, now), t.format("%Y-%m-%d %H:%M:%S UTC"))).unwrap_or_else(|| "never".into())}</dd>
                            <dt>"Came and went"</dt>
                            <dd id="host-presence">{if presence.is_empty() { view! { <span class="muted">"no change logged"</span> }.into_any() } else {
                                view! { <ul class="plain">{presence.into_iter().map(|e| view! {
                                    <li><TimeStamp at=e.ts now=now />" "{e.describe()}</li>
                                }).collect_view()}</ul> }.into_any()
                            }}</dd>
                        </dl>
                        <h2>"Records"</h2>
                        <table class="table" id="host-records">
                            <thead><tr><th>"Rollout"</th><th>"State"</th><th>"Target"</th><th>"Why not updated"</th><th></th></tr></thead>
                            <tbody>{d.records.into_iter().map(|r| {
                                let id = r.rollout_id.to_string();
                                let closure = r.cell.target_closure.clone();
                                let open_record = !matches!(r.cell.state, HostState::Converged | HostState::Reverted);
                                let action = OperatorAction::Quarantine { channel: channel.clone(), closure: closure.clone() };
                                let quarantine = quarantine.clone();
                                view! {
                                    <tr>
                                        <td><A href=format!("/rollouts/{id}")>{id.clone()}</A></td>
                                        <td><span class=format!("dot {}", host_state_class(r.cell.state)) aria-hidden="true"></span>{r.cell.state.as_str()}{r.cell.stuck.then_some(" · stuck")}{r.cell.excused.then_some(" · excused")}</td>
                                        <td><code class="small wrap">{closure.to_string()}</code></td>
                                        <td class="small">{r.cell.waiting_on.map(|w| format!("{}: {}", w.gate, waiting_text(&w, now))).unwrap_or_default()}</td>
                                        <td>{(can_act() && open_record).then(|| view! {
                                            <button class="button button-danger small quarantine-record" on:click=move |_| quarantine(action.clone(), closure.short().into_owned())>"Quarantine closure"</button>
                                        })}</td>
                                    </tr>
                                }
                            }).collect_view()}</tbody>
                        </table>
                        <h2>"Events"</h2>
                        <ol class="log-list card" id="host-events">{d.events.into_iter().rev().map(|e| view! { <HostEventLine entry=e now=now /> }).collect_view()}</ol>
                    }.into_any()
                }
            }}
        </section>
    }
}

/// One of the host's log entries in full: its words, the rollout, and a failed activation's
/// stderr tail as it was written.
#[component]
fn HostEventLine(entry: LogEvent, now: chrono::DateTime<chrono::Utc>) -> impl IntoView {
    let typed = entry.entry().ok();
    let stderr = match &typed {
        Some(LogEntry::HostEvent(applied)) => applied.event.stderr_tail().map(str::to_owned),
        _ => None,
    };
    let failing = matches!(&typed, Some(LogEntry::HostEvent(a)) if a.to == HostState::Failed)
        || matches!(entry.kind, LogKind::HostStuck);
    view! {
        <li class=if failing { "log-entry log-entry-bad" } else { "log-entry" } data-seq=entry.seq.to_string() data-kind=entry.kind.as_str()>
            <TimeStamp at=entry.ts now=now />
            <span class="log-host">{entry.rollout_id.as_ref().map(|r| r.to_string()).unwrap_or_default()}</span>
            <span class="log-text">{entry.describe()}</span>
            {stderr.map(|s| view! { <pre class="stderr" aria-label="standard error, last lines">{s}</pre> })}
        </li>
    }
}
