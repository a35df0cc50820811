//! The wave columns: a cell per host, coloured by state, with the approve button of a wave
//! that needs it.

use leptos::prelude::*;
use shared::api::{HostCell, OperatorAction};
use shared::state::HostState;

use super::changes::Pending;
use super::live::{Live, WaveMeta};
use super::model::{DENSE_SHOWN, dense_shown, mark};
use crate::components::{StateBar, counts_text, host_state_class};

#[component]
fn Cell(cell: RwSignal<HostCell>, selected: RwSignal<Option<String>>) -> impl IntoView {
    let name = cell.with_untracked(|c| c.hostname.to_string());
    let (pick, attr) = (name.clone(), name.clone());
    view! {
        <button
            class=move || cell.with(|h| format!(
                "cell {}{}{}{}",
                host_state_class(h.state),
                if h.stuck { " stuck" } else { "" },
                if h.excused { " excused" } else { "" },
                if h.suspended { " suspended" } else { "" }
            ))
            title=move || cell.with(|h| {
                let why = h.waiting_on.as_ref().map(|w| format!(" — waiting on {}: {}", w.gate, w.reason)).unwrap_or_default();
                let suspended = if h.suspended { " — SUSPENDED" } else { "" };
                format!("{}: {}{why}{}{suspended}", h.hostname, h.state, if h.stuck { " — STUCK" } else { "" })
            })
            data-host=attr
            data-state=move || cell.with(|h| h.state.as_str())
            on:click=move |_| selected.set(Some(pick.clone()))
        >
            // The state's mark (and its name, for screen readers) comes from the state class
            // in style.css: no effect per cell beyond the class and title it already has.
            <span class="cell-name">{name}</span>
        </button>
    }
}

#[component]
pub fn WaveColumn(
    meta: WaveMeta,
    live: Live,
    selected: RwSignal<Option<String>>,
    can_act: Signal<bool>,
    confirm: RwSignal<Option<Pending>>,
) -> impl IntoView {
    let cells: Vec<RwSignal<HostCell>> = meta.cells.iter().map(|(_, c)| *c).collect();
    let counts = meta.counts;
    let total = counts.with_untracked(|c| c.values().sum::<u64>() as usize);
    let percent = move || {
        let converged = counts.with(|c| c.get(&HostState::Converged).copied().unwrap_or(0));
        if total == 0 { 0.0 } else { (converged as f64 * 1000.0 / total as f64).round() / 10.0 }
    };
    let index = meta.index;
    let is_current = move || live.header.with(|h| h.as_ref().map(|h| h.current_wave) == index && index.is_some());
    let approved =
        move || live.header.with(|h| h.as_ref().zip(index).is_some_and(|(h, i)| h.approved_waves.contains(&i)));
    let terminal = move || live.header.with(|h| h.as_ref().is_some_and(|h| h.state.is_terminal()));
    let rid = move || live.header.with(|h| h.as_ref().map(|h| h.rollout_id.clone()));
    let title = index.map_or("Unstaged".to_owned(), |i| format!("Wave {i}"));
    let requires = meta.requires_approval;
    // A wave of more hosts shows a bounded choice of them (the ones that need a look first)
    // and counts the rest: a 25,000-host wave stays light.
    let dense = cells.len() > DENSE_SHOWN;
    // "1 of 2 failures used": counted from the cells, so it follows the feed.
    let budget = meta.failure_budget.map(|b| b.max);
    let budget_text = move || {
        let max = budget?;
        let used = counts.with(|c| {
            c.get(&HostState::Failed).copied().unwrap_or(0) + c.get(&HostState::Reverted).copied().unwrap_or(0)
        });
        let class = if used > max {
            "small budget budget-over"
        } else if used > 0 {
            "small budget budget-used"
        } else {
            "small budget"
        };
        Some(
            view! { <p class=class data-budget=format!("{used}/{max}")>{format!("{used} of {max} failures used")}</p> },
        )
    };
    let approve_button = move || {
        let i = index?;
        (requires && !approved() && !terminal() && can_act.get()).then(|| {
            view! {
                <button class="button approve" id=format!("approve-{i}")
                    on:click=move |_| if let Some(rollout_id) = rid() {
                        let title = format!("Approve wave {i} of {rollout_id}");
                        confirm.set(Some(Pending { rollout_id: rollout_id.clone(), action: OperatorAction::ApproveWave { rollout_id, wave: i }, title }))
                    }>
                    {format!("Approve wave {i}")}
                </button>
            }
        })
    };
    // Chosen again when the wave's hosts moved (`moved`, at most twice a second), reading the
    // cells without tracking each of them.
    let moved = meta.moved;
    let choice = {
        let cells = cells.clone();
        Memo::new(move |_| {
            moved.track();
            let marks = cells.iter().map(|c| c.with_untracked(mark));
            dense.then(|| dense_shown(marks, DENSE_SHOWN))
        })
    };
    let shown = {
        let all = meta.cells.clone();
        move || -> Vec<(String, RwSignal<HostCell>)> {
            choice.with(|choice| match choice {
                Some((shown, _)) => shown.iter().filter_map(|&i| all.get(i).cloned()).collect(),
                None => all.clone(),
            })
        }
    };
    view! {
        <div class=move || if is_current() { "wave wave-current" } else { "wave" } data-wave=index.map(|i| i.to_string()).unwrap_or("unstaged".into())>
            <div class="wave-head">
                <h3>{title}{move || is_current().then(|| view! { <span class="pill pill-live">"current"</span> })}</h3>
                <p class="muted small">
                    {format!("soak {} min", meta.soak_minutes)}
                    {move || requires.then(|| if approved() { " · approved" } else { " · needs approval" })}
                </p>
                {move || view! { <StateBar counts=counts.get() /> }}
                <p class="small"><strong class="pct">{move || format!("{}%", percent())}</strong>" converged · "<span class="muted">{move || counts.with(counts_text)}</span></p>
                {budget_text}
                {approve_button}
                {move || dense.then(|| {
                    let converged = counts.with(|c| c.get(&HostState::Converged).copied().unwrap_or(0));
                    let (shown, hidden) = choice.with(|c| c.as_ref().map_or((0, 0), |(shown, hidden)| (shown.len(), *hidden)));
                    let mut text = format!("{shown} of {total} hosts shown");
                    if hidden > 0 {
                        text += &format!(" · {hidden} more not converged");
                    }
                    if converged > 0 {
                        text += &format!(" · {converged} converged");
                    }
                    // The hosts without a cell are found by the search (the channel's hosts).
                    let search = live.header.with(|h| h.as_ref().map(|h| crate::search::results_href(&format!("channel:{}", h.channel))));
                    view! {
                        <p class="muted small wave-more" data-hidden=hidden.to_string()>
                            {text}
                            {(hidden > 0).then(|| search.map(|href| view! { " · " <a href=href>"search them"</a> }))}
                        </p>
                    }
                })}
            </div>
            <div class={if cells.len() > 200 { "cells cells-dense" } else { "cells" }}>
                <For each=shown key=|(name, _)| name.clone() let((_, cell))>
                    <Cell cell=cell selected=selected />
                </For>
            </div>
        </div>
    }
}
