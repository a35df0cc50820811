use leptos::prelude::*;

/// Closures that must not be dispatched to a channel until released.
#[component]
pub fn QuarantinesPage() -> impl IntoView {
    view! {
        <section class="page" id="page-quarantines">
            <h1>"Quarantines"</h1>
            <p class="lede">"Closures held back from a channel, with who quarantined them and why."</p>
            <div class="empty">
                <h2>"Nothing quarantined"</h2>
                <p>"A closure is quarantined when a host rolls back from it, or when an operator says so."</p>
            </div>
        </section>
    }
}
