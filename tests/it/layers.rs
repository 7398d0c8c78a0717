//! Architecture guard over the files of `src/`: references go only downward through [`LAYERS`],
//! never in a cycle, and the domain knows nothing of HTTP. A std-only scanner blanks comments and
//! literals, drops `#[cfg(test)]` items, and resolves `use crate::…`/`use super::…` trees and
//! inline `crate::…`/`super::…` paths to the deepest file they name. Re-exports (`pub use`) and
//! `mod x;` are not dependencies; relative `use child::…` and `self::…` are not followed (a
//! folder's `mod.rs` declaring and using its own children is that module, not a dependency on it).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Layers, lowest first: a file may reference files of its own rank or below. Each entry is a
/// module-path prefix (whole segments) and its rank; the longest matching prefix wins. A new
/// top-level module must be placed here.
#[rustfmt::skip]
const LAYERS: &[(&str, u8)] = &[
    ("id", 0), ("clock", 0), ("ops::metrics", 0), ("tls", 0), ("i18n", 0),
    ("config", 1),
    ("ops", 2), ("pass", 2),
    ("store", 3),
    ("queue", 4), ("sale", 4), ("webhooks", 4),
    ("http", 5),
    ("supervisor", 6),
    ("app", 7),
    ("cli", 8),
];

/// Module-path prefixes of the domain and its storage, which must not know about HTTP. (Config
/// may parse URLs with the `http` crate's `Uri`: a value parser, not our HTTP layer.)
const DOMAIN: &[&str] = &["queue", "sale", "store"];
/// What knowing HTTP looks like in code: the `hyper` and `http` crates, headers, the app state.
const HTTP_WORDS: &[&str] = &["hyper::", "http::", "HeaderMap", "AppState"];

/// A file of `src/` but the crate roots: `src/store/mod.rs` has the module path `["store"]`,
/// and its code with comments and literals blanked.
struct SrcFile {
    name: String,
    module: Vec<String>,
    code: String,
}

/// The files, and their file-to-file references with the first path seen for each.
struct Graph {
    files: Vec<SrcFile>,
    edges: BTreeMap<(usize, usize), String>,
}

/// Reads `src/` and resolves every reference to the deepest file a prefix of its path names.
fn graph() -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = read_files(&root).unwrap_or_else(|e| panic!("reading {}: {e}", root.display()));
    let index: BTreeMap<&[String], usize> = files.iter().map(|f| &f.module[..]).zip(0..).collect();
    let mut edges = BTreeMap::new();
    for (from, file) in files.iter().enumerate() {
        for path in references(&file.code, &file.module) {
            let to = (1..=path.len()).rev().find_map(|n| index.get(&path[..n]));
            if let Some(&to) = to.filter(|&&to| to != from) {
                let via = format!("crate::{}", path.join("::"));
                edges.entry((from, to)).or_insert(via);
            }
        }
    }
    let (n, e) = (files.len(), edges.len());
    assert!(n > 20 && e > 50, "scanner broken: {n} files, {e} edges");
    Graph { files, edges }
}

/// Every `.rs` file under `root` but the crate roots, sorted by name.
fn read_files(root: &Path) -> std::io::Result<Vec<SrcFile>> {
    let (mut dirs, mut files) = (vec![root.to_path_buf()], Vec::new());
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let name = format!("src/{}", rel.to_string_lossy().replace('\\', "/"));
            let stem = name[4..].trim_end_matches(".rs").trim_end_matches("/mod");
            let module: Vec<String> = stem.split('/').map(String::from).collect();
            let crate_root = module == ["lib"] || module == ["main"];
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && !crate_root {
                let code = blank_comments_and_strings(&fs::read_to_string(&path)?);
                files.push(SrcFile { name, module, code });
            }
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// Replaces comments and the contents of string and char literals by spaces, keeping newlines.
/// Block comments are taken as not nested.
fn blank_comments_and_strings(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let ident = |i: usize| at(i).is_alphanumeric() || at(i) == '_';
    let find = |from: usize, end: &dyn Fn(usize) -> bool| (from..c.len()).find(|&j| end(j));
    let (mut out, mut i) = (c.clone(), 0);
    while i < c.len() {
        let hashes = c[i + 1..].iter().take_while(|&&h| h == '#').count();
        let p = i.wrapping_sub(1); // `r"…"` not in an identifier, or `br"…"`, `cr"…"`
        let raw_ok = !ident(p) || (matches!(at(p), 'b' | 'c') && !ident(p.wrapping_sub(1)));
        // Each comment or literal: the range to blank, and where the scan resumes.
        let (from, to, next) = if at(i) == '/' && at(i + 1) == '/' {
            let end = find(i, &|j| c[j] == '\n').unwrap_or(c.len());
            (i, end, end)
        } else if at(i) == '/' && at(i + 1) == '*' {
            let end = find(i + 2, &|j| c[j] == '*' && at(j + 1) == '/').map_or(c.len(), |j| j + 2);
            (i, end, end)
        } else if at(i) == 'r' && at(i + 1 + hashes) == '"' && raw_ok {
            let closes = |j: usize| c[j] == '"' && (1..=hashes).all(|k| at(j + k) == '#');
            let end = find(i + 2 + hashes, &closes).unwrap_or(c.len());
            (i + 2 + hashes, end, end + 1 + hashes)
        } else if at(i) == '"' || (at(i) == '\'' && (at(i + 1) == '\\' || at(i + 2) == '\'')) {
            let mut j = i + 1;
            while j < c.len() && c[j] != c[i] {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            (i + 1, j, j + 1)
        } else {
            (i, i, i + 1)
        };
        for ch in out.iter_mut().take(to).skip(from).filter(|ch| **ch != '\n') {
            *ch = ' ';
        }
        i = next;
    }
    out.into_iter().collect()
}

/// Blanks every item annotated `#[cfg(test)]`, typically `mod tests { use super::*; … }`: up to
/// the first `;` or `}` at bracket depth 0.
fn drop_cfg_test(code: &str) -> String {
    const ATTR: &str = "#[cfg(test)]";
    let mut code = code.to_owned();
    while let Some(start) = code.find(ATTR) {
        let (item, mut depth) = (start + ATTR.len(), 0);
        let end = code[item..].find(|c: char| {
            depth += i32::from("([{".contains(c)) - i32::from(")]}".contains(c));
            depth == 0 && (c == ';' || c == '}')
        });
        let end = end.map_or(code.len(), |end| item + end + 1);
        let blank = code[start..end].replace(|c: char| c != '\n', " ");
        code.replace_range(start..end, &blank);
    }
    code
}

/// The crate-internal paths a file's blanked code references, made absolute (without `crate`).
fn references(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut code = drop_cfg_test(code);
    let mut paths = Vec::new();
    let ours = |tree: &str| tree.starts_with("crate::") || tree.starts_with("super::");
    // `use` declarations first, each expanded then blanked (but its `;`) for the inline scan.
    loop {
        let next_use =
            words(&code, "use").find(|&at| code[at + 3..].starts_with(char::is_whitespace));
        let Some(at) = next_use else { break };
        let end = code[at..].find(';').map_or(code.len(), |e| at + e + 1);
        let (before, tree) = (code[..at].trim_end(), code[at + 3..end].trim_start());
        let vis = before.rsplit_once('(').filter(|_| before.ends_with(')'));
        if ours(tree) && !vis.map_or(before, |(v, _)| v).trim_end().ends_with("pub") {
            expand(&mut tokens(tree), module.to_vec(), &mut paths);
        }
        code.replace_range(at..end, &format!("{:1$};", "", end - at - 1));
    }
    for at in words(&code, "crate").chain(words(&code, "super")) {
        let len = code[at..].find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'));
        let path = &code[at..at + len.unwrap_or(code.len() - at)];
        // Not `super` within `super::super::x`, not visibilities `pub(super)`, `pub(in crate::x)`.
        let before = code[..at].trim_end();
        if ours(path) && !before.ends_with("::") && !before.ends_with("(in") {
            expand(&mut tokens(path), module.to_vec(), &mut paths);
        }
    }
    paths
}

/// Byte offsets of `word` where it is not part of a longer identifier.
fn words<'a>(code: &'a str, word: &'a str) -> impl Iterator<Item = usize> + 'a {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(word)
        .map(|(at, _)| at)
        .filter(move |&at| {
            !code[..at].ends_with(ident) && !code[at + word.len()..].starts_with(ident)
        })
}

type Tokens = std::iter::Peekable<std::vec::IntoIter<String>>;

/// Splits a use tree into identifiers and `{`, `}`, `,`, `*` (`::` is just a separator).
fn tokens(tree: &str) -> Tokens {
    let mut spaced = tree.replace([':', ';'], " ");
    for punct in ["{", "}", ",", "*"] {
        spaced = spaced.replace(punct, &format!(" {punct} "));
    }
    let words: Vec<String> = spaced.split_whitespace().map(str::to_owned).collect();
    words.into_iter().peekable()
}

/// Expands a use tree (`crate::a::{b, c::{self, D as E}, *}`) into absolute paths from `path`,
/// the module of the file: `crate` leads to the root, `super` one module up.
fn expand(toks: &mut Tokens, mut path: Vec<String>, out: &mut Vec<Vec<String>>) {
    while let Some(tok) = toks.next_if(|t| t != "," && t != "}") {
        match tok.as_str() {
            "{" => {
                while toks.peek().is_some_and(|t| t != "}") {
                    expand(toks, path.clone(), out);
                    toks.next_if(|t| t == ",");
                }
                toks.next();
                return;
            }
            "as" => drop(toks.next()),
            "crate" => path.clear(),
            "super" => drop(path.pop()),
            "self" | "*" => {}
            _ => path.push(tok),
        }
    }
    out.push(path);
}

/// Whether `module` starts with the segments of `prefix` (like `ops::metrics`).
fn leads(module: &[String], prefix: &str) -> bool {
    format!("{}::", module.join("::")).starts_with(&format!("{prefix}::"))
}

/// The rank of the longest entry of [`LAYERS`] that leads `module`.
fn rank(module: &[String]) -> Option<u8> {
    let entries = LAYERS.iter().filter(|(prefix, _)| leads(module, prefix));
    let (_, rank) = entries.max_by_key(|(prefix, _)| prefix.len())?;
    Some(*rank)
}

/// Strongly connected components (Kosaraju) of a graph given as adjacency lists.
fn components(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    fn visit(v: usize, adj: &[Vec<usize>], seen: &mut [bool], out: &mut Vec<usize>) {
        if !std::mem::replace(&mut seen[v], true) {
            adj[v].iter().for_each(|&w| visit(w, adj, seen, out));
            out.push(v);
        }
    }
    let (mut seen, mut order, mut reverse) =
        (vec![false; adj.len()], vec![], vec![vec![]; adj.len()]);
    for (v, ws) in adj.iter().enumerate() {
        visit(v, adj, &mut seen, &mut order);
        for &w in ws {
            reverse[w].push(v);
        }
    }
    let (mut seen, mut comps) = (vec![false; adj.len()], Vec::new());
    for &v in order.iter().rev() {
        let mut comp = Vec::new();
        visit(v, &reverse, &mut seen, &mut comp);
        comps.push(comp);
    }
    comps
}

/// Fails listing the problems, one per line.
#[track_caller]
fn assert_none(what: &str, problems: &[String]) {
    let n = problems.len();
    assert!(n == 0, "{what} ({n}):\n{}", problems.join("\n"));
}

/// Every file has a rank in [`LAYERS`], and no file references a file of a higher rank.
#[test]
fn layers_import_only_downward() {
    let Graph { files, edges } = graph();
    let ranks: Vec<Option<u8>> = files.iter().map(|f| rank(&f.module)).collect();
    let mut problems = Vec::new();
    for (f, _) in files.iter().zip(&ranks).filter(|(_, r)| r.is_none()) {
        let (name, module) = (&f.name, f.module.join("::"));
        problems.push(format!("{name} (module {module}) has no entry in LAYERS"));
    }
    for (&(from, to), via) in &edges {
        let (a, b) = (&files[from].name, &files[to].name);
        if let Some((ra, rb)) = ranks[from].zip(ranks[to]).filter(|(ra, rb)| rb > ra) {
            problems.push(format!("{a} [{ra}] -> {b} [{rb}] (via {via})"));
        }
    }
    assert_none("layering problems", &problems);
}

/// The files of `src/` reference each other without cycles; each cycle is listed with the
/// references that close it.
#[test]
fn no_import_cycle_among_files() {
    let Graph { files, edges } = graph();
    let mut adj = vec![Vec::new(); files.len()];
    for &(from, to) in edges.keys() {
        adj[from].push(to);
    }
    let mut report = Vec::new();
    for cycle in components(&adj).into_iter().filter(|c| c.len() > 1) {
        let set: BTreeSet<usize> = cycle.into_iter().collect();
        let names: Vec<&str> = set.iter().map(|&i| files[i].name.as_str()).collect();
        let head = format!("cycle of {} files: {}", set.len(), names.join(", "));
        let mut cycle = vec![head];
        for (&(from, to), via) in &edges {
            let (a, b) = (&files[from].name, &files[to].name);
            if set.contains(&from) && set.contains(&to) {
                cycle.push(format!("    {a} -> {b} (via {via})"));
            }
        }
        report.push(cycle.join("\n"));
    }
    assert_none("import cycles", &report);
}

/// Occurrences of [`HTTP_WORDS`] in blanked code as `(line, word)`.
fn http_mentions(code: &str) -> Vec<(usize, &'static str)> {
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        for &word in HTTP_WORDS {
            let stem = word.trim_end_matches(':');
            // `crate::http::x` is a module of ours, not the `http` crate.
            let ours = |at: usize| stem != word && line[..at].ends_with("::");
            let hits = words(line, stem).filter(|&at| line[at..].starts_with(word) && !ours(at));
            found.extend(hits.map(|_| (n + 1, word)));
        }
    }
    found
}

/// No file of `queue`, `sale` or `store` names hyper, the `http` crate, `HeaderMap` or
/// `AppState` in code (comments and strings aside): the domain stays transport-free.
#[test]
fn domain_knows_no_http() {
    let mut hits = Vec::new();
    for f in graph().files {
        if DOMAIN.iter().any(|d| leads(&f.module, d)) {
            let name = &f.name;
            let lines = http_mentions(&f.code).into_iter();
            hits.extend(lines.map(|(n, word)| format!("{name}:{n} mentions `{word}`")));
        }
    }
    assert_none("mentions of HTTP in the domain", &hits);
}

/// The references of `src` seen from `module`, as `a::b` strings.
fn refs(src: &str, module: &[&str]) -> Vec<String> {
    let module: Vec<String> = module.iter().map(ToString::to_string).collect();
    let paths = references(&blank_comments_and_strings(src), &module);
    paths.iter().map(|p| p.join("::")).collect()
}

#[test]
fn parser_expands_grouped_multi_line_use() {
    let src = "use crate::{\n    a::b::{self, C as D}, // crate::x\n    e,\n};\n\
               pub use crate::f::G;\npub(crate) use super::h;\nmod x;\n\
               fn f() { let s = \"crate::x\"; /* crate::x */ crate::i::j(); }";
    assert_eq!(refs(src, &["m"]), ["a::b", "a::b::C", "e", "i::j"]);
}

#[test]
fn parser_resolves_super_from_mod_rs_and_leaf() {
    // `src/store/mod.rs` is module `store`, whose `super` is the crate root.
    assert_eq!(refs("use super::redis::A;", &["store"]), ["redis::A"]);
    let src = "use super::{x, y::Z};\npub(super) fn f() { super::super::w(); }";
    let expected = ["store::x", "store::y::Z", "w"];
    assert_eq!(refs(src, &["store", "redis"]), expected);
}

#[test]
fn parser_skips_test_modules_and_finds_http() {
    let src = "#[cfg(test)]\nmod tests {\n    use super::*;\n    use crate::a::B;\n}\n\
               fn g() -> u8 { b'}' }\nuse crate::c::D;\n\
               let u = r#\"http://\"#.parse::<http::Uri>(); crate::http::e();\n";
    assert_eq!(refs(src, &["m", "n"]), ["c::D", "http::e"]);
    let code = blank_comments_and_strings(src);
    assert_eq!(http_mentions(&code), [(8, "http::")]);
}
