//! Which entry names a tree may hold.
//!
//! A name is one path component: it becomes a file name at checkout, so anything that
//! could escape the checkout root or collide is refused wherever a tree enters.

/// The prefix of the daemon's temporary files in a view or a user's directory
/// (a reversal's or a write-back's file before it is renamed into place). Capture
/// and the layer reader never record such an entry, so a file a crash left behind
/// never reaches a tree; whoever finishes the operation removes it.
pub const DAEMON_TEMP_PREFIX: &str = ".wsd-";

/// Whether `name` is one of the daemon's temporary files ([`DAEMON_TEMP_PREFIX`]).
pub fn is_daemon_temp(name: &str) -> bool {
    name.starts_with(DAEMON_TEMP_PREFIX)
}

/// The longest name Linux accepts (NAME_MAX), in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Why a name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The empty string.
    #[error("the name is empty")]
    Empty,
    /// `.` or `..`, which would name the directory itself or its parent.
    #[error("the name is {0:?}, which would point at a directory other than its own entry")]
    Dot(&'static str),
    /// A `/`, which would make it a path.
    #[error("the name contains '/'")]
    Slash,
    /// A NUL byte, which no file name can hold.
    #[error("the name contains a NUL byte")]
    Nul,
    /// Longer than [`MAX_NAME_BYTES`].
    #[error("the name is {0} bytes long, more than the {MAX_NAME_BYTES} a file name may have")]
    TooLong(usize),
}

/// Checks that `name` is a single, ordinary path component.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    match name {
        "" => Err(NameError::Empty),
        "." => Err(NameError::Dot(".")),
        ".." => Err(NameError::Dot("..")),
        _ if name.contains('/') => Err(NameError::Slash),
        _ if name.contains('\0') => Err(NameError::Nul),
        _ if name.len() > MAX_NAME_BYTES => Err(NameError::TooLong(name.len())),
        _ => Ok(()),
    }
}

/// `parent/name`, or `name` at the root (whose path is the empty string).
pub fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}

/// A tree path for messages: the root is shown as `.`.
pub fn display(path: &str) -> &str {
    if path.is_empty() { "." } else { path }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_names_are_refused() {
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(validate_name("."), Err(NameError::Dot(".")));
        assert_eq!(validate_name(".."), Err(NameError::Dot("..")));
        assert_eq!(validate_name("a/b"), Err(NameError::Slash));
        assert_eq!(validate_name("/"), Err(NameError::Slash));
        assert_eq!(validate_name("a\0"), Err(NameError::Nul));
        assert_eq!(
            validate_name(&"x".repeat(256)),
            Err(NameError::TooLong(256))
        );
        for ok in [
            "a",
            "...",
            ".git",
            "a b",
            "ünïcode",
            "-rf",
            &"x".repeat(255),
        ] {
            assert_eq!(validate_name(ok), Ok(()), "{ok:?}");
        }
    }

    proptest! {
        /// Any accepted name is one component that stays inside its directory.
        #[test]
        fn accepted_names_are_single_components(name in "\\PC{0,300}") {
            if validate_name(&name).is_ok() {
                let path = std::path::Path::new(&name);
                let components: Vec<_> = path.components().collect();
                prop_assert_eq!(components.len(), 1);
                prop_assert!(matches!(components[0], std::path::Component::Normal(_)));
            }
        }
    }
}
