//! Freezes on every page (SPEC §17): the banner that shows each freeze in force (who, why,
//! until when) with its release, and the header's stop-the-line button. Both read one list
//! the app shell provides, fetched again every 5 s and at once after an action here. (Polled,
//! not a second live feed: a browser opens at most six connections to one server over
//! HTTP/1.1, and each feed holds one for as long as the page is open.)

use chrono::{DateTime, Utc};
use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::api::OperatorAction;
use shared::policy::{Freeze, FreezeSource, Freezes};

use crate::api::{self, CallError};
use crate::components::ReasonDialog;
use crate::session::Session;

/// How often the banner looks again.
const FREEZES_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The freezes in force, as the app shell provides them.
#[derive(Clone, Copy)]
pub struct FreezeList(LocalResource<Result<Freezes, CallError>>);

impl FreezeList {
    /// Fetches the list (again once someone signed in) and keeps it fresh.
    pub fn provide() {
        let session = Session::current();
        let list = LocalResource::new(move || {
            // Read the session so that signing in fetches again.
            let _ = session.and_then(|s| s.whoami());
            api::freezes()
        });
        if let Ok(handle) = set_interval_with_handle(move || list.refetch(), FREEZES_EVERY) {
            on_cleanup(move || handle.clear());
        }
        provide_context(FreezeList(list));
    }

    fn current() -> Option<FreezeList> {
        use_context::<FreezeList>()
    }

    fn active(&self) -> Vec<Freeze> {
        self.0.get().and_then(Result::ok).map(|f| f.active).unwrap_or_default()
    }

    fn refetch(&self) {
        self.0.refetch();
    }
}

/// Now, from the browser's clock.
pub fn browser_now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(js_sys::Date::now() as i64).unwrap_or_default()
}

/// "in 5 h 12 min", "in 40 s", or "now" for a moment that has come.
pub fn from_now(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = at.signed_duration_since(now).num_seconds();
    if seconds <= 0 {
        return "now".into();
    }
    format!("in {}", shared::words::span(seconds.unsigned_abs()))
}

/// What a freeze covers, in words.
fn scope(freeze: &Freeze) -> String {
    let Some(selector) = &freeze.selector else { return "the whole fleet".into() };
    let mut parts = Vec::new();
    if selector.all == Some(true) {
        parts.push("every host".to_owned());
    }
    if let Some(channel) = &selector.channel {
        parts.push(format!("channel {channel}"));
    }
    if let Some(hosts) = selector.hosts.as_ref().filter(|h| !h.is_empty()) {
        let shown: Vec<String> = hosts.iter().take(3).map(ToString::to_string).collect();
        let more = hosts.len().saturating_sub(shown.len());
        parts.push(format!(
            "{}{}",
            shown.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        ));
    }
    if let Some(tags) = selector.tags.as_ref().filter(|t| !t.is_empty()) {
        parts.push(format!("tags {}", tags.join(" + ")));
    }
    if let Some(tags) = selector.tags_any.as_ref().filter(|t| !t.is_empty()) {
        parts.push(format!("any of tags {}", tags.join(", ")));
    }
    parts.join(" or ")
}

/// Every freeze in force, on every page: who, why, what, until when; operators release
/// their own here (a signed freeze goes with a new fleet document).
#[component]
pub fn FreezeBanner() -> impl IntoView {
    let Some(list) = FreezeList::current() else { return ().into_any() };
    let session = Session::current();
    let can_act = move || session.is_some_and(|s| s.can_act());
    let releasing: RwSignal<Option<String>> = RwSignal::new(None);
    let open = RwSignal::new(false);
    let notice: RwSignal<Option<String>> = RwSignal::new(None);
    let release = Callback::new(move |(reason, _): (String, Option<i64>)| {
        let Some(name) = releasing.get_untracked() else { return };
        spawn_local(async move {
            match api::act(&OperatorAction::Unfreeze { name: name.clone() }, Some(reason)).await {
                Ok(_) => notice.set(None),
                Err(err) => notice.set(Some(format!("Release {name}: {err}"))),
            }
            list.refetch();
        });
    });
    // Redrawn only when the list changed (it is fetched every few seconds).
    let active = Memo::new(move |_| list.active());
    view! {
        {move || {
            let active = active.get();
            (!active.is_empty()).then(|| {
                let now = browser_now();
                view! {
                    <div class="freeze-banner" id="freeze-banner" role="status">
                        {active.into_iter().map(|f| {
                            let name = f.name.clone();
                            let until = match f.until {
                                Some(u) => format!("until {} ({})", u.format("%Y-%m-%d %H:%M UTC"), from_now(u, now)),
                                None => "until released".into(),
                            };
                            let who = match (&f.by, f.source) {
                                (Some(by), _) => format!("by {by}"),
                                (None, FreezeSource::Fleet) => "signed in the fleet document".into(),
                                (None, FreezeSource::Operator) => String::new(),
                            };
                            let releasable = f.source == FreezeSource::Operator;
                            let attr = name.clone();
                            view! {
                                <div class="freeze" data-freeze=attr>
                                    <span class="freeze-mark" aria-hidden="true">"■"</span>
                                    <strong>"Frozen"</strong>
                                    <span>{format!(" {} — {}", scope(&f), f.reason)}</span>
                                    <span class="muted small">{format!(" · {} · {who} · {until}", f.name)}</span>
                                    {(releasable && can_act()).then(|| view! {
                                        <button class="button button-quiet release-freeze" on:click=move |_| {
                                            releasing.set(Some(name.clone()));
                                            open.set(true);
                                        }>"Release"</button>
                                    })}
                                </div>
                            }
                        }).collect_view()}
                        {move || notice.get().map(|n| view! { <p class="notice notice-error" role="alert">{n}</p> })}
                    </div>
                }
            })
        }}
        <ReasonDialog
            open=open
            title=Signal::derive(move || format!("Release freeze {}", releasing.get().unwrap_or_default()))
            text="Hosts the freeze held are dispatched again on the next plan pass (other gates permitting)."
            confirm="Release the freeze"
            durations=false
            on_confirm=release
        />
    }
    .into_any()
}

/// The header's stop-the-line button (operators): a freeze of the whole fleet, confirmed in
/// a dialog that asks why and for how long.
#[component]
pub fn StopTheLine() -> impl IntoView {
    let session = Session::current();
    let can_act = move || session.is_some_and(|s| s.can_act());
    let open = RwSignal::new(false);
    let error: RwSignal<Option<String>> = RwSignal::new(None);
    let list = FreezeList::current();
    let stop = Callback::new(move |(reason, minutes): (String, Option<i64>)| {
        let until = minutes.and_then(chrono::Duration::try_minutes).and_then(|d| browser_now().checked_add_signed(d));
        spawn_local(async move {
            let action = OperatorAction::Freeze { name: None, selector: None, until };
            match api::act(&action, Some(reason)).await {
                Ok(_) => error.set(None),
                Err(err) => error.set(Some(format!("Stop the line: {err}"))),
            }
            if let Some(list) = list {
                list.refetch();
            }
        });
    });
    view! {
        <Show when=can_act>
            <button class="button button-danger" id="stop-the-line" title="Freeze the whole fleet: nothing new is dispatched" on:click=move |_| open.set(true)>
                "Stop the line"
            </button>
        </Show>
        {move || error.get().map(|e| view! { <span class="error-text small" role="alert">{e}</span> })}
        <ReasonDialog
            open=open
            title=Signal::derive(|| "Stop the line".to_owned())
            text="Nothing new is dispatched to any host until the freeze is released or runs out. Hosts already switching finish. Every operator sees who stopped the line, why and until when."
            confirm="Stop the line"
            durations=true
            on_confirm=stop
        />
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_from_now_read_as_an_operator_says_them() {
        let now: DateTime<Utc> = "2026-12-01T10:00:00Z".parse().unwrap();
        let at = |s: i64| now + chrono::Duration::seconds(s);
        assert_eq!(from_now(at(-5), now), "now");
        assert_eq!(from_now(at(40), now), "in 40 s");
        assert_eq!(from_now(at(12 * 60 + 5), now), "in 12 min");
        assert_eq!(from_now(at(5 * 3600 + 12 * 60), now), "in 5 h 12 min");
        assert_eq!(from_now(at(2 * 86_400 + 3 * 3600), now), "in 2 d 3 h");
    }

    #[test]
    fn a_freeze_says_what_it_covers() {
        let mut f = Freeze {
            name: "f".into(),
            source: FreezeSource::Operator,
            selector: None,
            from: "2026-12-01T10:00:00Z".parse().unwrap(),
            until: None,
            reason: "r".into(),
            by: None,
        };
        assert_eq!(scope(&f), "the whole fleet");
        f.selector = serde_json::from_value(serde_json::json!({"channel": "edge", "tags": ["db"]})).unwrap();
        assert_eq!(scope(&f), "channel edge or tags db");
        f.selector = serde_json::from_value(serde_json::json!({"hosts": ["a", "b", "c", "d", "e"]})).unwrap();
        assert_eq!(scope(&f), "a, b, c and 2 more");
    }
}
