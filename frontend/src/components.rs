//! Small pieces every page uses: state badges, counts, error notices.

use std::collections::BTreeMap;

use leptos::prelude::*;
use shared::state::{HostState, RolloutState};

pub fn host_state_class(state: HostState) -> &'static str {
    match state {
        HostState::Pending => "state-pending",
        HostState::Activating => "state-activating",
        HostState::Deferred => "state-deferred",
        HostState::Soaking => "state-soaking",
        HostState::Converged => "state-converged",
        HostState::Failed => "state-failed",
        HostState::Reverted => "state-reverted",
    }
}

#[component]
pub fn RolloutBadge(state: RolloutState) -> impl IntoView {
    let class = match state {
        RolloutState::Active => "badge badge-active",
        RolloutState::Paused => "badge badge-paused",
        RolloutState::Halted => "badge badge-halted",
        RolloutState::Completed => "badge badge-completed",
        RolloutState::Superseded => "badge badge-superseded",
    };
    view! { <span class=class>{state.as_str()}</span> }
}

/// A stacked bar of host states with its converged share.
#[component]
pub fn StateBar(counts: BTreeMap<HostState, u64>) -> impl IntoView {
    let total: u64 = counts.values().sum();
    let segments = HostState::ALL
        .into_iter()
        .filter_map(|s| {
            let n = counts.get(&s).copied().unwrap_or(0);
            (n > 0).then(|| {
                let width = format!("width: {:.2}%", n as f64 * 100.0 / total.max(1) as f64);
                view! { <span class=format!("bar-seg {}", host_state_class(s)) style=width title=format!("{n} {s}")></span> }
            })
        })
        .collect_view();
    view! { <div class="state-bar">{segments}</div> }
}

/// "12 Converged · 3 Soaking · …"
pub fn counts_text(counts: &BTreeMap<HostState, u64>) -> String {
    HostState::ALL
        .into_iter()
        .filter_map(|s| counts.get(&s).filter(|n| **n > 0).map(|n| format!("{n} {s}")))
        .collect::<Vec<_>>()
        .join(" · ")
}

#[component]
pub fn ErrorNotice(message: String) -> impl IntoView {
    view! { <p class="notice notice-error" role="alert">{message}</p> }
}

/// An API failure; "not signed in" becomes a link to the sign-in page.
#[component]
pub fn CallErrorNotice(err: crate::api::CallError) -> impl IntoView {
    if err.code == shared::ErrorCode::Unauthenticated.as_str() {
        view! {
            <p class="notice notice-error" role="alert">
                "You are not signed in. " <leptos_router::components::A href="/login">"Sign in"</leptos_router::components::A>
                " with an operator or viewer token."
            </p>
        }
        .into_any()
    } else {
        view! { <ErrorNotice message=err.to_string() /> }.into_any()
    }
}

/// Asks why (and, with `durations`, for how long) before an action every operator will see:
/// confirmed only with a reason. `on_confirm` gets the reason and the minutes chosen (`None`:
/// until released).
#[component]
pub fn ReasonDialog(
    open: RwSignal<bool>,
    title: Signal<String>,
    text: &'static str,
    confirm: &'static str,
    durations: bool,
    on_confirm: Callback<(String, Option<i64>)>,
) -> impl IntoView {
    let reason = RwSignal::new(String::new());
    let minutes = RwSignal::new(String::new());
    let close = move || {
        open.set(false);
        reason.set(String::new());
        minutes.set(String::new());
    };
    view! {
        <Show when=move || open.get()>
            <div class="dialog-backdrop">
                <div class="dialog card" role="dialog" aria-modal="true" aria-labelledby="dialog-title" id="dialog">
                    <h2 id="dialog-title">{move || title.get()}</h2>
                    <p class="small">{text}</p>
                    <label class="dialog-label" for="dialog-reason">"Why (shown to every operator)"</label>
                    <textarea id="dialog-reason" rows="3" prop:value=move || reason.get()
                        on:input=move |ev| reason.set(event_target_value(&ev))></textarea>
                    {durations.then(|| view! {
                        <label class="dialog-label" for="dialog-until">"For how long"</label>
                        <select id="dialog-until" on:change=move |ev| minutes.set(event_target_value(&ev))>
                            <option value="">"until released"</option>
                            <option value="60">"1 hour"</option>
                            <option value="240">"4 hours"</option>
                            <option value="1440">"24 hours"</option>
                        </select>
                    })}
                    <div class="dialog-actions">
                        <button class="button button-quiet" id="dialog-cancel" on:click=move |_| close()>"Cancel"</button>
                        <button class="button button-danger" id="dialog-confirm"
                            disabled=move || reason.with(|r| r.trim().is_empty())
                            on:click=move |_| {
                                let (why, for_minutes) = (reason.get_untracked(), minutes.get_untracked().parse().ok());
                                close();
                                on_confirm.run((why, for_minutes));
                            }>
                            {confirm}
                        </button>
                    </div>
                </div>
            </div>
        </Show>
    }
}

/// Why a Pending host is not updated, with how long until the gate lifts by itself.
pub fn waiting_text(w: &shared::state::WaitingOn, now: chrono::DateTime<chrono::Utc>) -> String {
    match w.until {
        Some(until) => format!("{}, {}", w.reason, crate::policies::from_now(until, now)),
        None => w.reason.to_string(),
    }
}

/// The dialog that asks why before suspending or resuming a host (`suspending` says which).
#[component]
pub fn SuspendDialog(
    open: RwSignal<bool>,
    host: Signal<String>,
    suspending: RwSignal<bool>,
    on_confirm: Callback<(String, Option<i64>)>,
) -> impl IntoView {
    let title = Signal::derive(move || {
        let verb = if suspending.get() { "Suspend" } else { "Resume" };
        format!("{verb} {}", host.get())
    });
    view! {
        <ReasonDialog
            open=open
            title=title
            text="A suspended host is skipped by every rollout and does not hold its wave; resumed, it counts again."
            confirm="Confirm"
            durations=false
            on_confirm=on_confirm
        />
    }
}

/// An absolute time with how long ago it was on hover (and the other way round).
#[component]
pub fn TimeStamp(at: chrono::DateTime<chrono::Utc>, now: chrono::DateTime<chrono::Utc>) -> impl IntoView {
    let full = at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    view! {
        <time class="log-time" datetime=at.to_rfc3339() title=full>
            {at.format("%H:%M:%S").to_string()}<span class="muted small">{format!(" · {}", shared::words::relative(at, now))}</span>
        </time>
    }
}
