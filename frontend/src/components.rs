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
