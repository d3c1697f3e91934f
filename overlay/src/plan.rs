//! Mount plans: what to mount for a snapshot, as data. The snapshotter only
//! describes mounts; [`crate::mount`] performs them. So the snapshot logic is
//! testable without privileges, and a plan can be shown to the user as it is.

use std::path::{Path, PathBuf};

/// How to present a snapshot at a mount point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountPlan {
    /// Kernel overlayfs.
    Overlay(OverlayPlan),
    /// fuse-overlayfs, the same layers served from user space.
    Fuse(OverlayPlan),
    /// A bind mount of one directory: a snapshot with no parent, or a view of a
    /// single layer (overlayfs needs two layers at least).
    Bind {
        /// The directory.
        source: PathBuf,
        /// Read-only (a view) or writable.
        read_only: bool,
    },
    /// Nothing to mount: the snapshot is this real directory (the mirror backend).
    Direct {
        /// Where the files are.
        path: PathBuf,
        /// Read-only (a view) or writable. A view's files are not protected by the
        /// kernel: they are a private copy, so writing them harms nothing else.
        read_only: bool,
    },
}

/// The layers of an overlay and the options it is mounted with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayPlan {
    /// Read-only layers, top first.
    pub lowers: Vec<PathBuf>,
    /// The writable layer and overlay's work directory (same filesystem); `None`
    /// for a read-only view.
    pub upper: Option<Upper>,
    /// Overlay xattrs in the `user.` namespace, for a mount in a user namespace.
    pub userxattr: bool,
}

/// The writable layer of an overlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upper {
    /// Where changes are written.
    pub dir: PathBuf,
    /// Overlay's scratch directory, on the same filesystem.
    pub work: PathBuf,
}

/// Options passed explicitly on every overlay mount, never left to module defaults
/// (this kernel's module defaults to `redirect_always_follow=Y`):
/// - `redirect_dir=nofollow`: no redirects are created or followed, so a crafted
///   `overlay.redirect` xattr cannot reach outside the lowers; renaming a lower
///   directory fails with EXDEV, which tools handle by copying;
/// - `metacopy=off`: a copy-up copies data, so the upper alone says what changed;
/// - `index=off`: no inode index; hard links are broken on copy-up (trees have no
///   hard links anyway).
pub const OVERLAY_OPTIONS: [(&str, &str); 3] = [
    ("redirect_dir", "nofollow"),
    ("metacopy", "off"),
    ("index", "off"),
];

impl MountPlan {
    /// Whether the view is read-only.
    pub fn read_only(&self) -> bool {
        match self {
            MountPlan::Overlay(o) | MountPlan::Fuse(o) => o.upper.is_none(),
            MountPlan::Bind { read_only, .. } | MountPlan::Direct { read_only, .. } => *read_only,
        }
    }

    /// Where the view's files appear once mounted at `target`: `target`, except for
    /// a [`MountPlan::Direct`] plan, whose files are already in place.
    pub fn view_path<'a>(&'a self, target: &'a Path) -> &'a Path {
        match self {
            MountPlan::Direct { path, .. } => path,
            _ => target,
        }
    }

    /// The plan as a `mount` command line, for messages and debugging.
    pub fn describe(&self, target: &Path) -> String {
        match self {
            MountPlan::Overlay(o) => format!(
                "mount -t overlay overlay -o {} {}",
                o.option_string(),
                target.display()
            ),
            MountPlan::Fuse(o) => format!(
                "fuse-overlayfs -o {} {}",
                o.option_string(),
                target.display()
            ),
            MountPlan::Bind { source, read_only } => format!(
                "mount --bind{} {} {}",
                if *read_only { " -o ro" } else { "" },
                source.display(),
                target.display()
            ),
            MountPlan::Direct { path, .. } => {
                format!("(no mount: the files are in {})", path.display())
            }
        }
    }
}

impl OverlayPlan {
    /// The legacy option string (`lowerdir=a:b,upperdir=...`), with `\`, `:` and
    /// `,` in paths escaped. fuse-overlayfs takes it; the kernel mount uses
    /// `fsconfig` instead, one lower at a time, which needs no escaping.
    pub fn option_string(&self) -> String {
        let lowers: Vec<String> = self.lowers.iter().map(|p| escape(p)).collect();
        let mut options = vec![format!("lowerdir={}", lowers.join(":"))];
        if let Some(upper) = &self.upper {
            options.push(format!("upperdir={}", escape(&upper.dir)));
            options.push(format!("workdir={}", escape(&upper.work)));
        }
        options.extend(OVERLAY_OPTIONS.iter().map(|(k, v)| format!("{k}={v}")));
        if self.userxattr {
            options.push("userxattr".to_owned());
        }
        options.push("nosuid,nodev".to_owned());
        options.join(",")
    }
}

/// Escapes a path for an overlay option string.
pub(crate) fn escape(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        if matches!(c, '\\' | ':' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_string_is_explicit_and_escaped() {
        let plan = OverlayPlan {
            lowers: vec![PathBuf::from("/a:b"), PathBuf::from("/c,d")],
            upper: Some(Upper {
                dir: PathBuf::from("/u\\x"),
                work: PathBuf::from("/w"),
            }),
            userxattr: false,
        };
        assert_eq!(
            plan.option_string(),
            "lowerdir=/a\\:b:/c\\,d,upperdir=/u\\\\x,workdir=/w,redirect_dir=nofollow,metacopy=off,index=off,nosuid,nodev"
        );
    }
}
