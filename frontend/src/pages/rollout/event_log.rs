//! The rollout's event log: newest at the top, filters by host and kind, and older pages on
//! demand.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::log::LogKind;

use super::model::{LOG_PAGE, LogWindow};
use crate::api;

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

#[component]
pub fn EventLog(rollout: String, log: RwSignal<LogWindow>) -> impl IntoView {
    let load_older = move |_| {
        let rollout = rollout.clone();
        let Some(first) = log.with_untracked(LogWindow::oldest_seq) else { return };
        spawn_local(async move {
            if let Ok(page) = api::rollout_events_before(&rollout, first, LOG_PAGE as u32).await {
                log.update(|w| w.prepend(page.events));
            }
        });
    };
    let host_filter = RwSignal::new(String::new());
    let kind_filter = RwSignal::new(String::new());
    let entries = move || {
        let host = host_filter.get();
        let kind = kind_filter.get();
        log.with(|w| {
            w.entries
                .iter()
                .rev()
                .filter(|e| host.is_empty() || e.host.as_ref().is_some_and(|h| h.as_str().contains(host.as_str())))
                .filter(|e| kind.is_empty() || e.kind.as_str() == kind)
                .map(|e| {
                    let time = e.ts.format("%H:%M:%S").to_string();
                    view! {
                        <li class="log-entry" data-seq=e.seq.to_string()>
                            <span class="log-time">{time}</span>
                            <span class="log-host">{e.host.as_ref().map(|h| h.to_string()).unwrap_or_default()}</span>
                            <span class="log-text">{crate::log::describe(e)}</span>
                        </li>
                    }
                })
                .collect_view()
        })
    };
    view! {
        <div class="card log">
            <h3>"Event log"</h3>
            <div class="log-filters">
                <input id="log-host" placeholder="host" prop:value=move || host_filter.get() on:input=move |ev| host_filter.set(event_target_value(&ev)) />
                <select id="log-kind" on:change=move |ev| kind_filter.set(event_target_value(&ev))>
                    <option value="">"all kinds"</option>
                    {FILTER_KINDS.map(|k| view! { <option value=k.as_str()>{k.as_str()}</option> }).collect_view()}
                </select>
            </div>
            <ol class="log-list" id="event-log">{entries}</ol>
            {move || log.with(|w| w.older).then(|| view! { <button class="button small" id="log-older" on:click=load_older.clone()>"Older entries"</button> })}
        </div>
    }
}
