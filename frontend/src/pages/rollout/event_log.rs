//! The rollout's event log: newest at the top, every line whole (wrapped, never clipped),
//! holds of several hosts by one gate for one reason as one row that opens to list them,
//! times absolute and relative, filters by host, kind and gate, and older pages on demand.

use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::log::LogKind;
use shared::state::Gate;

use super::model::{LOG_PAGE, LogLine, LogRow, LogWindow, rows};
use crate::api;
use crate::components::TimeStamp;

/// The kinds the log can be filtered by.
const FILTER_KINDS: [LogKind; 8] = [
    LogKind::HostEvent,
    LogKind::DispatchQueued,
    LogKind::HostHeld,
    LogKind::WaveAdvanced,
    LogKind::WaveApproved,
    LogKind::RolloutStateChanged,
    LogKind::OperatorAction,
    LogKind::HostStuck,
];

#[component]
pub fn EventLog(rollout: String, log: RwSignal<LogWindow>, sealed_before: RwSignal<Option<i64>>) -> impl IntoView {
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
    let gate_filter = RwSignal::new(String::new());
    // The rows of the lines that pass the filters, newest first; keyed by their newest seq
    // and size, so a new entry adds (or regroups) one row instead of rebuilding the list.
    let shown = move || {
        let host = host_filter.get();
        let kind = kind_filter.get();
        let gate = gate_filter.get();
        log.with(|w| {
            let lines = w
                .entries
                .iter()
                .rev()
                .filter(|l| host.is_empty() || l.host.contains(host.as_str()))
                .filter(|l| kind.is_empty() || l.kind.as_str() == kind)
                .filter(|l| gate.is_empty() || l.gate().is_some_and(|g| g.as_str() == gate));
            rows(lines)
        })
    };
    view! {
        <div class="card log">
            <h3 id="event-log-title">"Event log"</h3>
            <div class="log-filters">
                <label class="visually-hidden" for="log-host">"Filter by host"</label>
                <input id="log-host" placeholder="host" prop:value=move || host_filter.get() on:input=move |ev| host_filter.set(event_target_value(&ev)) />
                <label class="visually-hidden" for="log-kind">"Filter by kind"</label>
                <select id="log-kind" on:change=move |ev| kind_filter.set(event_target_value(&ev))>
                    <option value="">"all kinds"</option>
                    {FILTER_KINDS.map(|k| view! { <option value=k.as_str()>{k.as_str()}</option> }).collect_view()}
                </select>
                <label class="visually-hidden" for="log-gate">"Filter holds by gate"</label>
                <select id="log-gate" on:change=move |ev| gate_filter.set(event_target_value(&ev))>
                    <option value="">"any gate"</option>
                    {Gate::ALL.map(|g| view! { <option value=g.as_str()>{g.as_str()}</option> }).collect_view()}
                </select>
            </div>
            <ol class="log-list" id="event-log" aria-labelledby="event-log-title">
                <For each=shown key=LogRow::key let(row)>
                    <Row row=row />
                </For>
            </ol>
            {move || log.with(|w| w.older).then(|| view! { <button class="button small" id="log-older" on:click=load_older.clone()>"Older entries"</button> })}
            {move || (!log.with(|w| w.older)).then(|| sealed_before.get()).flatten().map(|first| view! {
                <p class="muted small" id="log-sealed">{format!("Entries before seq {first} were sealed into the log archive (fleetwave log verify --archive checks them).")}</p>
            })}
        </div>
    }
}

#[component]
fn Row(row: LogRow) -> impl IntoView {
    let now = crate::policies::browser_now();
    match row {
        LogRow::One(line) => view! { <Line line=line now=now /> }.into_any(),
        LogRow::Held { gate, reason, lines } => {
            let newest = lines[0].clone();
            // Hosts, not entries: one host held twice for one reason is one host.
            let count = lines.iter().map(|l| l.host.as_str()).collect::<std::collections::BTreeSet<_>>().len();
            let text = format!("{count} hosts held by {gate}: {}", shared::words::short_store_paths(&reason));
            view! {
                <li class="log-entry log-group" data-seq=newest.seq.to_string() data-kind=newest.kind.as_str() data-hosts=count.to_string()>
                    <TimeStamp at=newest.at now=now />
                    <span class="log-host">{format!("{count} hosts")}</span>
                    <details class="log-text">
                        <summary title=reason.clone()>{text}</summary>
                        <ul class="log-group-hosts">
                            {lines.into_iter().map(|l| view! {
                                <li data-seq=l.seq.to_string()><a href=format!("/hosts/{}", l.host)>{l.host.clone()}</a>
                                    <span class="muted small">{format!(" {}", l.at.format("%H:%M:%S"))}</span></li>
                            }).collect_view()}
                        </ul>
                    </details>
                </li>
            }
            .into_any()
        }
    }
}

#[component]
fn Line(line: Arc<LogLine>, now: chrono::DateTime<chrono::Utc>) -> impl IntoView {
    let title = (line.full != line.text).then(|| line.full.clone());
    view! {
        <li class="log-entry" data-seq=line.seq.to_string() data-kind=line.kind.as_str()>
            <TimeStamp at=line.at now=now />
            <span class="log-host">{line.host.clone()}</span>
            <span class="log-text" title=title>{line.text.clone()}</span>
        </li>
    }
}
