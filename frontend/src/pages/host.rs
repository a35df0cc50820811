use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;

use leptos::task::spawn_local;
use shared::api::OperatorAction;

use crate::api;
use crate::components::{CallErrorNotice, SuspendDialog, host_state_class, waiting_text};

/// One host: where it is, what it runs, whether it is suspended (with the operator's suspend
/// and resume), its records across rollouts and its recent events.
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
                        <p class="small muted">"running "<code>{h.current_closure.map(|c| c.to_string()).unwrap_or_else(|| "unknown".into())}</code>
                            {h.last_heartbeat_at.map(|t| format!(" · last heartbeat {}", t.format("%H:%M:%S UTC")))}</p>
                        <h2>"Records"</h2>
                        <table class="table" id="host-records">
                            <thead><tr><th>"Rollout"</th><th>"State"</th><th>"Target"</th><th>"Why not updated"</th></tr></thead>
                            <tbody>{d.records.into_iter().map(|r| {
                                let id = r.rollout_id.to_string();
                                view! {
                                    <tr>
                                        <td><A href=format!("/rollouts/{id}")>{id.clone()}</A></td>
                                        <td><span class=format!("dot {}", host_state_class(r.cell.state))></span>{r.cell.state.as_str()}{r.cell.stuck.then_some(" · stuck")}</td>
                                        <td><code class="small">{r.cell.target_closure.to_string()}</code></td>
                                        <td class="small">{r.cell.waiting_on.map(|w| format!("{}: {}", w.gate, waiting_text(&w, now))).unwrap_or_default()}</td>
                                    </tr>
                                }
                            }).collect_view()}</tbody>
                        </table>
                        <h2>"Recent events"</h2>
                        <ol class="log-list card" id="host-events">{d.events.into_iter().rev().map(|e| view! {
                            <li class="log-entry">
                                <span class="log-time">{e.ts.format("%H:%M:%S").to_string()}</span>
                                <span class="log-host">{e.rollout_id.as_ref().map(|r| r.to_string()).unwrap_or_default()}</span>
                                <span class="log-text">{e.describe()}</span>
                            </li>
                        }).collect_view()}</ol>
                    }.into_any()
                }
            }}
        </section>
    }
}
