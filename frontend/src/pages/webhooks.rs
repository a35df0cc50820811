//! Webhooks (SPEC §18): each configured webhook and how its delivery stands — where it is in
//! the log, how far behind, failing since when and why.

use leptos::prelude::*;

use crate::api;
use crate::components::CallErrorNotice;

/// How often the page asks again (deliveries move without log entries of their own).
const WEBHOOKS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

#[component]
pub fn WebhooksPage() -> impl IntoView {
    let list = LocalResource::new(api::webhooks);
    if let Ok(handle) = set_interval_with_handle(move || list.refetch(), WEBHOOKS_EVERY) {
        on_cleanup(move || handle.clear());
    }
    let now = crate::policies::browser_now;
    view! {
        <section class="page" id="page-webhooks">
            <h1>"Webhooks"</h1>
            <p class="lede">"Where the log's entries go besides this dashboard: each webhook gets every entry it asks for, in order, signed."</p>
            {move || match list.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(Err(err)) => view! { <CallErrorNotice err=err /> }.into_any(),
                Some(Ok(hooks)) if hooks.is_empty() => view! {
                    <div class="empty"><h2>"No webhooks"</h2><p>"Start the server with --webhooks FILE to send log entries to chat or to your own endpoints (README, \"Webhooks\")."</p></div>
                }.into_any(),
                Some(Ok(hooks)) => view! {
                    <table class="table" id="webhooks">
                        <thead><tr><th>"Name"</th><th>"Sends"</th><th>"To"</th><th>"Delivered"</th><th>"Behind"</th><th>"State"</th></tr></thead>
                        <tbody>{hooks.into_iter().map(|h| {
                            let sends = match (&h.kinds, &h.channels) {
                                (None, None) => "every entry".to_owned(),
                                (kinds, channels) => [
                                    kinds.as_ref().map(|k| k.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", ")),
                                    channels.as_ref().map(|c| format!("channels {}", c.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", "))),
                                ].into_iter().flatten().collect::<Vec<_>>().join(" · "),
                            };
                            let last = h.last_delivered_at.map(|t| format!("last {}", shared::words::relative(t, now()))).unwrap_or_default();
                            let (state, class) = match (&h.failing_since, &h.last_error) {
                                (Some(since), error) => (
                                    format!("failing since {}: {}", since.format("%H:%M:%S UTC"), error.clone().unwrap_or_default()),
                                    "error-text small",
                                ),
                                _ if h.behind == 0 => ("up to date".to_owned(), "muted small"),
                                _ => ("delivering".to_owned(), "muted small"),
                            };
                            let name = h.name.clone();
                            view! {
                                <tr data-webhook=name>
                                    <td class="nowrap"><strong>{h.name}</strong><div class="muted small">{h.format}</div></td>
                                    <td class="small">{sends}</td>
                                    <td><code class="small">{h.url}</code></td>
                                    <td>{h.delivered}<div class="muted small">{last}</div></td>
                                    <td>{h.behind}<div class="muted small">{format!("after log seq {}", h.cursor)}</div></td>
                                    <td><span class=class>{state}</span></td>
                                </tr>
                            }
                        }).collect_view()}</tbody>
                    </table>
                }.into_any(),
            }}
        </section>
    }
}
