//! The panel of the selected host: its state, closures, why it is not updated, and the
//! quarantine action.

use leptos::prelude::*;
use shared::api::OperatorAction;

use super::Act;
use super::live::Live;
use crate::components::host_state_class;

#[component]
pub fn HostPanel(live: Live, selected: RwSignal<Option<String>>, can_act: Signal<bool>, act: Act) -> impl IntoView {
    move || {
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
    }
}
