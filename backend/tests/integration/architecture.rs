//! The modules of the control plane and of the engine use each other in one direction: this
//! reads their sources, lists the `crate::` edges between top-level modules, and fails on a
//! cycle (naming it). Comments are skipped, so a doc link does not count as a use.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
        if entry.is_dir() {
            rust_files(&entry, out);
        } else if entry.extension().is_some_and(|x| x == "rs") {
            out.push(entry);
        }
    }
}

/// The source without comments (line comments, doc comments, block comments) and string
/// literals, so that only code remains.
fn code_of(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            'r' if chars.peek() == Some(&'#') => {
                // A raw string `r#"…"#` (one `#` is all the sources use).
                chars.next();
                if chars.next_if_eq(&'"').is_some() {
                    let mut last = ' ';
                    for c in chars.by_ref() {
                        if last == '"' && c == '#' {
                            break;
                        }
                        last = c;
                    }
                    out.push_str("\"\"");
                } else {
                    out.push_str("r#");
                }
            }
            '\'' => {
                // A char literal (`'"'`, `'\''`) is skipped; a lifetime (`'a`) is kept.
                let mut ahead = chars.clone();
                match (ahead.next(), ahead.next()) {
                    (Some('\\'), _) => {
                        chars.next();
                        chars.next();
                        for c in chars.by_ref() {
                            if c == '\'' {
                                break;
                            }
                        }
                    }
                    (Some(_), Some('\'')) => {
                        chars.next();
                        chars.next();
                    }
                    _ => out.push(c),
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => escaped = false,
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// The top-level modules a piece of code names through `crate::`: `crate::a::b`, and each
/// first segment of a group, `crate::{a, b::c}`.
fn crate_uses(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let mut used = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        // Not the tail of another path (`engine::crate::` cannot occur; `$crate::` can).
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        item_start = false;
                        let name = ident(&group[i..]);
                        if !name.is_empty() {
                            used.insert(name);
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                used.insert(name);
            }
        }
    }
    used
}

/// Edges between the top-level modules of the crate whose sources are in `src`.
fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_str().unwrap();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        let uses = graph.entry(module.clone()).or_default();
        uses.extend(crate_uses(&code).into_iter().filter(|m| *m != module));
    }
    graph
}

/// A cycle in `graph`, if there is one, as the modules along it.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit<'a>(
        graph: &'a Graph,
        node: &'a str,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut cycle: Vec<String> = path[at..].iter().map(|s| (*s).to_owned()).collect();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(graph, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(graph, node, &mut Vec::new(), &mut done))
}

fn check(name: &str, src: &Path) {
    let graph = module_graph(src);
    println!("{name}: `use crate::` edges between top-level modules");
    for (module, uses) in &graph {
        let uses: Vec<&str> = uses.iter().map(String::as_str).collect();
        println!("  {module} -> {}", if uses.is_empty() { "(nothing)".to_owned() } else { uses.join(", ") });
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!("{name} has an import cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_control_plane_modules_use_each_other_in_one_direction() {
    check("backend", &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
}

#[test]
fn the_engine_modules_use_each_other_in_one_direction() {
    check("engine", &Path::new(env!("CARGO_MANIFEST_DIR")).join("engine/src"));
}

#[test]
fn the_check_sees_grouped_uses_skips_comments_and_finds_cycles() {
    let code = code_of(
        "use crate::{a::x, b};\n// crate::c\n/// [`crate::d`]\nlet s = \"crate::e\"; let q = '\"'; crate::f::g();\nr#\"crate::h\"#; fn x<'a>() { crate::i::j() }",
    );
    assert_eq!(crate_uses(&code), BTreeSet::from(["a".into(), "b".into(), "f".into(), "i".into()]));
    let graph: Graph = [("a", "b"), ("b", "c"), ("c", "a")]
        .into_iter()
        .map(|(from, to)| (from.to_owned(), BTreeSet::from([to.to_owned()])))
        .collect();
    assert_eq!(find_cycle(&graph).map(|c| c.join(" -> ")), Some("a -> b -> c -> a".into()));
    let acyclic: Graph = [("a", "b"), ("b", "c")]
        .into_iter()
        .map(|(from, to)| (from.to_owned(), BTreeSet::from([to.to_owned()])))
        .collect();
    assert_eq!(find_cycle(&acyclic), None);
}
