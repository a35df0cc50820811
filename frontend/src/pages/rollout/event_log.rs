//! The rollout's event log: newest at the top, filters by host and kind, and older pages on
//! demand.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::log::LogKind;

use super::model::{LOG_PAGE, LogLine, LogWindow};
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
    // The lines that pass the filters, newest first; rows are keyed by seq, so a new entry
    // adds one row instead of rebuilding the list.
    let lines = move || {
        let host = host_filter.get();
        let kind = kind_filter.get();
        log.with(|w| {
            w.entries
                .iter()
                .rev()
                .filter(|l| host.is_empty() || l.host.contains(host.as_str()))
                .filter(|l| kind.is_empty() || l.kind.as_str() == kind)
                .cloned()
                .collect::<Vec<LogLine>>()
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
            <ol class="log-list" id="event-log">
                <For each=lines key=|line| line.seq let(line)>
                    <li class="log-entry" data-seq=line.seq.to_string()>
                        <span class="log-time">{line.time}</span>
                        <span class="log-host">{line.host}</span>
                        <span class="log-text">{line.text}</span>
                    </li>
                </For>
            </ol>
            {move || log.with(|w| w.older).then(|| view! { <button class="button small" id="log-older" on:click=load_older.clone()>"Older entries"</button> })}
        </div>
    }
}
