//! The design checked against the tree, so that ARCHITECTURE.md and README stay true:
//! - ARCHITECTURE.md §7 lists every source file of `tracer/src`, `tracer-common/src` and
//!   `tracer-ebpf/src`, and nothing else;
//! - the struct sizes the design states are the structs' sizes;
//! - README "Layout" names every folder of `tracer/src` and every top-level folder, and the fuzz
//!   targets there are the ones in `fuzz/fuzz_targets`;
//! - `tracer/src` is layered (kernel < analysis < enrich < export < spine < cmd) and no module
//!   imports one that imports it back, at either depth; likewise the eBPF crate's modules.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The `.rs` files under `dir`, relative to it, sorted.
fn rust_files(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in fs::read_dir(dir).expect("a readable source folder") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                walk(base, &path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(base).expect("under base");
                out.insert(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// ARCHITECTURE.md §7, the module map.
fn module_map() -> String {
    let doc = read("ARCHITECTURE.md");
    let start = doc.find("## 7. Module map").expect("§7");
    let end = doc[start..].find("\n## 8.").expect("§8") + start;
    doc[start..end].to_string()
}

/// The files the table after the heading line "`crate/src`…" lists in its first column. A cell
/// `a/b.rs`, `c.rs` lists `a/b.rs` and `a/c.rs` (later names are beside the first).
fn listed(map: &str, heading: &str) -> BTreeSet<String> {
    let at = map
        .find(&format!("`{heading}`"))
        .unwrap_or_else(|| panic!("a table for {heading}"));
    let mut out = BTreeSet::new();
    let mut in_table = false;
    for line in map[at..].lines().skip(1) {
        if !line.starts_with('|') {
            if in_table {
                break;
            }
            continue;
        }
        in_table = true;
        let first = line.split('|').nth(1).unwrap_or("").trim();
        let names: Vec<&str> = first
            .split(',')
            .map(|n| n.trim().trim_matches('`'))
            .filter(|n| n.ends_with(".rs"))
            .collect();
        let dir = names
            .first()
            .and_then(|n| n.rfind('/').map(|i| &n[..=i]))
            .unwrap_or("");
        for (i, n) in names.iter().enumerate() {
            if i > 0 && !n.contains('/') {
                out.insert(format!("{dir}{n}"));
            } else {
                out.insert((*n).to_string());
            }
        }
    }
    out
}

#[test]
fn the_module_map_lists_every_file_of_each_crate_and_nothing_else() {
    let map = module_map();
    for krate in ["tracer/src", "tracer-common/src", "tracer-ebpf/src"] {
        let tree = rust_files(&root().join(krate));
        let doc = listed(&map, krate);
        let missing: Vec<_> = tree.difference(&doc).collect();
        let stale: Vec<_> = doc.difference(&tree).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "ARCHITECTURE.md §7, {krate}: not listed {missing:?}; listed but not in the tree {stale:?}"
        );
    }
}

#[test]
fn the_sizes_the_design_states_are_the_structs_sizes() {
    let doc = read("ARCHITECTURE.md");
    let sizes = [
        ("RawEvent", size_of::<tracer_common::RawEvent>()),
        ("KernelOffsets", size_of::<tracer_common::KernelOffsets>()),
        ("RawDns", size_of::<tracer_common::RawDns>()),
        ("RawCgroup", size_of::<tracer_common::RawCgroup>()),
    ];
    for (name, size) in sizes {
        let mut stated = 0;
        // Every "Name (…, N bytes…)" anywhere in the design.
        for (at, _) in doc.match_indices(name) {
            let after = &doc[at + name.len()..];
            let after = after.trim_start_matches('`').trim_start();
            let Some(inner) = after.strip_prefix('(') else {
                continue;
            };
            let inner = &inner[..inner.find(')').unwrap_or(inner.len())];
            let Some(head) = inner
                .split(" bytes")
                .next()
                .filter(|_| inner.contains(" bytes"))
            else {
                continue;
            };
            let n: usize = head
                .rsplit(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("a size of `{name}`: ({inner})"));
            assert_eq!(
                n, size,
                "ARCHITECTURE.md says `{name}` is {n} bytes: ({inner})"
            );
            stated += 1;
        }
        assert!(stated > 0, "ARCHITECTURE.md states the size of `{name}`");
    }
}

/// README "Layout": its code block.
fn readme_layout() -> String {
    let doc = read("README.md");
    let start = doc.find("## Layout").expect("README Layout");
    let block = doc[start..].find("```").expect("a code block") + start + 3;
    let end = doc[block..].find("```").expect("its end") + block;
    doc[block..end].to_string()
}

#[test]
fn readme_layout_names_every_folder_and_fuzz_target() {
    let layout = readme_layout();
    let top: BTreeSet<String> = layout
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.ends_with('/') && !w.contains("/src/"))
        .map(|w| w.trim_end_matches('/').to_string())
        .collect();
    let mut dirs = BTreeSet::new();
    for entry in fs::read_dir(root()).expect("the workspace") {
        let entry = entry.expect("an entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && !name.starts_with('.') && name != "target" {
            dirs.insert(name);
        }
    }
    assert_eq!(top, dirs, "README Layout's top-level folders");
    for entry in fs::read_dir(root().join("tracer/src")).expect("tracer/src") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            let name = format!("{}/", path.file_name().unwrap().to_string_lossy());
            assert!(
                layout.contains(&name),
                "README Layout names tracer/src/{name}"
            );
        }
    }
    let targets: BTreeSet<String> = rust_files(&root().join("fuzz/fuzz_targets"))
        .into_iter()
        .map(|f| f.trim_end_matches(".rs").to_string())
        .collect();
    let line = layout
        .lines()
        .find(|l| l.starts_with("fuzz/"))
        .expect("a fuzz/ line");
    let named: BTreeSet<String> = line
        [line.find('(').expect("(targets)") + 1..line.find(')').unwrap()]
        .split(',')
        .map(|t| t.trim().to_string())
        .collect();
    assert_eq!(named, targets, "README Layout's fuzz targets");
}

/// The `crate::…` paths a source file names, each as its module segments (`crate::a::b::C` →
/// `[a, b]`): `use` trees with braces expanded, and paths written inline.
fn crate_paths(src: &str) -> Vec<Vec<String>> {
    let src: String = src
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let mut rest = src.as_str();
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let (tree, used) = use_tree(after);
        for path in expand(&tree) {
            let modules: Vec<String> = path
                .into_iter()
                .take_while(|s| s.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
                .collect();
            if !modules.is_empty() {
                out.push(modules);
            }
        }
        rest = &after[used..];
    }
    out
}

/// The path or brace tree at the start of `s` (up to its end), and how many bytes it took.
fn use_tree(s: &str) -> (String, usize) {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            c if depth == 0 && !(c.is_alphanumeric() || c == '_' || c == ':') => {
                return (s[..i].to_string(), i);
            }
            _ => {}
        }
    }
    (s.to_string(), s.len())
}

/// `a::{b::{c, d}, e}` → `[a, b, c]`, `[a, b, d]`, `[a, e]`.
fn expand(tree: &str) -> Vec<Vec<String>> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![
            tree.split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        ];
    };
    let prefix: Vec<String> = tree[..open]
        .split("::")
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(expand)
        .map(|tail| prefix.iter().cloned().chain(tail).collect())
        .collect()
}

/// The module a file is, as segments (`export/hints/tests.rs` → `[export, hints]`: a module's
/// tests are the module).
fn module_of(rel: &str) -> Vec<String> {
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
    if parts.last().is_some_and(|p| p == "tests") {
        parts.pop();
    }
    parts
}

/// Edges between modules cut at `depth` segments (a module's own submodules are itself).
fn import_graph(krate: &str, depth: usize) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let dir = root().join(krate);
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for rel in rust_files(&dir) {
        let me: Vec<String> = module_of(&rel).into_iter().take(depth).collect();
        let src = fs::read_to_string(dir.join(&rel)).expect("a source file");
        for path in crate_paths(&src) {
            let to: Vec<String> = path.into_iter().take(depth).collect();
            let related = to.starts_with(&me) || me.starts_with(&to);
            if !related {
                edges.entry(me.clone()).or_default().insert(to);
            }
        }
    }
    edges
}

/// A cycle in `edges`, if any, as the modules on it.
fn find_cycle(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<String>> {
    fn visit(
        node: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            return Some(stack[at..].iter().map(|n| n.join("::")).collect());
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    for (krate, depth) in [("tracer/src", 1), ("tracer/src", 2), ("tracer-ebpf/src", 1)] {
        let edges = import_graph(krate, depth);
        assert!(
            !edges.is_empty(),
            "{krate}: no imports found: the parser is broken"
        );
        if let Some(cycle) = find_cycle(&edges) {
            panic!(
                "{krate} (depth {depth}): import cycle {}",
                cycle.join(" → ")
            );
        }
    }
}

#[test]
fn each_layer_uses_only_the_layers_before_it() {
    let rank = |m: &str| match m {
        "kernel" => 0,
        "analysis" => 1,
        "enrich" => 2,
        "export" => 3,
        "cli" | "filter" | "pipeline" => 4,
        "cmd" => 5,
        _ => 6, // lib.rs, main.rs, these tests: above everything
    };
    let mut checked = 0;
    for (from, tos) in import_graph("tracer/src", 1) {
        let from = from.first().map_or("", String::as_str);
        for to in tos {
            let to = to.first().map_or("", String::as_str);
            checked += 1;
            assert!(
                rank(to) <= rank(from),
                "tracer/src: `{from}` uses `{to}`, a layer above it"
            );
        }
    }
    assert!(
        checked > 10,
        "only {checked} imports between layers: the parser is broken"
    );
}

#[test]
fn the_import_parser_sees_use_trees_and_inline_paths() {
    let src = "use crate::{a::{b::C, d}, e::F};\nfn f() { crate::g::h(); } // crate::x::y\n";
    assert_eq!(
        crate_paths(src),
        vec![
            vec!["a".to_string(), "b".into()],
            vec!["a".into(), "d".into()],
            vec!["e".into()],
            vec!["g".into(), "h".into()],
        ]
    );
}
