//! Finding hosts: the header's search box (`/` focuses it) with the first hits as you type,
//! and the words it reads (`web- tag:eu state:failed channel:edge closure:nginx`, see
//! [`shared::api::HostQuery::from_words`]).

use leptos::ev;
use leptos::html;
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_navigate;
use shared::api::{HostHit, HostQuery};

use crate::api;
use crate::components::host_state_class;

/// Hits shown under the box; the results page has the rest.
const PREVIEW: u32 = 8;

/// `/hosts?q=<the words>`: the results page of a search.
pub fn results_href(words: &str) -> String {
    let encoded: String = js_sys::encode_uri_component(words).into();
    format!("/hosts?q={encoded}")
}

/// The header's search box.
#[component]
pub fn HostSearch() -> impl IntoView {
    let input: NodeRef<html::Input> = NodeRef::new();
    let words = RwSignal::new(String::new());
    let open = RwSignal::new(false);
    let hits = LocalResource::new(move || {
        let text = words.get();
        async move {
            let mut query = HostQuery::from_words(&text);
            if query.is_empty() {
                return None;
            }
            query.limit = Some(PREVIEW);
            Some((text, api::hosts(&query).await))
        }
    });
    // `/` anywhere but in a field focuses the box, as on GitHub or Grafana.
    let handle = window_event_listener(ev::keydown, move |ev| {
        if ev.key() != "/" || ev.ctrl_key() || ev.meta_key() || ev.alt_key() {
            return;
        }
        let typing = document().active_element().is_some_and(|e| {
            matches!(e.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT") || e.has_attribute("contenteditable")
        });
        if !typing && let Some(el) = input.get() {
            ev.prevent_default();
            let _ = el.focus();
            open.set(true);
        }
    });
    on_cleanup(move || handle.remove());
    let navigate = use_navigate();
    let on_key = move |ev: ev::KeyboardEvent| match ev.key().as_str() {
        "Enter" => {
            let text = words.get_untracked();
            if !text.trim().is_empty() {
                open.set(false);
                navigate(&results_href(text.trim()), Default::default());
            }
        }
        "Escape" => {
            open.set(false);
            if let Some(el) = input.get() {
                let _ = el.blur();
            }
        }
        _ => open.set(true),
    };
    view! {
        <div class="search" role="search">
            <label class="visually-hidden" for="host-search">"Find hosts"</label>
            <input id="host-search" node_ref=input type="search" autocomplete="off" spellcheck="false"
                placeholder="Find hosts  /" aria-describedby="host-search-help"
                prop:value=move || words.get()
                on:input=move |ev| { words.set(event_target_value(&ev)); open.set(true); }
                on:keydown=on_key
                on:focus=move |_| open.set(true) />
            <span id="host-search-help" class="visually-hidden">
                "A hostname prefix, and any of channel:, tag:, state:, closure:. Enter shows every result."
            </span>
            <Show when=move || open.get() && !words.get().trim().is_empty()>
                // `data-for`: the words the hits answer (they lag the box while typing).
                <div class="search-results card" id="search-results" data-for=move || hits.get().flatten().map(|(w, _)| w)>
                    {move || match hits.get().flatten() {
                        None => view! { <p class="muted small">"Searching…"</p> }.into_any(),
                        Some((_, Err(err))) => view! { <p class="error-text small" role="alert">{err.to_string()}</p> }.into_any(),
                        Some((_, Ok(page))) if page.hosts.is_empty() => view! { <p class="muted small" id="search-empty">"No host matches."</p> }.into_any(),
                        Some((_, Ok(page))) => {
                            let more = page.next.is_some();
                            view! {
                                <ul class="search-list">
                                    {page.hosts.into_iter().map(|hit| view! { <li on:click=move |_| open.set(false)><HitLine hit=hit /></li> }).collect_view()}
                                </ul>
                                <A href=move || results_href(words.get().trim()) attr:class="small" attr:id="search-all" on:click=move |_| open.set(false)>
                                    {if more { "All results →" } else { "Show as a list →" }}
                                </A>
                            }.into_any()
                        }
                    }}
                </div>
            </Show>
        </div>
    }
}

/// A host found: name (a link to its page), channel, state in the current rollout, closure.
#[component]
pub fn HitLine(hit: HostHit) -> impl IntoView {
    let name = hit.hostname.to_string();
    let state = hit.state.map(|s| view! {
        <span class="state-label"><span class=format!("dot {}", host_state_class(s)) aria-hidden="true"></span>{s.as_str()}</span>
    });
    view! {
        <A href=format!("/hosts/{name}") attr:class="hit">
            <span class="hit-name">{name.clone()}</span>
            <span class="hit-meta small muted">
                {hit.channel.to_string()}
                {(!hit.tags.is_empty()).then(|| format!(" · {}", hit.tags.join(", ")))}
                {(!hit.online).then_some(" · offline")}
                {hit.suspended.then_some(" · suspended")}
            </span>
            {state}
            <code class="hit-closure small">{hit.current_closure.as_ref().map(|c| c.short().into_owned()).unwrap_or_default()}</code>
        </A>
    }
}
