//! The page's head: the rollout's id, state and wave, why it halted, the feed status and the
//! operator's actions (pause, resume, clear failure; promote through the changes dialog).

use leptos::prelude::*;
use shared::api::OperatorAction;
use shared::state::RolloutState;

use super::Act;
use super::changes::Pending;
use super::live::Live;
use crate::components::RolloutBadge;
use crate::feed::{FeedIndicator, FeedStatus};

#[component]
pub fn Head(
    live: Live,
    can_act: Signal<bool>,
    act: Act,
    confirm: RwSignal<Option<Pending>>,
    status: RwSignal<FeedStatus>,
) -> impl IntoView {
    move || {
        let h = live.header.get()?;
        let rid = h.rollout_id.to_string();
        let waves = live.waves.with(|w| w.iter().filter(|w| w.index.is_some()).count()) as u32;
        let next = h.current_wave + 1;
        let id = h.rollout_id.clone();
        let halted_text = h
            .halt
            .as_ref()
            .filter(|_| h.state == RolloutState::Halted)
            .map(|halt| format!("Halted: {} failed — {}", halt.host, halt.reason));
        let button = move |css_id: &'static str, label: &'static str, action: OperatorAction, quiet: bool| {
            view! {
                <button class=if quiet { "button button-quiet" } else { "button" } id=css_id
                    on:click=move |_| act.run((action.clone(), None, label.to_owned()))>{label}</button>
            }
        };
        let actions = can_act.get().then(|| {
            view! {
                {(h.state == RolloutState::Active).then(|| button("pause", "Pause", OperatorAction::Pause { rollout_id: id.clone() }, true))}
                {(h.state == RolloutState::Paused).then(|| button("resume", "Resume", OperatorAction::Resume { rollout_id: id.clone() }, false))}
                {(h.state == RolloutState::Halted).then(|| button("clear-failure", "Clear failure", OperatorAction::ClearFailure { rollout_id: id.clone() }, false))}
                {(!h.state.is_terminal() && next < waves).then(|| {
                    let rollout_id = id.clone();
                    view! {
                        <button class="button button-quiet" id="promote" on:click=move |_| {
                            let action = OperatorAction::Promote { rollout_id: rollout_id.clone(), to_wave: next, force: false };
                            confirm.set(Some(Pending { rollout_id: rollout_id.clone(), action, title: format!("Promote {rollout_id} to wave {next}") }));
                        }>{format!("Promote to wave {next}")}</button>
                    }
                })}
            }
        });
        Some(view! {
            <div class="rollout-head">
                <div>
                    <h1 id="rollout-title">{rid.clone()}</h1>
                    <p class="lede">
                        <RolloutBadge state=h.state />
                        " channel " <strong><a href=format!("/channels/{}", h.channel) id="channel-link">{h.channel.to_string()}</a></strong>
                        " · current wave " <strong id="current-wave">{h.current_wave}</strong>
                        {format!(" of {waves}")}
                    </p>
                    {halted_text.map(|t| view! { <p class="notice notice-error" id="halt-reason">{t}</p> })}
                </div>
                <div class="actions">
                    <FeedIndicator status=status />
                    {actions}
                </div>
            </div>
        })
    }
}
