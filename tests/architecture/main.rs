//! The module graph of `src/`, read from the source: which module names which (`use crate::…`,
//! `super::…`, and paths written inline), so the layering rules stay true as the code changes.
//!
//! - Nothing outside `src/web/` names `crate::web` (but `startup`, which wires every layer into
//!   the running server): the HTTP layer sits on top, and the CLI, the workers and the services
//!   reach the rules without it.
//! - No cycle between top-level modules, and none between the files of one folder (a folder's
//!   `mod.rs` declares its children and may use them; children may use what it defines).
//! - `domain` is pure: it names nothing of the crate outside `domain`.
//! - Only the web layer knows HTTP: nothing else names actix or a status code (`startup`, which
//!   builds the server, excepted), and the store names no error of the layers above it.
//! - Only the store knows the ledger's engine: nothing outside `src/store/` (and `src/query/`,
//!   the saved queries' own data sources) names rusqlite, r2d2 or a `Connection`/`Transaction`;
//!   the layers above see `&dyn store::Ledger`.
//!
//! Test code (`#[cfg(test)] mod …`) is left out: tests may reach anywhere. Run it alone with
//! `cargo test --test architecture`.

mod graph;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use graph::{Graph, ModulePath};

fn src_graph() -> Graph {
    Graph::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

/// Every edge from `from` to `to`, by file, for messages.
fn explain(
    graph: &Graph,
    cycle: &[String],
    level: &dyn Fn(&ModulePath) -> Option<String>,
) -> String {
    let members: BTreeSet<&String> = cycle.iter().collect();
    let mut lines = Vec::new();
    for (from, targets) in &graph.edges {
        let Some(a) = level(from) else { continue };
        if !members.contains(&a) {
            continue;
        }
        for to in targets {
            if let Some(b) = level(to)
                && b != a
                && members.contains(&b)
            {
                lines.push(format!("  {} -> {}", from.join("::"), to.join("::")));
            }
        }
    }
    lines.join("\n")
}

#[test]
fn nothing_below_the_web_layer_names_it() {
    let graph = src_graph();
    let upward: Vec<String> = graph
        .edges
        .iter()
        // `startup` is the composition root: it builds the HTTP server from the web layer.
        .filter(|(from, _)| !matches!(from.first().map(String::as_str), Some("web" | "startup")))
        .flat_map(|(from, targets)| {
            targets
                .iter()
                .filter(|to| to.first().map(String::as_str) == Some("web"))
                .map(move |to| format!("{} names {}", from.join("::"), to.join("::")))
        })
        .collect();
    assert!(
        upward.is_empty(),
        "only src/web may name crate::web; move what these need into service, domain or present:\n{}",
        upward.join("\n")
    );
}

#[test]
fn top_level_modules_form_no_cycle() {
    let graph = src_graph();
    let top = |m: &ModulePath| m.first().cloned();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, targets) in &graph.edges {
        let Some(a) = top(from) else { continue };
        for to in targets {
            if let Some(b) = top(to)
                && a != b
            {
                edges.entry(a.clone()).or_default().insert(b);
            }
        }
    }
    let cycles = graph::cycles(&edges);
    let report: Vec<String> = cycles
        .iter()
        .map(|c| format!("{}:\n{}", c.join(" <-> "), explain(&graph, c, &top)))
        .collect();
    assert!(
        cycles.is_empty(),
        "top-level modules that depend on each other:\n{}",
        report.join("\n")
    );
}

#[test]
fn the_files_of_each_folder_form_no_cycle() {
    let graph = src_graph();
    let mut folders: BTreeMap<ModulePath, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (from, targets) in &graph.edges {
        for to in targets {
            let shared = from.iter().zip(to).take_while(|(a, b)| a == b).count();
            // One inside the other (a folder's mod.rs and its children) is not a sibling edge.
            if shared < from.len() && shared < to.len() {
                folders
                    .entry(from[..shared].to_vec())
                    .or_default()
                    .entry(from[shared].clone())
                    .or_default()
                    .insert(to[shared].clone());
            }
        }
    }
    let mut report = Vec::new();
    for (folder, edges) in &folders {
        if folder.is_empty() {
            continue; // the top level has its own test
        }
        for cycle in graph::cycles(edges) {
            let depth = folder.len();
            let level = |m: &ModulePath| {
                (m.len() > depth && m[..depth] == folder[..]).then(|| m[depth].clone())
            };
            report.push(format!(
                "in src/{}: {}\n{}",
                folder.join("/"),
                cycle.join(" <-> "),
                explain(&graph, &cycle, &level)
            ));
        }
    }
    assert!(
        report.is_empty(),
        "files of one folder that depend on each other (move the shared part down):\n{}",
        report.join("\n")
    );
}

#[test]
fn the_domain_is_pure() {
    let graph = src_graph();
    let outside: Vec<String> = graph
        .edges
        .iter()
        .filter(|(from, _)| from.first().map(String::as_str) == Some("domain"))
        .flat_map(|(from, targets)| {
            targets
                .iter()
                .filter(|to| to.first().map(String::as_str) != Some("domain"))
                .map(move |to| format!("{} names {}", from.join("::"), to.join("::")))
        })
        .collect();
    assert!(
        outside.is_empty(),
        "domain must not reach the ledger, the network or the workers:\n{}",
        outside.join("\n")
    );
}

#[test]
fn only_the_web_layer_knows_http() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = graph::code_by_module(&src);
    assert!(files.len() > 50, "the reader found the source files");
    let http: Vec<String> = files
        .iter()
        .filter(|(module, _)| {
            !matches!(module.first().map(String::as_str), Some("web" | "startup"))
        })
        .flat_map(|(module, code)| {
            [
                "actix_web",
                "actix_http",
                "actix_files",
                "HttpResponse",
                "StatusCode",
            ]
            .into_iter()
            .filter(|word| code.contains(word))
            // A client's status (reqwest's, of a webhook's answer) is not ours to map.
            .filter(|word| !(*word == "StatusCode" && code.contains("reqwest::StatusCode")))
            .map(move |word| format!("{} names {word}", module.join("::")))
        })
        .collect();
    assert!(
        http.is_empty(),
        "only src/web/ may know HTTP (`web::error` maps a ServiceError to its status):\n{}",
        http.join("\n")
    );
    let graph = src_graph();
    let store_upward: Vec<String> = graph
        .edges
        .iter()
        .filter(|(from, _)| from.first().map(String::as_str) == Some("store"))
        .flat_map(|(from, targets)| {
            targets
                .iter()
                .filter(|to| {
                    matches!(
                        to.first().map(String::as_str),
                        Some(
                            "error"
                                | "service"
                                | "executor"
                                | "scheduler"
                                | "web"
                                | "cli"
                                | "present"
                                | "notify"
                                | "retention"
                                | "startup"
                        )
                    )
                })
                .map(move |to| format!("{} names {}", from.join("::"), to.join("::")))
        })
        .collect();
    assert!(
        store_upward.is_empty(),
        "the store fails with store::Error and calls nothing above it:\n{}",
        store_upward.join("\n")
    );
}

/// Where a word of the ledger's engine is named outside the store, as "module names word".
fn engine_words_outside_the_store(files: &[(ModulePath, String)]) -> Vec<String> {
    const ENGINE: &[&str] = &[
        "rusqlite",
        "r2d2",
        "r2d2_sqlite",
        "Connection",
        "Transaction",
    ];
    files
        .iter()
        // `query` is the saved queries' data sources (SQLite files or PostgreSQL), not the
        // ledger: it keeps its own drivers.
        .filter(|(module, _)| {
            !matches!(module.first().map(String::as_str), Some("store" | "query"))
        })
        .flat_map(|(module, code)| {
            // The CSV writer of `query::csv` takes its cells as SQLite's value type; the tasks
            // and the query preview that write CSV name it, and nothing else of the driver.
            let code = code.replace("rusqlite::types::ValueRef", "ValueRef");
            ENGINE
                .iter()
                .filter(move |word| names_word(&code, word))
                .map(move |word| format!("{} names {word}", module.join("::")))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether `code` has `word` as a whole identifier (not a part of a longer one).
fn names_word(code: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(word).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

#[test]
fn only_the_store_knows_the_ledger_engine() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = graph::code_by_module(&src);
    assert!(files.len() > 50, "the reader found the source files");
    let named = engine_words_outside_the_store(&files);
    assert!(
        named.is_empty(),
        "only src/store/ may know the ledger's engine: use `&dyn store::Ledger` (Db::read/write \
         hand one out) or an engine operation of `Db`:\n{}",
        named.join("\n")
    );
    // The check is real: a module outside the store that named the engine would be reported.
    let planted = vec![
        (
            vec!["clock".to_string()],
            "use rusqlite::Connection; fn f(c: &Connection) {}".to_string(),
        ),
        (
            vec!["executor".to_string(), "internal".to_string()],
            "fn g(t: &Transaction) {} fn h(v: rusqlite::types::ValueRef) {}".to_string(),
        ),
        (
            vec!["web".to_string()],
            "struct ConnectionCount; type P = r2d2::Pool<()>;".to_string(),
        ),
        (
            vec!["query".to_string(), "sources".to_string()],
            "use rusqlite::Connection;".to_string(),
        ),
    ];
    assert_eq!(
        engine_words_outside_the_store(&planted),
        vec![
            "clock names rusqlite".to_string(),
            "clock names Connection".to_string(),
            "executor::internal names Transaction".to_string(),
            "web names r2d2".to_string(),
        ]
    );
    assert!(
        files
            .iter()
            .any(|(m, code)| m.first().map(String::as_str) == Some("store")
                && names_word(code, "rusqlite")),
        "the store itself is read (and names its engine)"
    );
}

#[test]
fn the_reader_sees_the_crates_real_edges() {
    // The graph the other tests judge must be the real one: a reader that saw nothing would make
    // them all pass. These edges exist for as long as the layers do.
    let graph = src_graph();
    let has = |from: &str, to: &str| {
        let from: ModulePath = from.split("::").map(String::from).collect();
        let to: ModulePath = to.split("::").map(String::from).collect();
        graph.edges.get(&from).is_some_and(|t| t.contains(&to))
    };
    assert!(
        graph.edges.len() > 60,
        "only {} modules read",
        graph.edges.len()
    );
    assert!(
        has("web::api::jobs", "store"),
        "use crate::{{…, store}} is read"
    );
    assert!(
        has("scheduler::driver", "executor"),
        "use crate::executor::Executor is read"
    );
    assert!(
        has("executor::process", "executor::recovery"),
        "super:: paths are read"
    );
    assert!(
        !has("web::api::runs", "web::api::runs"),
        "a module does not depend on itself"
    );
}

#[test]
fn the_reader_finds_a_cycle_it_is_shown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    write("lib.rs", "pub mod a;\npub mod b;\npub mod web;\n");
    write(
        "a/mod.rs",
        "//! crate::b in a comment is not an edge\npub mod x;\npub mod y;\nuse crate::{b::{self, Thing}};\n",
    );
    write(
        "a/x.rs",
        "pub fn f() { super::y::g(); let _ = \"crate::web\"; }\n",
    );
    write(
        "a/y.rs",
        "use super::x;\n#[cfg(test)]\nmod tests {\n    use crate::web::Anything;\n}\n#[cfg(test)]\nmod more;\n",
    );
    write("a/y/more.rs", "use crate::web::Anything;\n");
    write("b.rs", "pub fn h() { crate::a::x::f(); }\n");
    write("web/mod.rs", "use crate::a;\n");
    let graph = Graph::read(dir.path());
    let path = |s: &str| -> ModulePath { s.split("::").map(String::from).collect() };
    let deps = |m: &str| graph.edges.get(&path(m)).cloned().unwrap_or_default();
    assert_eq!(deps("a"), BTreeSet::from([path("b")]));
    assert_eq!(
        deps("a::x"),
        BTreeSet::from([path("a::y")]),
        "strings are not paths"
    );
    assert_eq!(
        deps("a::y"),
        BTreeSet::from([path("a::x")]),
        "test modules are left out"
    );
    assert_eq!(deps("b"), BTreeSet::from([path("a::x")]));
    assert!(
        !graph.edges.contains_key(&path("a::y::more")),
        "test files are left out"
    );
    let top: BTreeMap<String, BTreeSet<String>> = BTreeMap::from([
        ("a".into(), BTreeSet::from(["b".into()])),
        ("b".into(), BTreeSet::from(["a".into()])),
        ("web".into(), BTreeSet::from(["a".into()])),
    ]);
    assert_eq!(
        graph::cycles(&top),
        vec![vec!["a".to_string(), "b".to_string()]]
    );
}
