//! Command-line definitions (clap derive). Names here are the documented CLI; see docs/cli.md.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// cairn: a content-addressed cache and store for build outputs.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Store folder [default: $XDG_CACHE_HOME/cairn, else ~/.cache/cairn]
    #[arg(long, global = true, env = "CAIRN_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Seconds to wait for another cairn process's lock before failing
    #[arg(
        long,
        global = true,
        env = "CAIRN_LOCK_TIMEOUT",
        value_name = "SECS",
        default_value_t = 120.0
    )]
    pub lock_timeout: f64,
    /// zstd level for newly stored blobs (1-19)
    #[arg(long, global = true, env = "CAIRN_COMPRESSION_LEVEL", value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression_level: i32,
    /// Print machine-readable JSON on stdout (see docs/cli.md for the shapes)
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr, and no progress bars
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Keep owner, full mode, mtime, xattrs and hardlinks (for root filesystems) instead of
    /// normalizing them
    #[arg(long)]
    pub preserve: bool,
    /// PATH is a tar archive (.tar, .tar.gz, .tar.zst; detected by content) to ingest
    #[arg(long)]
    pub from_archive: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store a file or folder and bind KEY to it; prints the root id
    Put {
        /// Key to bind, e.g. app/linux-amd64@3f2a
        key: String,
        /// File, folder, or (with --from-archive) archive to store
        path: PathBuf,
        #[command(flatten)]
        ingest: IngestArgs,
        /// Free-form label k=v recorded with the key (repeatable)
        #[arg(long, value_name = "K=V")]
        label: Vec<String>,
    },
    /// Store a file or folder without binding a key; prints its id
    Add {
        path: PathBuf,
        #[command(flatten)]
        ingest: IngestArgs,
    },
    /// Print the id `add` would give PATH, touching no store
    Hash {
        path: PathBuf,
        /// Hash as `--preserve` would store it
        #[arg(long)]
        preserve: bool,
    },
    /// Materialize a key or id into DEST (a folder, or a file for a single-file root)
    Get {
        /// Key or blake3:<hex> id
        target: String,
        dest: PathBuf,
        /// Replace the contents of a non-empty DEST
        #[arg(long)]
        force: bool,
    },
    /// Write a key or id as a deterministic archive (.tar, .tar.zst or .tar.gz by the name)
    Export {
        target: String,
        /// Output file
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// List keys, optionally only those starting with PREFIX
    Ls { prefix: Option<String> },
    /// Show a key's record, or list a tree
    Show {
        target: String,
        /// List the whole tree, not just its top level
        #[arg(short, long)]
        recursive: bool,
    },
    /// Print a blob, or the file at PATH inside a tree, to stdout (verified first)
    Cat {
        target: String,
        path: Option<String>,
    },
    /// Show a key's history of bindings
    Log { key: String },
    /// Unbind a key (its objects stay until gc)
    Rm { key: String },
    /// Re-hash stored objects and check that every key's closure is complete
    ///
    /// Exit status: 0 clean, 1 could not run, 8 bit set if an object is corrupt, 16 bit set if
    /// an object is missing.
    Verify {
        /// Keys or ids to check (default: the whole store)
        targets: Vec<String>,
    },
    /// Delete objects no key reaches
    Gc {
        /// Report what would be deleted, delete nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Print a shell completion script
    Completions { shell: clap_complete::Shell },
}
