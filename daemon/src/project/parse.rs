//! Reading `ws.toml`: the TOML document with the byte spans of every key and value
//! (`toml::de::DeTable`), walked by hand so that every error names the key, the
//! element and the line and column it is about.
//!
//! The walk goes through each table in file order and stops at the first problem;
//! the checks that need the whole project (dependencies that name no element, cycles)
//! run after every element was read.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;

use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use super::{Element, ElementKind, Location, Project, ProjectError, hint};
use crate::workspace::validate_name;

/// The keys of the top-level table.
const TOP_KEYS: &[&str] = &["project", "element", "remote"];
/// The keys of `[project]`.
const PROJECT_KEYS: &[&str] = &["name"];
/// The keys of an `[element.NAME]` table, in the order the docs list them.
const ELEMENT_KEYS: &[&str] = &[
    "kind",
    "sources",
    "depends",
    "configure",
    "build",
    "install",
    "env",
    "network",
    "caches",
    "ignore",
    "tmpfs-size",
    "tmpfs-inodes",
];
/// The keys an import element must not have (beyond `network = true`).
const NOT_FOR_IMPORT: &[&str] = &[
    "configure",
    "build",
    "install",
    "env",
    "caches",
    "tmpfs-size",
    "tmpfs-inodes",
];
/// The variables `ws` sets for every build.
const RESERVED_ENV: &[&str] = &["WS_BUILDDIR", "WS_INSTALLDIR", "WS_SYSROOT", "WS_CACHEDIR"];

pub(super) type Key<'i> = Spanned<DeString<'i>>;
pub(super) type Value<'i> = Spanned<DeValue<'i>>;

/// The file being read: its path and where its lines start, to turn byte offsets
/// into lines and columns.
pub(super) struct Source<'a> {
    file: &'a Path,
    text: &'a str,
    /// The byte offset of the start of each line.
    lines: Vec<usize>,
}

impl<'a> Source<'a> {
    pub(super) fn new(file: &'a Path, text: &'a str) -> Source<'a> {
        let lines = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Source { file, text, lines }
    }

    /// The location of the byte at `offset`: 1-based line and column, the column
    /// counted in characters.
    /// The file's path, as given.
    pub(super) fn file(&self) -> &'a Path {
        self.file
    }

    pub(super) fn at(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let line = self.lines.partition_point(|&start| start <= offset);
        let start = self.lines[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        Location {
            file: self.file.to_owned(),
            position: Some((line, column)),
        }
    }

    pub(super) fn invalid(&self, span: Range<usize>, message: String) -> ProjectError {
        ProjectError::Invalid {
            at: self.at(span.start),
            message,
        }
    }

    pub(super) fn unknown_key(
        &self,
        key: &Key<'_>,
        table: String,
        expected: &'static [&'static str],
    ) -> ProjectError {
        ProjectError::UnknownKey {
            at: self.at(key.span().start),
            key: key.get_ref().to_string(),
            table,
            expected,
        }
    }
}

/// The entries of `table` in file order (`DeTable` iterates in key order).
pub(super) fn entries<'t, 'i>(table: &'t DeTable<'i>) -> Vec<(&'t Key<'i>, &'t Value<'i>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// An element as read, with the spans the whole-project checks need.
struct Read {
    element: Element,
    /// The span of each `depends` entry.
    depends_spans: Vec<Range<usize>>,
}

/// Parses and checks a whole project file.
pub(super) fn parse(file: &Path, text: &str) -> Result<Project, ProjectError> {
    let src = Source::new(file, text);
    let root = document(&src)?;

    let mut name = None;
    let mut read = Vec::new();
    let mut remotes = Vec::new();
    for (key, value) in entries(root.get_ref()) {
        match key.get_ref().as_ref() {
            "project" => name = read_project(&src, value)?,
            "remote" => remotes = super::remotes::read_remotes(&src, value)?,
            "element" => {
                let DeValue::Table(elements) = value.get_ref() else {
                    return Err(src.invalid(
                        value.span(),
                        format!(
                            "\"element\" must be a table of elements, not {}; write [element.NAME] tables",
                            a(value)
                        ),
                    ));
                };
                for (key, value) in entries(elements) {
                    read.push(read_element(&src, key, value)?);
                }
            }
            _ => return Err(src.unknown_key(key, "at the top level".to_owned(), TOP_KEYS)),
        }
    }

    check_dependencies(&src, &read)?;
    Ok(Project {
        file: file.to_owned(),
        name,
        remotes,
        elements: read
            .into_iter()
            .map(|r| (r.element.name.clone(), r.element))
            .collect(),
    })
}

/// The TOML document of `src`; a syntax error names its line and column.
pub(super) fn document<'i>(src: &Source<'i>) -> Result<Spanned<DeTable<'i>>, ProjectError> {
    DeTable::parse(src.text).map_err(|e| ProjectError::Syntax {
        at: match e.span() {
            Some(span) => src.at(span.start),
            None => Location {
                file: src.file.to_owned(),
                position: None,
            },
        },
        message: e.message().trim().replace('\n', "; "),
    })
}

/// The `[project]` table: its name, if it has one.
fn read_project(src: &Source<'_>, value: &Value<'_>) -> Result<Option<String>, ProjectError> {
    let DeValue::Table(table) = value.get_ref() else {
        return Err(src.invalid(
            value.span(),
            format!(
                "\"project\" must be a table, not {}; write a [project] table",
                a(value)
            ),
        ));
    };
    let mut name = None;
    for (key, value) in entries(table) {
        match key.get_ref().as_ref() {
            "name" => {
                let what = "\"name\" in [project]";
                let text = string(src, value, what)?;
                validate_name(&text).map_err(|why| {
                    src.invalid(
                        value.span(),
                        format!("invalid project name {text:?}: {why}; rename the project"),
                    )
                })?;
                name = Some(text);
            }
            _ => return Err(src.unknown_key(key, "in [project]".to_owned(), PROJECT_KEYS)),
        }
    }
    Ok(name)
}

/// One `[element.NAME]` table.
fn read_element(
    src: &Source<'_>,
    name_key: &Key<'_>,
    value: &Value<'_>,
) -> Result<Read, ProjectError> {
    let name = name_key.get_ref().to_string();
    validate_name(&name).map_err(|why| {
        src.invalid(
            name_key.span(),
            format!("invalid element name {name:?}: {why}; rename the element"),
        )
    })?;
    let DeValue::Table(table) = value.get_ref() else {
        return Err(src.invalid(
            value.span(),
            format!(
                "element {name:?} must be a table, not {}; write an [element.{name}] table",
                a(value)
            ),
        ));
    };
    let of = |key: &str| format!("{key:?} in element {name:?}");

    let mut element = Element {
        name: name.clone(),
        kind: ElementKind::Manual,
        sources: String::new(),
        depends: Vec::new(),
        configure: Vec::new(),
        build: Vec::new(),
        install: Vec::new(),
        env: BTreeMap::new(),
        network: false,
        caches: Vec::new(),
        ignore: Vec::new(),
        tmpfs_size: None,
        tmpfs_inodes: None,
    };
    let mut sources = false;
    let mut depends_spans = Vec::new();
    // The keys present, with their spans, for the checks across keys.
    let mut present: Vec<(&str, Range<usize>)> = Vec::new();
    for (key, value) in entries(table) {
        let key_name: &str = key.get_ref().as_ref();
        match key_name {
            "kind" => {
                let text = string(src, value, &of("kind"))?;
                element.kind = match text.as_str() {
                    "manual" => ElementKind::Manual,
                    "import" => ElementKind::Import,
                    _ => {
                        return Err(src.invalid(
                            value.span(),
                            format!(
                                "unknown kind {text:?} for element {name:?}; expected \"manual\" (runs commands) or \"import\" (uses the directory as it is)"
                            ),
                        ));
                    }
                };
            }
            "sources" => {
                let text = string(src, value, &of("sources"))?;
                element.sources = normalize_sources(&text).map_err(|why| {
                    src.invalid(
                        value.span(),
                        format!("\"sources\" of element {name:?} ({text:?}) {why}"),
                    )
                })?;
                sources = true;
            }
            "depends" => {
                let mut seen = BTreeSet::new();
                for (dep, span) in strings(src, value, &of("depends"))? {
                    if !seen.insert(dep.clone()) {
                        return Err(src.invalid(
                            span,
                            format!(
                                "element {name:?} depends on {dep:?} twice; remove one of them"
                            ),
                        ));
                    }
                    element.depends.push(dep);
                    depends_spans.push(span);
                }
            }
            "configure" | "build" | "install" => {
                let what = of(key_name);
                let mut commands = Vec::new();
                for (i, (command, span)) in strings(src, value, &what)?.into_iter().enumerate() {
                    if command.trim().is_empty() {
                        return Err(src.invalid(
                            span,
                            format!("command {} of {what} is empty; remove it", i + 1),
                        ));
                    }
                    if command.contains('\0') {
                        return Err(src.invalid(
                            span,
                            format!(
                                "command {} of {what} contains a NUL character; remove it",
                                i + 1
                            ),
                        ));
                    }
                    commands.push(command);
                }
                match key_name {
                    "configure" => element.configure = commands,
                    "build" => element.build = commands,
                    _ => element.install = commands,
                }
            }
            "env" => element.env = read_env(src, value, &name)?,
            "network" => {
                let DeValue::Boolean(network) = *value.get_ref() else {
                    return Err(src.invalid(
                        value.span(),
                        format!("{} must be true or false, not {}", of("network"), a(value)),
                    ));
                };
                element.network = network;
            }
            "caches" => {
                let mut seen = BTreeSet::new();
                for (cache, span) in strings(src, value, &of("caches"))? {
                    validate_name(&cache).map_err(|why| {
                        src.invalid(
                            span.clone(),
                            format!("invalid cache name {cache:?} in element {name:?}: {why}; rename the cache"),
                        )
                    })?;
                    if !seen.insert(cache.clone()) {
                        return Err(src.invalid(
                            span,
                            format!("cache {cache:?} is listed twice in element {name:?}; remove one of them"),
                        ));
                    }
                    element.caches.push(cache);
                }
            }
            "ignore" => {
                let what = of("ignore");
                for (i, (pattern, span)) in strings(src, value, &what)?.into_iter().enumerate() {
                    let why = if pattern.is_empty() {
                        Some("is empty; remove it")
                    } else if pattern.contains(['\n', '\r']) {
                        Some("has a line break; write one pattern per entry")
                    } else if pattern.contains('\0') {
                        Some("contains a NUL character; remove it")
                    } else {
                        None
                    };
                    if let Some(why) = why {
                        return Err(src.invalid(span, format!("pattern {} of {what} {why}", i + 1)));
                    }
                    element.ignore.push(pattern);
                }
            }
            "tmpfs-size" => {
                let size = match value.get_ref() {
                    DeValue::Integer(n) => n.as_str().parse::<u64>().map_err(|e| e.to_string()),
                    DeValue::String(text) => super::size::parse_size(text),
                    _ => Err(format!("it must be a size like \"2G\", not {}", a(value))),
                };
                let size = size.map_err(|why| {
                    src.invalid(value.span(), format!("{}: {why}", of("tmpfs-size")))
                })?;
                element.tmpfs_size = Some(size);
            }
            "tmpfs-inodes" => {
                let inodes = match value.get_ref() {
                    DeValue::Integer(n) => n.as_str().parse::<u64>().ok(),
                    _ => None,
                };
                element.tmpfs_inodes = Some(inodes.ok_or_else(|| {
                    src.invalid(
                        value.span(),
                        format!(
                            "{} must be a positive number, not {}",
                            of("tmpfs-inodes"),
                            a(value)
                        ),
                    )
                })?);
            }
            _ => return Err(src.unknown_key(key, format!("in element {name:?}"), ELEMENT_KEYS)),
        }
        present.push((key_name, key.span()));
    }

    if element.kind == ElementKind::Import {
        for (key, span) in &present {
            if NOT_FOR_IMPORT.contains(key) || (*key == "network" && element.network) {
                let what = if *key == "network" {
                    "network = true".to_owned()
                } else {
                    format!("{key:?}")
                };
                return Err(src.invalid(
                    span.clone(),
                    format!(
                        "element {name:?} is an import, which runs no commands, so {what} has no use; remove it or set kind = \"manual\""
                    ),
                ));
            }
        }
    }
    if !sources {
        return Err(src.invalid(
            name_key.span(),
            format!(
                "element {name:?} has no \"sources\"; add sources = \"DIR\", a directory relative to the project root (\".\" for the root itself)"
            ),
        ));
    }
    if element.kind == ElementKind::Manual
        && element.configure.is_empty()
        && element.build.is_empty()
        && element.install.is_empty()
    {
        return Err(src.invalid(
            name_key.span(),
            format!(
                "element {name:?} has no commands; add configure, build or install commands, or set kind = \"import\" to use its sources as they are"
            ),
        ));
    }
    Ok(Read {
        element,
        depends_spans,
    })
}

/// An element's `env` table.
fn read_env(
    src: &Source<'_>,
    value: &Value<'_>,
    element: &str,
) -> Result<BTreeMap<String, String>, ProjectError> {
    let DeValue::Table(table) = value.get_ref() else {
        return Err(src.invalid(
            value.span(),
            format!(
                "\"env\" in element {element:?} must be a table, not {}; write env = {{ NAME = \"value\" }}",
                a(value)
            ),
        ));
    };
    let mut env = BTreeMap::new();
    for (key, value) in entries(table) {
        let var: &str = key.get_ref().as_ref();
        if !is_variable_name(var) {
            return Err(src.invalid(
                key.span(),
                format!(
                    "invalid variable name {var:?} in \"env\" of element {element:?}: names are letters, digits and '_', not starting with a digit"
                ),
            ));
        }
        if RESERVED_ENV.contains(&var) {
            return Err(src.invalid(
                key.span(),
                format!(
                    "{var:?} in \"env\" of element {element:?} is set by ws for every build; remove it (the reserved names are {})",
                    RESERVED_ENV.join(", ")
                ),
            ));
        }
        let DeValue::String(text) = value.get_ref() else {
            return Err(src.invalid(
                value.span(),
                format!(
                    "the value of {var:?} in \"env\" of element {element:?} must be a string, not {}; quote it",
                    a(value)
                ),
            ));
        };
        if text.contains('\0') {
            return Err(src.invalid(
                value.span(),
                format!("the value of {var:?} in \"env\" of element {element:?} contains a NUL character; remove it"),
            ));
        }
        env.insert(var.to_owned(), text.to_string());
    }
    Ok(env)
}

/// The whole-project checks: every dependency names an element, and there is no
/// cycle.
fn check_dependencies(src: &Source<'_>, read: &[Read]) -> Result<(), ProjectError> {
    let index: BTreeMap<&str, &Read> = read.iter().map(|r| (r.element.name.as_str(), r)).collect();
    for r in read {
        for (dep, span) in r.element.depends.iter().zip(&r.depends_spans) {
            if !index.contains_key(dep.as_str()) {
                return Err(ProjectError::UnknownDependency {
                    at: src.at(span.start),
                    element: r.element.name.clone(),
                    dependency: dep.clone(),
                    // Not the element itself: it cannot depend on itself.
                    hint: hint(dep, index.keys().copied().filter(|n| *n != r.element.name)),
                });
            }
        }
    }

    // Depth-first from each element in name order, dependencies in file order; an
    // edge back to an element on the path closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = index.keys().map(|n| (*n, Mark::New)).collect();
    for &start in index.keys() {
        if marks[start] != Mark::New {
            continue;
        }
        // The path: each element with the index of its next dependency to visit.
        let mut path: Vec<(&str, usize)> = vec![(start, 0)];
        marks.insert(start, Mark::OnPath);
        while let Some((node, next)) = path.last_mut() {
            let r = index[*node];
            let Some(dep) = r.element.depends.get(*next) else {
                marks.insert(*node, Mark::Done);
                path.pop();
                continue;
            };
            let span = r.depends_spans[*next].clone();
            *next += 1;
            match marks[dep.as_str()] {
                Mark::Done => {}
                Mark::New => {
                    marks.insert(dep, Mark::OnPath);
                    path.push((dep, 0));
                }
                Mark::OnPath => {
                    let from = path
                        .iter()
                        .position(|(n, _)| *n == dep)
                        .expect("on the path");
                    let mut cycle: Vec<String> =
                        path[from..].iter().map(|(n, _)| n.to_string()).collect();
                    cycle.push(dep.clone());
                    return Err(ProjectError::Cycle {
                        at: src.at(span.start),
                        cycle,
                    });
                }
            }
        }
    }
    Ok(())
}

/// `sources` normalized: relative, inside the project, no empty component but a
/// trailing `/`, `.` components dropped; `""` for the root.
fn normalize_sources(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("is empty; write \".\" for the project root".to_owned());
    }
    if text.contains('\0') {
        return Err("contains a NUL character; remove it".to_owned());
    }
    if text.starts_with('/') {
        return Err("is an absolute path; write a path relative to the project root".to_owned());
    }
    let body = text.strip_suffix('/').unwrap_or(text);
    let mut parts = Vec::new();
    for part in body.split('/') {
        match part {
            "" => {
                let fixed: Vec<&str> = text.split('/').filter(|p| !p.is_empty()).collect();
                return Err(format!(
                    "has an empty component; write {:?}",
                    fixed.join("/")
                ));
            }
            "." => {}
            ".." => {
                return Err(
                    "has a \"..\" component; sources must be a directory inside the project"
                        .to_owned(),
                );
            }
            _ => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

/// Whether `name` can be an environment variable's name: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `a string`, `an integer`...: the type of a value, for messages.
pub(super) fn a(value: &Value<'_>) -> String {
    let ty = value.get_ref().type_str();
    let article = if ty.starts_with(['a', 'i']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {ty}")
}

/// A string value.
pub(super) fn string(
    src: &Source<'_>,
    value: &Value<'_>,
    what: &str,
) -> Result<String, ProjectError> {
    match value.get_ref() {
        DeValue::String(text) => Ok(text.to_string()),
        _ => Err(src.invalid(
            value.span(),
            format!("{what} must be a string, not {}", a(value)),
        )),
    }
}

/// An array of strings, each with its span.
fn strings(
    src: &Source<'_>,
    value: &Value<'_>,
    what: &str,
) -> Result<Vec<(String, Range<usize>)>, ProjectError> {
    let DeValue::Array(items) = value.get_ref() else {
        let hint = match value.get_ref() {
            DeValue::String(text) => format!("; write [{text:?}]"),
            _ => String::new(),
        };
        return Err(src.invalid(
            value.span(),
            format!("{what} must be an array of strings, not {}{hint}", a(value)),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item.get_ref() {
            DeValue::String(text) => Ok((text.to_string(), item.span())),
            _ => Err(src.invalid(
                item.span(),
                format!(
                    "entry {} of {what} must be a string, not {}",
                    i + 1,
                    a(item)
                ),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const EXAMPLE: &str = r#"[project]            # optional table
name = "hello"       # optional; letters, digits, '.', '_', '-'

[element.base]
kind = "import"      # turns a directory into an artifact, no commands
sources = "base"     # a directory, relative to the project root

[element.hello]
kind = "manual"      # the default: runs commands
sources = "hello"
depends = ["base"]   # build dependencies
configure = ["./configure --prefix=/usr"]
build = ["make -j2"]
install = ["make install DESTDIR=$WS_INSTALLDIR"]
env = { CFLAGS = "-O2" }
network = false      # default false
caches = ["ccache"]
ignore = ["*.log"]
"#;

    fn parse(text: &str) -> Result<Project, ProjectError> {
        Project::parse(Path::new("ws.toml"), text)
    }

    /// The message of the error `text` gives.
    fn error(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("parsed:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    /// A project with one manual element `e` whose table holds `body`.
    fn element(body: &str) -> String {
        format!("[element.e]\nsources = \".\"\nbuild = [\"make\"]\n{body}\n")
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn example_parses() {
        let project = parse(EXAMPLE).unwrap();
        assert_eq!(project.file, PathBuf::from("ws.toml"));
        assert_eq!(project.name.as_deref(), Some("hello"));
        assert_eq!(project.elements.len(), 2);
        assert_eq!(
            project.elements["base"],
            Element {
                name: "base".into(),
                kind: ElementKind::Import,
                sources: "base".into(),
                depends: vec![],
                configure: vec![],
                build: vec![],
                install: vec![],
                env: BTreeMap::new(),
                network: false,
                caches: vec![],
                ignore: vec![],
                tmpfs_size: None,
                tmpfs_inodes: None,
            }
        );
        assert_eq!(
            project.elements["hello"],
            Element {
                name: "hello".into(),
                kind: ElementKind::Manual,
                sources: "hello".into(),
                depends: strings(&["base"]),
                configure: strings(&["./configure --prefix=/usr"]),
                build: strings(&["make -j2"]),
                install: strings(&["make install DESTDIR=$WS_INSTALLDIR"]),
                env: [("CFLAGS".to_owned(), "-O2".to_owned())].into(),
                network: false,
                caches: strings(&["ccache"]),
                ignore: strings(&["*.log"]),
                tmpfs_size: None,
                tmpfs_inodes: None,
            }
        );
        let order: Vec<&str> = project
            .build_order("hello")
            .unwrap()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(order, ["base", "hello"]);
    }

    #[test]
    fn other_spellings_of_the_same_project() {
        let dotted = r#"
project.name = "hello"
[element]
base = { kind = "import", sources = "./base/" }
hello.sources = "hello"
hello.depends = ["base"]
hello.configure = ["./configure --prefix=/usr"]
hello.build = ["make -j2"]
hello.install = ["make install DESTDIR=$WS_INSTALLDIR"]
hello.env.CFLAGS = "-O2"
hello.caches = ["ccache"]
hello.ignore = ["*.log"]
"#;
        assert_eq!(parse(dotted).unwrap(), parse(EXAMPLE).unwrap());
    }

    #[test]
    fn defaults_and_empty_project() {
        let project = parse("").unwrap();
        assert_eq!(project.name, None);
        assert!(project.elements.is_empty());
        let project =
            parse("[project]\n[element.a]\nsources = \".\"\ninstall = [\"true\"]\n").unwrap();
        let a = &project.elements["a"];
        assert_eq!(a.kind, ElementKind::Manual);
        assert_eq!(a.sources, "");
        assert!(!a.network);
        assert!(a.env.is_empty() && a.caches.is_empty() && a.ignore.is_empty());
    }

    #[test]
    fn sources_are_normalized() {
        for (written, normal) in [
            (".", ""),
            ("./", ""),
            ("./x/", "x"),
            ("x/./y", "x/y"),
            ("x/y/", "x/y"),
            ("a.b/c..d", "a.b/c..d"),
        ] {
            let text = format!("[element.e]\nsources = {written:?}\nbuild = [\"make\"]\n");
            assert_eq!(
                parse(&text).unwrap().elements["e"].sources,
                normal,
                "{written}"
            );
        }
        let bad = |s: &str| {
            error(&format!(
                "[element.e]\nsources = {s:?}\nbuild = [\"make\"]\n"
            ))
        };
        assert_eq!(
            bad("/usr/src"),
            "ws.toml:2:11: \"sources\" of element \"e\" (\"/usr/src\") is an absolute path; write a path relative to the project root"
        );
        assert_eq!(
            bad("x/../../y"),
            "ws.toml:2:11: \"sources\" of element \"e\" (\"x/../../y\") has a \"..\" component; sources must be a directory inside the project"
        );
        assert_eq!(
            bad("a//b"),
            "ws.toml:2:11: \"sources\" of element \"e\" (\"a//b\") has an empty component; write \"a/b\""
        );
        assert_eq!(
            bad(""),
            "ws.toml:2:11: \"sources\" of element \"e\" (\"\") is empty; write \".\" for the project root"
        );
        assert!(bad("..").contains("\"..\" component"));
        assert!(bad("x//").contains("empty component"));
    }

    #[test]
    fn unknown_keys() {
        let text = "[element.hello]\nsources = \"hello\"\n  biuld = [\"make\"]\n";
        assert_eq!(
            error(text),
            "ws.toml:3:3: unknown key \"biuld\" in element \"hello\"; expected one of kind, sources, depends, configure, build, install, env, network, caches, ignore, tmpfs-size, tmpfs-inodes"
        );
        assert_eq!(
            error("[project]\nname = \"p\"\nnmae = \"q\"\n"),
            "ws.toml:3:1: unknown key \"nmae\" in [project]; expected name"
        );
        assert_eq!(
            error("[elements.hello]\n"),
            "ws.toml:1:2: unknown key \"elements\" at the top level; expected one of project, element, remote"
        );
        // A sub-table of an element is an unknown key of the element.
        assert_eq!(
            error(&element("[element.e.extra]\nx = 1")),
            "ws.toml:4:12: unknown key \"extra\" in element \"e\"; expected one of kind, sources, depends, configure, build, install, env, network, caches, ignore, tmpfs-size, tmpfs-inodes"
        );
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = parse("[element.a]\nsources = \"a\nbuild = []\n").unwrap_err();
        assert!(matches!(e, ProjectError::Syntax { .. }), "{e}");
        assert_eq!(e.location().line(), Some(2), "{e}");
        assert!(e.to_string().starts_with("ws.toml:2:"), "{e}");
        assert!(e.to_string().ends_with("; fix the TOML syntax"), "{e}");

        let e = parse("[element.a]\nsources = \"a\"\nsources = \"b\"\n").unwrap_err();
        assert!(e.to_string().starts_with("ws.toml:3:1: "), "{e}");
    }

    #[test]
    fn wrong_types() {
        assert_eq!(
            error("[element.e]\nsources = \".\"\nbuild = \"make\"\n"),
            "ws.toml:3:9: \"build\" in element \"e\" must be an array of strings, not a string; write [\"make\"]"
        );
        assert_eq!(
            error(&element("install = [\"a\", 2]")),
            "ws.toml:4:17: entry 2 of \"install\" in element \"e\" must be a string, not an integer"
        );
        assert_eq!(
            error(&element("network = \"yes\"")),
            "ws.toml:4:11: \"network\" in element \"e\" must be true or false, not a string"
        );
        assert_eq!(
            error(&element("kind = 1")),
            "ws.toml:4:8: \"kind\" in element \"e\" must be a string, not an integer"
        );
        assert_eq!(
            error(&element("env = [\"A=b\"]")),
            "ws.toml:4:7: \"env\" in element \"e\" must be a table, not an array; write env = { NAME = \"value\" }"
        );
        assert_eq!(
            error("element = 3\n"),
            "ws.toml:1:11: \"element\" must be a table of elements, not an integer; write [element.NAME] tables"
        );
        assert_eq!(
            error("element.e = \"x\"\n"),
            "ws.toml:1:13: element \"e\" must be a table, not a string; write an [element.e] table"
        );
        assert_eq!(
            error("project = []\n"),
            "ws.toml:1:11: \"project\" must be a table, not an array; write a [project] table"
        );
        assert_eq!(
            error(&element("kind = \"script\"")),
            "ws.toml:4:8: unknown kind \"script\" for element \"e\"; expected \"manual\" (runs commands) or \"import\" (uses the directory as it is)"
        );
    }

    #[test]
    fn names() {
        assert_eq!(
            error("[element.\"-x\"]\nsources = \".\"\nbuild = [\"make\"]\n"),
            "ws.toml:1:10: invalid element name \"-x\": it must not start with '.' or '-'; rename the element"
        );
        assert!(
            error("[element.\"a b\"]\n")
                .contains("invalid element name \"a b\": ' ' is not allowed")
        );
        assert_eq!(
            error("[project]\nname = \"my project\"\n"),
            "ws.toml:2:8: invalid project name \"my project\": ' ' is not allowed (letters, digits, '.', '_' and '-' are); rename the project"
        );
        assert!(parse("[element.\"a.b_c-1\"]\nsources = \".\"\nbuild = [\"make\"]\n").is_ok());
    }

    #[test]
    fn import_elements_run_nothing() {
        for (key, value) in [
            ("configure", "[\"x\"]"),
            ("build", "[]"),
            ("install", "[\"x\"]"),
            ("env", "{ A = \"b\" }"),
            ("caches", "[\"c\"]"),
        ] {
            let text =
                format!("[element.i]\nkind = \"import\"\nsources = \"i\"\n{key} = {value}\n");
            assert_eq!(
                error(&text),
                format!(
                    "ws.toml:4:1: element \"i\" is an import, which runs no commands, so {key:?} has no use; remove it or set kind = \"manual\""
                )
            );
        }
        let text = "[element.i]\nkind = \"import\"\nsources = \"i\"\nnetwork = true\n";
        assert_eq!(
            error(text),
            "ws.toml:4:1: element \"i\" is an import, which runs no commands, so network = true has no use; remove it or set kind = \"manual\""
        );
        // The kind may come after the keys it rules out.
        let text = "[element.i]\nsources = \"i\"\nbuild = [\"make\"]\nkind = \"import\"\n";
        assert!(error(text).starts_with("ws.toml:3:1: element \"i\" is an import"));
        // network = false, ignore and depends are fine.
        let text = "[element.d]\nkind = \"import\"\nsources = \"d\"\n[element.i]\nkind = \"import\"\nsources = \"i\"\nnetwork = false\nignore = [\"*.o\"]\ndepends = [\"d\"]\n";
        assert!(parse(text).is_ok());
    }

    #[test]
    fn required_parts() {
        assert_eq!(
            error("[element.hello]\nsources = \"hello\"\nbuild = []\n"),
            "ws.toml:1:10: element \"hello\" has no commands; add configure, build or install commands, or set kind = \"import\" to use its sources as they are"
        );
        assert_eq!(
            error("[element.hello]\nbuild = [\"make\"]\n"),
            "ws.toml:1:10: element \"hello\" has no \"sources\"; add sources = \"DIR\", a directory relative to the project root (\".\" for the root itself)"
        );
        assert_eq!(
            error(&element("configure = [\"./configure\", \"  \"]")),
            "ws.toml:4:29: command 2 of \"configure\" in element \"e\" is empty; remove it"
        );
        assert!(error(&element("install = [\"a\\u0000b\"]")).contains("contains a NUL character"));
    }

    #[test]
    fn env_rules() {
        let p = parse(&element("env = { _X1 = \"a b\", CC = \"\" }")).unwrap();
        assert_eq!(p.elements["e"].env["_X1"], "a b");
        assert_eq!(p.elements["e"].env["CC"], "");
        assert_eq!(
            error(&element("env = { \"1X\" = \"a\" }")),
            "ws.toml:4:9: invalid variable name \"1X\" in \"env\" of element \"e\": names are letters, digits and '_', not starting with a digit"
        );
        assert!(
            error(&element("env = { \"A-B\" = \"a\" }")).contains("invalid variable name \"A-B\"")
        );
        assert_eq!(
            error(&element("env = { WS_SYSROOT = \"/\" }")),
            "ws.toml:4:9: \"WS_SYSROOT\" in \"env\" of element \"e\" is set by ws for every build; remove it (the reserved names are WS_BUILDDIR, WS_INSTALLDIR, WS_SYSROOT, WS_CACHEDIR)"
        );
        for reserved in RESERVED_ENV {
            assert!(error(&element(&format!("env.{reserved} = \"x\""))).contains("is set by ws"));
        }
        assert_eq!(
            error(&element("env = { JOBS = 2 }")),
            "ws.toml:4:16: the value of \"JOBS\" in \"env\" of element \"e\" must be a string, not an integer; quote it"
        );
        assert!(error(&element("env.A = \"x\\u0000\"")).contains("contains a NUL character"));
    }

    #[test]
    fn caches_and_ignore() {
        let p = parse(&element(
            "caches = [\"ccache\", \"cargo\"]\nignore = [\"*.o\", \"/build/\"]",
        ))
        .unwrap();
        assert_eq!(p.elements["e"].caches, ["ccache", "cargo"]);
        assert_eq!(p.elements["e"].ignore, ["*.o", "/build/"]);
        assert_eq!(
            error(&element("caches = [\"ccache\",\n  \"ccache\"]")),
            "ws.toml:5:3: cache \"ccache\" is listed twice in element \"e\"; remove one of them"
        );
        assert_eq!(
            error(&element("caches = [\".hidden\"]")),
            "ws.toml:4:11: invalid cache name \".hidden\" in element \"e\": it must not start with '.' or '-'; rename the cache"
        );
        assert!(error(&element("caches = [\"a/b\"]")).contains("invalid cache name \"a/b\""));
        assert_eq!(
            error(&element("ignore = [\"*.o\\n*.a\"]")),
            "ws.toml:4:11: pattern 1 of \"ignore\" in element \"e\" has a line break; write one pattern per entry"
        );
        assert!(
            error(&element("ignore = [\"\"]"))
                .contains("pattern 1 of \"ignore\" in element \"e\" is empty")
        );
    }

    /// A project whose elements `a`, `b`... have the given dependencies.
    fn graph(deps: &[(&str, &[&str])]) -> String {
        let mut text = String::new();
        for (name, deps) in deps {
            text.push_str(&format!(
                "[element.{name}]\nsources = \"{name}\"\nbuild = [\"make\"]\ndepends = {deps:?}\n\n"
            ));
        }
        text
    }

    #[test]
    fn dependencies_must_exist() {
        let text = graph(&[("base", &[]), ("hello", &["base", "bsae"])]);
        assert_eq!(
            error(&text),
            "ws.toml:9:20: element \"hello\" depends on \"bsae\", which is not an element of this project; did you mean \"base\"?"
        );
        let text = graph(&[("base", &[]), ("hello", &["zzz"])]);
        assert_eq!(
            error(&text),
            "ws.toml:9:12: element \"hello\" depends on \"zzz\", which is not an element of this project; its elements are base"
        );
        let text = graph(&[("hello", &["base", "base"])]);
        assert_eq!(
            error(&text),
            "ws.toml:4:20: element \"hello\" depends on \"base\" twice; remove one of them"
        );
    }

    #[test]
    fn cycles() {
        let text = graph(&[("a", &["a"])]);
        assert_eq!(
            error(&text),
            "ws.toml:4:12: dependency cycle a -> a; an element cannot depend on itself, directly or not: remove one of these dependencies"
        );
        let text = graph(&[("a", &["b"]), ("b", &["a"])]);
        let e = parse(&text).unwrap_err();
        assert!(
            matches!(&e, ProjectError::Cycle { cycle, .. } if cycle == &["a", "b", "a"]),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("ws.toml:9:12: dependency cycle a -> b -> a;"),
            "{e}"
        );

        // The cycle does not start at the first element, and the closing entry is not
        // the element's first dependency.
        let text = graph(&[
            ("a", &["b"]),
            ("b", &["c"]),
            ("c", &["x", "d"]),
            ("d", &["b"]),
            ("x", &[]),
        ]);
        let e = parse(&text).unwrap_err();
        assert_eq!(e.location().position, Some((19, 12)), "{e}");
        assert!(
            e.to_string().contains("dependency cycle b -> c -> d -> b;"),
            "{e}"
        );

        let text = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]);
        assert!(error(&text).starts_with("ws.toml:14:12: dependency cycle a -> b -> c -> a;"));
    }

    #[test]
    fn positions_count_characters() {
        let src = Source::new(Path::new("f"), "é = 1\r\n  ü\nx");
        assert_eq!(src.at(0).position, Some((1, 1)));
        assert_eq!(src.at(3).position, Some((1, 3)));
        assert_eq!(src.at(10).position, Some((2, 3)));
        assert_eq!(src.at(12).position, Some((2, 4)));
        assert_eq!(src.at(13).position, Some((3, 1)));
        assert_eq!(src.at(14).position, Some((3, 2)));
        assert_eq!(src.at(0).to_string(), "f:1:1");
    }
}
