//! `/hosts?q=…`: every host a search finds, a page at a time.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_query_map;
use shared::api::{HostHit, HostQuery};

use crate::api;
use crate::components::ErrorNotice;
use crate::search::HitLine;

/// Hosts per page of results.
const PAGE: u32 = 50;

#[component]
pub fn HostsPage() -> impl IntoView {
    let words = Memo::new(move |_| use_query_map().with(|q| q.get("q").unwrap_or_default()));
    let hits: RwSignal<Vec<HostHit>> = RwSignal::new(Vec::new());
    let next: RwSignal<Option<String>> = RwSignal::new(None);
    let error: RwSignal<Option<String>> = RwSignal::new(None);
    let loading = RwSignal::new(false);
    let load = move |after: Option<String>| {
        let mut query = HostQuery::from_words(&words.get_untracked());
        query.limit = Some(PAGE);
        query.after = after.clone();
        loading.set(true);
        spawn_local(async move {
            match api::hosts(&query).await {
                Ok(page) => {
                    hits.update(|h| {
                        if after.is_none() {
                            h.clear();
                        }
                        h.extend(page.hosts);
                    });
                    next.set(page.next.map(|n| n.to_string()));
                    error.set(None);
                }
                Err(err) => error.set(Some(err.to_string())),
            }
            loading.set(false);
        });
    };
    Effect::new(move |_| {
        words.track();
        load(None);
    });
    view! {
        <section class="page" id="page-hosts">
            <h1>"Hosts"</h1>
            <p class="lede">{move || {
                let w = words.get();
                if w.trim().is_empty() { "Every host of the fleet, by name.".to_owned() } else { format!("Hosts matching “{}”.", w.trim()) }
            }}</p>
            {move || error.get().map(|e| view! { <ErrorNotice message=e /> })}
            <ul class="search-list card" id="host-results">
                <For each=move || hits.get() key=|h| h.hostname.clone() let(hit)>
                    <li><HitLine hit=hit /></li>
                </For>
            </ul>
            {move || (!loading.get() && hits.with(Vec::is_empty) && error.get().is_none()).then(|| view! { <p class="muted" id="hosts-empty">"No host matches."</p> })}
            {move || next.get().map(|after| view! {
                <button class="button" id="hosts-more" on:click=move |_| load(Some(after.clone()))>"More hosts"</button>
            })}
        </section>
    }
}
