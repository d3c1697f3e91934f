//! `ws build --verify`: after the build, the target is built once more, cleanly
//! (from its sources, configured afresh, with its caches empty), on a scratch
//! layer that is never committed, and that clean artifact is compared with the
//! one the build produced or reused, file by file. An artifact that came from an
//! incremental workspace build is only as good as the build's rules: this is
//! the check that they did not leave something stale.

use serde::Serialize;
use treediff::{CaptureMode, CaptureOptions, Digest};

use super::plan::Planned;
use super::run::{Layer, Start, describe_failure, steps};
use super::{BuildObserver, ElementReport};
use crate::error::Error;
use crate::manager::store_ops::TreeChange;
use crate::manager::{Caller, Manager};
use crate::sandbox::{self, Cancel};

/// Lines of context in the verification's patches.
const CONTEXT: usize = 3;

/// What the clean rebuild found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyResult {
    /// Its artifact is the same tree.
    Identical,
    /// Its artifact differs (the differences say where).
    Differs,
    /// It failed, or was cancelled (the message says why).
    Failed,
}

impl VerifyResult {
    /// The stable name (`identical`, `differs`, `failed`).
    pub fn name(self) -> &'static str {
        match self {
            VerifyResult::Identical => "identical",
            VerifyResult::Differs => "differs",
            VerifyResult::Failed => "failed",
        }
    }
}

/// The outcome of a verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    /// What it found.
    pub result: VerifyResult,
    /// The clean rebuild's artifact (in the store, referenced by nothing).
    pub clean_artifact: Option<Digest>,
    /// Each path where the artifacts differ, with its patch.
    pub differences: Vec<TreeChange>,
    /// Why it failed.
    pub message: Option<String>,
}

impl Manager {
    /// Rebuilds `p` cleanly and compares the result with `report`'s artifact;
    /// the clean build's output and the differences' patches go to `observer`
    /// as the element's output.
    pub(super) fn verify(
        &self,
        caller: Caller,
        p: &Planned,
        report: &ElementReport,
        sysroot: Option<std::path::PathBuf>,
        observer: &dyn BuildObserver,
        cancel: &Cancel,
    ) -> Result<Verification, Error> {
        let name = p.element.name.as_str();
        let artifact = report
            .artifact
            .expect("only a built or cached element is verified");
        observer.output(
            name,
            format!("ws: {name}: verifying: a clean rebuild in a scratch layer\n").as_bytes(),
        );
        let start = self.build_start(caller, p, false)?;
        let layer = self.prepare_layer(&start, caller, name, "verify", sysroot.as_deref())?;
        let built = self.clean_rebuild(caller, p, &start, &layer, sysroot, observer, cancel);
        self.finish_layer(&start, &layer, true);
        let clean = match built? {
            Ok(tree) => tree,
            Err(why) => {
                return Ok(Verification {
                    result: VerifyResult::Failed,
                    clean_artifact: None,
                    differences: Vec::new(),
                    message: Some(format!("the clean rebuild failed: {why}")),
                });
            }
        };
        let differences = self.diff_trees(artifact, clean, true, CONTEXT)?;
        for change in &differences {
            if let Some(patch) = &change.patch {
                observer.output(name, patch.as_bytes());
            }
        }
        Ok(Verification {
            result: if differences.is_empty() {
                VerifyResult::Identical
            } else {
                VerifyResult::Differs
            },
            clean_artifact: Some(clean),
            differences,
            message: None,
        })
    }

    /// Runs every command of `p` on the mounted `layer` (unmounted after) and
    /// captures the install root: its tree, or why the commands failed.
    #[allow(clippy::too_many_arguments)]
    fn clean_rebuild(
        &self,
        caller: Caller,
        p: &Planned,
        start: &Start,
        layer: &Layer,
        sysroot: Option<std::path::PathBuf>,
        observer: &dyn BuildObserver,
        cancel: &Cancel,
    ) -> Result<Result<Digest, String>, Error> {
        let name = p.element.name.as_str();
        overlay::mount(&layer.plan, &layer.dirs.build).map_err(Error::snapshot(name))?;
        let view = layer.plan.view_path(&layer.dirs.build).to_owned();
        let ran = self
            .lay_delta(start, p, &layer.running.snapshot, &view)
            .and_then(|_| {
                let steps = steps(&p.element, false);
                let spec = self.sandbox_spec(
                    caller,
                    &p.element,
                    sysroot,
                    &layer.dirs,
                    &view,
                    steps.clone(),
                    false,
                )?;
                let outcome = sandbox::run(
                    &self.sandbox_exe,
                    &spec,
                    sandbox::Stdio::Captured,
                    &mut |chunk| observer.output(name, chunk),
                    cancel,
                )
                .map_err(|source| Error::Sandbox {
                    element: name.to_owned(),
                    source,
                })?;
                Ok(describe_failure(&outcome, &steps))
            });
        if !matches!(layer.plan, overlay::MountPlan::Direct { .. }) {
            overlay::unmount(&layer.dirs.build).map_err(Error::snapshot(name))?;
        }
        if let Some(why) = ran? {
            return Ok(Err(why));
        }
        let subject = || format!("the clean rebuild of element {name}");
        let txn = self.store.begin().map_err(Error::store_on(subject()))?;
        let (tree, _) = treediff::capture(
            &txn,
            &layer.dirs.install,
            &CaptureOptions {
                mode: CaptureMode::Source,
                ..CaptureOptions::default()
            },
        )
        .map_err(Error::store_on(subject()))?;
        txn.commit().map_err(Error::store_on(subject()))?;
        Ok(Ok(tree))
    }
}
