//! `wsd`, the workspace daemon. Only its command line exists so far.

use clap::Parser;

/// wsd: the daemon that keeps ws workspaces, their store and their transactions
#[derive(Debug, Parser)]
#[command(name = "wsd", version, about)]
struct Args {}

fn main() {
    let _args = Args::parse();
    eprintln!("wsd: the daemon is not implemented yet; `ws store` works without it");
    std::process::exit(2);
}
