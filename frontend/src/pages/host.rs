use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;

use crate::api;
use crate::components::{CallErrorNotice, host_state_class};

/// One host: where it is, what it runs, its records across rollouts and its recent events.
#[component]
pub fn HostPage() -> impl IntoView {
    let params = use_params_map();
    let name = params.with_untracked(|p| p.get("name").unwrap_or_default());
    let detail = LocalResource::new(move || {
        let name = name.clone();
        async move { api::host(&name).await }
    });
    view! {
        <section class="page" id="page-host">
            {move || match detail.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(Err(err)) => view! { <CallErrorNotice err=err /> }.into_any(),
                Some(Ok(d)) => {
                    let h = d.host;
                    view! {
                        <h1 id="host-title">{h.hostname.to_string()}</h1>
                        <p class="lede">
                            <span class=if h.online { "pill pill-live" } else { "pill pill-warn" }>{if h.online { "online" } else { "offline" }}</span>
                            " channel " <strong>{h.channel.to_string()}</strong>
                            {(!h.tags.is_empty()).then(|| format!(" · tags {}", h.tags.join(", ")))}
                        </p>
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
                                        <td class="small">{r.cell.waiting_on.map(|w| format!("{}: {}", w.gate, w.reason)).unwrap_or_default()}</td>
                                    </tr>
                                }
                            }).collect_view()}</tbody>
                        </table>
                        <h2>"Recent events"</h2>
                        <ol class="log-list card" id="host-events">{d.events.into_iter().rev().map(|e| view! {
                            <li class="log-entry">
                                <span class="log-time">{e.ts.format("%H:%M:%S").to_string()}</span>
                                <span class="log-host">{e.rollout_id.as_ref().map(|r| r.to_string()).unwrap_or_default()}</span>
                                <span class="log-text">{crate::log::describe(&e)}</span>
                            </li>
                        }).collect_view()}</ol>
                    }.into_any()
                }
            }}
        </section>
    }
}
