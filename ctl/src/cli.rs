//! The command line, declared with clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// ws: transactional build workspaces over read-only sources
#[derive(Debug, Parser)]
#[command(name = "ws", version, about, propagate_version = true)]
pub struct Cli {
    /// The state directory (store and databases) [default: $XDG_STATE_HOME/ws for a
    /// user, /var/lib/ws for root]
    #[arg(long, global = true, env = "WS_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work on the content-addressed store directly (no daemon needed)
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Import a directory as a tree and print its digest
    Import(ImportArgs),
    /// Write a tree out as a directory
    Checkout(CheckoutArgs),
    /// Show what changed between two trees
    Diff(DiffArgs),
    /// Verify every object and every imported tree
    Fsck(FsckArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The directory to import
    pub dir: PathBuf,
    /// Also ignore paths matching PATTERN (gitignore syntax, relative to DIR); adds to
    /// the .wsignore files
    #[arg(long, value_name = "PATTERN")]
    pub ignore: Vec<String>,
    /// Record mtimes and permission bits (a buildtree) instead of only the executable bit
    #[arg(long)]
    pub buildtree: bool,
    /// Print the digest and statistics as JSON
    #[arg(long)]
    pub json: bool,
    /// Threads walking and hashing (many reads in flight help on cold caches)
    #[arg(long, default_value_t = treediff::capture::DEFAULT_THREADS, value_name = "N")]
    pub threads: usize,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mode {
    /// Hard links to read-only store objects (for immutable trees; fastest)
    Hardlink,
    /// Reflinks (copy-on-write clones) where the filesystem can, else copies
    Reflink,
    /// Plain copies, verified against their digests
    Copy,
}

#[derive(Debug, Args)]
pub struct CheckoutArgs {
    /// The tree's digest, as <hex>/<size>
    pub digest: String,
    /// Where to write it: a new path, or an empty directory
    pub dir: PathBuf,
    /// How files are materialized
    #[arg(long, value_enum, default_value = "copy")]
    pub mode: Mode,
    /// Print statistics as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The old tree's digest
    pub old: String,
    /// The new tree's digest
    pub new: String,
    /// Show changed paths with a count of changed lines per file
    #[arg(long, group = "format")]
    pub stat: bool,
    /// Show only the changed paths
    #[arg(long, group = "format")]
    pub name_only: bool,
    /// Show each changed path with a letter: A added, D deleted, M modified, X mode changed, T type changed
    #[arg(long, group = "format")]
    pub name_status: bool,
    /// Print a JSON list of {"path", "change"}
    #[arg(long, group = "format")]
    pub json: bool,
    /// Lines of context around each change in the patch
    #[arg(short = 'U', long, default_value_t = 3, value_name = "LINES")]
    pub unified: usize,
}

#[derive(Debug, Args)]
pub struct FsckArgs {
    /// Also check these trees (every imported tree is checked anyway)
    pub digests: Vec<String>,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}
