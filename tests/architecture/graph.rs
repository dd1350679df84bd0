//! Reads a crate's `src/` into a module graph: one node per file (`web/api/jobs.rs` is
//! `web::api::jobs`, a `mod.rs` is its folder), an edge for every module a file names through
//! `crate::` or `super::` (in `use` trees or inline). Comments, string and char literals and
//! `#[cfg(test)]` modules are blanked first, so only code counts. A path is cut to the longest
//! prefix that is a module (`crate::web::AppState` names `web`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub type ModulePath = Vec<String>;

pub struct Graph {
    /// Each module and the modules it names (never itself).
    pub edges: BTreeMap<ModulePath, BTreeSet<ModulePath>>,
}

/// The code of every non-test file under `src`, comments and literals blanked, by module.
pub fn code_by_module(src: &Path) -> Vec<(ModulePath, String)> {
    let mut files = Vec::new();
    collect(src, src, &mut files);
    files
        .into_iter()
        .map(|(module, _, text)| {
            (
                module,
                without_test_modules(&blank_comments_and_literals(&text)),
            )
        })
        .collect()
}

impl Graph {
    pub fn read(src: &Path) -> Graph {
        let mut files = Vec::new();
        collect(src, src, &mut files);
        // A file declared `#[cfg(test)] mod tests;` is test code, like an inline test module.
        let test_files: BTreeSet<ModulePath> = files
            .iter()
            .flat_map(|(module, _, text)| {
                test_module_declarations(&blank_comments_and_literals(text))
                    .into_iter()
                    .map(move |name| [module.clone(), vec![name]].concat())
            })
            .collect();
        files.retain(|(module, _, _)| !test_files.iter().any(|t| module.starts_with(t)));
        let modules: BTreeSet<ModulePath> = files.iter().map(|(m, _, _)| m.clone()).collect();
        let mut edges: BTreeMap<ModulePath, BTreeSet<ModulePath>> = BTreeMap::new();
        for (module, is_folder_root, text) in &files {
            let code = without_test_modules(&blank_comments_and_literals(text));
            let targets = edges.entry(module.clone()).or_default();
            for path in named_paths(&code) {
                let Some(mut target) = resolve(module, *is_folder_root, &path) else {
                    continue;
                };
                while !target.is_empty() && !modules.contains(&target) {
                    target.pop();
                }
                if !target.is_empty() && target != *module {
                    targets.insert(target);
                }
            }
        }
        Graph { edges }
    }
}

/// `(module path, is a mod.rs/lib.rs/main.rs, text)` of every `.rs` file under `dir`.
fn collect(root: &Path, dir: &Path, out: &mut Vec<(ModulePath, bool, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).expect("under src");
            let mut module: ModulePath = relative
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let is_folder_root = matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            );
            if is_folder_root {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).expect("source file");
            out.push((module, is_folder_root, text));
        }
    }
}

/// The text with comments and the insides of string and char literals replaced by spaces (line
/// breaks kept), so that neither `// crate::x` nor `"{"` can be mistaken for code.
fn blank_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_start(&chars, i) {
            // r"…", r#"…"#, br"…": no escapes; ends at a quote followed by as many #.
            let open = chars[i..].iter().position(|&c| c == '"').expect("quote") + i;
            out.extend(std::iter::repeat_n(' ', open - i));
            out.push('"');
            i = open + 1;
            loop {
                if i >= chars.len() {
                    break;
                }
                if chars[i] == '"' && chars[i + 1..].iter().take(hashes).all(|&c| c == '#') {
                    out.push('"');
                    out.extend(std::iter::repeat_n(' ', hashes));
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push('"');
            i += 1;
        } else if c == '\'' && char_literal_len(&chars, i).is_some() {
            let len = char_literal_len(&chars, i).expect("checked");
            out.push('\'');
            out.extend(std::iter::repeat_n(' ', len - 2));
            out.push('\'');
            i += len;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// At `r"`, `r#…"`, `br"` or `br#…"` not inside an identifier: the number of `#`.
fn raw_string_start(chars: &[char], i: usize) -> Option<usize> {
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return None;
    }
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
    (chars.get(j + hashes) == Some(&'"')).then_some(hashes)
}

/// The length of the char literal at `i` (`'a'`, `'\n'`, `'\u{1F600}'`), or `None` for a
/// lifetime or label (`'a`, `'static`).
fn char_literal_len(chars: &[char], i: usize) -> Option<usize> {
    match chars.get(i + 1)? {
        '\\' => {
            let close = chars[i + 2..].iter().take(12).position(|&c| c == '\'')?;
            Some(close + 3)
        }
        _ => (chars.get(i + 2) == Some(&'\'')).then_some(3),
    }
}

/// The names of the modules declared `#[cfg(test)] mod NAME;` (their code is in another file).
fn test_module_declarations(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        rest = &rest[at + "#[cfg(test)]".len()..];
        let declaration = rest.trim_start();
        let declaration = declaration.strip_prefix("pub ").unwrap_or(declaration);
        if let Some(after) = declaration.strip_prefix("mod ") {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if after[name.len()..].trim_start().starts_with(';') {
                names.push(name);
            }
        }
    }
    names
}

/// The code with every `#[cfg(test)]` module (attribute to closing brace) removed.
fn without_test_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_module = trimmed.starts_with("mod ") || trimmed.starts_with("pub mod ");
        let body = trimmed.find(['{', ';']);
        match body {
            Some(open) if is_module && trimmed.as_bytes()[open] == b'{' => {
                out.push_str(&rest[..at]);
                let start = after.len() - trimmed.len() + open;
                let mut depth = 0usize;
                let mut end = after.len();
                for (k, ch) in after[start..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = start + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            _ => {
                // A test-only item or a `mod tests;` declaration: the attribute alone goes.
                out.push_str(&rest[..at]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every path starting with `crate`, `super` or `self` that the code names: each leaf of a `use`
/// tree, and each inline `crate::a::b` / `super::c`.
fn named_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = code;
    // `use` trees first, then blank them so the inline scan does not see them twice.
    let mut inline = String::with_capacity(code.len());
    while let Some(at) = find_word(rest, "use") {
        let Some(end) = rest[at..].find(';') else {
            break;
        };
        let tree = without_aliases(&rest[at + 3..at + end]);
        paths.extend(expand_use_tree(&tree));
        inline.push_str(&rest[..at]);
        rest = &rest[at + end + 1..];
    }
    inline.push_str(rest);
    let bytes = inline.as_bytes();
    for root in ["crate", "super"] {
        let mut from = 0;
        while let Some(found) = find_word(&inline[from..], root) {
            let start = from + found;
            let mut path = Vec::new();
            let mut k = start;
            loop {
                let len = inline[k..]
                    .bytes()
                    .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                    .count();
                if len == 0 {
                    break;
                }
                path.push(inline[k..k + len].to_string());
                k += len;
                if bytes.get(k) == Some(&b':') && bytes.get(k + 1) == Some(&b':') {
                    k += 2;
                } else {
                    break;
                }
            }
            if path.len() > 1 {
                paths.push(path);
            }
            from = start + root.len();
        }
    }
    paths
}

/// The byte offset of `word` where it stands alone (not part of a longer identifier).
fn find_word(text: &str, word: &str) -> Option<usize> {
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(found) = text[from..].find(word) {
        let at = from + found;
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + word.len()).copied();
        if !before.is_some_and(is_ident) && !after.is_some_and(is_ident) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// `crate::{a::{self,B},c}` (whitespace removed) → `[crate,a,self]`, `[crate,a,B]`, `[crate,c]`.
fn expand_use_tree(tree: &str) -> Vec<Vec<String>> {
    let tree = tree.strip_prefix("pub(crate)").unwrap_or(tree);
    let mut out = Vec::new();
    expand_into(&[], tree, &mut out);
    out
}

fn expand_into(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
    for item in split_top_level(tree) {
        let mut path = prefix.to_vec();
        match item.find('{') {
            Some(open) => {
                let head = item[..open].trim_end_matches("::");
                path.extend(head.split("::").filter(|s| !s.is_empty()).map(String::from));
                expand_into(&path, &item[open + 1..item.len() - 1], out);
            }
            None => {
                path.extend(item.split("::").filter(|s| !s.is_empty()).map(String::from));
                out.push(path);
            }
        }
    }
}

/// A `use` tree's text with `as NAME` renames and all whitespace removed: a rename does not
/// change which module is named.
fn without_aliases(tree: &str) -> String {
    let mut out = String::new();
    let mut words = tree
        .split(|c: char| c.is_whitespace())
        .filter(|w| !w.is_empty())
        .peekable();
    while let Some(word) = words.next() {
        if word == "as" {
            // The name after `as` may be glued to the next punctuation: `_,` or `Y}`.
            if let Some(name) = words.next() {
                out.extend(
                    name.chars()
                        .skip_while(|c| c.is_alphanumeric() || *c == '_'),
                );
            }
        } else {
            out.push_str(word);
        }
    }
    out
}

/// Splits `a,b::{c,d},e` at the commas outside braces.
fn split_top_level(tree: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in tree.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if c == ',' && depth == 0 {
            items.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    items.push(current);
    items.into_iter().filter(|s| !s.is_empty()).collect()
}

/// The absolute module path a path names, seen from `module`; `None` for paths outside the crate.
fn resolve(module: &ModulePath, is_folder_root: bool, path: &[String]) -> Option<ModulePath> {
    let _ = is_folder_root; // a mod.rs is its folder's module, so `super` works the same way
    match path.first().map(String::as_str) {
        Some("crate") => Some(path[1..].to_vec()),
        Some("super") => {
            let mut base = module.clone();
            let mut k = 0;
            while path.get(k).map(String::as_str) == Some("super") {
                base.pop();
                k += 1;
            }
            base.extend(path[k..].iter().cloned());
            Some(base)
        }
        Some("self") => {
            let mut base = module.clone();
            base.extend(path[1..].iter().cloned());
            Some(base)
        }
        _ => None,
    }
}

/// The strongly connected groups of more than one node (each sorted; groups sorted).
pub fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Two nodes are in one group when each reaches the other; the graphs here are small.
    let nodes: BTreeSet<&String> = edges
        .iter()
        .flat_map(|(a, bs)| std::iter::once(a).chain(bs))
        .collect();
    let reach = |from: &String| {
        let mut seen: BTreeSet<&String> = BTreeSet::new();
        let mut stack = vec![from];
        while let Some(n) = stack.pop() {
            for next in edges.get(n).into_iter().flatten() {
                if seen.insert(next) {
                    stack.push(next);
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<&String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut groups: BTreeSet<Vec<String>> = BTreeSet::new();
    for n in &nodes {
        let mut group: Vec<String> = nodes
            .iter()
            .filter(|m| reaches[*n].contains(*m) && reaches[*m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        if group.len() > 1 {
            group.sort();
            groups.insert(group);
        }
    }
    groups.into_iter().collect()
}
