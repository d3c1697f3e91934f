//! Projects: the elements a `ws.toml` declares, their dependency graph, and their
//! cache keys ([`key`]).
//!
//! [`Project::parse`] reads and checks a project file (module `parse`); after it, every
//! dependency names an element of the project and the graph has no cycle, so
//! [`Project::build_order`] and [`Project::dependents`] cannot fail on the graph. The
//! user guide to the file is `docs/project.md`; the key encoding is in
//! `docs/format.md`.

mod daemon_config;
pub mod key;
mod parse;
mod remotes;
mod size;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use daemon_config::{DaemonConfig, Limits, parse_daemon_config};
pub use key::{CacheKey, KEY_FORMAT, cache_key, dependency_hash, key_encoding};
pub use remotes::{RemoteSpec, parse_user_config};
pub use size::{parse_size, shown_size};

/// A parsed and checked project file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    /// The project file's path, as given to [`Project::parse`] (for messages).
    pub file: PathBuf,
    /// The project's name (`[project] name`), if it has one.
    pub name: Option<String>,
    /// The remote caches its `[[remote]]` tables declare, in file order.
    pub remotes: Vec<RemoteSpec>,
    /// The elements, by name.
    pub elements: BTreeMap<String, Element>,
}

/// What an element's build does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ElementKind {
    /// Runs the element's commands in the sandbox (the default).
    Manual,
    /// Turns the element's source directory into an artifact as it is, running nothing.
    Import,
}

impl ElementKind {
    /// The kind as written in `ws.toml`: `"manual"` or `"import"`.
    pub fn name(self) -> &'static str {
        match self {
            ElementKind::Manual => "manual",
            ElementKind::Import => "import",
        }
    }
}

impl fmt::Display for ElementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One element of a project: a build unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Element {
    /// Its name (the key of its `[element.NAME]` table).
    pub name: String,
    /// What its build does.
    pub kind: ElementKind,
    /// Its source directory, relative to the project root and normalized (no `.`
    /// components, no trailing `/`); `""` for the project root itself.
    pub sources: String,
    /// The elements it build-depends on, in file order.
    pub depends: Vec<String>,
    /// Commands run only when the buildtree was never configured.
    pub configure: Vec<String>,
    /// Commands run at every build.
    pub build: Vec<String>,
    /// Commands that install into `$WS_INSTALLDIR`.
    pub install: Vec<String>,
    /// Environment variables set for its commands.
    pub env: BTreeMap<String, String>,
    /// Whether its commands may use the network.
    pub network: bool,
    /// Names of the cache directories kept between its builds, in file order.
    pub caches: Vec<String>,
    /// Gitignore patterns left out when capturing its sources, in file order.
    pub ignore: Vec<String>,
    /// The size of each of its sandbox's in-memory filesystems (`/tmp`,
    /// `/dev/shm`, writes outside its build directories), if it asks for one;
    /// not part of its key.
    pub tmpfs_size: Option<u64>,
    /// Their inodes, if it asks; not part of its key.
    pub tmpfs_inodes: Option<u64>,
}

/// Where in a project file something is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The project file.
    pub file: PathBuf,
    /// The 1-based line and column (in characters), when the problem has a place in
    /// the file.
    pub position: Option<(usize, usize)>,
}

impl Location {
    /// The 1-based line, if there is one.
    pub fn line(&self) -> Option<usize> {
        self.position.map(|(line, _)| line)
    }

    /// The 1-based column, if there is one.
    pub fn column(&self) -> Option<usize> {
        self.position.map(|(_, column)| column)
    }
}

impl fmt::Display for Location {
    /// `FILE:LINE:COLUMN`, or `FILE` when there is no position.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(f, "{}:{line}:{column}", self.file.display()),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

/// A project file that cannot be used, or an element it does not declare.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProjectError {
    /// The file is not valid TOML.
    #[error("{at}: {message}; fix the TOML syntax")]
    Syntax {
        /// Where.
        at: Location,
        /// The TOML parser's description.
        message: String,
    },
    /// A key the format does not have.
    #[error("{at}: unknown key {key:?} {table}; expected {}", one_of(expected))]
    UnknownKey {
        /// Where the key is.
        at: Location,
        /// The key as written.
        key: String,
        /// The table it is in, as a phrase: `in element "hello"`, `in [project]`, `at
        /// the top level`.
        table: String,
        /// The keys that table may have.
        expected: &'static [&'static str],
    },
    /// A value that breaks one of the format's rules (its message says which).
    #[error("{at}: {message}")]
    Invalid {
        /// Where the value is.
        at: Location,
        /// What is wrong and what to do.
        message: String,
    },
    /// A `depends` entry that names no element of the project.
    #[error(
        "{at}: element {element:?} depends on {dependency:?}, which is not an element of this project; {hint}"
    )]
    UnknownDependency {
        /// Where the entry is.
        at: Location,
        /// The element whose `depends` it is in.
        element: String,
        /// The entry.
        dependency: String,
        /// What to do: a close element name, or the list of the project's elements.
        hint: String,
    },
    /// Elements that depend on each other.
    #[error(
        "{at}: dependency cycle {}; an element cannot depend on itself, directly or not: remove one of these dependencies",
        cycle.join(" -> ")
    )]
    Cycle {
        /// The `depends` entry that closes the cycle.
        at: Location,
        /// The elements around the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
    /// An element name that the project does not declare.
    #[error("{at} has no element {name:?}; {hint}")]
    NoSuchElement {
        /// The project file (no position).
        at: Location,
        /// The name asked for.
        name: String,
        /// What to do: a close element name, or the list of the project's elements.
        hint: String,
    },
}

impl ProjectError {
    /// Where the problem is.
    pub fn location(&self) -> &Location {
        match self {
            ProjectError::Syntax { at, .. }
            | ProjectError::UnknownKey { at, .. }
            | ProjectError::Invalid { at, .. }
            | ProjectError::UnknownDependency { at, .. }
            | ProjectError::Cycle { at, .. }
            | ProjectError::NoSuchElement { at, .. } => at,
        }
    }
}

/// `a, b or c` style lists for messages: "one of a, b, c" or the single key.
fn one_of(keys: &[&str]) -> String {
    match keys {
        [one] => one.to_string(),
        _ => format!("one of {}", keys.join(", ")),
    }
}

/// The hint of a "no such element" message: a close name in `names`, or the list of
/// them.
pub(crate) fn hint<'a>(name: &str, names: impl IntoIterator<Item = &'a str> + Clone) -> String {
    match closest(name, names.clone()) {
        Some(close) => format!("did you mean {close:?}?"),
        None => {
            let names: Vec<&str> = names.into_iter().collect();
            if names.is_empty() {
                "the project declares no elements: add an [element.NAME] table".to_owned()
            } else {
                format!("its elements are {}", names.join(", "))
            }
        }
    }
}

/// The name in `names` closest to `name` by edit distance (with transpositions), if
/// one is close enough to be a likely typo; ties go to the first in byte order.
pub(crate) fn closest<'a>(name: &str, names: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let limit = (name.chars().count() / 3).clamp(1, 3);
    let mut best: Option<(usize, &str)> = None;
    for candidate in names {
        let d = edit_distance(name, candidate);
        if d <= limit && best.is_none_or(|(bd, bn)| (d, candidate) < (bd, bn)) {
            best = Some((d, candidate));
        }
    }
    best.map(|(_, n)| n.to_owned())
}

/// The optimal string alignment distance: insertions, deletions, substitutions and
/// transpositions of adjacent characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

impl Project {
    /// Parses and checks `text`, the content of `file` (`file` is only used in
    /// messages). Errors name the file and the line and column of the problem.
    pub fn parse(file: &Path, text: &str) -> Result<Project, ProjectError> {
        parse::parse(file, text)
    }

    /// The element called `name`; an error naming a close match or listing the
    /// project's elements if there is none.
    pub fn element(&self, name: &str) -> Result<&Element, ProjectError> {
        self.elements
            .get(name)
            .ok_or_else(|| ProjectError::NoSuchElement {
                at: Location {
                    file: self.file.clone(),
                    position: None,
                },
                name: name.to_owned(),
                hint: hint(name, self.elements.keys().map(String::as_str)),
            })
    }

    /// `name` and everything it depends on, directly or not, dependencies first: a
    /// topological order, deterministic (of the elements whose dependencies are all
    /// listed, the first by name comes next). `name` is last.
    pub fn build_order(&self, name: &str) -> Result<Vec<&Element>, ProjectError> {
        let root = self.element(name)?;
        let mut set = BTreeSet::new();
        let mut todo = vec![root.name.as_str()];
        while let Some(n) = todo.pop() {
            if set.insert(n) {
                todo.extend(self.elements[n].depends.iter().map(String::as_str));
            }
        }
        Ok(self.topological(&set))
    }

    /// The elements that depend on `name`, directly or not (not `name` itself), in
    /// the same deterministic dependencies-first order as [`Project::build_order`].
    /// Empty when `name` is not an element.
    pub fn dependents(&self, name: &str) -> Vec<&Element> {
        let mut reverse: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for element in self.elements.values() {
            for dep in &element.depends {
                reverse
                    .entry(dep.as_str())
                    .or_default()
                    .push(element.name.as_str());
            }
        }
        let mut set = BTreeSet::new();
        let mut todo: Vec<&str> = reverse.get(name).cloned().unwrap_or_default();
        while let Some(n) = todo.pop() {
            if set.insert(n) {
                todo.extend(reverse.get(n).into_iter().flatten().copied());
            }
        }
        self.topological(&set)
    }

    /// The elements of `set` in topological order, dependencies first, ties broken
    /// by name; dependencies outside `set` are ignored. The graph is acyclic (parse
    /// checked it).
    fn topological(&self, set: &BTreeSet<&str>) -> Vec<&Element> {
        let mut waiting: BTreeMap<&str, usize> = BTreeMap::new();
        let mut users: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for &n in set {
            let deps: BTreeSet<&str> = self.elements[n]
                .depends
                .iter()
                .map(String::as_str)
                .filter(|d| set.contains(d))
                .collect();
            waiting.insert(n, deps.len());
            for d in deps {
                users.entry(d).or_default().push(n);
            }
        }
        let mut ready: BTreeSet<&str> = waiting
            .iter()
            .filter(|(_, count)| **count == 0)
            .map(|(n, _)| *n)
            .collect();
        let mut order = Vec::with_capacity(set.len());
        while let Some(n) = ready.pop_first() {
            order.push(&self.elements[n]);
            for &user in users.get(n).into_iter().flatten() {
                let count = waiting.get_mut(user).expect("every user is in the set");
                *count -= 1;
                if *count == 0 {
                    ready.insert(user);
                }
            }
        }
        debug_assert_eq!(order.len(), set.len(), "the dependency graph has a cycle");
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A project whose elements have the given dependencies.
    fn project(deps: &[(&str, &[&str])]) -> Project {
        let mut text = String::new();
        for (name, deps) in deps {
            text.push_str(&format!(
                "[element.{name}]\nsources = \"{name}\"\nbuild = [\"make\"]\ndepends = {deps:?}\n"
            ));
        }
        Project::parse(Path::new("ws.toml"), &text).unwrap()
    }

    fn names(elements: Vec<&Element>) -> Vec<&str> {
        elements.into_iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn build_order_is_dependencies_first_ties_by_name() {
        // app -> {lib, zlib}; lib -> {base, zlib}; zlib -> base; tool stands alone.
        let p = project(&[
            ("app", &["zlib", "lib"]),
            ("lib", &["zlib", "base"]),
            ("zlib", &["base"]),
            ("base", &[]),
            ("tool", &[]),
            ("docs", &["base"]),
        ]);
        assert_eq!(
            names(p.build_order("app").unwrap()),
            ["base", "zlib", "lib", "app"]
        );
        assert_eq!(
            names(p.build_order("lib").unwrap()),
            ["base", "zlib", "lib"]
        );
        assert_eq!(names(p.build_order("base").unwrap()), ["base"]);
        assert_eq!(names(p.build_order("tool").unwrap()), ["tool"]);

        // Independent dependencies come in name order, whatever the file order.
        let p = project(&[
            ("top", &["c", "a", "b"]),
            ("c", &[]),
            ("b", &[]),
            ("a", &[]),
        ]);
        assert_eq!(names(p.build_order("top").unwrap()), ["a", "b", "c", "top"]);
        // An element ready early by name still waits for its dependencies.
        let p = project(&[("top", &["a", "z"]), ("a", &["z"]), ("z", &[])]);
        assert_eq!(names(p.build_order("top").unwrap()), ["z", "a", "top"]);
    }

    #[test]
    fn dependents_are_transitive() {
        let p = project(&[
            ("app", &["lib"]),
            ("lib", &["base"]),
            ("other", &["base"]),
            ("base", &[]),
            ("tool", &[]),
            ("all", &["app", "other"]),
        ]);
        assert_eq!(names(p.dependents("base")), ["lib", "app", "other", "all"]);
        assert_eq!(names(p.dependents("lib")), ["app", "all"]);
        assert!(p.dependents("all").is_empty());
        assert!(p.dependents("tool").is_empty());
        assert!(p.dependents("nope").is_empty());
    }

    #[test]
    fn no_such_element() {
        let p = project(&[("hello", &[]), ("base", &[])]);
        assert_eq!(p.element("hello").unwrap().name, "hello");
        let e = p.element("helo").unwrap_err();
        assert_eq!(
            e.to_string(),
            "ws.toml has no element \"helo\"; did you mean \"hello\"?"
        );
        assert!(matches!(&e, ProjectError::NoSuchElement { name, .. } if name == "helo"));
        assert_eq!(e.location().position, None);
        assert_eq!(
            p.build_order("x").unwrap_err().to_string(),
            "ws.toml has no element \"x\"; its elements are base, hello"
        );
        let empty = Project::parse(Path::new("ws.toml"), "").unwrap();
        assert_eq!(
            empty.element("x").unwrap_err().to_string(),
            "ws.toml has no element \"x\"; the project declares no elements: add an [element.NAME] table"
        );
    }

    #[test]
    fn close_names() {
        let names = ["base", "hello", "zlib", "app"];
        assert_eq!(closest("bsae", names).as_deref(), Some("base"));
        assert_eq!(closest("hell", names).as_deref(), Some("hello"));
        assert_eq!(closest("zlb", names).as_deref(), Some("zlib"));
        assert_eq!(closest("x", names), None);
        assert_eq!(closest("compiler", names), None);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
