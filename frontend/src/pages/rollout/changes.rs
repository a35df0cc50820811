//! The approve and promote dialogs (SPEC §18, "what changes, before approving"): before a
//! wave opens, what its hosts will run — per target closure, the packages added, removed and
//! changed and the size change, as the signed manifest says — or "no diff available".

use leptos::prelude::*;
use shared::RolloutId;
use shared::api::{OperatorAction, RolloutChanges};
use shared::manifest::ClosureChanges;

use super::Act;
use crate::api;
use crate::components::CallErrorNotice;

/// An approve or promote waiting for the operator's confirmation.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub rollout_id: RolloutId,
    /// `ApproveWave` or `Promote` (its `force` is what the dialog's box says).
    pub action: OperatorAction,
    pub title: String,
}

/// "412.3 MiB".
fn bytes(n: i128) -> String {
    let (sign, n) = (if n < 0 { "-" } else { "" }, n.unsigned_abs() as f64);
    let (value, unit) = match n {
        n if n >= 1024.0 * 1024.0 * 1024.0 => (n / (1024.0 * 1024.0 * 1024.0), "GiB"),
        n if n >= 1024.0 * 1024.0 => (n / (1024.0 * 1024.0), "MiB"),
        n if n >= 1024.0 => (n / 1024.0, "KiB"),
        n => (n, "bytes"),
    };
    if unit == "bytes" { format!("{sign}{value:.0} {unit}") } else { format!("{sign}{value:.1} {unit}") }
}

/// One closure's summary: counts, size change, then the packages.
fn summary(c: &ClosureChanges) -> impl IntoView + use<> {
    let added = c.changes.iter().filter(|p| p.from.is_none()).count();
    let removed = c.changes.iter().filter(|p| p.to.is_none()).count();
    let changed = c.changes.len() - added - removed;
    let size = match (c.size_bytes, c.from_size_bytes) {
        (Some(now), Some(before)) => {
            let delta = i128::from(now) - i128::from(before);
            format!("{} ({}{})", bytes(i128::from(now)), if delta >= 0 { "+" } else { "" }, bytes(delta))
        }
        (Some(now), None) => bytes(i128::from(now)),
        _ => "size unknown".to_owned(),
    };
    let rows = c
        .changes
        .iter()
        .map(|p| {
            let (what, class) = match (&p.from, &p.to) {
                (None, Some(_)) => ("added", "change-added"),
                (Some(_), None) => ("removed", "change-removed"),
                _ => ("changed", "change-changed"),
            };
            let versions = match (&p.from, &p.to) {
                (None, Some(to)) => to.clone(),
                (Some(from), None) => from.clone(),
                (Some(from), Some(to)) => format!("{from} → {to}"),
                (None, None) => String::new(),
            };
            let delta =
                p.size_delta_bytes.map(|d| format!("{}{}", if d >= 0 { "+" } else { "" }, bytes(i128::from(d))));
            view! {
                <tr class=class><td>{what}</td><td><strong>{p.package.clone()}</strong></td><td>{versions}</td>
                    <td class="muted">{delta.unwrap_or_default()}</td></tr>
            }
        })
        .collect_view();
    view! {
        <p class="small changes-counts">{format!("{added} added · {removed} removed · {changed} changed · closure {size}")}</p>
        <table class="table changes-table"><tbody>{rows}</tbody></table>
    }
}

/// The dialog; `pending` opens it and is cleared when it closes.
#[component]
pub fn ChangesDialog(pending: RwSignal<Option<Pending>>, act: Act) -> impl IntoView {
    let reason = RwSignal::new(String::new());
    let force = RwSignal::new(false);
    let changes = LocalResource::new(move || {
        let id = pending.with(|p| p.as_ref().map(|p| p.rollout_id.clone()));
        async move {
            match id {
                Some(id) => Some(api::rollout_changes(&id).await),
                None => None,
            }
        }
    });
    let close = move || {
        pending.set(None);
        reason.set(String::new());
        force.set(false);
    };
    let is_promote =
        move || pending.with(|p| matches!(p.as_ref().map(|p| &p.action), Some(OperatorAction::Promote { .. })));
    let targets = move || -> AnyView {
        match changes.get() {
            None | Some(None) => view! { <p class="muted small">"Loading what changes…"</p> }.into_any(),
            Some(Some(Err(err))) => view! { <CallErrorNotice err=err /> }.into_any(),
            Some(Some(Ok(RolloutChanges { targets }))) => targets
                .into_iter()
                .map(|t| {
                    let head = format!("{} ({} host{})", t.closure, t.hosts, if t.hosts == 1 { "" } else { "s" });
                    view! {
                        <div class="changes-target">
                            <p class="small"><code>{head}</code></p>
                            {match t.changes {
                                Some(c) => summary(&c).into_any(),
                                None => view! { <p class="muted small no-diff">"No diff available: the release carries no change summary for this closure."</p> }.into_any(),
                            }}
                        </div>
                    }
                })
                .collect_view()
                .into_any(),
        }
    };
    view! {
        <Show when=move || pending.with(Option::is_some)>
            <div class="dialog-backdrop">
                <div class="dialog dialog-wide card" role="dialog" aria-modal="true" aria-labelledby="dialog-title" id="dialog">
                    <h2 id="dialog-title">{move || pending.with(|p| p.as_ref().map(|p| p.title.clone()).unwrap_or_default())}</h2>
                    <p class="small">"What its hosts will run, as the signed release says:"</p>
                    <div class="changes" id="changes">{targets}</div>
                    <Show when=is_promote>
                        <label class="small dialog-check">
                            <input type="checkbox" id="dialog-force" prop:checked=move || force.get()
                                on:change=move |ev| force.set(event_target_checked(&ev)) />
                            " Force: open it even if the current wave is not complete (logged as an override)"
                        </label>
                    </Show>
                    <label class="dialog-label" for="dialog-reason">"Why (optional, logged)"</label>
                    <textarea id="dialog-reason" rows="2" prop:value=move || reason.get()
                        on:input=move |ev| reason.set(event_target_value(&ev))></textarea>
                    <div class="dialog-actions">
                        <button class="button button-quiet" id="dialog-cancel" on:click=move |_| close()>"Cancel"</button>
                        <button class="button" id="dialog-confirm" on:click=move |_| {
                            let Some(p) = pending.get_untracked() else { return };
                            let action = match p.action {
                                OperatorAction::Promote { rollout_id, to_wave, .. } => OperatorAction::Promote { rollout_id, to_wave, force: force.get_untracked() },
                                other => other,
                            };
                            let why = Some(reason.get_untracked()).filter(|r| !r.trim().is_empty());
                            close();
                            act.run((action, why, p.title));
                        }>{move || if is_promote() { "Promote" } else { "Approve" }}</button>
                    </div>
                </div>
            </div>
        </Show>
    }
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(bytes(512), "512 bytes");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(-12 * 1024 * 1024), "-12.0 MiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
