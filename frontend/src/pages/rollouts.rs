use leptos::prelude::*;
use leptos_router::components::A;

use crate::api;
use crate::components::{CallErrorNotice, RolloutBadge, StateBar, counts_text};

/// Every rollout, newest first.
#[component]
pub fn RolloutsPage() -> impl IntoView {
    let rollouts = LocalResource::new(api::rollouts);
    view! {
        <section class="page" id="page-rollouts">
            <h1>"Rollouts"</h1>
            <p class="lede">"Each channel moving its hosts to a signed release, wave by wave."</p>
            {move || match rollouts.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(Err(err)) => view! { <CallErrorNotice err=err /> }.into_any(),
                Some(Ok(list)) if list.is_empty() => view! {
                    <div class="empty">
                        <h2>"No rollouts"</h2>
                        <p>"A rollout opens when a signed release manifest for a channel is verified."</p>
                    </div>
                }.into_any(),
                Some(Ok(list)) => view! {
                    <table class="table" id="rollout-list">
                        <thead><tr><th>"Rollout"</th><th>"State"</th><th>"Wave"</th><th>"Progress"</th><th>"Hosts"</th></tr></thead>
                        <tbody>
                            {list.into_iter().map(|r| {
                                let id = r.header.rollout_id.to_string();
                                let text = counts_text(&r.counts);
                                view! {
                                    <tr>
                                        <td><A href=format!("/rollouts/{id}")>{id.clone()}</A></td>
                                        <td><RolloutBadge state=r.header.state /></td>
                                        <td>{r.header.current_wave}</td>
                                        <td class="progress-cell"><StateBar counts=r.counts.clone() /><span class="muted small">{format!("{}% converged", r.converged_percent)}</span></td>
                                        <td class="muted small">{text}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any(),
            }}
        </section>
    }
}
