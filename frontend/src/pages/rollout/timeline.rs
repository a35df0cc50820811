//! The rollout's timeline ("time travel"): a slider over the event-log seqs from the rollout's
//! opening to now. Moving it re-draws the wave columns as they were at that seq (replayed from
//! the log by the server, `GET /rollouts/{id}?at=`), so a post-mortem can watch a failure
//! spread and the rollout stop; "Live" returns to the present. Arrow keys, Page Up/Down,
//! Home and End move it entry by entry or to either end. A rollout whose log begins before
//! what the server still holds (sealed into its log archive) has no timeline: it says so.

use leptos::prelude::*;
use leptos::task::spawn_local;

use super::live::Live;
use crate::api;

#[component]
pub fn Timeline(
    rollout: String,
    past: Live,
    /// The seq shown while replaying; `None`: live.
    replay: RwSignal<Option<i64>>,
    first_seq: RwSignal<i64>,
    /// Where the server's log begins, when it begins after the rollout opened.
    sealed_before: RwSignal<Option<i64>>,
    /// The newest seq the page has (the snapshot's, then the feed's).
    newest: Signal<i64>,
) -> impl IntoView {
    let replayed_at: RwSignal<Option<chrono::DateTime<chrono::Utc>>> = RwSignal::new(None);
    let error: RwSignal<Option<String>> = RwSignal::new(None);
    let go = move |seq: i64| {
        let rollout = rollout.clone();
        replay.set(Some(seq));
        spawn_local(async move {
            let answer = api::rollout_at(&rollout, seq).await;
            // A newer move superseded this one: its answer is not drawn.
            if replay.get_untracked() != Some(seq) {
                return;
            }
            match answer {
                Ok(detail) => {
                    replayed_at.set(detail.replayed_at);
                    error.set(None);
                    past.load(detail);
                }
                Err(err) => error.set(Some(err.to_string())),
            }
        });
    };
    let value = move || replay.get().unwrap_or_else(|| newest.get()).to_string();
    let label = move || match replay.get() {
        None => "live".to_owned(),
        Some(seq) => {
            let when = replayed_at
                .get()
                .map(|t| {
                    let now = crate::policies::browser_now();
                    format!(" · {} ({})", t.format("%H:%M:%S"), shared::words::relative(t, now))
                })
                .unwrap_or_default();
            let state = past.header.with(|h| h.as_ref().map(|h| format!(" · {}, wave {}", h.state, h.current_wave)));
            format!("as of entry {seq}{when}{}", state.unwrap_or_default())
        }
    };
    let sealed = move || {
        sealed_before.get().map(|first| {
            view! {
                <div class="timeline card" id="timeline-bar">
                    <span class="timeline-label">"Timeline"</span>
                    <span class="muted small" id="timeline-sealed">
                        {format!("The start of this rollout's log was sealed into the log archive (the database holds seq {first} on): it cannot be replayed here.")}
                    </span>
                </div>
            }
        })
    };
    let live_bar = move || {
        let go = go.clone();
        sealed_before.get().is_none().then(move || view! {
        <div class="timeline card" id="timeline-bar">
            <label for="timeline" class="timeline-label">"Timeline"</label>
            <input type="range" id="timeline" step="1"
                min=move || first_seq.get().to_string()
                max=move || newest.get().to_string()
                prop:value=value
                aria-valuetext=label
                on:input=move |ev| {
                    if let Ok(seq) = event_target_value(&ev).parse::<i64>() {
                        go.clone()(seq);
                    }
                } />
            <span class=move || if replay.get().is_some() { "timeline-at replaying" } else { "timeline-at" } id="timeline-at" role="status">{label}</span>
            <Show when=move || replay.get().is_some()>
                <button class="button small" id="timeline-live" on:click=move |_| { replay.set(None); replayed_at.set(None); }>"Back to live"</button>
            </Show>
            {move || error.get().map(|e| view! { <span class="error-text small" role="alert">{e}</span> })}
        </div>
    })
    };
    view! { {sealed} {live_bar} }
}
