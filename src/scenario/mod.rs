//! Scenarios: TOML files that describe a farm, loaded and validated into [`Scenario`].
//!
//! The loader walks the TOML parser's spanned tree through the format's vocabulary (the
//! `spec`, where every table, key, condition, action and placeholder is written once)
//! into the stricter model types, collecting every problem with its place in the file
//! and a hint. A scenario that loads is a scenario that runs. The format is documented in
//! `docs/scenario-format.md`, whose reference section is generated from the spec.
//!
//! ```
//! let scenario = mxfarm::scenario::load_str(
//!     "example.toml",
//!     r#"
//!         name = "example"
//!         [[host]]
//!         name = "mx1"
//!         listen = "127.0.0.1:0"
//!     "#,
//! )
//! .unwrap();
//! assert_eq!(scenario.hosts[0].hostname, "mx1.mxfarm.test");
//!
//! let error = mxfarm::scenario::load_str("broken.toml", "name = \"x\"\n").unwrap_err();
//! assert_eq!(error.problems()[0].message, "the scenario has no hosts");
//! ```

pub(crate) mod duration;
mod error;
pub(crate) mod files;
mod load;
mod model;
mod read;
mod spec;

pub use error::{Problem, ScenarioError};
pub use model::*;
pub use read::records::reverse_name;

use std::path::Path;

/// The scenario the CLI plays when none is named.
pub const DEFAULT_SCENARIO: &str = "aol";

/// A scenario shipped inside the binary (the files of `scenarios/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedScenario {
    pub name: &'static str,
    pub source: &'static str,
}

impl EmbeddedScenario {
    /// The one-line `description` from the file, or an empty string if it has none.
    pub fn description(&self) -> String {
        toml::de::DeTable::parse(self.source)
            .ok()
            .and_then(|table| {
                table
                    .get_ref()
                    .iter()
                    .find(|(k, _)| k.get_ref().as_ref() == "description")
                    .and_then(|(_, v)| v.get_ref().as_str().map(str::to_string))
            })
            .unwrap_or_default()
    }

    /// Loads and validates it.
    pub fn load(&self) -> Result<Scenario, ScenarioError> {
        load_str(&format!("scenarios/{}.toml", self.name), self.source)
    }
}

static EMBEDDED: &[EmbeddedScenario] = &[
    EmbeddedScenario {
        name: "aol",
        source: include_str!("../../scenarios/aol.toml"),
    },
    EmbeddedScenario {
        name: "yahoo",
        source: include_str!("../../scenarios/yahoo.toml"),
    },
    EmbeddedScenario {
        name: "gmail",
        source: include_str!("../../scenarios/gmail.toml"),
    },
    EmbeddedScenario {
        name: "outlook",
        source: include_str!("../../scenarios/outlook.toml"),
    },
    EmbeddedScenario {
        name: "greylist",
        source: include_str!("../../scenarios/greylist.toml"),
    },
    EmbeddedScenario {
        name: "lossy",
        source: include_str!("../../scenarios/lossy.toml"),
    },
    EmbeddedScenario {
        name: "dns-trouble",
        source: include_str!("../../scenarios/dns-trouble.toml"),
    },
];

/// The scenarios shipped inside the binary, by name.
pub fn embedded() -> &'static [EmbeddedScenario] {
    EMBEDDED
}

/// Loads the embedded scenario with this name (`aol`; a trailing `.toml` is allowed).
pub fn load_embedded(name: &str) -> Result<Scenario, ScenarioError> {
    let wanted = name.strip_suffix(".toml").unwrap_or(name);
    if let Some(found) = EMBEDDED.iter().find(|e| e.name == wanted) {
        return found.load();
    }
    let names: Vec<&str> = EMBEDDED.iter().map(|e| e.name).collect();
    let list = format!("the embedded scenarios are: {}", names.join(", "));
    let hint = match read::closest(wanted, names.iter().copied()) {
        Some(close) => read::did_you_mean(close, &list),
        None => list,
    };
    Err(ScenarioError::without_source(
        name,
        format!("there is no embedded scenario named `{name}`"),
        hint,
    ))
}

/// The reference of the scenario format: every table and key with what it takes, its
/// default, an example and what it means; every condition and action with the stages it
/// may be used at; every placeholder. Markdown, as in `docs/scenario-format.md`.
pub fn reference() -> String {
    spec::docs::reference()
}

/// The stages at which the format allows the action `key` (for tests that check that
/// the engine carries out what the loader allows).
#[cfg(test)]
pub(crate) fn spec_stages_of(key: &str) -> Vec<Stage> {
    spec::then::actions()
        .iter()
        .find(|row| row.key == key)
        .map_or_else(Vec::new, |row| row.stages.to_vec())
}

/// A scenario file if `name_or_path` looks like a path (or such a file exists),
/// otherwise the embedded scenario of that name: `aol` plays the built-in one,
/// `./aol.toml` the file. What the command line takes.
pub fn load_named(name_or_path: &str) -> Result<Scenario, ScenarioError> {
    if names_a_file(name_or_path) {
        return load_path(Path::new(name_or_path));
    }
    load_embedded(name_or_path)
}

/// Whether `name_or_path` is a file rather than an embedded scenario's name: it looks
/// like a path, or such a file exists.
fn names_a_file(name_or_path: &str) -> bool {
    name_or_path.contains(std::path::MAIN_SEPARATOR)
        || name_or_path.contains('/')
        || name_or_path.ends_with(".toml")
        || Path::new(name_or_path).exists()
}

/// The text of the scenario `name_or_path` names, as [`load_named`] finds it, read with
/// the same bounds, without validating it: what `mxfarm ctl scenario` sends to a farm,
/// which validates it.
pub fn text_named(name_or_path: &str) -> Result<String, ScenarioError> {
    if names_a_file(name_or_path) {
        let file = name_or_path.to_string();
        return read_text(Path::new(name_or_path)).map_err(|e| unreadable_scenario(&file, &e));
    }
    let wanted = name_or_path.strip_suffix(".toml").unwrap_or(name_or_path);
    match EMBEDDED.iter().find(|e| e.name == wanted) {
        Some(found) => Ok(found.source.to_string()),
        None => load_embedded(name_or_path).map(|s| s.source_text.to_string()),
    }
}

/// A scenario file's text: a regular file of at most 4 MiB, so that a named pipe or a
/// device given by mistake is an error, not a hang.
fn read_text(path: &Path) -> Result<String, files::ReadError> {
    files::read_regular(path, files::MAX_SCENARIO_BYTES).and_then(|bytes| {
        String::from_utf8(bytes).map_err(|_| {
            files::ReadError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "stream did not contain valid UTF-8",
            ))
        })
    })
}

/// Reads and validates a scenario file: a regular file of at most
/// 4 MiB, so that a named pipe or a device given by mistake is an error, not a hang.
pub fn load_path(path: &Path) -> Result<Scenario, ScenarioError> {
    let file = path.display().to_string();
    match read_text(path) {
        Ok(text) => load_str_in(&file, &text, path.parent()),
        Err(error) => Err(unreadable_scenario(&file, &error)),
    }
}

/// What to say of a scenario file that could not be read.
fn unreadable_scenario(file: &str, error: &files::ReadError) -> ScenarioError {
    let names: Vec<&str> = EMBEDDED.iter().map(|e| e.name).collect();
    let hint = match error {
        files::ReadError::Io(error) => match error.kind() {
            std::io::ErrorKind::NotFound => format!(
                "check the path; to play a scenario shipped with mxfarm, give its name instead ({})",
                names.join(", ")
            ),
            std::io::ErrorKind::InvalidData => {
                "a scenario file must be UTF-8 text; save it as UTF-8".to_string()
            }
            std::io::ErrorKind::PermissionDenied => {
                "make the file readable by this user".to_string()
            }
            std::io::ErrorKind::IsADirectory => "give the path of a .toml file".to_string(),
            _ => "check that the path names a readable scenario file".to_string(),
        },
        files::ReadError::NotRegular(_) => "give the path of a .toml file; to play a scenario another program writes, save it to a file first".to_string(),
        files::ReadError::TooBig(_) => "check that the path names a scenario file (a scenario is TOML text of a few KiB); split a generated one into several farms".to_string(),
    };
    ScenarioError::without_source(
        file,
        format!("cannot read scenario file {file}: {error}"),
        hint,
    )
}

/// Parses and validates scenario text; `source_name` names it in error messages.
pub fn load_str(source_name: &str, text: &str) -> Result<Scenario, ScenarioError> {
    load_str_in(source_name, text, None)
}

/// Like [`load_str`], for text from a file in `dir`: relative paths in it (a host's
/// `cert` and `key`) are relative to that directory; `None` means the current directory.
fn load_str_in(
    source_name: &str,
    text: &str,
    dir: Option<&Path>,
) -> Result<Scenario, ScenarioError> {
    let mut scenario = load::load(text, dir)
        .map_err(|issues| ScenarioError::from_issues(source_name, text, issues))?;
    scenario.source_text = std::sync::Arc::from(text);
    Ok(scenario)
}

impl Scenario {
    /// Parses and validates scenario text, like [`load_str`].
    pub fn from_toml(source_name: &str, text: &str) -> Result<Scenario, ScenarioError> {
        load_str(source_name, text)
    }

    /// Reads and validates a scenario file, like [`load_path`].
    pub fn from_path(path: &Path) -> Result<Scenario, ScenarioError> {
        load_path(path)
    }

    /// One of the scenarios built into mxfarm, like [`load_embedded`].
    pub fn embedded(name: &str) -> Result<Scenario, ScenarioError> {
        load_embedded(name)
    }
}
