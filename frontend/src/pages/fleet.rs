use leptos::prelude::*;

/// Fleet overview: each channel with its current rollout and per-wave progress.
#[component]
pub fn FleetPage() -> impl IntoView {
    view! {
        <section class="page" id="page-fleet">
            <h1>"Fleet"</h1>
            <p class="lede">"Every channel, its current rollout and how far each wave has converged."</p>
            <div class="empty">
                <h2>"No fleet yet"</h2>
                <p>"The control plane has not received a signed fleet document. Once CI uploads one, its channels and hosts appear here."</p>
            </div>
        </section>
    }
}
