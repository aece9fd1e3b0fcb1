//! The documentation the code points at: every `§N.M` in a Rust source file of the repository cites docs/spec.md
//! and must name one of its headings (`## §N ...`, `### §N.M ...`), each heading number appearing once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use odelt_tests::repo_root;

/// The section numbers cited in `text`: every `§` followed by a dotted number (`§1.2–§1.4` cites both ends).
fn citations(text: &str) -> Vec<String> {
    text.split('§')
        .skip(1)
        .filter_map(|rest| {
            let id: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let id = id.trim_end_matches('.');
            (!id.is_empty()).then(|| id.to_string())
        })
        .collect()
}

/// The heading numbers of docs/spec.md, with their line numbers.
fn headings(spec: &str) -> Vec<(String, usize)> {
    spec.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let rest = line.trim_start_matches('#');
            if rest.len() == line.len() {
                return None;
            }
            let rest = rest.trim_start().strip_prefix('§')?;
            let id: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let id = id.trim_end_matches('.').to_string();
            (!id.is_empty()).then_some((id, i + 1))
        })
        .collect()
}

/// Every `.rs` file under `dir`, skipping build outputs and hidden folders.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn spec_citations_resolve_to_headings() {
    let root = repo_root();
    let spec_path = root.join("docs/spec.md");
    let spec = std::fs::read_to_string(&spec_path)
        .unwrap_or_else(|e| panic!("read {}: {e}", spec_path.display()));
    let mut by_id: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (id, line) in headings(&spec) {
        by_id.entry(id).or_default().push(line);
    }
    let twice: Vec<String> = by_id
        .iter()
        .filter(|(_, lines)| lines.len() > 1)
        .map(|(id, lines)| format!("§{id} (lines {lines:?})"))
        .collect();
    assert!(
        twice.is_empty(),
        "docs/spec.md has headings with the same number: {twice:?}"
    );

    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    let mut cited = 0;
    let mut missing = Vec::new();
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            for id in citations(line) {
                cited += 1;
                if !by_id.contains_key(&id) {
                    let rel = f.strip_prefix(&root).unwrap_or(f);
                    missing.push(format!("{}:{}: §{id}", rel.display(), n + 1));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "citations of docs/spec.md that name no heading there (add the section or fix the number):\n{}",
        missing.join("\n")
    );
    // The walk found the sources at all (the code cites the spec a few dozen times).
    assert!(
        cited >= 10,
        "only {cited} spec citations found under {}",
        root.display()
    );
}

#[test]
fn citation_and_heading_parsing() {
    // `$` stands for the section sign, so that these examples are not citations themselves.
    let s = |t: &str| t.replace('$', "\u{a7}");
    assert_eq!(
        citations(&s("tables (spec $1.2–$1.4), see $5.1 and $5.2.")),
        ["1.2", "1.4", "5.1", "5.2"]
    );
    assert_eq!(citations(&s("spec $0) and $1.8).")), ["0", "1.8"]);
    assert!(citations(&s("a $ sign alone, $N.M")).is_empty());
    let h = headings(&s(
        "# Title\n## $0 Configurations\ntext $9\n### $1.4 Modules\n#### $1.4.1. Deep\n##$2\n",
    ));
    let ids: Vec<&str> = h.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["0", "1.4", "1.4.1", "2"]);
    assert_eq!(h[1].1, 4);
}
