//! docs/architecture.md's map of the tree cannot drift from the tree: every path its map
//! names exists, and every folder of a workspace crate's sources is named in it (a new module
//! folder needs its line in the map). The map is the first code block after the
//! `<!-- map: ... -->` marker; a path is the first word of a line, and an indented path is
//! relative to the unindented one above it (`crates/models/` then `  src/models/`).

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The paths the map names, relative to the workspace root, with the map's line numbers.
fn map_paths(doc: &str) -> Vec<(usize, String)> {
    let start = doc
        .find("<!-- map:")
        .expect("docs/architecture.md has no `<!-- map: -->` marker");
    let body_start = start
        + doc[start..]
            .find("```\n")
            .expect("no code block after the marker")
        + 4;
    let body_len = doc[body_start..]
        .find("```")
        .expect("the map's code block is not closed");
    let first_line = doc[..body_start].lines().count() + 1;
    let mut out = Vec::new();
    let mut parent = String::new();
    for (i, line) in doc[body_start..body_start + body_len].lines().enumerate() {
        let indented = line.starts_with("  ");
        let Some(word) = line.split_whitespace().next() else {
            continue;
        };
        // A continuation line of a description is indented far (the second column).
        let column = line.len() - line.trim_start().len();
        if column > 4 || !(word.contains('/') || word.contains('.')) {
            continue;
        }
        let path = if indented {
            format!("{parent}{word}")
        } else {
            if word.ends_with('/') {
                parent = word.to_string();
            }
            word.to_string()
        };
        out.push((first_line + i, path));
    }
    out
}

fn dirs_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.push(p.clone());
            dirs_under(&p, out);
        }
    }
}

fn check(doc: &str, root: &Path) -> Vec<String> {
    let named = map_paths(doc);
    let mut bad = Vec::new();
    for (line, p) in &named {
        if !root.join(p.trim_end_matches('/')).exists() {
            bad.push(format!(
                "docs/architecture.md:{line}: `{p}` is in the map but not in the tree"
            ));
        }
    }
    let mut dirs = Vec::new();
    for krate in std::fs::read_dir(root.join("crates")).expect("crates/") {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            dirs_under(&src, &mut dirs);
        }
    }
    dirs.sort();
    for d in dirs {
        let rel = d
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/")
            + "/";
        if !named.iter().any(|(_, p)| *p == rel) {
            bad.push(format!(
                "{rel} is a folder of the tree that docs/architecture.md's map does not name"
            ));
        }
    }
    bad
}

#[test]
fn the_map_names_every_folder_and_only_what_exists() {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let named = map_paths(&doc);
    assert!(
        named.len() >= 20,
        "the map names only {} paths: the reader is broken",
        named.len()
    );
    let bad = check(&doc, root());
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Both sides: a renamed path and a folder missing from the map are each reported.
#[test]
fn the_check_reports_a_stale_path_and_an_unnamed_folder() {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let stale = doc.replacen("src/output/site/", "src/output/web/", 1);
    let bad = check(&stale, root());
    assert!(
        bad.iter().any(|b| b.contains("`crates/suite/src/output/web/` is in the map but not in the tree")),
        "{bad:?}"
    );
    assert!(
        bad.iter()
            .any(|b| b.starts_with("crates/suite/src/output/site/ is a folder")),
        "{bad:?}"
    );
}
