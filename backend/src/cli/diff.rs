//! `fleetwave release --diff-from OLD`: what changes in each target closure against the closure
//! its hosts ran in the previous release, from `nix store diff-closures` and `nix path-info`
//! where Nix is installed and both closures are in the local store. A closure without them
//! gets no summary, and the release says so: the dashboard then shows "no diff available"
//! rather than an empty list that would read as "nothing changes".

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::Context;
use serde_json::Value;
use shared::manifest::{ClosureChanges, PackageChange};
use shared::{Closure, Hostname};

/// Each host's closure in a previous release: `OLD` is a release directory (its
/// `fleet.json`), a fleet document, or a rollout manifest.
pub fn previous_closures(old: &Path) -> anyhow::Result<BTreeMap<Hostname, Closure>> {
    let file = if old.is_dir() { old.join("fleet.json") } else { old.to_path_buf() };
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let doc: Value = serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", file.display()))?;
    let mut closures = BTreeMap::new();
    if let Some(hosts) = doc.get("hosts").and_then(Value::as_object) {
        for (name, host) in hosts {
            if let (Ok(name), Some(Ok(closure))) =
                (Hostname::parse(name.as_str()), host.get("closure").and_then(Value::as_str).map(Closure::parse))
            {
                closures.insert(name, closure);
            }
        }
    } else if let Some(set) = doc.get("hostSet").and_then(Value::as_array) {
        for entry in set {
            let name = entry.get("hostname").and_then(Value::as_str).map(Hostname::parse);
            let closure = entry.get("targetClosure").and_then(Value::as_str).map(Closure::parse);
            if let (Some(Ok(name)), Some(Ok(closure))) = (name, closure) {
                closures.insert(name, closure);
            }
        }
    } else {
        anyhow::bail!("{} is neither a fleet document (hosts) nor a rollout manifest (hostSet)", file.display());
    }
    Ok(closures)
}

/// For each closure the new release targets, the closure most of its hosts ran before (when
/// it differs).
pub fn pairs(old: &BTreeMap<Hostname, Closure>, new: &BTreeMap<Hostname, Closure>) -> BTreeMap<Closure, Closure> {
    let mut counts: BTreeMap<&Closure, BTreeMap<&Closure, usize>> = BTreeMap::new();
    for (host, target) in new {
        if let Some(before) = old.get(host).filter(|b| *b != target) {
            *counts.entry(target).or_default().entry(before).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .filter_map(|(target, befores)| {
            let (before, _) = befores.into_iter().max_by_key(|(b, n)| (*n, std::cmp::Reverse(*b)))?;
            Some((target.clone(), before.clone()))
        })
        .collect()
}

/// The summaries of `pairs` (new → old) that Nix could give; a line on stderr for each it
/// could not.
pub fn summaries(nix: &Path, pairs: &BTreeMap<Closure, Closure>) -> BTreeMap<Closure, ClosureChanges> {
    let mut out = BTreeMap::new();
    for (target, before) in pairs {
        match summary(nix, before, target) {
            Ok(changes) => {
                out.insert(target.clone(), changes);
            }
            Err(err) => eprintln!("no diff available for {target}: {err:#}"),
        }
    }
    out
}

fn nix_output(nix: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(nix)
        .args(["--extra-experimental-features", "nix-command"])
        .args(args)
        .output()
        .with_context(|| format!("cannot run {} (is Nix installed?)", nix.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "nix {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn summary(nix: &Path, before: &Closure, target: &Closure) -> anyhow::Result<ClosureChanges> {
    let diff = nix_output(nix, &["store", "diff-closures", before.as_str(), target.as_str()])?;
    let changes = diff
        .lines()
        .map(without_colours)
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_line(&l))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sizes: Value = serde_json::from_str(&nix_output(
        nix,
        &["path-info", "--closure-size", "--json", before.as_str(), target.as_str()],
    )?)
    .context("nix path-info printed no JSON")?;
    let size_of =
        |path: &Closure| sizes.as_array()?.iter().find(|p| p["path"] == path.as_str())?["closureSize"].as_u64();
    Ok(ClosureChanges {
        size_bytes: size_of(target),
        from: Some(before.clone()),
        from_size_bytes: size_of(before),
        changes,
    })
}

/// `line` without ANSI colour codes (Nix colours the size whether or not it writes to a
/// terminal).
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters final-letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One line of `nix store diff-closures`: `name: 1.0, 1.1 → 1.2, +12.5 KiB` (∅: absent, ε: no
/// version; the size only where it changed noticeably).
fn parse_line(line: &str) -> anyhow::Result<PackageChange> {
    let (package, rest) = line.split_once(": ").with_context(|| format!("unexpected diff-closures line `{line}`"))?;
    let (versions, size) = match rest.rsplit_once(", ") {
        Some((v, s)) if s.starts_with(['+', '-']) => (v, Some(s)),
        _ => (rest, None),
    };
    let (from, to) =
        versions.split_once(" → ").with_context(|| format!("unexpected diff-closures versions `{versions}`"))?;
    let version = |v: &str| match v.trim() {
        "∅" => None,
        "ε" => Some(String::new()),
        v => Some(v.replace('ε', "")),
    };
    Ok(PackageChange {
        package: package.trim().to_owned(),
        from: version(from),
        to: version(to),
        size_delta_bytes: size.map(parse_size).transpose()?,
    })
}

/// "+12.5 KiB", "-1.0 MiB", "+300 bytes" → bytes.
fn parse_size(text: &str) -> anyhow::Result<i64> {
    let (number, unit) = text.trim().split_once(' ').with_context(|| format!("unexpected size `{text}`"))?;
    let n: f64 = number.parse().with_context(|| format!("unexpected size `{text}`"))?;
    let scale = match unit {
        "bytes" | "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => anyhow::bail!("unexpected size unit in `{text}`"),
    };
    Ok((n * scale).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_closures_lines_read_as_added_removed_and_changed_with_sizes() {
        let read = |l: &str| parse_line(l).unwrap();
        let added = read("curl: ∅ → 8.0.1, +1.2 MiB");
        assert_eq!((added.from, added.to.as_deref(), added.size_delta_bytes), (None, Some("8.0.1"), Some(1_258_291)));
        let removed = read("openssl: 3.0.1 → ∅, -512.0 KiB");
        assert_eq!(
            (removed.from.as_deref(), removed.to, removed.size_delta_bytes),
            (Some("3.0.1"), None, Some(-524_288))
        );
        let changed = read("hello: 2.10 → 2.12");
        assert_eq!(
            (changed.from.as_deref(), changed.to.as_deref(), changed.size_delta_bytes),
            (Some("2.10"), Some("2.12"), None)
        );
        let several = read("linux: 6.1.1, 6.1.2 → 6.6.3");
        assert_eq!(several.from.as_deref(), Some("6.1.1, 6.1.2"));
        let unversioned = read("etc: ε → ∅");
        assert_eq!((unversioned.from.as_deref(), unversioned.to), (Some(""), None));
        let coloured = read(&without_colours("curl: ∅ → 8.7.1, \u{1b}[31;1m+2343.9 KiB\u{1b}[0m"));
        assert_eq!((coloured.to.as_deref(), coloured.size_delta_bytes), (Some("8.7.1"), Some(2_400_154)));
        assert!(parse_line("no colon here").is_err());
        assert!(parse_line("x: 1 → 2, +3 parsecs").is_err());
    }

    #[test]
    fn each_target_is_compared_with_what_most_of_its_hosts_ran() {
        let c = |s: &str| Closure::parse(format!("/nix/store/{s}")).unwrap();
        let h = |s: &str| Hostname::parse(s).unwrap();
        let old =
            BTreeMap::from([(h("a"), c("old-1")), (h("b"), c("old-2")), (h("c"), c("old-2")), (h("d"), c("same"))]);
        let new = BTreeMap::from([
            (h("a"), c("new")),
            (h("b"), c("new")),
            (h("c"), c("new")),
            (h("d"), c("same")),
            (h("e"), c("fresh")),
        ]);
        assert_eq!(
            pairs(&old, &new),
            BTreeMap::from([(c("new"), c("old-2"))]),
            "unchanged and new hosts compare nothing"
        );
    }
}
