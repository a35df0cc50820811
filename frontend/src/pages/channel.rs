//! `/channels/:name`: a channel's history — every rollout, newest first, how it ended, who
//! approved what, and per wave when it opened and completed and how long its approval took.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;
use shared::api::{RolloutHistory, WaveHistory};

use crate::api;
use crate::components::{ErrorNotice, RolloutBadge, TimeStamp};

#[component]
pub fn ChannelPage() -> impl IntoView {
    let name = use_params_map().with_untracked(|p| p.get("name").unwrap_or_default());
    let rollouts: RwSignal<Vec<RolloutHistory>> = RwSignal::new(Vec::new());
    let next: RwSignal<Option<String>> = RwSignal::new(None);
    let error: RwSignal<Option<String>> = RwSignal::new(None);
    let loaded = RwSignal::new(false);
    let load = {
        let name = name.clone();
        move |before: Option<String>| {
            let name = name.clone();
            spawn_local(async move {
                match api::channel_history(&name, before.as_deref()).await {
                    Ok(page) => {
                        rollouts.update(|r| r.extend(page.rollouts));
                        next.set(page.next.map(|n| n.to_string()));
                    }
                    Err(err) => error.set(Some(err.to_string())),
                }
                loaded.set(true);
            });
        }
    };
    load.clone()(None);
    view! {
        <section class="page" id="page-channel">
            <h1>{format!("Channel {name}")}</h1>
            <p class="lede">"Every release of the channel, newest first: how it ended, who approved what, and how long each wave took."</p>
            {move || error.get().map(|e| view! { <ErrorNotice message=e /> })}
            {move || (loaded.get() && rollouts.with(Vec::is_empty) && error.get().is_none()).then(|| view! { <p class="muted">"No rollout yet."</p> })}
            <div id="channel-history">
                <For each=move || rollouts.get() key=|r| r.header.rollout_id.clone() let(r)>
                    <RolloutCard r=r />
                </For>
            </div>
            {move || next.get().map(|before| {
                let load = load.clone();
                view! { <button class="button" id="history-more" on:click=move |_| load(Some(before.clone()))>"Older rollouts"</button> }
            })}
        </section>
    }
}

fn took(seconds: Option<u64>) -> String {
    seconds.map(shared::words::span).unwrap_or_else(|| "—".into())
}

#[component]
fn RolloutCard(r: RolloutHistory) -> impl IntoView {
    let now = crate::policies::browser_now();
    let h = r.header;
    let id = h.rollout_id.to_string();
    let href = format!("/rollouts/{id}");
    let label = id.clone();
    let caption = format!("Waves of {id}");
    let ended = match (h.completed_at, &h.halt, &h.superseded_by) {
        (Some(at), _, _) => format!(
            "completed {} after {}",
            at.format("%Y-%m-%d %H:%M UTC"),
            shared::words::span(u64::try_from(at.signed_duration_since(h.opened_at).num_seconds()).unwrap_or(0))
        ),
        (None, Some(halt), _) if h.state == shared::state::RolloutState::Halted => {
            format!("halted: {} failed — {}", halt.host, halt.reason)
        }
        (None, _, Some(by)) => format!("superseded by {by}"),
        _ => format!("open since {}", shared::words::relative(h.opened_at, now)),
    };
    view! {
        <article class="card history" data-rollout=id.clone()>
            <h2><A href=href>{label.clone()}</A>" "<RolloutBadge state=h.state /></h2>
            <p class="small muted">{format!("opened {} · {ended}", h.opened_at.format("%Y-%m-%d %H:%M UTC"))}</p>
            <table class="table history-waves">
                <caption class="visually-hidden">{caption}</caption>
                <thead><tr><th scope="col">"Wave"</th><th scope="col">"Opened"</th><th scope="col">"Completed"</th><th scope="col">"Took"</th><th scope="col">"Soak"</th><th scope="col">"Approval"</th></tr></thead>
                <tbody>{r.waves.into_iter().map(|w| view! { <WaveRow w=w now=now /> }).collect_view()}</tbody>
            </table>
            {(!r.actions.is_empty()).then(|| view! {
                <h3 class="small">"Operators"</h3>
                <ul class="plain history-actions">{r.actions.into_iter().map(|a| view! {
                    <li><TimeStamp at=a.at now=now />" "<span>{a.what}</span></li>
                }).collect_view()}</ul>
            })}
        </article>
    }
}

#[component]
fn WaveRow(w: WaveHistory, now: chrono::DateTime<chrono::Utc>) -> impl IntoView {
    let time = move |t: Option<chrono::DateTime<chrono::Utc>>| match t {
        Some(t) => view! { <TimeStamp at=t now=now /> }.into_any(),
        None => view! { <span class="muted">"—"</span> }.into_any(),
    };
    let approval = match (w.requires_approval, &w.approved_by, w.approval_wait_seconds) {
        (false, _, _) => "not needed".to_owned(),
        (true, Some(by), Some(wait)) => format!("{by}, after {}", shared::words::span(wait)),
        (true, Some(by), None) => format!("{by}, before it opened"),
        (true, None, _) if w.approved_at.is_some() => "approved".to_owned(),
        (true, None, _) => "waiting".to_owned(),
    };
    view! {
        <tr data-wave=w.index.to_string()>
            <th scope="row">{w.index}{w.forced.then_some(" · forced")}</th>
            <td>{time(w.opened_at)}</td>
            <td>{time(w.completed_at)}</td>
            <td>{took(w.took_seconds)}</td>
            <td>{format!("{} min", w.soak_minutes)}</td>
            <td class="wave-approval">{approval}</td>
        </tr>
    }
}
