//! The dependency rules of ARCHITECTURE.md, checked on the source: which top-level module
//! may import which, no cycles, and no file over the size that says it should be split.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Who may import whom, bottom up (ARCHITECTURE.md, "Modules and who may import whom").
/// Test code is not counted: it may use anything.
const ALLOWED: &[(&str, &[&str])] = &[
    ("clock", &[]),
    // The binary's own commands (`src/cli/`): they use the library's public API only.
    ("cli", &[]),
    ("millis", &[]),
    ("scenario", &[]),
    ("testing", &[]),
    ("journal", &["clock", "millis", "scenario"]),
    ("policy", &["millis", "scenario"]),
    ("capture", &["journal", "millis", "scenario"]),
    ("tls", &["scenario"]),
    ("dns", &["clock", "journal", "policy", "scenario"]),
    (
        "smtp",
        &["capture", "clock", "dns", "journal", "policy", "scenario"],
    ),
    ("deliveries", &["journal", "millis", "scenario"]),
    ("render", &["journal"]),
    (
        "transcript",
        &["deliveries", "journal", "millis", "render", "scenario"],
    ),
    (
        "report",
        &[
            "deliveries",
            "journal",
            "millis",
            "render",
            "scenario",
            "transcript",
        ],
    ),
    (
        "assertions",
        &["deliveries", "render", "report", "scenario", "transcript"],
    ),
    (
        "farm",
        &[
            "assertions",
            "capture",
            "clock",
            "deliveries",
            "dns",
            "journal",
            "policy",
            "report",
            "scenario",
            "smtp",
            "tls",
            "transcript",
        ],
    ),
    // The control API over HTTP: through the farm's public API, and the views' types.
    (
        "api",
        &[
            "capture",
            "clock",
            "deliveries",
            "farm",
            "journal",
            "millis",
            "render",
            "scenario",
        ],
    ),
    // Models of sending MTAs, run against a farm through its public API.
    ("sender", &["dns", "farm", "millis", "policy", "render"]),
];

/// Lines of code (comments, blank lines and tests aside) above which a file should be
/// split. Generous, since this counts what is left after taking the tests out.
const MAX_CODE_LINES: usize = 600;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's code before its inline test module, if it has one (a `mod tests;` that
/// names a file of its own cuts nothing off); test files (`tests.rs`, `*_tests.rs`) give
/// nothing.
fn code_of(path: &Path) -> String {
    if path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().ends_with("tests.rs"))
    {
        return String::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// The top-level module a source file belongs to (`src/smtp/session/act.rs`: `smtp`).
fn module_of(src: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

/// The top-level modules a file's code names through `crate::`: `crate::journal::Event`,
/// and each of `use crate::{journal, policy::Verdict}`.
fn imports_of(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    let code: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + 7..];
        if let Some(group) = rest.strip_prefix('{') {
            // Each item of the group at its top level: `journal`, `policy::Verdict`.
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        item_start = false;
                        found.insert(ident(&group[j..]));
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.remove("");
    found
}

#[test]
fn modules_import_only_what_the_architecture_allows_and_no_file_is_too_big() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect();
    let mut problems = Vec::new();
    let mut seen_modules = BTreeSet::new();
    for path in &files {
        let module = module_of(&src, path);
        let code = code_of(path);
        let lines = code
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("//"))
            .count();
        if lines > MAX_CODE_LINES {
            problems.push(format!(
                "{} has {lines} lines of code (more than {MAX_CODE_LINES}): split it",
                path.display()
            ));
        }
        // hickory renames its types between minor versions: they stay in one module.
        if module != "dns" && code.contains("hickory_") {
            problems.push(format!(
                "{} uses hickory outside src/dns/: keep every hickory type in the dns module",
                path.display()
            ));
        }
        if module == "lib" || module == "main" {
            continue;
        }
        seen_modules.insert(module.clone());
        let Some(may) = allowed.get(module.as_str()) else {
            problems.push(format!(
                "module `{module}` ({}) is not in ALLOWED: add it, and to ARCHITECTURE.md",
                path.display()
            ));
            continue;
        };
        for used in imports_of(&code) {
            if used != module && !may.contains(used.as_str()) {
                problems.push(format!(
                    "{} (in `{module}`) uses `crate::{used}`, which `{module}` may not import",
                    path.display()
                ));
            }
        }
    }
    for (module, _) in ALLOWED {
        assert!(
            seen_modules.contains(*module),
            "ALLOWED names `{module}`, which has no source file"
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The allowed imports themselves have no cycle: each module only imports modules
/// listed before it.
#[test]
fn imports_are_found_in_paths_and_groups() {
    let code = "use crate::journal::Event;\nuse crate::{policy::{self, Verdict}, scenario};\n// crate::farm\nlet x = crate::clock::now();";
    let found: Vec<String> = imports_of(code).into_iter().collect();
    assert_eq!(found, ["clock", "journal", "policy", "scenario"]);
}

#[test]
fn the_allowed_imports_are_layered() {
    let mut below = BTreeSet::new();
    for (module, deps) in ALLOWED {
        for dep in *deps {
            assert!(
                below.contains(dep),
                "`{module}` may import `{dep}`, which is not below it"
            );
        }
        below.insert(*module);
    }
}
