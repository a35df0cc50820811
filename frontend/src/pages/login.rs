use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_query_map;

use crate::api;

/// Sign in with an operator or viewer token; the control plane answers with a session cookie.
/// `/login?token=…` (the demo's printed link) signs in at once and removes the token from the
/// address bar before anything else happens.
#[component]
pub fn LoginPage() -> impl IntoView {
    let token = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let outcome: RwSignal<Option<Result<String, String>>> = RwSignal::new(None);
    let sign_in = move |value: String| {
        busy.set(true);
        spawn_local(async move {
            match api::login(&value).await {
                Ok(me) => {
                    outcome.set(Some(Ok(format!("Signed in as {} ({}).", me.name, me.role))));
                    // A fresh start of the app, now with the session cookie.
                    if let Some(location) = web_sys::window().map(|w| w.location()) {
                        let _ = location.replace("/");
                    }
                }
                Err(err) => outcome.set(Some(Err(err.to_string()))),
            }
            busy.set(false);
        });
    };

    let query = use_query_map();
    let from_link = query.with_untracked(|q| q.get("token"));
    if let Some(value) = from_link {
        if let Some(history) = web_sys::window().and_then(|w| w.history().ok()) {
            let _ = history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some("/login"));
        }
        sign_in(value);
    }

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let value = token.get_untracked().trim().to_owned();
        if value.is_empty() {
            outcome.set(Some(Err("Paste the token that `fleetwave operator add` printed.".into())));
            return;
        }
        sign_in(value);
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
                    Ok(message) => view! { <p class="notice notice-ok" role="status">{message}</p> }.into_any(),
                    Err(message) => view! { <p class="notice notice-error" role="alert">{message}</p> }.into_any(),
                })}
            </form>
        </section>
    }
}
