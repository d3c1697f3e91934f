//! Tidy check: no new path-taking filesystem call in `treediff/src`, `overlay/src` or
//! `daemon/src` outside the allow-list `tests/tidy_paths.toml`.
//!
//! A root `wsd` must never open, chown, mount, unmount, watch or resolve by path
//! anything a user can influence (docs/security.md, "Paths and descriptors"): it goes
//! through descriptors. This check parses every source file with `syn` and records,
//! for every function (free functions, methods, and the closures and macro arguments
//! inside them, which count for the function they are in), each call that takes a
//! path: `std::fs` and `tokio::fs` functions, `File::open`/`create`, `OpenOptions`,
//! `DirBuilder`, `std::os::unix::fs::{chown, lchown, symlink}`, the path forms of
//! rustix and nix (`open`, `mkdir`, `stat`, `chown`, `unlink`, `rename`, ..., and any
//! call given `CWD`/`AT_FDCWD` for a directory), `mount`/`umount`/`umount2`/`unmount`
//! on a path, inotify watches, `WalkDir::new`, `tempfile`, and the `Path` methods
//! that touch the filesystem (`canonicalize`, `exists`, `read_dir`, ...; `is_dir`,
//! `is_file`, `is_symlink` and `metadata` only where the receiver is known to be a
//! path: these names are also `File`'s and `FileType`'s, which take none).
//!
//! Each (file, function) found must have an entry in the allow-list naming those
//! calls and why they are safe; an entry that matches nothing any more fails too.
//! Entries are keyed by file and function name, not by line, so they survive edits.
//!
//! Exempt wholesale: items under `#[cfg(test)]` and `#[test]` functions, files
//! that are test code throughout (`#![cfg(test)]`, as `daemon/src/testing.rs`),
//! and overlay's `testsuite` module (feature `testsuite`, compiled for tests only).
//!
//! Limits: names are resolved through each file's `use` declarations, not through
//! types, so a path call reached through a wrapper of our own (a function taking a
//! path that calls one of these) is found in the wrapper, not at its callers: a
//! wrapper's allow-list entry must say what its callers pass.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use super::{repo, rust_files};

use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::visit::{self, Visit};

/// Where the check looks, relative to the repository.
const SCANNED: [&str; 3] = ["treediff/src", "overlay/src", "daemon/src"];

/// Directories exempt wholesale (test support compiled only for tests).
const EXEMPT_DIRS: [&str; 1] = ["overlay/src/testsuite"];

/// The allow-list, relative to the repository.
const ALLOW_LIST: &str = "tests/tidy_paths.toml";

/// The kinds of reasons an allow-list entry may give; `unsafe` marks a site that is
/// not safe for a root daemon and is waiting for a fix (its reason starts with
/// `UNSAFE:`).
const CATEGORIES: [&str; 11] = [
    "state-dir",
    "checked",
    "sandbox",
    "user-daemon",
    "caller-credentials",
    "proc-self",
    "system-path",
    "admin-given",
    "entry-point",
    "test-support",
    "unsafe",
];

/// Functions that take a path, by their full path after `use` resolution.
const FORBIDDEN_FNS: &[&str] = &[
    "std::fs::read",
    "std::fs::read_to_string",
    "std::fs::write",
    "std::fs::create_dir",
    "std::fs::create_dir_all",
    "std::fs::remove_file",
    "std::fs::remove_dir",
    "std::fs::remove_dir_all",
    "std::fs::rename",
    "std::fs::metadata",
    "std::fs::symlink_metadata",
    "std::fs::read_dir",
    "std::fs::read_link",
    "std::fs::set_permissions",
    "std::fs::canonicalize",
    "std::fs::copy",
    "std::fs::hard_link",
    "std::fs::soft_link",
    "std::fs::exists",
    "std::fs::File::open",
    "std::fs::File::open_buffered",
    "std::fs::File::create",
    "std::fs::File::create_buffered",
    "std::fs::File::create_new",
    "std::fs::File::options",
    "std::fs::OpenOptions::new",
    "std::fs::DirBuilder::new",
    "std::os::unix::fs::chown",
    "std::os::unix::fs::lchown",
    "std::os::unix::fs::symlink",
    "std::os::unix::fs::chroot",
    "std::path::Path::exists",
    "std::path::Path::try_exists",
    "std::path::Path::is_dir",
    "std::path::Path::is_file",
    "std::path::Path::is_symlink",
    "std::path::Path::metadata",
    "std::path::Path::symlink_metadata",
    "std::path::Path::canonicalize",
    "std::path::Path::read_dir",
    "std::path::Path::read_link",
    "std::env::set_current_dir",
    "rustix::fs::open",
    "rustix::fs::mkdir",
    "rustix::fs::stat",
    "rustix::fs::lstat",
    "rustix::fs::statfs",
    "rustix::fs::statvfs",
    "rustix::fs::chown",
    "rustix::fs::chmod",
    "rustix::fs::unlink",
    "rustix::fs::rename",
    "rustix::fs::link",
    "rustix::fs::symlink",
    "rustix::fs::readlink",
    "rustix::fs::access",
    "rustix::fs::mknod",
    "rustix::fs::getxattr",
    "rustix::fs::lgetxattr",
    "rustix::fs::setxattr",
    "rustix::fs::lsetxattr",
    "rustix::fs::listxattr",
    "rustix::fs::llistxattr",
    "rustix::fs::removexattr",
    "rustix::fs::lremovexattr",
    "rustix::fs::inotify::add_watch",
    "rustix::process::chdir",
    "rustix::process::chroot",
    "rustix::process::pivot_root",
    "rustix::mount::mount",
    "rustix::mount::mount2",
    "rustix::mount::unmount",
    "rustix::mount::mount_bind",
    "rustix::mount::mount_recursive_bind",
    "rustix::mount::mount_change",
    "rustix::mount::mount_move",
    "rustix::mount::mount_remount",
    "nix::fcntl::open",
    "nix::fcntl::readlink",
    "nix::dir::Dir::open",
    "nix::unistd::chown",
    "nix::unistd::mkdir",
    "nix::unistd::mkfifo",
    "nix::unistd::unlink",
    "nix::unistd::chdir",
    "nix::unistd::chroot",
    "nix::unistd::truncate",
    "nix::unistd::access",
    "nix::unistd::pivot_root",
    "nix::sys::stat::stat",
    "nix::sys::stat::lstat",
    "nix::sys::stat::mknod",
    "nix::sys::stat::utimes",
    "nix::sys::stat::lutimes",
    "nix::sys::statfs::statfs",
    "nix::sys::statvfs::statvfs",
    "nix::mount::mount",
    "nix::mount::umount",
    "nix::mount::umount2",
    "walkdir::WalkDir::new",
    // overlay's own mount and unmount of a path (what the path leads to is
    // mounted on or unmounted): their callers are sites too.
    "overlay::mount",
    "overlay::unmount",
    "overlay::sys::mount",
    "overlay::sys::unmount",
    "overlay::sys::detach",
];

/// Every function under these prefixes takes a path (or makes files under one).
const FORBIDDEN_PREFIXES: &[(&str, &[&str])] = &[
    ("tokio::fs::", &["tokio::fs::File::from_std"]),
    ("tempfile::", &[]),
];

/// Methods whose name alone says they resolve a path (`Path`'s, taking no argument).
const PATH_METHODS: [&str; 6] = [
    "canonicalize",
    "exists",
    "try_exists",
    "symlink_metadata",
    "read_link",
    "read_dir",
];

/// `Path` methods that share their name with `File`'s, `Metadata`'s or
/// `FileType`'s (which take no path): counted only on a receiver known to be a path.
const AMBIGUOUS_PATH_METHODS: [&str; 4] = ["is_dir", "is_file", "is_symlink", "metadata"];

/// Methods that return a path.
const PATH_MAKING_METHODS: [&str; 8] = [
    "join",
    "parent",
    "path",
    "to_path_buf",
    "with_extension",
    "with_file_name",
    "canonicalize",
    "into_path",
];

/// One call that takes a path, where it was found.
#[derive(Debug, Clone)]
struct Found {
    file: String,
    function: String,
    call: String,
    line: usize,
}

/// What the names a file's `use` declarations bring in stand for: a name to the full
/// paths it may mean (a file can import one name in two modules).
#[derive(Default, Debug)]
struct Imports {
    names: BTreeMap<String, BTreeSet<String>>,
    /// The file's module path from its crate's name (`overlay::sys::fuse`), by
    /// which `crate::`, `self::`, `super::` and names defined beside the caller
    /// are made absolute.
    module: Vec<String>,
}

impl Imports {
    fn add(&mut self, prefix: &str, tree: &syn::UseTree) {
        let join = |name: &str| {
            if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}::{name}")
            }
        };
        match tree {
            syn::UseTree::Path(p) => self.add(&join(&p.ident.to_string()), &p.tree),
            syn::UseTree::Name(n) => {
                let name = n.ident.to_string();
                if name == "self" {
                    let last = prefix.rsplit("::").next().unwrap_or(prefix).to_owned();
                    self.insert(last, prefix.to_owned());
                } else {
                    self.insert(name.clone(), join(&name));
                }
            }
            syn::UseTree::Rename(r) => {
                let name = r.ident.to_string();
                let full = if name == "self" {
                    prefix.to_owned()
                } else {
                    join(&name)
                };
                self.insert(r.rename.to_string(), full);
            }
            syn::UseTree::Glob(_) => self.insert(format!("{prefix}::*"), prefix.to_owned()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.add(prefix, t);
                }
            }
        }
    }

    /// `full` with a leading `crate`, `self` or `super` replaced by the module it
    /// names.
    fn absolute(&self, full: &str) -> String {
        let mut module = self.module.clone();
        let mut rest: Vec<&str> = full.split("::").collect();
        match rest.first() {
            Some(&"crate") => module.truncate(1),
            Some(&"self") | Some(&"super") => {}
            _ => return full.to_owned(),
        }
        if rest[0] == "crate" || rest[0] == "self" {
            rest.remove(0);
        }
        while rest.first() == Some(&"super") {
            rest.remove(0);
            module.pop();
        }
        module.extend(rest.iter().map(|s| s.to_string()));
        module.join("::")
    }

    fn insert(&mut self, name: String, full: String) {
        self.names.entry(name).or_default().insert(full);
    }

    /// The full paths `segments` may stand for, the likeliest first: what a `use`
    /// makes of it, then the path as written, then a name a glob import or the
    /// caller's own module (unless `local`: a variable of the caller's) defines.
    fn resolve(&self, segments: &[String], local: bool) -> Vec<String> {
        let Some(first) = segments.first() else {
            return Vec::new();
        };
        let written = segments.join("::");
        let rest = segments[1..].join("::");
        let with_rest = |head: &str| {
            if rest.is_empty() {
                head.to_owned()
            } else {
                format!("{head}::{rest}")
            }
        };
        let mut out = Vec::new();
        if let Some(fulls) = self.names.get(first) {
            out.extend(fulls.iter().map(|f| with_rest(f)));
        }
        out.push(written.clone());
        if !local && !self.names.contains_key(first) {
            for (name, fulls) in &self.names {
                if name.ends_with("::*") {
                    out.extend(fulls.iter().map(|f| format!("{f}::{written}")));
                }
            }
            out.push(format!("{}::{written}", self.module.join("::")));
        }
        out.iter().map(|f| self.absolute(f)).collect()
    }
}

fn is_forbidden(full: &str) -> bool {
    let full = full.strip_prefix("::").unwrap_or(full);
    FORBIDDEN_FNS.contains(&full)
        || FORBIDDEN_PREFIXES
            .iter()
            .any(|(prefix, except)| full.starts_with(prefix) && !except.contains(&full))
}

fn path_segments(path: &syn::Path) -> Vec<String> {
    path.segments.iter().map(|s| s.ident.to_string()).collect()
}

/// Whether a `#[cfg(...)]` or `#[test]` on an item makes it test code.
fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        if a.path().is_ident("test") {
            return true;
        }
        if !a.path().is_ident("cfg") {
            return false;
        }
        let Ok(list) = a.meta.require_list() else {
            return false;
        };
        let tokens = list.tokens.to_string();
        tokens == "test" || (tokens.starts_with("all") && tokens.contains("test"))
    })
}

/// Whether a type names a path (`Path`, `PathBuf`, `AsRef<Path>`, ...).
fn is_path_type(ty: &syn::Type) -> bool {
    let text = quote::ToTokens::to_token_stream(ty).to_string();
    text.split(|c: char| !c.is_alphanumeric() && c != '_')
        .any(|w| w == "Path" || w == "PathBuf")
}

/// Walks one file, recording each forbidden call with its enclosing function.
struct Scanner<'a> {
    file: &'a str,
    imports: &'a Imports,
    /// Fields of structs (in any scanned file) whose type is a path.
    path_fields: &'a BTreeSet<String>,
    /// Names of the enclosing modules, impl type and functions.
    scope: Vec<String>,
    /// Local names known to hold a path, one set per enclosing function.
    path_locals: Vec<BTreeSet<String>>,
    /// Every name bound in the enclosing functions so far (a call of one is a
    /// closure's, not a function's of the module).
    locals: Vec<BTreeSet<String>>,
    found: Vec<Found>,
}

impl Scanner<'_> {
    fn record(&mut self, call: String, span: proc_macro2::Span) {
        let function = if self.scope.is_empty() {
            "<top level>".to_owned()
        } else {
            self.scope.join("::")
        };
        self.found.push(Found {
            file: self.file.to_owned(),
            function,
            call,
            line: span.start().line,
        });
    }

    fn is_path_local(&self, name: &str) -> bool {
        self.path_locals.iter().any(|s| s.contains(name))
    }

    /// Whether an expression is known to be a path (its type is not known here).
    fn is_path_expr(&self, expr: &syn::Expr) -> bool {
        match expr {
            syn::Expr::Paren(p) => self.is_path_expr(&p.expr),
            syn::Expr::Reference(r) => self.is_path_expr(&r.expr),
            syn::Expr::Try(t) => self.is_path_expr(&t.expr),
            syn::Expr::MethodCall(m) => {
                let method = m.method.to_string();
                if PATH_MAKING_METHODS.contains(&method.as_str()) {
                    return true;
                }
                matches!(
                    method.as_str(),
                    "as_ref" | "as_path" | "unwrap" | "expect" | "as_deref" | "borrow"
                ) && self.is_path_expr(&m.receiver)
            }
            syn::Expr::Call(c) => match &*c.func {
                syn::Expr::Path(p) => {
                    let segs = path_segments(&p.path);
                    let n = segs.len();
                    n >= 2
                        && (segs[n - 2] == "Path" || segs[n - 2] == "PathBuf")
                        && matches!(segs[n - 1].as_str(), "new" | "from")
                }
                _ => false,
            },
            syn::Expr::Path(p) => p
                .path
                .get_ident()
                .is_some_and(|i| self.is_path_local(&i.to_string())),
            syn::Expr::Field(f) => match &f.member {
                syn::Member::Named(name) => self.path_fields.contains(&name.to_string()),
                syn::Member::Unnamed(_) => false,
            },
            _ => false,
        }
    }

    fn note_pattern_locals(&mut self, pat: &syn::Pat, is_path: bool) {
        if !is_path {
            return;
        }
        if let syn::Pat::Ident(i) = pat
            && let Some(set) = self.path_locals.last_mut()
        {
            set.insert(i.ident.to_string());
        }
    }

    fn enter_fn(&mut self, name: String, sig: &syn::Signature) {
        self.scope.push(name);
        let mut locals = BTreeSet::new();
        for input in &sig.inputs {
            if let syn::FnArg::Typed(t) = input {
                let generic_path = match &*t.ty {
                    // `impl AsRef<Path>` and generics bound by it.
                    syn::Type::Path(p) => p.path.get_ident().is_some_and(|g| {
                        sig.generics
                            .type_params()
                            .any(|tp| tp.ident == *g && tp.bounds.iter().any(bound_is_path))
                            || sig.generics.where_clause.as_ref().is_some_and(|w| {
                                quote::ToTokens::to_token_stream(w)
                                    .to_string()
                                    .contains("Path")
                            })
                    }),
                    _ => false,
                };
                if (is_path_type(&t.ty) || generic_path)
                    && let syn::Pat::Ident(i) = &*t.pat
                {
                    locals.insert(i.ident.to_string());
                }
            }
        }
        self.path_locals.push(locals);
        self.locals.push(BTreeSet::new());
    }

    fn leave_fn(&mut self) {
        self.scope.pop();
        self.path_locals.pop();
        self.locals.pop();
    }

    /// The full paths a path expression may stand for.
    fn resolve(&self, path: &syn::Path) -> Vec<String> {
        let segments = path_segments(path);
        let local = segments.len() == 1 && self.locals.iter().any(|l| l.contains(&segments[0]));
        self.imports.resolve(&segments, local)
    }

    /// Visits the arguments of a macro call when they parse as expressions
    /// (`format!`, `assert!`, `tracing::warn!`, `vec!`, ...).
    fn visit_macro_args(&mut self, mac: &syn::Macro) {
        let parser = Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated;
        if let Ok(args) = syn::parse::Parser::parse2(parser, mac.tokens.clone()) {
            for arg in &args {
                self.visit_expr(arg);
            }
        } else if let Ok(block) = syn::parse::Parser::parse2(
            |input: syn::parse::ParseStream| {
                let mut stmts = Vec::new();
                while !input.is_empty() {
                    stmts.extend(syn::Block::parse_within(input)?);
                }
                Ok(stmts)
            },
            mac.tokens.clone(),
        ) {
            for stmt in &block {
                self.visit_stmt(stmt);
            }
        }
    }
}

fn bound_is_path(bound: &syn::TypeParamBound) -> bool {
    quote::ToTokens::to_token_stream(bound)
        .to_string()
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .any(|w| w == "Path" || w == "PathBuf")
}

fn type_name(ty: &syn::Type) -> String {
    match ty {
        syn::Type::Path(p) => p
            .path
            .segments
            .last()
            .map(|s| s.ident.to_string())
            .unwrap_or_default(),
        other => quote::ToTokens::to_token_stream(other).to_string(),
    }
}

impl<'ast> Visit<'ast> for Scanner<'_> {
    fn visit_file(&mut self, file: &'ast syn::File) {
        if is_test_only(&file.attrs) {
            return;
        }
        visit::visit_file(self, file);
    }

    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Fn(i) => &i.attrs,
            syn::Item::Mod(i) => &i.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Trait(i) => &i.attrs,
            syn::Item::Const(i) => &i.attrs,
            syn::Item::Static(i) => &i.attrs,
            syn::Item::Use(_) => return,
            _ => &[],
        };
        if is_test_only(attrs) {
            return;
        }
        visit::visit_item(self, item);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.scope.push(m.ident.to_string());
        visit::visit_item_mod(self, m);
        self.scope.pop();
    }

    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        self.scope.push(type_name(&i.self_ty));
        visit::visit_item_impl(self, i);
        self.scope.pop();
    }

    fn visit_item_trait(&mut self, t: &'ast syn::ItemTrait) {
        self.scope.push(t.ident.to_string());
        visit::visit_item_trait(self, t);
        self.scope.pop();
    }

    fn visit_item_static(&mut self, s: &'ast syn::ItemStatic) {
        self.scope.push(s.ident.to_string());
        visit::visit_item_static(self, s);
        self.scope.pop();
    }

    fn visit_item_const(&mut self, c: &'ast syn::ItemConst) {
        self.scope.push(c.ident.to_string());
        visit::visit_item_const(self, c);
        self.scope.pop();
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.enter_fn(f.sig.ident.to_string(), &f.sig);
        visit::visit_item_fn(self, f);
        self.leave_fn();
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if is_test_only(&f.attrs) {
            return;
        }
        self.enter_fn(f.sig.ident.to_string(), &f.sig);
        visit::visit_impl_item_fn(self, f);
        self.leave_fn();
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if is_test_only(&f.attrs) {
            return;
        }
        self.enter_fn(f.sig.ident.to_string(), &f.sig);
        visit::visit_trait_item_fn(self, f);
        self.leave_fn();
    }

    fn visit_local(&mut self, local: &'ast syn::Local) {
        visit::visit_local(self, local);
        let (pat, annotated) = match &local.pat {
            syn::Pat::Type(t) => (&*t.pat, is_path_type(&t.ty)),
            other => (other, false),
        };
        let init_is_path = local
            .init
            .as_ref()
            .is_some_and(|init| self.is_path_expr(&init.expr));
        self.note_pattern_locals(pat, annotated || init_is_path);
    }

    fn visit_expr_closure(&mut self, c: &'ast syn::ExprClosure) {
        for input in &c.inputs {
            if let syn::Pat::Type(t) = input {
                let is_path = is_path_type(&t.ty);
                self.note_pattern_locals(&t.pat, is_path);
            }
        }
        visit::visit_expr_closure(self, c);
    }

    fn visit_pat_ident(&mut self, p: &'ast syn::PatIdent) {
        if let Some(locals) = self.locals.last_mut() {
            locals.insert(p.ident.to_string());
        }
        visit::visit_pat_ident(self, p);
    }

    fn visit_expr_path(&mut self, p: &'ast syn::ExprPath) {
        if let Some(full) = self.resolve(&p.path).into_iter().find(|f| is_forbidden(f)) {
            self.record(full, p.span());
        }
        visit::visit_expr_path(self, p);
    }

    fn visit_expr_call(&mut self, c: &'ast syn::ExprCall) {
        let cwd = c.args.iter().any(|a| match a {
            syn::Expr::Path(p) => p
                .path
                .segments
                .last()
                .is_some_and(|s| s.ident == "CWD" || s.ident == "AT_FDCWD"),
            _ => false,
        });
        if cwd && let syn::Expr::Path(p) = &*c.func {
            let full = self.resolve(&p.path).swap_remove(0);
            self.record(format!("{full}(CWD)"), c.span());
        }
        visit::visit_expr_call(self, c);
    }

    fn visit_expr_method_call(&mut self, m: &'ast syn::ExprMethodCall) {
        let method = m.method.to_string();
        let no_args = m.args.is_empty();
        if (no_args && PATH_METHODS.contains(&method.as_str()))
            || (no_args
                && AMBIGUOUS_PATH_METHODS.contains(&method.as_str())
                && self.is_path_expr(&m.receiver))
        {
            self.record(format!("Path::{method}"), m.method.span());
        }
        if method == "add_watch" {
            self.record("inotify add_watch".to_owned(), m.method.span());
        }
        if m.args.iter().any(|a| match a {
            syn::Expr::Path(p) => p
                .path
                .segments
                .last()
                .is_some_and(|s| s.ident == "CWD" || s.ident == "AT_FDCWD"),
            _ => false,
        }) {
            self.record(format!(".{method}(CWD)"), m.method.span());
        }
        visit::visit_expr_method_call(self, m);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_macro_args(mac);
        visit::visit_macro(self, mac);
    }
}

/// Field names whose type is a path, in any of the files.
fn path_fields(files: &[syn::File]) -> BTreeSet<String> {
    struct Fields(BTreeSet<String>);
    impl<'ast> Visit<'ast> for Fields {
        fn visit_field(&mut self, f: &'ast syn::Field) {
            if let Some(name) = &f.ident
                && is_path_type(&f.ty)
            {
                self.0.insert(name.to_string());
            }
            visit::visit_field(self, f);
        }
    }
    let mut fields = Fields(BTreeSet::new());
    for f in files {
        fields.visit_file(f);
    }
    fields.0
}

/// Every forbidden call in the scanned directories.
fn scan(repo: &Path) -> Vec<Found> {
    let mut paths = Vec::new();
    for dir in SCANNED {
        rust_files(&repo.join(dir), &mut paths);
    }
    paths.retain(|p| !EXEMPT_DIRS.iter().any(|e| p.starts_with(repo.join(e))));
    paths.sort();
    assert!(paths.len() > 50, "found only {paths:?}");
    let parsed: Vec<(String, syn::File)> = paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let rel = p.strip_prefix(repo).unwrap().display().to_string();
            let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
            (rel, file)
        })
        .collect();
    let files: Vec<syn::File> = parsed.iter().map(|(_, f)| f.clone()).collect();
    let fields = path_fields(&files);
    let mut found = Vec::new();
    for (rel, file) in &parsed {
        let mut imports = Imports {
            module: module_path(rel),
            ..Imports::default()
        };
        collect_imports(file, &mut imports);
        let mut scanner = Scanner {
            file: rel,
            imports: &imports,
            path_fields: &fields,
            scope: Vec::new(),
            path_locals: Vec::new(),
            locals: Vec::new(),
            found: Vec::new(),
        };
        scanner.visit_file(file);
        found.extend(scanner.found);
    }
    found
}

/// The module a file holds, from its crate's directory name: `overlay/src/sys/mod.rs`
/// is `overlay::sys`.
fn module_path(rel: &str) -> Vec<String> {
    let parts: Vec<&str> = rel.trim_end_matches(".rs").split('/').collect();
    let mut module = vec![parts[0].to_owned()];
    for part in &parts[2..] {
        if !matches!(*part, "lib" | "main" | "mod") {
            module.push((*part).to_owned());
        }
    }
    module
}

/// Every `use` in a file, at any depth (test modules included: harmless).
fn collect_imports(file: &syn::File, imports: &mut Imports) {
    struct Uses<'a>(&'a mut Imports);
    impl<'ast> Visit<'ast> for Uses<'_> {
        fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
            self.0.add("", &u.tree);
        }
    }
    Uses(imports).visit_file(file);
}

/// One entry of the allow-list: the calls that take a path in one function, and
/// why that is safe (or, in category `unsafe`, why it is not, until it is fixed).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Allowed {
    file: String,
    function: String,
    calls: Vec<String>,
    category: String,
    reason: String,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowList {
    allow: Vec<Allowed>,
}

fn allow_list(repo: &Path) -> AllowList {
    let text = std::fs::read_to_string(repo.join(ALLOW_LIST)).unwrap();
    toml::from_str(&text).unwrap_or_else(|e| panic!("{ALLOW_LIST}: {e}"))
}

/// The entry a new call needs, ready to paste.
fn entry_for(file: &str, function: &str, calls: &BTreeSet<&str>) -> String {
    let calls: Vec<String> = calls.iter().map(|c| format!("{c:?}")).collect();
    format!(
        "[[allow]]\nfile = {file:?}\nfunction = {function:?}\ncalls = [{}]\ncategory = \"...\"  # one of {CATEGORIES:?}\nreason = \"...\"\n",
        calls.join(", ")
    )
}

/// What is wrong with `allowed` against `found`; empty when they agree.
fn check(found: &[Found], allowed: &AllowList) -> Vec<String> {
    let mut problems = Vec::new();
    let mut by_fn: BTreeMap<(&str, &str), BTreeMap<&str, &Found>> = BTreeMap::new();
    for f in found {
        by_fn
            .entry((f.file.as_str(), f.function.as_str()))
            .or_default()
            .entry(f.call.as_str())
            .or_insert(f);
    }
    let mut entries: BTreeMap<(&str, &str), &Allowed> = BTreeMap::new();
    for a in &allowed.allow {
        let key = (a.file.as_str(), a.function.as_str());
        if entries.insert(key, a).is_some() {
            problems.push(format!(
                "{ALLOW_LIST}: two entries for `{}` in {}: merge them",
                a.function, a.file
            ));
        }
        if !CATEGORIES.contains(&a.category.as_str()) {
            problems.push(format!(
                "{ALLOW_LIST}: the entry for `{}` in {} has category {:?}, not one of {CATEGORIES:?}",
                a.function, a.file, a.category
            ));
        }
        let marked = a.reason.starts_with("UNSAFE:");
        if a.reason.trim().len() < 20 || marked != (a.category == "unsafe") {
            problems.push(format!(
                "{ALLOW_LIST}: the entry for `{}` in {} needs a reason saying why the path is safe for a root daemon; a site that is not safe has category \"unsafe\" and a reason that starts with \"UNSAFE:\" (and only such a site)",
                a.function, a.file
            ));
        }
    }
    for ((file, function), calls) in &by_fn {
        let allowed_calls: BTreeSet<&str> = entries
            .get(&(*file, *function))
            .map(|a| a.calls.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let new: BTreeSet<&str> = calls
            .keys()
            .copied()
            .filter(|c| !allowed_calls.contains(c))
            .collect();
        if new.is_empty() {
            continue;
        }
        let mut text = String::new();
        let mut new_found: Vec<&Found> = new.iter().map(|c| calls[c]).collect();
        new_found.sort_by_key(|f| f.line);
        for f in new_found {
            let _ = writeln!(
                text,
                "{}:{} in `{}`: `{}` takes a path.",
                f.file, f.line, f.function, f.call
            );
        }
        let _ = write!(
            text,
            "  A root daemon must not open, chown, mount, unmount, watch or resolve by path anything a user can influence (docs/security.md, \"Paths and descriptors\").\n  \
             Go through a descriptor: treediff::safe_fs (open_dir_at, open_dir_beneath, open_dir_no_symlinks, lstat_at, fchown, chown_at_nofollow, proc_fd_path), \
             overlay's mount_on and unmount_checked, or rustix's *at calls beneath a held descriptor with O_NOFOLLOW.\n  \
             If the path is safe (see the categories in {ALLOW_LIST}), allow it there with the reason:\n"
        );
        let all: BTreeSet<&str> = allowed_calls.iter().copied().chain(new).collect();
        for line in entry_for(file, function, &all).lines() {
            let _ = writeln!(text, "    {line}");
        }
        problems.push(text);
    }
    for ((file, function), a) in &entries {
        let calls = by_fn.get(&(*file, *function));
        for call in &a.calls {
            if !calls.is_some_and(|c| c.contains_key(call.as_str())) {
                problems.push(format!(
                    "{ALLOW_LIST}: stale entry: `{function}` in {file} makes no `{call}` call any more (or was renamed or moved): remove the call from the entry, or the entry, or update its function name"
                ));
            }
        }
    }
    problems
}

#[test]
fn path_calls_are_allowed_with_a_reason() {
    let repo = repo();
    let found = scan(&repo);
    let problems = check(&found, &allow_list(&repo));
    assert!(
        problems.is_empty(),
        "{} problem(s) with path-taking calls in {}:\n\n{}",
        problems.len(),
        SCANNED.join(", "),
        problems.join("\n")
    );
}

/// The check finds what it is meant to find, in code it has never seen.
#[test]
fn the_scanner_finds_path_calls_and_their_functions() {
    let code = r#"
        use std::fs;
        use std::fs::File;
        use rustix::fs::{openat, CWD};
        use nix::mount::umount2 as detach_it;
        struct S { root: std::path::PathBuf }
        impl S {
            fn a(&self, p: &std::path::Path) {
                let _ = fs::read_dir(p);
                let _ = (|| File::open("/etc/passwd"))();
                tracing::info!("{}", self.root.join("x").is_dir());
                let _ = openat(CWD, p, 0, 0);
                let fd = File::from(owned);
                let _ = fd.metadata();
            }
        }
        fn b(p: &Path) {
            let q = p.join("y");
            if q.exists() { detach_it(&q, 0); }
            let unmount = || 1;
            unmount();
        }
        #[cfg(test)]
        mod tests { fn t() { std::fs::remove_file("x"); } }
    "#;
    let want = [
        ("S::a", "std::fs::read_dir"),
        ("S::a", "std::fs::File::open"),
        ("S::a", "Path::is_dir"),
        ("S::a", "rustix::fs::openat(CWD)"),
        ("b", "Path::exists"),
        ("b", "nix::mount::umount2"),
    ]
    .map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(found_in(code), want);
}

#[test]
fn a_file_of_test_code_throughout_is_exempt() {
    let code = r#"
        #![cfg(test)]
        fn helper(p: &Path) { std::fs::remove_file(p).unwrap(); }
    "#;
    assert_eq!(found_in(code), []);
}

/// The calls the scanner finds in `code`, a file of `overlay`: (function, call).
fn found_in(code: &str) -> Vec<(String, String)> {
    let file = syn::parse_file(code).unwrap();
    let mut imports = Imports {
        module: vec!["overlay".to_owned()],
        ..Imports::default()
    };
    collect_imports(&file, &mut imports);
    let fields = path_fields(std::slice::from_ref(&file));
    let mut scanner = Scanner {
        file: "x.rs",
        imports: &imports,
        path_fields: &fields,
        scope: Vec::new(),
        path_locals: Vec::new(),
        locals: Vec::new(),
        found: Vec::new(),
    };
    scanner.visit_file(&file);
    scanner
        .found
        .into_iter()
        .map(|f| (f.function, f.call))
        .collect()
}

/// Prints every call found, as `file<TAB>function<TAB>call<TAB>line` (run with
/// `-- --ignored --nocapture` to review them).
#[test]
#[ignore]
fn print_found() {
    for f in scan(&repo()) {
        println!("{}\t{}\t{}\t{}", f.file, f.function, f.call, f.line);
    }
}
