use leptos::prelude::*;

/// Every rollout, newest first.
#[component]
pub fn RolloutsPage() -> impl IntoView {
    view! {
        <section class="page" id="page-rollouts">
            <h1>"Rollouts"</h1>
            <p class="lede">"Each channel moving its hosts to a signed release, wave by wave."</p>
            <div class="empty">
                <h2>"No rollouts"</h2>
                <p>"A rollout opens when a signed release manifest for a channel is verified."</p>
            </div>
        </section>
    }
}
