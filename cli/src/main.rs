//! The `cairn` binary: parses arguments, calls `cairn-store`, prints results.

mod args;
mod output;
mod progress;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cairn_store::{
    ArchiveFormat, IngestOptions, Key, NoProgress, Progress, Root, Store, StoreOptions,
};
use clap::{CommandFactory, Parser};

use args::{Cli, Command, Global};

/// Exit status when a command fails.
const EXIT_ERROR: u8 = 1;
/// `verify` exit bit: some object is corrupt.
const EXIT_CORRUPT: u8 = 8;
/// `verify` exit bit: some object is missing.
const EXIT_MISSING: u8 = 16;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.global);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            // One line, naming what is at fault (the store's errors carry the path or id).
            // Causes already spelled out in the message are not repeated.
            let mut msg = err.to_string();
            for cause in err.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg = format!("{msg}: {c}");
                }
            }
            let msg = msg.replace('\n', " ");
            eprintln!("cairn: error: {msg}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn init_logging(g: &Global) {
    let default = match (g.quiet, g.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}

/// The store folder: --store, else $CAIRN_STORE (via clap), else $XDG_CACHE_HOME/cairn, else
/// ~/.cache/cairn.
fn store_dir(g: &Global) -> Result<PathBuf> {
    if let Some(s) = &g.store {
        return Ok(s.clone());
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("cairn"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("no store given: set --store, CAIRN_STORE, XDG_CACHE_HOME or HOME")?;
    Ok(PathBuf::from(home).join(".cache").join("cairn"))
}

fn open_store(g: &Global) -> Result<Store> {
    let dir = store_dir(g)?;
    if !(g.lock_timeout.is_finite() && g.lock_timeout >= 0.0) {
        bail!("--lock-timeout must be a non-negative number of seconds");
    }
    let opts = StoreOptions {
        lock_timeout: Duration::from_secs_f64(g.lock_timeout),
        compression_level: g.compression_level,
    };
    Ok(Store::open(&dir, opts)?)
}

fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("invalid label {l:?}: expected K=V"),
        })
        .collect()
}

fn run(cli: Cli) -> Result<u8> {
    let g = &cli.global;
    let bars = progress::Bars::new(g.quiet);
    let progress: &dyn Progress = match &bars {
        Some(b) => b,
        None => &NoProgress,
    };
    let out = output::Out { json: g.json };
    match cli.command {
        Command::Put {
            key,
            path,
            ingest,
            label,
        } => {
            let key = Key::new(&key)?;
            let labels = parse_labels(&label)?;
            let opts = IngestOptions {
                preserve: ingest.preserve,
                ..IngestOptions::default()
            };
            let store = open_store(g)?;
            let (added, rec) = if ingest.from_archive {
                store.put_archive(&key, &path, &opts, labels)?
            } else {
                store.put(&key, &path, &opts, labels, progress)?
            };
            out.put(&added, Some(&rec))?;
        }
        Command::Add { path, ingest } => {
            let opts = IngestOptions {
                preserve: ingest.preserve,
                ..IngestOptions::default()
            };
            let store = open_store(g)?;
            let added = if ingest.from_archive {
                store.add_archive(&path, &opts)?
            } else {
                store.add(&path, &opts, progress)?
            };
            out.put(&added, None)?;
        }
        Command::Hash { path, preserve } => {
            let opts = IngestOptions {
                preserve,
                ..IngestOptions::default()
            };
            let built = Store::hash(&path, &opts)?;
            out.hash(&built.root, &built.totals)?;
        }
        Command::Get {
            target,
            dest,
            force,
        } => {
            let store = open_store(g)?;
            let root = store.resolve(&target)?;
            let stats = store.materialize(&root, &dest, force, progress)?;
            out.get(&root, &dest, &stats)?;
        }
        Command::Export { target, output } => {
            let format = ArchiveFormat::from_path(&output).with_context(|| {
                format!(
                    "{}: unknown archive type (name it .tar, .tar.zst or .tar.gz)",
                    output.display()
                )
            })?;
            let store = open_store(g)?;
            let root = store.resolve(&target)?;
            let entries = store.export(&root, &output, format)?;
            out.export(&root, &output, entries)?;
        }
        Command::Ls { prefix } => {
            let store = open_store(g)?;
            out.ls(&store.keys(prefix.as_deref().unwrap_or(""))?)?;
        }
        Command::Show { target, recursive } => {
            let store = open_store(g)?;
            if cairn_store::Id::looks_like_id(&target) {
                let root = store.resolve(&target)?;
                out.tree_listing(&store, &root, recursive)?;
            } else {
                let rec = store.record(&Key::new(&target)?)?;
                if recursive {
                    out.tree_listing(&store, &rec.root, true)?;
                } else {
                    out.record(&rec)?;
                }
            }
        }
        Command::Cat { target, path } => {
            let store = open_store(g)?;
            let root = store.resolve(&target)?;
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            store.cat(&root, path.as_deref(), &mut lock)?;
            lock.flush().context("stdout")?;
        }
        Command::Log { key } => {
            let store = open_store(g)?;
            out.log(&store.log(&Key::new(&key)?)?)?;
        }
        Command::Rm { key } => {
            let store = open_store(g)?;
            let rec = store.remove_key(&Key::new(&key)?)?;
            out.removed(&rec)?;
        }
        Command::Verify { targets } => {
            let store = open_store(g)?;
            let roots: Vec<Root> = targets
                .iter()
                .map(|t| store.resolve(t))
                .collect::<Result<_, _>>()?;
            let report = store.verify(&roots, progress)?;
            out.verify(&report)?;
            let mut code = 0;
            if report.any_corrupt() {
                code |= EXIT_CORRUPT;
            }
            if report.any_missing() {
                code |= EXIT_MISSING;
            }
            return Ok(code);
        }
        Command::Gc { dry_run } => {
            let store = open_store(g)?;
            out.gc(&store.gc(dry_run)?)?;
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "cairn", &mut std::io::stdout());
        }
    }
    Ok(0)
}
