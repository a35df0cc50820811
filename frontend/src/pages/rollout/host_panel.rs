//! The panel of the selected host: its state, closures, why it is not updated, and the
//! operator's actions on it (quarantine its closure; suspend or resume the host).

use leptos::prelude::*;
use shared::Hostname;
use shared::api::OperatorAction;

use super::Act;
use super::live::Live;
use crate::components::{SuspendDialog, host_state_class, waiting_text};

#[component]
pub fn HostPanel(live: Live, selected: RwSignal<Option<String>>, can_act: Signal<bool>, act: Act) -> impl IntoView {
    let open = RwSignal::new(false);
    // Whether the dialog suspends (else resumes) the selected host.
    let suspending = RwSignal::new(true);
    let confirm = Callback::new(move |(reason, _): (String, Option<i64>)| {
        let Some(hostname) = selected.get_untracked().and_then(|n| Hostname::parse(n).ok()) else { return };
        let (action, label) = if suspending.get_untracked() {
            (OperatorAction::SuspendHost { hostname: hostname.clone() }, format!("Suspend {hostname}"))
        } else {
            (OperatorAction::ResumeHost { hostname: hostname.clone() }, format!("Resume {hostname}"))
        };
        act.run((action, Some(reason), label));
    });
    let host = Signal::derive(move || selected.get().unwrap_or_default());
    let panel = move || {
        let name = selected.get()?;
        let (_, cell) = live.cells.with_value(|m| m.get(&name).copied())?;
        let h = cell.get();
        let channel = live.header.with(|h| h.as_ref().map(|h| h.channel.clone()))?;
        let closure = h.target_closure.to_string();
        let quarantine = OperatorAction::Quarantine { channel, closure: h.target_closure.clone() };
        let reason = format!("quarantined from {name} on the dashboard");
        let now = crate::policies::browser_now();
        let suspended = h.suspended;
        Some(view! {
            <div class="card host-panel" id="host-panel">
                <h3>{name.clone()}" "<leptos_router::components::A href=format!("/hosts/{name}") attr:class="small" attr:id="host-details">"details →"</leptos_router::components::A></h3>
                <p><span class=format!("dot {}", host_state_class(h.state))></span>{h.state.as_str()}{h.stuck.then_some(" · stuck")}{h.excused.then_some(" · excused")}
                    {suspended.then(|| view! { " · " <span class="pill pill-warn" id="suspended-pill">"suspended"</span> })}</p>
                <p class="small muted">"target "<code>{closure.clone()}</code></p>
                {h.current_closure.map(|c| view! { <p class="small muted">"running "<code>{c.to_string()}</code></p> })}
                {h.waiting_on.map(|w| view! { <p class="small" id="waiting-on">"Why not updated: "<strong>{w.gate.as_str()}</strong>" — "{waiting_text(&w, now)}</p> })}
                {can_act.get().then(|| view! {
                    <div class="panel-actions">
                        <button class="button button-danger" id="quarantine-closure" on:click=move |_| act.run((quarantine.clone(), Some(reason.clone()), "Quarantine".into()))>"Quarantine this closure"</button>
                        <button class="button button-quiet" id=if suspended { "resume-host" } else { "suspend-host" } on:click=move |_| {
                            suspending.set(!suspended);
                            open.set(true);
                        }>{if suspended { "Resume host" } else { "Suspend host" }}</button>
                    </div>
                })}
            </div>
        })
    };
    view! {
        {panel}
        <SuspendDialog open=open host=host suspending=suspending on_confirm=confirm />
    }
}
