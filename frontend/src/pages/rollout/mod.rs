//! One rollout: a column per wave with a cell per host coloured by state, the actions an
//! operator can take, and the rollout's live event log. Everything updates from the feed.
//!
//! `model` is the page's state without signals (tested natively), `live` the signals it is
//! drawn from; `head`, `waves`, `host_panel` and `event_log` draw the parts.

mod changes;
mod event_log;
mod head;
mod host_panel;
mod live;
mod model;
mod timeline;
mod waves;

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::{use_params_map, use_query_map};
use shared::api::{LogEvent, OperatorAction};
use shared::log::LogKind;

use self::event_log::EventLog;
use self::head::Head;
use self::host_panel::HostPanel;
use self::live::Live;
use self::model::{LOG_PAGE, LogWindow};
use self::timeline::Timeline;
use self::waves::WaveColumn;
use crate::api;
use crate::components::ErrorNotice;
use crate::feed::{self, FeedStatus};

/// How long feed entries wait at most before the page applies them, together.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Runs an operator action with an optional reason; the label names it in the notice that
/// reports the outcome.
type Act = Callback<(OperatorAction, Option<String>, String)>;

#[component]
pub fn RolloutPage() -> impl IntoView {
    let params = use_params_map();
    let id = params.with_untracked(|p| p.get("id").unwrap_or_default());
    let live = Live::new();
    // The timeline: the columns as they were at a seq while `replay` is set.
    let past = Live::new();
    let replay: RwSignal<Option<i64>> = RwSignal::new(None);
    let first_seq = RwSignal::new(0_i64);
    // Set when the start of the rollout's log was sealed into the server's archive.
    let sealed_before: RwSignal<Option<i64>> = RwSignal::new(None);
    // Set when retention replaced the rollout's host records by their counts.
    let hosts_tallied = RwSignal::new(false);
    let newest_seq = RwSignal::new(0_i64);
    let load_error: RwSignal<Option<String>> = RwSignal::new(None);
    let log: RwSignal<LogWindow> = RwSignal::new(LogWindow::default());
    let status = RwSignal::new(FeedStatus::Connecting);
    let selected: RwSignal<Option<String>> = RwSignal::new(None);
    let notice: RwSignal<Option<Result<String, String>>> = RwSignal::new(None);
    let session = crate::session::Session::current();
    let can_act = Signal::derive(move || session.is_some_and(|s| s.can_act()));
    // No acting on the past: a replayed column has no buttons.
    let act_now = Signal::derive(move || can_act.get() && replay.get().is_none());

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
            first_seq.set(snapshot.first_seq);
            sealed_before.set(snapshot.sealed_before);
            hosts_tallied.set(snapshot.hosts_tallied);
            newest_seq.set(as_of);
            live.load(snapshot);
            // The newest entries up to the snapshot; the feed continues from there.
            if let Ok(page) = api::rollout_events_before(&id, as_of.saturating_add(1), LOG_PAGE as u32).await {
                log.set(LogWindow::first_page(page.events));
            }
            // Entries are applied together, at most every `FLUSH_EVERY`: the page then redraws
            // (the log's rows, a wave's counts) once for all of them instead of once each
            // (~1 ms an entry at 100,000 hosts, where the feed brings ~1,500 a second).
            let waiting: StoredValue<Vec<LogEvent>> = StoredValue::new(Vec::new());
            let flush = move || {
                let entries = waiting.try_update_value(std::mem::take).unwrap_or_default();
                let mut newest = None;
                for entry in &entries {
                    live.apply(entry);
                    newest = Some(entry.seq);
                }
                if let Some(seq) = newest {
                    newest_seq.set(seq);
                    log.update(|w| entries.iter().for_each(|e| w.push(e)));
                }
            };
            let on_entry = move |entry: LogEvent| {
                let suspension = matches!(entry.kind, LogKind::HostSuspended | LogKind::HostResumed);
                if suspension {
                    live.apply(&entry);
                }
                if entry.rollout_id.as_ref().map(|r| r.as_str()) != Some(id.as_str()) {
                    return;
                }
                let first = waiting.try_update_value(|w| {
                    w.push(entry);
                    w.len() == 1
                });
                if first == Some(true) {
                    set_timeout(flush, FLUSH_EVERY);
                }
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

    // Approve and promote ask first, showing what changes. `?approve=N` (a link a webhook's
    // message can carry) opens the approval of wave N for an operator.
    let confirm: RwSignal<Option<changes::Pending>> = RwSignal::new(None);
    let approve_link = use_query_map().with_untracked(|q| q.get("approve").and_then(|w| w.parse::<u32>().ok()));
    if let (Some(wave), Ok(rollout_id)) = (approve_link, shared::RolloutId::parse(id.clone())) {
        let opened = StoredValue::new(false);
        Effect::new(move |_| {
            if can_act.get() && !opened.get_value() {
                opened.set_value(true);
                let title = format!("Approve wave {wave} of {rollout_id}");
                let action = OperatorAction::ApproveWave { rollout_id: rollout_id.clone(), wave };
                confirm.set(Some(changes::Pending { rollout_id: rollout_id.clone(), action, title }));
            }
        });
    }

    view! {
        <section class="page" id="page-rollout">
            {move || load_error.get().map(|e| view! { <ErrorNotice message=e /> })}
            <changes::ChangesDialog pending=confirm act=act />
            <Head live=live can_act=can_act act=act confirm=confirm status=status />
            {move || notice.get().map(|n| match n {
                Ok(m) => view! { <p class="notice notice-ok" id="action-result" role="status">{m}</p> }.into_any(),
                Err(m) => view! { <p class="notice notice-error" id="action-result" role="alert">{m}</p> }.into_any(),
            })}
            <div class="rollout-body">
                <div class="rollout-main">
                    <Timeline rollout=id.clone() past=past replay=replay first_seq=first_seq sealed_before=sealed_before newest=newest_seq.into() />
                    {move || (hosts_tallied.get() && replay.get().is_none()).then(|| view! {
                        <p class="muted small" id="hosts-tallied">"This rollout's host records were tallied when its log was sealed into the archive: each wave shows how many hosts ended in each state, not which."</p>
                    })}
                    <div class=move || if replay.get().is_some() { "waves waves-past" } else { "waves" } id="waves">
                        {move || {
                            let shown = if replay.get().is_some() { past } else { live };
                            shown.waves.get().into_iter().map(|meta| view! { <WaveColumn meta=meta live=shown selected=selected can_act=act_now confirm=confirm /> }).collect_view()
                        }}
                    </div>
                </div>
                <aside class="side">
                    <HostPanel live=live selected=selected can_act=can_act act=act />
                    <EventLog rollout=id.clone() log=log sealed_before=sealed_before />
                </aside>
            </div>
        </section>
    }
}
