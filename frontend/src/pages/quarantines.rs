use leptos::prelude::*;
use leptos::task::spawn_local;
use shared::api::OperatorAction;
use shared::{Channel, Closure};

use crate::api;
use crate::components::CallErrorNotice;

/// Closures that must not be dispatched to a channel until released.
#[component]
pub fn QuarantinesPage() -> impl IntoView {
    let list = LocalResource::new(api::quarantines);
    let session = crate::session::Session::current();
    let can_act = move || session.is_some_and(|s| s.can_act());
    let notice: RwSignal<Option<Result<String, String>>> = RwSignal::new(None);
    let status = RwSignal::new(crate::feed::FeedStatus::Connecting);
    crate::feed::refresh_on(
        &[shared::log::LogKind::QuarantineAdded, shared::log::LogKind::QuarantineReleased],
        status,
        move || list.refetch(),
    );
    let release = move |channel: Channel, closure: Closure| {
        spawn_local(async move {
            let action = OperatorAction::Release { channel, closure: closure.clone() };
            let result = api::act(&action, Some("released on the dashboard".into())).await;
            notice.set(Some(result.map(|_| format!("Released {closure}.")).map_err(|e| e.to_string())));
            list.refetch();
        });
    };
    view! {
        <section class="page" id="page-quarantines">
            <h1>"Quarantines" <crate::feed::FeedIndicator status=status /></h1>
            <p class="lede">"Closures held back from a channel, with who quarantined them and why."</p>
            {move || notice.get().map(|n| match n {
                Ok(m) => view! { <p class="notice notice-ok" id="action-result">{m}</p> }.into_any(),
                Err(m) => view! { <p class="notice notice-error" id="action-result">{m}</p> }.into_any(),
            })}
            {move || match list.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(Err(err)) => view! { <CallErrorNotice err=err /> }.into_any(),
                Some(Ok(q)) => view! {
                    <h2>"Active"</h2>
                    {if q.active.is_empty() {
                        view! { <div class="empty"><h2>"Nothing quarantined"</h2><p>"A closure is quarantined when a host rolls back from it, or when an operator says so."</p></div> }.into_any()
                    } else {
                        view! {
                            <table class="table" id="active-quarantines">
                                <thead><tr><th>"Channel"</th><th>"Closure"</th><th>"Why"</th><th>"By"</th><th>"When"</th><th></th></tr></thead>
                                <tbody>{q.active.into_iter().map(|e| {
                                    let (channel, closure) = (e.channel.clone(), e.closure.clone());
                                    let (ch, cl) = (e.channel.to_string(), e.closure.to_string());
                                    let attr = cl.clone();
                                    view! {
                                        <tr data-closure=attr>
                                            <td>{ch}</td><td><code>{cl}</code></td><td>{e.reason}</td><td>{e.by}</td>
                                            <td class="muted small">{e.at.format("%Y-%m-%d %H:%M:%S UTC").to_string()}</td>
                                            <td><Show when=can_act>{
                                                let (channel, closure) = (channel.clone(), closure.clone());
                                                view! { <button class="button button-quiet release" on:click=move |_| release(channel.clone(), closure.clone())>"Release"</button> }
                                            }</Show></td>
                                        </tr>
                                    }
                                }).collect_view()}</tbody>
                            </table>
                        }.into_any()
                    }}
                    <h2>"Released"</h2>
                    <table class="table" id="released-quarantines">
                        <thead><tr><th>"Channel"</th><th>"Closure"</th><th>"Why"</th><th>"Released by"</th><th>"When"</th></tr></thead>
                        <tbody>{q.released.into_iter().map(|e| view! {
                            <tr><td>{e.channel.to_string()}</td><td><code>{e.closure.to_string()}</code></td><td>{e.reason}</td>
                                <td>{e.released_by.unwrap_or_default()}</td>
                                <td class="muted small">{e.released_at.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_default()}</td></tr>
                        }).collect_view()}</tbody>
                    </table>
                }.into_any(),
            }}
        </section>
    }
}
