//! The layer rule (see src/lib.rs and docs/architecture.md): the crates are layers the
//! compiler keeps apart, and inside a crate the folders are layers; imports point one way,
//!
//! `util`, `error` <- `measure` <- `judge` <- `models` <- `engine` <- `output` <- `workloads`
//! <- `serving` <- `config` <- `harness` <- `app` <- `verdicts` <- the `modelbench` binary
//! (src/bin/)
//!
//! This test reads every .rs file under src/, finds every path into the library
//! (`crate::x`, `modelbench::x`, `super::x` resolved against the file's module, `use`
//! groups `crate::{a, b}` included; comments and string literals are skipped), maps the file
//! and the target to their layers, and fails listing each path that points to a later layer.
//! No dependencies: a small Rust lexer is enough for paths.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, earliest first. A module may use its own rank or an earlier one. `util` and
/// `error` share rank 0 (util/fsio.rs builds `crate::error::Error`s; `error` uses nothing).
/// `judge` (crates/measure/src/judge/: where verdicts are made) reads `measure` (statistics,
/// what a run computed) and every layer from `models` up calls it; `measure` never imports it.
/// The binary is the top rank; nothing may import it.
const LAYERS: &[(&str, usize)] = &[
    ("util", 0),
    ("error", 0),
    ("measure", 1),
    ("judge", 2),
    ("models", 3),
    ("engine", 4),
    ("output", 5),
    ("workloads", 6),
    ("serving", 7),
    ("config", 8),
    ("harness", 9),
    ("app", 10),
    ("verdicts", 11),
    ("bin", 12),
];

/// The rule as a user reads it, for the failure message.
const RULE: &str =
    "util, error <- measure <- judge <- models <- engine <- output <- workloads <- serving <- config <- harness <- app <- verdicts <- bin";

/// The test would pass vacuously if the scanner found nothing: the tree has several hundred
/// library paths, so fewer than this means the scanner is broken.
const MIN_PATHS: usize = 150;

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().find(|(l, _)| *l == layer).map(|&(_, r)| r)
}

/// One path into the library found in a file.
#[derive(Debug, Clone)]
struct Import {
    file: String,
    line: usize,
    /// The path as written (`crate::engine::generate`, `super::super::engine`).
    text: String,
    /// The top-level module it lands in (`engine`), or a root item (`Result`).
    top: String,
    /// The module inside that layer it lands in (`generate` of `crate::engine::generate::x`),
    /// when the path names one (not for `crate::x::{a, b}` groups below the top).
    sub: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Lexer: identifiers and punctuation with line numbers; comments, strings and char
// literals dropped.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
    /// A string or char literal (its content is dropped).
    Lit,
}

fn lex(src: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0usize, 1usize);
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            let l0 = line;
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                if at(i) == '\n' {
                    line += 1;
                }
                i += 1;
            }
            i += 1;
            out.push((Tok::Lit, l0));
        } else if ch == '\'' {
            // A char literal ('a', '\n', '{') or a lifetime ('a, 'static).
            if at(i + 1) == '\\' {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push((Tok::Lit, line));
            } else if at(i + 2) == '\'' {
                i += 3;
                out.push((Tok::Lit, line));
            } else {
                i += 1; // a lifetime: its name lexes as an identifier
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let s = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[s..i].iter().collect();
            // Raw and byte strings: r"..", r#".."#, b"..", br#".."#, c"..".
            let prefix = matches!(word.as_str(), "r" | "b" | "br" | "c" | "cr");
            let raw = word.contains('r');
            if prefix && (at(i) == '"' || (raw && at(i) == '#')) {
                let l0 = line;
                let mut hashes = 0;
                while at(i) == '#' {
                    hashes += 1;
                    i += 1;
                }
                if at(i) != '"' {
                    // `r#ident`: a raw identifier.
                    let s = i;
                    while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                        i += 1;
                    }
                    out.push((Tok::Ident(c[s..i].iter().collect()), line));
                    continue;
                }
                i += 1;
                loop {
                    if i >= c.len() {
                        break;
                    }
                    if c[i] == '\n' {
                        line += 1;
                    }
                    if !raw && c[i] == '\\' {
                        i += 2;
                        continue;
                    }
                    if c[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#') {
                        i += 1 + hashes;
                        break;
                    }
                    i += 1;
                }
                out.push((Tok::Lit, l0));
            } else {
                out.push((Tok::Ident(word), line));
            }
        } else if ch == ':' && at(i + 1) == ':' {
            out.push((Tok::PathSep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Paths.

/// The module path of a file under src/ (`src/models/psann/train.rs` -> [models, psann,
/// train]; `src/measure/mod.rs` -> [measure]; `src/lib.rs` -> []). Files of the binary are
/// their own crate: None.
fn module_of(rel: &str) -> Option<Vec<String>> {
    let rel = rel.strip_prefix("src/")?;
    if rel.starts_with("bin/") {
        return None;
    }
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    Some(parts)
}

/// The layer a file belongs to, by its folder (or its own name for a top-level file).
fn layer_of(rel: &str) -> Option<String> {
    let rest = rel.strip_prefix("src/")?;
    if rest == "lib.rs" {
        return None;
    }
    let first = rest.split('/').next()?;
    Some(first.trim_end_matches(".rs").to_string())
}

/// Every path into the library in one file. `root_items`: names that src/lib.rs re-exports,
/// mapped to the module they come from (`Result` -> `error`).
fn scan(rel: &str, src: &str, root_items: &BTreeMap<String, String>) -> Vec<Import> {
    let toks = lex(src);
    let module = module_of(rel);
    let in_bin = module.is_none();
    let file_mod = module.unwrap_or_default();
    // Inline `mod name { .. }` blocks: (name, brace depth inside the block).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut out = Vec::new();
    let ident = |k: usize| match toks.get(k) {
        Some((Tok::Ident(s), _)) => Some(s.as_str()),
        _ => None,
    };
    let is = |k: usize, t: &Tok| toks.get(k).map(|(x, _)| x) == Some(t);
    let mut k = 0;
    while k < toks.len() {
        match &toks[k].0 {
            Tok::Punct('{') => {
                depth += 1;
                if k >= 2 && ident(k - 2) == Some("mod") {
                    if let Some(name) = ident(k - 1) {
                        inline.push((name.to_string(), depth));
                    }
                }
            }
            Tok::Punct('}') => {
                if inline.last().map(|(_, d)| *d) == Some(depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        let Some(root) = ident(k) else {
            k += 1;
            continue;
        };
        // A path starts at `crate`, `modelbench` or `super`, not after `::` (`x::crate`
        // cannot occur; `a::super` neither).
        let starts = matches!(root, "crate" | "modelbench" | "super")
            && is(k + 1, &Tok::PathSep)
            && !(k > 0 && is(k - 1, &Tok::PathSep));
        if !starts || (in_bin && root != "modelbench") || (!in_bin && root == "modelbench") {
            // In the binary `crate::` is the binary itself and `super::` stays inside it.
            k += 1;
            continue;
        }
        let line = toks[k].1;
        let mut text = root.to_string();
        // The absolute module path the path starts from.
        let mut base: Vec<String> = if root == "super" {
            let mut m = file_mod.clone();
            m.extend(inline.iter().map(|(n, _)| n.clone()));
            m.pop();
            m
        } else {
            Vec::new()
        };
        let mut j = k + 1;
        // More `super::` segments.
        while is(j, &Tok::PathSep) && ident(j + 1) == Some("super") {
            base.pop();
            text.push_str("::super");
            j += 2;
        }
        // The next segment: an identifier, a `{` group, or `*`.
        let mut tops: Vec<String> = Vec::new();
        // The identifiers after the first segment of a plain path (`generate`, `x` of
        // `crate::engine::generate::x`).
        let mut rest: Vec<String> = Vec::new();
        if is(j, &Tok::PathSep) {
            j += 1;
            if let Some(seg) = ident(j) {
                text.push_str("::");
                text.push_str(seg);
                tops.push(seg.to_string());
                // The rest of the path, for the message and `sub`.
                let mut m = j + 1;
                while is(m, &Tok::PathSep) {
                    match ident(m + 1) {
                        Some(s) => {
                            text.push_str("::");
                            text.push_str(s);
                            rest.push(s.to_string());
                            m += 2;
                        }
                        None => break,
                    }
                }
            } else if is(j, &Tok::Punct('{')) {
                // `crate::{a, b::c, d::{e, f}}`: the first segment of each item at depth 1.
                text.push_str("::{");
                let mut d = 0;
                let mut first = true;
                let mut m = j;
                while m < toks.len() {
                    match &toks[m].0 {
                        Tok::Punct('{') => d += 1,
                        Tok::Punct('}') => {
                            d -= 1;
                            if d == 0 {
                                break;
                            }
                        }
                        Tok::Punct(',') if d == 1 => first = true,
                        Tok::Ident(s) if d == 1 && first => {
                            if !tops.is_empty() {
                                text.push_str(", ");
                            }
                            text.push_str(s);
                            tops.push(s.clone());
                            first = false;
                        }
                        _ => {}
                    }
                    m += 1;
                }
                text.push('}');
            }
        }
        for seg in tops {
            // `super::x` from inside a layer lands in that layer unless it climbed to the root.
            let top = match base.first() {
                Some(b) => b.clone(),
                None => match seg.as_str() {
                    "self" => continue,
                    s => root_items.get(s).cloned().unwrap_or_else(|| s.to_string()),
                },
            };
            // The absolute path: base, this segment, and for a plain path the rest.
            let mut full = base.clone();
            full.push(seg.clone());
            full.extend(rest.iter().cloned());
            let sub = (full.first() == Some(&top))
                .then(|| full.get(1).cloned())
                .flatten();
            out.push(Import {
                file: rel.to_string(),
                line,
                text: text.clone(),
                top,
                sub,
            });
        }
        k = j.max(k + 1);
    }
    out
}

/// `pub mod x;` and `pub use x::{A, B};` of src/lib.rs: the layer modules, and root
/// re-exports mapped to their module.
fn lib_rs(src: &str) -> (Vec<String>, BTreeMap<String, String>) {
    let toks = lex(src);
    let mut mods = Vec::new();
    let mut items = BTreeMap::new();
    let id = |k: usize| match toks.get(k) {
        Some((Tok::Ident(s), _)) => Some(s.clone()),
        _ => None,
    };
    for k in 0..toks.len() {
        if id(k).as_deref() == Some("mod") {
            if let Some(m) = id(k + 1) {
                mods.push(m);
            }
        }
        if id(k).as_deref() == Some("use") {
            let Some(m) = id(k + 1) else { continue };
            let mut j = k + 2;
            while j < toks.len() && toks[j].0 != Tok::Punct(';') {
                if let Some(name) = id(j) {
                    items.insert(name, m.clone());
                }
                j += 1;
            }
        }
    }
    (mods, items)
}

/// Each path that points to a later layer (or to the binary, or to a module with no layer),
/// as one message line.
fn violations(imports: &[Import], modules: &[String]) -> Vec<String> {
    let mut bad = Vec::new();
    for i in imports {
        let Some(from) = layer_of(&i.file) else {
            continue; // src/lib.rs declares the layers
        };
        let Some(from_rank) = rank(&from) else {
            bad.push(format!(
                "{}: the file is in no layer (`{from}`); add its folder to LAYERS in tests/layers.rs",
                i.file
            ));
            continue;
        };
        if !modules.contains(&i.top) && i.top != "bin" {
            continue; // a root item that is no module (e.g. a macro at the crate root)
        }
        let to_rank = rank(&i.top);
        let why = match to_rank {
            None => format!(
                "`{}` is a module of src/lib.rs with no layer; add it to LAYERS in tests/layers.rs",
                i.top
            ),
            Some(_) if i.top == "bin" && from != "bin" => {
                "nothing may import the binary".to_string()
            }
            Some(r) if r > from_rank => format!(
                "{from} (rank {from_rank}) imports {} (rank {r}), a later layer",
                i.top
            ),
            Some(_) => continue,
        };
        bad.push(format!("{}:{}: `{}`: {why}", i.file, i.line, i.text));
    }
    bad.sort();
    bad.dedup();
    bad
}

/// Import cycles between the modules of one layer (`models::source` -> `models::gguf_fixture`
/// -> `models::source`): the layer rule holds inside a layer too, so its modules form a
/// graph without cycles. Imports from or into a layer's root module (its mod.rs: the types
/// the layer shares) are not edges. One line per cycle found, naming each import on it.
fn module_cycles(imports: &[Import]) -> Vec<String> {
    // (layer, from module) -> (to module -> the first import that makes the edge)
    let mut edges: BTreeMap<(String, String), BTreeMap<String, String>> = BTreeMap::new();
    for i in imports {
        let Some(m) = module_of(&i.file) else {
            continue;
        };
        let (Some(layer), Some(from), Some(to)) = (m.first(), m.get(1), i.sub.as_ref()) else {
            continue;
        };
        if *layer != i.top || from == to {
            continue;
        }
        edges
            .entry((layer.clone(), from.clone()))
            .or_default()
            .entry(to.clone())
            .or_insert_with(|| format!("{}:{} `{}`", i.file, i.line, i.text));
    }
    // Depth-first search from every module; a back edge closes a cycle.
    fn visit(
        layer: &str,
        node: &str,
        edges: &BTreeMap<(String, String), BTreeMap<String, String>>,
        stack: &mut Vec<String>,
        done: &mut Vec<String>,
        found: &mut Vec<String>,
    ) {
        if done.iter().any(|d| d == node) {
            return;
        }
        if let Some(at) = stack.iter().position(|s| s == node) {
            let mut cycle: Vec<String> = stack[at..].to_vec();
            cycle.push(node.to_string());
            let how: Vec<&str> = cycle
                .windows(2)
                .map(|w| edges[&(layer.to_string(), w[0].clone())][&w[1]].as_str())
                .collect();
            found.push(format!(
                "{layer}: {} ({})",
                cycle.join(" -> "),
                how.join("; ")
            ));
            return;
        }
        stack.push(node.to_string());
        if let Some(next) = edges.get(&(layer.to_string(), node.to_string())) {
            for to in next.keys() {
                visit(layer, to, edges, stack, done, found);
            }
        }
        stack.pop();
        done.push(node.to_string());
    }
    let mut found = Vec::new();
    let mut done_per_layer: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (layer, from) in edges.keys() {
        let done = done_per_layer.entry(layer.clone()).or_default();
        visit(layer, from, &edges, &mut Vec::new(), done, &mut found);
    }
    found
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The crates whose layer folders this test reads, and the workspace's one module tree they
/// make: each crate re-exports the crates below it at its root (`crate::measure::x` reads
/// the same in every layer), so a file `crates/<crate>/src/<layer>/x.rs` is read as
/// `src/<layer>/x.rs` of one tree. The compiler already refuses an import of a crate above;
/// this test adds the order of the layers inside a crate (the suite's six) and cycles
/// between modules of one layer. crates/kernels imports nothing of the project (no
/// dependency on it) and is not read.
const CRATES: &[&str] = &["crates/measure", "crates/models", "crates/suite"];

/// (file as a path of the one tree, contents) of every .rs file of the layer crates and of
/// the binary (src/bin/), and a `src/lib.rs` declaring every layer module.
fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    let mut modules = Vec::new();
    for krate in CRATES.iter().copied().chain(std::iter::once(".")) {
        let src = root.join(krate).join("src");
        let mut files = Vec::new();
        if krate == "." {
            rs_files(&src.join("bin"), &mut files);
        } else {
            rs_files(&src, &mut files);
        }
        files.sort();
        for p in &files {
            let rel = p
                .strip_prefix(root.join(krate))
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            if rel == "src/lib.rs" {
                continue;
            }
            let layer = rel.strip_prefix("src/").unwrap();
            let layer = layer.split(['/', '.']).next().unwrap().to_string();
            if layer != "bin" && !modules.contains(&layer) {
                modules.push(layer);
            }
            out.push((rel, std::fs::read_to_string(p).unwrap()));
        }
    }
    let lib: String = modules
        .iter()
        .map(|m| format!("pub mod {m};\n"))
        .collect::<String>()
        + "pub use error::{Error, Result};\n";
    out.insert(0, ("src/lib.rs".to_string(), lib));
    out
}

/// Scans a set of files (the first must be src/lib.rs): every import and every violation.
fn check(files: &[(String, String)]) -> (Vec<Import>, Vec<String>) {
    let lib = files
        .iter()
        .find(|(p, _)| p == "src/lib.rs")
        .expect("src/lib.rs");
    let (modules, items) = lib_rs(&lib.1);
    let mut imports = Vec::new();
    for (rel, src) in files {
        if rel != "src/lib.rs" {
            imports.extend(scan(rel, src, &items));
        }
    }
    let mut bad = violations(&imports, &modules);
    for m in &modules {
        if rank(m).is_none() {
            bad.push(format!(
                "src/lib.rs: module `{m}` is in no layer; add it to LAYERS in tests/layers.rs"
            ));
        }
    }
    for (rel, _) in files {
        if let Some(l) = layer_of(rel) {
            if rank(&l).is_none() {
                bad.push(format!(
                    "{rel}: the file is in no layer (`{l}`); add it to LAYERS in tests/layers.rs"
                ));
            }
        }
    }
    bad.sort();
    bad.dedup();
    (imports, bad)
}

#[test]
fn imports_point_down_the_layers() {
    let files = sources();
    let (imports, bad) = check(&files);
    eprintln!(
        "{} library paths in {} files under src/",
        imports.len(),
        files.len()
    );
    assert!(
        imports.len() > MIN_PATHS,
        "found only {} library paths in {} files under src/ (expected more than {MIN_PATHS}): \
         the scanner of tests/layers.rs is broken, so the layer rule would pass vacuously",
        imports.len(),
        files.len()
    );
    // Every layer is seen importing or being imported: the mapping matches the tree.
    for (layer, _) in LAYERS {
        if *layer == "bin" {
            continue;
        }
        assert!(
            imports
                .iter()
                .any(|i| i.top == *layer || layer_of(&i.file).as_deref() == Some(*layer)),
            "layer `{layer}` appears in no import: is LAYERS in tests/layers.rs out of date?"
        );
    }
    assert!(
        imports
            .iter()
            .any(|i| layer_of(&i.file).as_deref() == Some("bin")),
        "no `modelbench::` path found in src/bin/: the scanner is broken"
    );
    assert!(
        bad.is_empty(),
        "{} import(s) point up the layers ({RULE}; an arrow means \"may be imported by\"):\n  {}\n\
         Move the code to the layer that owns it, or pass what it needs down as an argument.",
        bad.len(),
        bad.join("\n  ")
    );
}

#[test]
fn modules_of_a_layer_import_each_other_without_cycles() {
    let (imports, _) = check(&sources());
    assert!(
        imports.iter().filter(|i| i.sub.is_some()).count() > MIN_PATHS / 2,
        "too few paths name a module inside a layer: the scanner is broken"
    );
    let cycles = module_cycles(&imports);
    assert!(
        cycles.is_empty(),
        "import cycle(s) between the modules of a layer:\n  {}\n\
         Move the shared piece to one of them (or the layer's mod.rs), or pass it as an argument.",
        cycles.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------
// The checker on synthetic sources: it must catch each form of a bad import, and not flag
// comments, strings or legal paths.

#[test]
fn checker_reports_a_cycle_inside_a_layer() {
    let (imports, bad) = synthetic(&[
        (
            "src/models/source.rs",
            "fn f() { crate::models::gguf_fixture::ensure(); }",
        ),
        (
            "src/models/gguf_fixture.rs",
            "use super::Family;\nuse super::source::ensure_fixture;",
        ),
        // not a cycle: loading uses both, neither uses loading
        (
            "src/models/loading.rs",
            "use super::source::x;\nuse crate::models::gguf_fixture::y;",
        ),
    ]);
    assert!(bad.is_empty(), "{bad:?}");
    let cycles = module_cycles(&imports);
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(
        cycles[0].starts_with("models: gguf_fixture -> source -> gguf_fixture (src/models/gguf_fixture.rs:2 `super::source::ensure_fixture`; src/models/source.rs:1 `crate::models::gguf_fixture::ensure`)"),
        "{cycles:?}"
    );
}

fn synthetic(files: &[(&str, &str)]) -> (Vec<Import>, Vec<String>) {
    let lib = "//! doc [`crate::harness`]\npub mod error;\npub mod util;\npub mod measure;\n\
               pub mod judge;\npub mod models;\npub mod engine;\npub mod output;\npub mod workloads;\n\
               pub mod config;\npub mod harness;\npub use error::{Error, Result};\n";
    let mut all = vec![("src/lib.rs".to_string(), lib.to_string())];
    all.extend(files.iter().map(|(p, s)| (p.to_string(), s.to_string())));
    check(&all)
}

#[test]
fn checker_reports_a_bad_import() {
    let (_, bad) = synthetic(&[(
        "src/measure/timing.rs",
        "use std::time::Duration;\n\nuse crate::engine::generate::Trace;\n",
    )]);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].starts_with("src/measure/timing.rs:3: `crate::engine::generate::Trace`")
            && bad[0].contains("measure (rank 1) imports engine (rank 4)"),
        "{bad:?}"
    );
}

#[test]
fn checker_reads_groups_inline_paths_super_and_the_binary() {
    let (imports, bad) = synthetic(&[
        // a group with one legal and one bad item
        (
            "src/models/loading.rs",
            "use crate::{measure::device::sync, output::record::Record};",
        ),
        // an inline path in an expression
        (
            "src/engine/generate.rs",
            "fn f() { let x = crate::workloads::work::bytes(1); }",
        ),
        // super::super::super from src/models/psann/train.rs climbs to the crate root
        (
            "src/models/psann/train.rs",
            "use super::Base;\nuse super::super::moe;\nuse super::super::super::config::knobs;",
        ),
        // the binary uses the library by its name; `crate::` there is the binary
        (
            "src/bin/modelbench/main.rs",
            "use modelbench::harness::main;\nuse crate::args::RunArgs;",
        ),
        // root re-exports are resolved to their module: legal from anywhere above error
        ("src/measure/stats.rs", "use crate::Result;"),
        // util and error share rank 0
        (
            "src/util/fsio.rs",
            "use crate::error::{Error, Result};\nfn f() -> crate::Result<()> { Ok(()) }",
        ),
    ]);
    let joined = bad.join("\n");
    assert_eq!(bad.len(), 3, "{joined}");
    assert!(
        joined.contains("src/models/loading.rs:1: `crate::{measure, output}`: models (rank 3) imports output (rank 5)"),
        "{joined}"
    );
    assert!(
        joined.contains("src/engine/generate.rs:1: `crate::workloads::work::bytes`: engine (rank 4) imports workloads (rank 6)"),
        "{joined}"
    );
    assert!(
        joined.contains("src/models/psann/train.rs:3: `super::super::super::config::knobs`: models (rank 3) imports config (rank 8)"),
        "{joined}"
    );
    assert!(imports
        .iter()
        .any(|i| i.file.starts_with("src/bin/") && i.top == "harness"));
    assert!(!imports.iter().any(|i| i.text.contains("args")));
    assert!(imports
        .iter()
        .any(|i| i.file == "src/measure/stats.rs" && i.top == "error"));
}

#[test]
fn checker_skips_comments_strings_and_test_modules() {
    let (imports, bad) = synthetic(&[(
        "src/measure/memory.rs",
        r####"//! Used by [`crate::harness::PeakBytes`].
/* crate::workloads::x /* nested */ crate::config::y */
const A: &str = "crate::engine::x";
const B: &str = r#"crate::engine::"y""#;
const C: char = '{';
fn f<'a>(x: &'a str) -> &'a str { x }
#[cfg(test)]
mod tests {
    use super::*;
    use super::super::stats::median;
}
"####,
    )]);
    assert!(bad.is_empty(), "{bad:?}");
    // `super::super` inside `mod tests` of measure/memory.rs is measure::stats.
    assert!(
        imports
            .iter()
            .any(|i| i.text == "super::super::stats::median" && i.top == "measure"),
        "{imports:?}"
    );
}

#[test]
fn checker_reports_an_unlayered_module() {
    let (_, bad) = synthetic(&[("src/plugins/x.rs", "use crate::util::fill;")]);
    assert!(
        bad.iter()
            .any(|b| b.contains("src/plugins/x.rs") && b.contains("no layer")),
        "{bad:?}"
    );
}

#[test]
fn checker_keeps_measure_below_the_judge() {
    let (_, bad) = synthetic(&[
        // the judge reads measure; models and the suite's layers call the judge
        (
            "src/judge/outputs.rs",
            "use crate::measure::outputs::{diff, Outputs};",
        ),
        (
            "src/models/quality.rs",
            "fn f() { crate::judge::quality::prompt_ok(1, 1, 1, None); }",
        ),
        ("src/output/compare.rs", "use crate::judge::speed::Verdict;"),
        // measure may not call the judge, nor the judge a model
        (
            "src/measure/outputs.rs",
            "use crate::judge::outputs::judge;",
        ),
        ("src/judge/kld.rs", "use crate::models::CausalLm;"),
    ]);
    let joined = bad.join("\n");
    assert_eq!(bad.len(), 2, "{joined}");
    assert!(
        joined.contains("src/measure/outputs.rs:1: `crate::judge::outputs::judge`: measure (rank 1) imports judge (rank 2)"),
        "{joined}"
    );
    assert!(
        joined.contains(
            "src/judge/kld.rs:1: `crate::models::CausalLm`: judge (rank 2) imports models (rank 3)"
        ),
        "{joined}"
    );
}
