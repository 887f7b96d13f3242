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
    /// Remotes configuration file [default: $XDG_CONFIG_HOME/cairn/config.toml]
    #[arg(long, global = true, env = "CAIRN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Remote requests in flight at once
    #[arg(long, global = true, env = "CAIRN_CONCURRENCY", value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Retries of a failed remote request (5xx, resets, timeouts), with exponential backoff
    #[arg(
        long,
        global = true,
        env = "CAIRN_RETRIES",
        value_name = "N",
        default_value_t = 5
    )]
    pub retries: usize,
    /// A remote failure is a warning, not an error (so a build can fall back to rebuilding)
    #[arg(long, global = true)]
    pub no_fail_on_cache_error: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a new ed25519 key pair: DIR/NAME.secret (mode 0600) and DIR/NAME.pub
    Generate {
        name: String,
        /// Where to write them [default: $XDG_CONFIG_HOME/cairn/keys]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print the public key line (NAME:BASE64) of a secret or public key file
    Show { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Add (or replace) a remote
    Add {
        name: String,
        /// s3://bucket/prefix, gs://bucket/prefix, az://container/prefix, file:///path, https://…
        url: String,
        /// Never push to it
        #[arg(long)]
        read_only: bool,
        /// Never pull from it
        #[arg(long, conflicts_with = "read_only")]
        write_only: bool,
        /// object_store option for it, e.g. aws_endpoint=http://127.0.0.1:9000 (repeatable)
        #[arg(long = "option", value_name = "K=V")]
        options: Vec<String>,
        /// Make it the default remote
        #[arg(long)]
        default: bool,
    },
    /// List remotes
    Ls,
    /// Remove a remote
    Rm { name: String },
    /// Collect garbage on a remote: two-phase, safe while others push (docs/cli.md)
    Gc {
        /// Remote name or URL
        name: String,
        /// Report what would be tombstoned, deleted and removed; change nothing
        #[arg(long)]
        dry_run: bool,
        /// How old unreachable objects and tombstones must be, by the object store's clock
        /// (30s, 15m, 12h, 7d)
        #[arg(long, value_name = "DURATION", default_value = "24h",
              value_parser = cairn_store::policy::parse_duration)]
        grace: std::time::Duration,
        /// No other cairn writes to the remote meanwhile: run without conditional puts where
        /// the object store lacks them
        #[arg(long)]
        exclusive: bool,
        /// Also apply the retention rules (the remote's, else the global ones)
        #[arg(long)]
        policy: bool,
        /// Repack packs whose live bytes are below this percentage of their size (0: never)
        #[arg(long, value_name = "PERCENT", default_value_t = cairn_remote::DEFAULT_REPACK_BELOW,
              value_parser = clap::value_parser!(u8).range(0..=100))]
        repack_below: u8,
    },
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
        /// Push the key to this remote (name or URL) after storing it
        #[arg(long, value_name = "REMOTE")]
        push: Option<String>,
        /// Sign the record with this secret key file [default: signing-key from the config]
        #[arg(long, value_name = "FILE")]
        sign: Option<PathBuf>,
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
        /// On a local miss, pull from this remote (repeatable, tried in order; default: the
        /// configured default remote)
        #[arg(long, value_name = "REMOTE")]
        remote: Vec<String>,
        /// Never try a remote
        #[arg(long, conflicts_with = "remote")]
        offline: bool,
        /// If TARGET is found nowhere, restore the newest key starting with PREFIX instead
        /// (repeatable, tried in order; locally, then on the remotes)
        #[arg(long, value_name = "PREFIX")]
        fallback: Vec<String>,
        #[command(flatten)]
        link: LinkArg,
    },
    /// Upload keys (and what they reach) to a remote
    Push {
        /// Remote name or URL
        remote: String,
        keys: Vec<String>,
        /// Push every local key
        #[arg(long, conflicts_with = "keys")]
        all: bool,
    },
    /// Download keys (and what they reach) from a remote and bind them locally
    Pull {
        /// Remote name or URL
        remote: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Manage remotes
    #[command(subcommand)]
    Remote(RemoteCommand),
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
        /// Print the attachment NAME of the key instead
        #[arg(long, value_name = "NAME", conflicts_with = "path")]
        attachment: Option<String>,
    },
    /// Show a key's history of bindings
    Log { key: String },
    /// Unbind keys (their objects stay until gc), locally or on a remote
    Rm {
        #[arg(required = true)]
        keys: Vec<String>,
        /// Delete the keys' records on this remote instead (their objects go at the next
        /// `cairn remote gc`)
        #[arg(long, value_name = "REMOTE")]
        remote: Option<String>,
    },
    /// Re-hash stored objects and check that every key's closure is complete
    ///
    /// Exit status: 0 clean, 1 could not run, 8 bit set if an object is corrupt, 16 bit set if
    /// an object is missing.
    Verify {
        /// Keys or ids to check (default: the whole store; with --remote, the keys to audit)
        targets: Vec<String>,
        /// Also check every local record's signatures against the trusted keys (bit 32 of the
        /// exit status if one lacks a valid trusted signature)
        #[arg(long)]
        signatures: bool,
        /// Audit KEYs on this remote instead, binding nothing locally: fetch and hash every
        /// object, check signatures, print a JSON report
        #[arg(long, value_name = "REMOTE", requires = "targets")]
        remote: Option<String>,
    },
    /// Sign a key's record (adds a signature; records may carry several)
    Sign {
        key: String,
        /// Secret key file [default: signing-key from the config]
        #[arg(long = "key-file", value_name = "FILE")]
        key_file: Option<PathBuf>,
    },
    /// Attach a file (provenance, SBOM, log) to a key; drops signatures, which no longer cover it
    Attach {
        key: String,
        /// Name of the attachment: [A-Za-z0-9._-]
        name: String,
        file: PathBuf,
        /// Sign the updated record with this secret key file
        #[arg(long, value_name = "FILE")]
        sign: Option<PathBuf>,
    },
    /// List a key's attachments
    Attachments { key: String },
    /// Signing keys
    #[command(subcommand)]
    Key(KeyCommand),
    /// Delete objects no key or pin reaches (with --policy, first the keys the retention
    /// rules and the size cap evict)
    Gc {
        /// Report what would be deleted, delete nothing
        #[arg(long)]
        dry_run: bool,
        /// Apply the configuration's retention rules, max-size and min-free first
        #[arg(long)]
        policy: bool,
        /// Also delete every checkout object (the cache `--link` restores link to)
        #[arg(long)]
        checkouts: bool,
    },
    /// Show what the store takes on disk: blobs, packs, checkout objects, index, temp files
    Du,
    /// Print a shell completion script
    Completions { shell: clap_complete::Shell },
    /// OCI images: import, byte-identical export, inspect, extract, ls
    #[command(subcommand)]
    Oci(OciCommand),
    /// Serve the store as an OCI registry and as a team cache over HTTP (docs/cli.md)
    Serve(crate::serve_cmd::ServeArgs),
}

#[derive(Debug, Subcommand)]
pub enum OciCommand {
    /// Import an OCI layout folder, an OCI archive (tar, tar.gz, tar.zst), a docker-save
    /// archive or a skopeo dir: layout, checking every blob against its digest, and bind a key
    /// to its layout tree
    Import {
        /// Layout folder, archive, or dir: layout folder
        src: PathBuf,
        /// Key to bind [default: the index's single org.opencontainers.image.ref.name]; in a
        /// docker-archive of several images, one of its references picks that image
        #[arg(long, value_name = "KEY")]
        name: Option<String>,
        /// Keep only the image whose reference (org.opencontainers.image.ref.name, or a
        /// docker-archive's RepoTag) is REF
        #[arg(long, value_name = "REF")]
        image: Option<String>,
    },
    /// Write an imported image back, every blob byte-identical
    #[command(group(clap::ArgGroup::new("dest").required(true)))]
    Export {
        /// Key or blake3:<hex> id of an imported image
        target: String,
        /// As an OCI image layout in this folder (created; must be empty)
        #[arg(long, value_name = "DIR", group = "dest")]
        layout: Option<PathBuf>,
        /// As a deterministic OCI archive (.tar; .tar.gz or .tar.zst compress it)
        #[arg(long, value_name = "FILE", group = "dest")]
        archive: Option<PathBuf>,
        /// One image (the --platform one) as a deterministic docker-save archive (Docker Image
        /// Spec v1.2, for docker load, podman load, skopeo docker-archive:), layers uncompressed
        #[arg(long, value_name = "FILE", group = "dest")]
        docker_archive: Option<PathBuf>,
        /// With --docker-archive: the RepoTag, NAME:TAG [default: the image's ref name if it is
        /// one, else untagged]
        #[arg(long, value_name = "NAME:TAG", requires = "docker_archive")]
        tag: Option<String>,
        /// With --docker-archive: the platform to pick from a multi-platform image,
        /// os/arch[/variant] [default: the host's]
        #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_parser = parse_platform, requires = "docker_archive")]
        platform: Option<cairn_oci::Platform>,
    },
    /// Show an imported image's index, manifests, platforms, configs and layers
    Inspect {
        /// Key or blake3:<hex> id of an imported image
        target: String,
    },
    /// Write an image's root filesystem (its layers merged) into DEST, with no daemon
    Extract {
        /// Key or blake3:<hex> id of an imported image
        target: String,
        /// Folder to write into (created; must be empty unless --force)
        dest: PathBuf,
        #[command(flatten)]
        select: RootfsSelect,
        /// Empty a non-empty DEST first
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        link: LinkArg,
    },
    /// List an image's merged root filesystem (path, type, mode, owner, size, content id)
    Ls {
        /// Key or blake3:<hex> id of an imported image
        target: String,
        #[command(flatten)]
        select: RootfsSelect,
    },
}

/// `--link[=MODE]` of `get` and `oci extract`.
#[derive(Debug, Clone, clap::Args)]
pub struct LinkArg {
    /// Clone (reflink) or hardlink regular files from the store's read-only checkout objects
    /// instead of writing them: auto (reflink, else hardlink, else copy), reflink, hardlink or
    /// copy [default: the config's `link`, else copy; --link alone: auto]
    #[arg(long, value_name = "MODE", num_args = 0..=1, require_equals = true,
          default_missing_value = "auto", value_parser = parse_link_mode)]
    pub link: Option<cairn_store::LinkMode>,
}

fn parse_link_mode(s: &str) -> Result<cairn_store::LinkMode, String> {
    s.parse()
}

/// Which image, which paths, and limits, for `oci extract` and `oci ls`.
#[derive(Debug, clap::Args)]
pub struct RootfsSelect {
    /// Platform to pick from a multi-platform image, os/arch[/variant] [default: the host's]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_parser = parse_platform)]
    pub platform: Option<cairn_oci::Platform>,
    /// Only this path of the merged filesystem (a file or a subtree); repeatable
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
    /// Refuse a layer whose uncompressed tar exceeds this size (a decompression bomb);
    /// accepts K, M, G, T suffixes (powers of 1024)
    #[arg(long, value_name = "SIZE", value_parser = cairn_store::policy::parse_size, default_value = "32G")]
    pub max_layer_size: u64,
}

fn parse_platform(s: &str) -> Result<cairn_oci::Platform, String> {
    cairn_oci::Platform::parse(s)
}
