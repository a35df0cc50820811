use leptos::prelude::*;
use leptos_router::components::A;

#[component]
pub fn NotFoundPage() -> impl IntoView {
    view! {
        <section class="page" id="page-not-found">
            <h1>"Page not found"</h1>
            <p>"There is nothing at this address. " <A href="/">"Back to the fleet"</A></p>
        </section>
    }
}
