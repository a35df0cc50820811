//! The live feed in the browser: an `EventSource` on `/api/v1/feed`, resumed from the `asOf`
//! of the snapshot the page rendered. The browser reconnects by itself after a network drop
//! (sending `Last-Event-ID`), and the page shows "reconnecting" meanwhile. A resume from
//! before the first entry the server still holds (the rest were sealed into its log archive)
//! gets `event: reset`: what the page shows may have missed entries, so it loads afresh.

use leptos::prelude::*;
use shared::api::LogEvent;
use shared::log::{FeedTopic, LogKind};
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{EventSource, MessageEvent};

/// What the connection is doing, for the status pill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedStatus {
    Connecting,
    Live,
    Reconnecting,
}

/// Subscribes for the lifetime of the calling component; `on_entry` gets every entry after
/// `after` (or, with `None`, every entry from now on), in order.
pub fn subscribe(after: Option<i64>, status: RwSignal<FeedStatus>, on_entry: impl Fn(LogEvent) + 'static) {
    let url = match after {
        Some(after) => format!("/api/v1/feed?lastEventId={after}"),
        None => "/api/v1/feed".to_owned(),
    };
    let Ok(source) = EventSource::new(&url) else {
        status.set(FeedStatus::Reconnecting);
        return;
    };
    let on_message = Closure::<dyn Fn(MessageEvent)>::new(move |event: MessageEvent| {
        if let Some(text) = event.data().as_string()
            && let Ok(entry) = serde_json::from_str::<LogEvent>(&text)
        {
            on_entry(entry);
        }
    });
    for topic in FeedTopic::ALL {
        let _ = source.add_event_listener_with_callback(topic.as_str(), on_message.as_ref().unchecked_ref());
    }
    let on_reset = Closure::<dyn Fn()>::new(|| {
        if let Some(window) = web_sys::window() {
            let _ = window.location().reload();
        }
    });
    let _ = source.add_event_listener_with_callback("reset", on_reset.as_ref().unchecked_ref());
    let on_open = Closure::<dyn Fn()>::new(move || status.set(FeedStatus::Live));
    source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    let on_error = Closure::<dyn Fn()>::new(move || status.set(FeedStatus::Reconnecting));
    source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    // A page the browser keeps in its back/forward cache would keep its feed's connection (a
    // browser opens six to one server): close it when the page is hidden; a page shown again
    // from that cache reloads (`reload_when_restored`).
    let closer = source.clone();
    let on_hide = Closure::<dyn Fn()>::new(move || closer.close());
    let window = web_sys::window();
    if let Some(window) = &window {
        let _ = window.add_event_listener_with_callback("pagehide", on_hide.as_ref().unchecked_ref());
    }

    let keep = send_wrapper::SendWrapper::new((source, on_message, on_reset, on_open, on_error, on_hide, window));
    on_cleanup(move || {
        let (source, _, _, _, _, on_hide, window) = keep.take();
        if let Some(window) = window {
            let _ = window.remove_event_listener_with_callback("pagehide", on_hide.as_ref().unchecked_ref());
        }
        source.close();
    });
}

/// A page the browser restores from its back/forward cache had its feeds closed when it was
/// hidden: load it afresh (once, by the app shell).
pub fn reload_when_restored() {
    let Some(window) = web_sys::window() else { return };
    let on_show = Closure::<dyn Fn(web_sys::Event)>::new(|event: web_sys::Event| {
        let persisted = js_sys::Reflect::get(&event, &"persisted".into()).ok().and_then(|p| p.as_bool());
        if persisted == Some(true)
            && let Some(window) = web_sys::window()
        {
            let _ = window.location().reload();
        }
    });
    let _ = window.add_event_listener_with_callback("pageshow", on_show.as_ref().unchecked_ref());
    // Lives as long as the page.
    on_show.forget();
}

/// Refreshes `refetch` when the feed reports a change of one of `kinds` (debounced: a burst of
/// entries causes one refresh), so summary pages stay live without polling.
pub fn refresh_on(kinds: &'static [LogKind], status: RwSignal<FeedStatus>, refetch: impl Fn() + Clone + 'static) {
    let scheduled = StoredValue::new(false);
    subscribe(None, status, move |entry: LogEvent| {
        if !kinds.contains(&entry.kind) || scheduled.get_value() {
            return;
        }
        scheduled.set_value(true);
        let refetch = refetch.clone();
        set_timeout(
            move || {
                scheduled.set_value(false);
                refetch();
            },
            std::time::Duration::from_millis(300),
        );
    });
}

/// The status pill shown in the page header.
#[component]
pub fn FeedIndicator(status: RwSignal<FeedStatus>) -> impl IntoView {
    view! {
        <span
            id="feed-status"
            class=move || match status.get() {
                FeedStatus::Live => "pill pill-live",
                FeedStatus::Connecting => "pill",
                FeedStatus::Reconnecting => "pill pill-warn",
            }
        >
            {move || match status.get() {
                FeedStatus::Live => "live",
                FeedStatus::Connecting => "connecting…",
                FeedStatus::Reconnecting => "reconnecting…",
            }}
        </span>
    }
}
