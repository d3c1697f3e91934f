//! Cache keys: the BLAKE3 hash of an element's canonical key encoding (the format
//! version, the element's commands, environment and sandbox settings, its source
//! digest and its dependency hash), and the dependency hash over the keys of its
//! direct dependencies.
//!
//! The exact encoding, what it leaves out and why, and the pinned examples are in
//! `docs/format.md` ("Cache keys"); the tests below pin the same keys.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Element;

/// The key format version, the first member of every key encoding. A change to the
/// encoding needs a new number.
pub const KEY_FORMAT: u32 = 1;

/// A cache key: the BLAKE3 hash of an element's canonical key encoding, 64
/// lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CacheKey(String);

impl CacheKey {
    /// The key's 64 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Reads a key from its text form; an error saying what is wrong otherwise.
    pub fn parse(text: &str) -> Result<CacheKey, String> {
        if is_hex64(text) {
            Ok(CacheKey(text.to_owned()))
        } else {
            Err(format!(
                "invalid cache key {text:?}: expected 64 lowercase hex digits"
            ))
        }
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for CacheKey {
    type Err = String;

    fn from_str(text: &str) -> Result<CacheKey, String> {
        CacheKey::parse(text)
    }
}

impl TryFrom<String> for CacheKey {
    type Error = String;

    fn try_from(text: String) -> Result<CacheKey, String> {
        if is_hex64(&text) {
            Ok(CacheKey(text))
        } else {
            CacheKey::parse(&text)
        }
    }
}

impl From<CacheKey> for String {
    fn from(key: CacheKey) -> String {
        key.0
    }
}

/// Whether `text` is 64 lowercase hex digits.
fn is_hex64(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The dependency hash: the BLAKE3 hash (64 lowercase hex) of the JSON array of the
/// direct dependencies' cache keys, sorted and de-duplicated (`[]` for none).
pub fn dependency_hash(keys: &[CacheKey]) -> String {
    let mut keys: Vec<&str> = keys.iter().map(CacheKey::as_str).collect();
    keys.sort_unstable();
    keys.dedup();
    let json = serde_json::to_string(&keys).expect("an array of strings always encodes");
    blake3::hash(json.as_bytes()).to_hex().to_string()
}

/// What is hashed, member by member in this order (serde keeps field order).
#[derive(Serialize)]
struct Encoding<'a> {
    format: u32,
    kind: &'static str,
    configure: &'a [String],
    build: &'a [String],
    install: &'a [String],
    env: &'a BTreeMap<String, String>,
    network: bool,
    caches: Vec<&'a str>,
    sources: String,
    dependencies: &'a str,
}

/// The canonical key encoding of `element` built from `source_digest` with
/// dependencies hashing to `dependency_hash`: what [`cache_key`] hashes, for `ws
/// show --json` and the docs. The element's name, `sources` path, `depends` names and
/// `ignore` patterns are deliberately not in it.
pub fn key_encoding(
    element: &Element,
    source_digest: treediff::Digest,
    dependency_hash: &str,
) -> String {
    let mut caches: Vec<&str> = element.caches.iter().map(String::as_str).collect();
    caches.sort_unstable();
    caches.dedup();
    let encoding = Encoding {
        format: KEY_FORMAT,
        kind: element.kind.name(),
        configure: &element.configure,
        build: &element.build,
        install: &element.install,
        env: &element.env,
        network: element.network,
        caches,
        sources: source_digest.to_string(),
        dependencies: dependency_hash,
    };
    serde_json::to_string(&encoding).expect("strings, bools and maps of strings always encode")
}

/// The cache key of `element` built from `source_digest` with dependencies hashing
/// to `dependency_hash`: the BLAKE3 hash of [`key_encoding`].
pub fn cache_key(
    element: &Element,
    source_digest: treediff::Digest,
    dependency_hash: &str,
) -> CacheKey {
    let encoding = key_encoding(element, source_digest, dependency_hash);
    CacheKey(blake3::hash(encoding.as_bytes()).to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::ElementKind;

    /// The `hello.txt` tree pinned in docs/format.md.
    fn hello_tree() -> treediff::Digest {
        "6f98240dd151f51fc7375f2d52eede5ab55be9d7c57cf5886777dbd4ffec87de/83"
            .parse()
            .unwrap()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn import() -> Element {
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
    }

    fn manual() -> Element {
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
    }

    fn app() -> Element {
        Element {
            name: "app".into(),
            kind: ElementKind::Manual,
            sources: "app".into(),
            depends: strings(&["base", "hello"]),
            configure: vec![],
            build: strings(&["cc -o app app.c"]),
            install: strings(&["install -D app $WS_INSTALLDIR/usr/bin/app"]),
            env: BTreeMap::new(),
            network: false,
            caches: vec![],
            ignore: vec![],
            tmpfs_size: None,
            tmpfs_inodes: None,
        }
    }

    const NO_DEPS: &str = "d53d18c23212ea7b6300594bb89bce60218f6eff2b9d628b8cc42d3e79bbd5ab";
    const IMPORT_KEY: &str = "d5faf9f730541461609742148087aa953b0492231d977dd9941325ba242143b8";
    const MANUAL_KEY: &str = "33c80be25f105fecf2e7b6acaeb0fdb2d65b0abb3a45d7e8d5b21ed6841d9f8a";
    const TWO_DEPS_HASH: &str = "003161ea9495f65e5e78a83aeb950ba50a9bdb28748fd3bd2b4bbc22aae1af09";
    const APP_KEY: &str = "42cd866072a4c5a8cb1d4d414c1b04e33fd853d4c8e02b209d7f8dff3564cfdd";

    fn key(element: &Element) -> CacheKey {
        cache_key(element, hello_tree(), NO_DEPS)
    }

    #[test]
    fn pinned_keys() {
        assert_eq!(dependency_hash(&[]), NO_DEPS);
        assert_eq!(NO_DEPS, blake3::hash(b"[]").to_hex().as_str());

        assert_eq!(
            key_encoding(&import(), hello_tree(), NO_DEPS),
            format!(
                r#"{{"format":1,"kind":"import","configure":[],"build":[],"install":[],"env":{{}},"network":false,"caches":[],"sources":"{}","dependencies":"{NO_DEPS}"}}"#,
                hello_tree()
            )
        );
        let base = key(&import());
        assert_eq!(base.as_str(), IMPORT_KEY);

        assert_eq!(
            key_encoding(&manual(), hello_tree(), NO_DEPS),
            format!(
                r#"{{"format":1,"kind":"manual","configure":["./configure --prefix=/usr"],"build":["make -j2"],"install":["make install DESTDIR=$WS_INSTALLDIR"],"env":{{"CFLAGS":"-O2"}},"network":false,"caches":["ccache"],"sources":"{}","dependencies":"{NO_DEPS}"}}"#,
                hello_tree()
            )
        );
        let hello = key(&manual());
        assert_eq!(hello.as_str(), MANUAL_KEY);

        let deps = dependency_hash(&[base, hello]);
        assert_eq!(deps, TWO_DEPS_HASH);
        assert_eq!(
            deps,
            // Sorted: the manual element's key comes first.
            blake3::hash(format!(r#"["{MANUAL_KEY}","{IMPORT_KEY}"]"#).as_bytes())
                .to_hex()
                .as_str()
        );
        let app_key = cache_key(&app(), hello_tree(), &deps);
        assert_eq!(app_key.as_str(), APP_KEY);
        // The key is the hash of the encoding, nothing else.
        assert_eq!(
            app_key.as_str(),
            blake3::hash(key_encoding(&app(), hello_tree(), &deps).as_bytes())
                .to_hex()
                .as_str()
        );
    }

    #[test]
    fn same_inputs_same_key() {
        assert_eq!(key(&manual()), key(&manual().clone()));
        assert_eq!(key(&import()), key(&import()));
    }

    #[test]
    fn every_input_changes_the_key() {
        let before = key(&manual());
        type Change = Box<dyn Fn(&mut Element)>;
        let changes: Vec<(&str, Change)> = vec![
            ("kind", Box::new(|e| e.kind = ElementKind::Import)),
            ("configure", Box::new(|e| e.configure.push("true".into()))),
            ("configure emptied", Box::new(|e| e.configure.clear())),
            ("build", Box::new(|e| e.build = strings(&["make -j3"]))),
            ("install", Box::new(|e| e.install.push("true".into()))),
            // The same command moved to another phase.
            (
                "phase",
                Box::new(|e| {
                    let c = e.configure.remove(0);
                    e.build.insert(0, c);
                }),
            ),
            (
                "command order",
                Box::new(|e| e.build = strings(&["a", "b"])),
            ),
            (
                "env value",
                Box::new(|e| {
                    e.env.insert("CFLAGS".into(), "-O3".into());
                }),
            ),
            (
                "env name",
                Box::new(|e| {
                    e.env = [("CXXFLAGS".to_owned(), "-O2".to_owned())].into();
                }),
            ),
            (
                "env added",
                Box::new(|e| {
                    e.env.insert("LANG".into(), "C".into());
                }),
            ),
            ("network", Box::new(|e| e.network = true)),
            ("caches", Box::new(|e| e.caches.push("cargo".into()))),
            ("caches emptied", Box::new(|e| e.caches.clear())),
        ];
        let mut keys = vec![before.clone()];
        for (what, change) in &changes {
            let mut element = manual();
            change(&mut element);
            let after = key(&element);
            assert_ne!(after, before, "{what} did not change the key");
            keys.push(after);
        }
        // Reordering two commands changes the key too.
        let mut ab = manual();
        ab.build = strings(&["a", "b"]);
        let mut ba = manual();
        ba.build = strings(&["b", "a"]);
        assert_ne!(key(&ab), key(&ba));

        let other_tree = treediff::Digest::empty();
        assert_ne!(cache_key(&manual(), other_tree, NO_DEPS), before);
        assert_ne!(cache_key(&manual(), hello_tree(), TWO_DEPS_HASH), before);
        keys.sort();
        keys.dedup();
        assert_eq!(
            keys.len(),
            changes.len() + 1,
            "two changes gave the same key"
        );
    }

    #[test]
    fn name_path_depends_ignore_and_tmpfs_limits_are_not_in_the_key() {
        let before = key(&manual());
        let mut e = manual();
        e.name = "renamed".into();
        e.sources = "elsewhere/hello".into();
        e.depends = strings(&["x", "y"]);
        e.ignore = strings(&["*.o", "build/"]);
        e.tmpfs_size = Some(1 << 20);
        e.tmpfs_inodes = Some(1000);
        assert_eq!(key(&e), before);

        // Caches are a set: their order does not matter.
        let mut a = manual();
        a.caches = strings(&["ccache", "cargo"]);
        let mut b = manual();
        b.caches = strings(&["cargo", "ccache"]);
        assert_eq!(key(&a), key(&b));
    }

    #[test]
    fn dependency_hash_ignores_order_and_duplicates() {
        let a = CacheKey::parse(IMPORT_KEY).unwrap();
        let b = CacheKey::parse(MANUAL_KEY).unwrap();
        let h = dependency_hash(&[a.clone(), b.clone()]);
        assert_eq!(h, TWO_DEPS_HASH);
        assert_eq!(dependency_hash(&[b.clone(), a.clone()]), h);
        assert_eq!(
            dependency_hash(&[b.clone(), a.clone(), b.clone(), a.clone()]),
            h
        );
        assert_ne!(dependency_hash(std::slice::from_ref(&a)), h);
        assert_ne!(dependency_hash(&[a]), dependency_hash(&[b]));
    }

    #[test]
    fn cache_key_text_form() {
        let k = CacheKey::parse(APP_KEY).unwrap();
        assert_eq!(k.to_string(), APP_KEY);
        assert_eq!(APP_KEY.parse::<CacheKey>().unwrap(), k);
        assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{APP_KEY}\""));
        assert_eq!(
            serde_json::from_str::<CacheKey>(&format!("\"{APP_KEY}\"")).unwrap(),
            k
        );
        for bad in [
            "",
            &APP_KEY[1..],
            &APP_KEY.to_uppercase(),
            &format!("{APP_KEY}0"),
            &format!("{}g", &APP_KEY[1..]),
        ] {
            assert!(CacheKey::parse(bad).is_err(), "{bad:?} parsed");
            assert!(serde_json::from_str::<CacheKey>(&format!("{bad:?}")).is_err());
        }
        assert_eq!(
            CacheKey::parse("abc").unwrap_err(),
            "invalid cache key \"abc\": expected 64 lowercase hex digits"
        );
    }

    #[test]
    fn strings_are_escaped_as_documented() {
        let mut e = manual();
        e.build = strings(&["printf 'a\"b\\\\c\\n' \u{1}\té"]);
        let enc = key_encoding(&e, hello_tree(), NO_DEPS);
        assert!(
            enc.contains(r#""build":["printf 'a\"b\\\\c\\n' \u0001\té"]"#),
            "{enc}"
        );
    }
}
