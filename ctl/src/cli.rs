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

    /// The project directory (holding ws.toml) [default: the nearest directory
    /// upward from here that has one]
    #[arg(short = 'C', global = true, value_name = "DIR")]
    pub project: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open a workspace on a project element's sources (continuing its failed
    /// build, if one is cached), or over a directory with --source
    Open(OpenArgs),
    /// Build an element and what it depends on (in their workspaces where open)
    Build(BuildArgs),
    /// Show an element's cache key and state, and those of its dependencies
    Show(ShowArgs),
    /// Upload an element's (or a cache key's) result to the remote caches that
    /// take pushes
    Push(TransferArgs),
    /// Fetch an element's (or a cache key's) result from a remote cache
    Pull(TransferArgs),
    /// Run a shell, or a command, in an element's build environment (its
    /// changes are dropped when it ends)
    Shell(ShellArgs),
    /// Work with an element's cached artifact
    #[command(subcommand)]
    Artifact(ArtifactCommand),
    /// List or drop the elements' saved caches (the `caches` of ws.toml)
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Show workspaces and what changed in them since their last commit
    Status(StatusArgs),
    /// Show what changed in a workspace since its last commit
    Diff(WsDiffArgs),
    /// Record a workspace's edits as its source tree
    Commit(CommitArgs),
    /// Drop a workspace's edits since its last commit
    Discard(NameArgs),
    /// Unmount and forget a workspace
    Close(CloseArgs),
    /// List your workspaces
    List(JsonArgs),
    /// Show a workspace's history of operations
    Log(NameArgs),
    /// Undo a workspace's last commit or discard (repeat to go further back)
    Undo(NameArgs),
    /// Check the store and the daemon's database (root)
    Fsck(JsonArgs),
    /// Remove what no workspace, ref or running operation reaches (root)
    Gc(GcArgs),
    /// Run the daemon in the foreground (it is started automatically otherwise)
    Daemon,
    /// Work on the content-addressed store (through the daemon, like every command)
    #[command(subcommand)]
    Store(StoreCommand),
}

/// The snapshot backends.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Backend {
    /// Kernel overlayfs (root or CAP_SYS_ADMIN)
    Overlayfs,
    /// fuse-overlayfs (needs /dev/fuse)
    FuseOverlayfs,
    /// A real directory cloned by reflink, else copied (works everywhere)
    Mirror,
}

#[derive(Debug, Args)]
pub struct OpenArgs {
    /// The element to open a workspace for (the workspace gets its name), or with
    /// --source the workspace's name (letters, digits, '.', '_', '-')
    pub name: String,
    /// Open over this directory instead of a project element (imported into the
    /// store; .wsignore applies)
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
    /// Start from the element's sources even if a failed build of them is cached
    #[arg(long, conflicts_with = "source")]
    pub fresh: bool,
    /// Where its files appear: an empty directory you own [default: under the state
    /// directory]
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,
    /// How the view is made [default: the best this machine supports]
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Print the workspace as JSON
    #[arg(long)]
    pub json: bool,
}

/// How a command uses remote caches (docs/remote.md).
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// Use no remote cache: neither the project's nor the user's
    #[arg(long)]
    pub no_remote: bool,
}

#[derive(Debug, Args)]
pub struct TransferArgs {
    /// The element (its current cache key), or a cache key (64 hex digits)
    pub target: String,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The element to build
    pub element: String,
    /// Then rebuild it cleanly in a scratch layer (sources only, caches empty)
    /// and compare the artifacts file by file; differences are printed as a
    /// diff and make the command fail
    #[arg(long)]
    pub verify: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Print a JSON list with a report per element (the commands' output goes to
    /// stderr)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// The element (its dependencies must be built)
    pub element: String,
    /// On its buildtree: the one cached under its current key (a failed build's
    /// too), else its workspace's last, with the edits since [default: on its
    /// sources]
    #[arg(long)]
    pub buildtree: bool,
    /// The command and its arguments [default: an interactive shell]
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The element
    pub element: String,
    /// Print a JSON list, dependencies first
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List your saved caches
    List(JsonArgs),
    /// Drop an element's saved cache NAME (all of its caches without NAME): its
    /// next build starts it empty
    Drop(CacheDropArgs),
}

#[derive(Debug, Args)]
pub struct CacheDropArgs {
    /// The element
    pub element: String,
    /// The cache [default: all of the element's]
    pub name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ArtifactCommand {
    /// Write the element's cached artifact (its install root) into DIR
    Checkout(ArtifactCheckoutArgs),
}

#[derive(Debug, Args)]
pub struct ArtifactCheckoutArgs {
    /// The element
    pub element: String,
    /// Where to write it: a new path, or an empty directory
    pub dir: PathBuf,
    /// Print the artifact's digest and statistics as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The workspace [default: all of yours]
    pub name: Option<String>,
    /// Print JSON (a list when no name is given)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WsDiffArgs {
    /// The workspace
    pub name: String,
    /// Show each changed path with its change
    #[arg(long, group = "format")]
    pub stat: bool,
    /// Show only the changed paths
    #[arg(long, group = "format")]
    pub name_only: bool,
    /// Show a unified patch (the default)
    #[arg(long, group = "format")]
    pub patch: bool,
    /// Print a JSON list of {"path", "change"}
    #[arg(long, group = "format")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// The workspace
    pub name: String,
    /// What the commit is about
    #[arg(short, long, value_name = "MSG")]
    pub message: Option<String>,
    /// Then write the committed sources into DIR [default: the directory the
    /// workspace was opened over; for an element, its sources in the project].
    /// Refused, writing nothing, where DIR changed since the workspace was opened
    #[arg(long, value_name = "DIR", num_args = 0..=1, require_equals = true)]
    pub write_back: Option<Option<PathBuf>>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CloseArgs {
    /// The workspace
    pub name: String,
    /// Close even with uncommitted changes (they are dropped)
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// The workspace
    pub name: String,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
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

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Also evict cached artifacts and buildtrees nothing references, least
    /// recently used first, until the store takes at most SIZE (bytes, or with a
    /// K, M, G or T suffix: powers of 1024)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub quota: Option<u64>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

/// "10G" → 10 GiB; a plain number is bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, shift) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("unknown size suffix {c:?}; use K, M, G or T")),
            };
            (&text[..i], shift)
        }
        _ => (text, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (like 500M or 10G)"))?;
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| format!("{text} is too large"))
}
