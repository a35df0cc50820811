//! The agent is small enough to audit and carries nothing of the server.
#![allow(clippy::unwrap_used)]

#[test]
fn the_agent_depends_on_no_server_crate() {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["tree", "--locked", "--offline", "-p", "agent", "-e", "normal", "--prefix", "none"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8(out.stdout).unwrap();
    for server in ["axum ", "sqlx ", "leptos ", "backend ", "hyper ", "rusqlite "] {
        assert!(!tree.lines().any(|l| l.starts_with(server)), "the agent depends on {server}:\n{tree}");
    }
    assert!(tree.lines().any(|l| l.starts_with("shared ")), "{tree}");
}
