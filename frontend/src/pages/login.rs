use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api;

/// Sign in with an operator or viewer token; the control plane answers with a session cookie.
#[component]
pub fn LoginPage() -> impl IntoView {
    let token = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let outcome: RwSignal<Option<Result<(), String>>> = RwSignal::new(None);

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let value = token.get_untracked().trim().to_owned();
        if value.is_empty() {
            outcome.set(Some(Err("Paste the token that `fleetwave operator add` printed.".into())));
            return;
        }
        busy.set(true);
        spawn_local(async move {
            let result = api::login(&value).await.map(|_| ()).map_err(|err| err.to_string());
            outcome.set(Some(result));
            busy.set(false);
        });
    };

    view! {
        <section class="page page-narrow" id="page-login">
            <h1>"Sign in"</h1>
            <form class="card form" on:submit=submit>
                <label for="token">"Access token"</label>
                <input
                    id="token"
                    name="token"
                    type="password"
                    autocomplete="off"
                    placeholder="fw_…"
                    prop:value=move || token.get()
                    on:input=move |ev| token.set(event_target_value(&ev))
                />
                <p class="hint">"Operators and viewers get a token from "<code>"fleetwave operator add"</code>"."</p>
                <button class="button" type="submit" disabled=move || busy.get()>
                    {move || if busy.get() { "Signing in…" } else { "Sign in" }}
                </button>
                {move || outcome.get().map(|result| match result {
                    Ok(()) => view! { <p class="notice notice-ok" role="status">"Signed in."</p> }.into_any(),
                    Err(message) => view! { <p class="notice notice-error" role="alert">{message}</p> }.into_any(),
                })}
            </form>
        </section>
    }
}
