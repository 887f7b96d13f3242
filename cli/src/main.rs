//! The `cairn` binary: parses arguments, calls `cairn-store`, prints results.

#![forbid(unsafe_code)]

mod args;
mod keys;
mod oci_cmd;
mod output;
mod progress;
mod serve_cmd;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cairn_store::{
    ArchiveFormat, IngestOptions, Input, Key, NoProgress, Progress, Root, Store, StoreOptions,
};
use clap::{CommandFactory, Parser};

use args::{Cli, Command, Global, KeyCommand, RemoteCommand};
use cairn_remote::{Config, Remote, RemoteConfig, RemoteError, TransferOptions};

/// Exit status when a command fails.
const EXIT_ERROR: u8 = 1;
/// `verify` exit bit: some object is corrupt.
const EXIT_CORRUPT: u8 = 8;
/// `verify` exit bit: some object is missing.
const EXIT_MISSING: u8 = 16;
/// `verify` exit bit: some record lacks a valid signature by a trusted key.
const EXIT_UNTRUSTED: u8 = 32;

/// Without a write, the size cap and free space are checked at most this often.
const EVICT_CHECK_EVERY: Duration = Duration::from_secs(24 * 3600);
/// Time an automatic eviction may spend deleting files; what is left waits for the next one.
const EVICT_BUDGET: Duration = Duration::from_secs(30);
/// Above this share of `max-size` (percent), `put` warns and stores nothing.
const HARD_LIMIT_PERCENT: u64 = 105;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.global);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) if closed_stdout(&err) => ExitCode::from(EXIT_BROKEN_PIPE),
        Err(err) => {
            eprintln!("cairn: error: {}", one_line(&err));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Exit status when stdout's reader went away (128 + SIGPIPE, as a shell reports a process
/// that SIGPIPE ended). Rust ignores SIGPIPE, so a write to the closed pipe fails with
/// `BrokenPipe`; every write to stdout returns that error (see `output::outln`), and cairn
/// ends quietly. (Restoring SIGPIPE's default instead would also kill cairn when a network
/// peer resets a connection mid-write.)
const EXIT_BROKEN_PIPE: u8 = 141;

/// Whether `err` is a write to a stdout whose reader went away.
fn closed_stdout(err: &anyhow::Error) -> bool {
    err.downcast_ref::<output::StdoutClosed>().is_some()
}

/// An error as one line, naming what is at fault (the store's errors carry the path or id).
/// Causes already spelled out in the message are not repeated.
fn one_line(err: &anyhow::Error) -> String {
    let mut msg = err.to_string();
    for cause in err.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg = format!("{msg}: {c}");
        }
    }
    msg.replace('\n', " ")
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

fn config_path(g: &Global) -> Result<PathBuf> {
    match &g.config {
        Some(p) => Ok(p.clone()),
        None => cairn_remote::config::default_path()
            .context("no config file: set --config, CAIRN_CONFIG, XDG_CONFIG_HOME or HOME"),
    }
}

fn transfer_options(g: &Global) -> TransferOptions {
    TransferOptions {
        concurrency: g.concurrency as usize,
        retries: g.retries,
        ..TransferOptions::default()
    }
}

fn open_remote(g: &Global, config: &Config, name_or_url: &str) -> Result<Remote> {
    let (name, cfg) = config.resolve(name_or_url)?;
    Ok(Remote::open(&name, &cfg, &transfer_options(g))?)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// With --no-fail-on-cache-error, a remote failure becomes a warning.
fn soften(g: &Global, r: Result<()>) -> Result<()> {
    match r {
        Err(e) if g.no_fail_on_cache_error => {
            tracing::warn!("remote failed, continuing without it: {}", one_line(&e));
            Ok(())
        }
        other => other,
    }
}

fn push_keys(
    g: &Global,
    store: &Store,
    remote: &str,
    keys: &[Key],
    out: &output::Out,
    progress: &dyn Progress,
) -> Result<()> {
    let config = Config::load(&config_path(g)?)?;
    let remote = open_remote(g, &config, remote)?;
    let summary = runtime()?.block_on(cairn_remote::push(store, &remote, keys, progress))?;
    out.push(&summary)
}

/// The remotes a `get` falls back on: `remotes` (names or URLs, in order), else the configured
/// default remote; each opened with its trust policy, or with the reason it could not be.
fn fallbacks(
    g: &Global,
    remotes: &[String],
) -> Result<Vec<(String, cairn_remote::Result<cairn_remote::Fallback>)>> {
    let path = config_path(g)?;
    let config = Config::load(&path)?;
    let names: Vec<String> = if remotes.is_empty() {
        config.default_remote.iter().cloned().collect()
    } else {
        remotes.to_vec()
    };
    Ok(names
        .into_iter()
        .map(|name| {
            let opened = (|| {
                let (label, cfg) = config.resolve(&name)?;
                let remote = Remote::open(&label, &cfg, &transfer_options(g))?;
                let trust = config.trust_for(&name, &path)?;
                Ok(cairn_remote::Fallback { remote, trust })
            })();
            (name, opened)
        })
        .collect())
}

/// A failure to read the configuration, as the remote library reports failures.
fn remote_setup_error(e: anyhow::Error) -> RemoteError {
    RemoteError::Config {
        path: String::from("configuration"),
        reason: one_line(&e),
    }
}

/// The secret key to sign with: `explicit`, else the config's `signing-key`, else none.
fn signing_key(
    g: &Global,
    explicit: Option<&std::path::Path>,
) -> Result<Option<cairn_store::SecretKey>> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => match Config::load(&config_path(g)?)?.signing_key {
            Some(p) => p,
            None => return Ok(None),
        },
    };
    Ok(Some(keys::load_secret(&path)?))
}

/// The link mode of a restore: `--link[=MODE]`, else the config's `link`, else copy.
fn link_mode(g: &Global, flag: Option<cairn_store::LinkMode>) -> Result<cairn_store::LinkMode> {
    if let Some(m) = flag {
        return Ok(m);
    }
    let Ok(path) = config_path(g) else {
        return Ok(cairn_store::LinkMode::Copy);
    };
    Ok(Config::load(&path)?.link.unwrap_or_default())
}

fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("invalid {l:?}: expected K=V"),
        })
        .collect()
}

/// The configuration, or an empty one when no config file can be named.
fn load_config(g: &Global) -> Result<Config> {
    match config_path(g) {
        Ok(p) => Ok(Config::load(&p)?),
        Err(_) => Ok(Config::default()),
    }
}

/// Enforces the configured `max-size` and `min-free`: after a write (`wrote`), or when the last
/// check is older than [`EVICT_CHECK_EVERY`], evicts least recently used keys (never those of
/// `protect`, nor pinned ones) and collects, within [`EVICT_BUDGET`].
fn auto_evict(g: &Global, store: &Store, wrote: bool, protect: &[Key]) -> Result<()> {
    let config = load_config(g)?;
    if config.max_size.is_none() && config.min_free.is_none() {
        return Ok(());
    }
    let stamp = store.dir().join("locks").join("evict-check");
    let due = wrote
        || std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .map_or(true, |t| {
                t.elapsed().unwrap_or_default() > EVICT_CHECK_EVERY
            });
    if !due {
        return Ok(());
    }
    // Not fsynced: losing the stamp only costs an early check.
    let _ = std::fs::write(&stamp, b"");
    // A read session: gc (which evicts) must not run while the size is read.
    let size = store.read()?.size()?;
    let over = config.max_size.is_some_and(|cap| size.stored > cap)
        || config.min_free.is_some_and(|m| size.free < m);
    if !over {
        return Ok(());
    }
    let report = store.gc(&cairn_store::GcOptions {
        max_size: config.max_size,
        min_free: config.min_free,
        protect: protect.to_vec(),
        budget: Some(EVICT_BUDGET),
        ..Default::default()
    })?;
    tracing::info!(
        "store over its size cap ({} bytes stored): evicted {} keys, freed {} bytes",
        size.stored,
        report.removed.len(),
        report.bytes_freed
    );
    Ok(())
}

/// Records that `target`, if it is a key, was read (a failure is only logged: the read
/// succeeded).
fn mark_used(session: &cairn_store::ReadSession, target: &str) {
    if let Ok(key) = Key::new(target)
        && let Err(e) = session.used(&key)
    {
        tracing::warn!("{key}: its use was not recorded: {e}");
    }
}

/// The recorded last use of `key`.
fn last_used_of(store: &Store, key: &Key) -> Result<Option<u64>> {
    Ok(store.last_used(key.as_str())?.get(key.as_str()).copied())
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
            push,
            sign,
        } => {
            let key = Key::new(&key)?;
            let labels = parse_labels(&label)?;
            let opts = IngestOptions {
                preserve: ingest.preserve,
                ..IngestOptions::default()
            };
            let store = open_store(g)?;
            if let Some(cap) = load_config(g)?.max_size {
                let stored = store.read()?.size()?.stored;
                if stored > cairn_store::policy::share(cap, HARD_LIMIT_PERCENT) {
                    tracing::warn!(
                        "store {} holds {stored} bytes, over {HARD_LIMIT_PERCENT}% of its max-size \
                         ({cap}): not caching {key}",
                        store.dir().display()
                    );
                    return Ok(0);
                }
            }
            let input = if ingest.from_archive {
                Input::Archive(&path)
            } else {
                Input::Path(&path)
            };
            let (added, rec) = store.put(&key, input, &opts, labels, progress)?;
            // While this command still signs or pushes the new key, no other process's eviction
            // removes it. A plain put takes no pin: it is done with the key once it is bound, and
            // a pin costs two index commits.
            let signer = signing_key(g, sign.as_deref())?;
            let _pin = if signer.is_some() || push.is_some() {
                Some(store.temp_pin(&key)?)
            } else {
                None
            };
            let rec = match signer {
                Some(sk) => store.add_signature(&rec, sk.sign(&rec))?,
                None => rec,
            };
            out.put(&added, Some(&rec))?;
            if let Some(remote) = push {
                soften(
                    g,
                    push_keys(
                        g,
                        &store,
                        &remote,
                        std::slice::from_ref(&key),
                        &out,
                        progress,
                    ),
                )?;
            }
            auto_evict(g, &store, true, std::slice::from_ref(&key))?;
        }
        Command::Add { path, ingest } => {
            let opts = IngestOptions {
                preserve: ingest.preserve,
                ..IngestOptions::default()
            };
            let store = open_store(g)?;
            let input = if ingest.from_archive {
                Input::Archive(&path)
            } else {
                Input::Path(&path)
            };
            let added = store.add(input, &opts, progress)?;
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
            remote,
            offline,
            fallback,
            link,
        } => {
            let opts = cairn_store::MaterializeOptions {
                force,
                link: link_mode(g, link.link)?,
            };
            let store = open_store(g)?;
            let open_remotes: cairn_remote::OpenRemotes<'_> = if offline {
                Box::new(|| Ok(Vec::new()))
            } else {
                Box::new(|| fallbacks(g, &remote).map_err(remote_setup_error))
            };
            let (resolved, stats) = runtime()?.block_on(cairn_remote::get(
                &store,
                &target,
                &dest,
                &opts,
                open_remotes,
                g.no_fail_on_cache_error,
                &fallback,
                progress,
            ))?;
            if let Some((_, summary)) = &resolved.pulled {
                out.pull_quiet(summary);
            }
            out.get(
                &resolved.root,
                resolved.key.as_ref(),
                &target,
                &dest,
                &stats,
            )?;
            let pulled = resolved.pulled.is_some();
            let protect: Vec<Key> = resolved.key.iter().cloned().collect();
            drop(resolved);
            auto_evict(g, &store, pulled, &protect)?;
        }
        Command::Export { target, output } => {
            let format = ArchiveFormat::from_path(&output).with_context(|| {
                format!(
                    "{}: unknown archive type (name it .tar, .tar.zst or .tar.gz)",
                    output.display()
                )
            })?;
            let store = open_store(g)?;
            let session = store.read()?;
            let root = session.resolve(&target)?;
            let entries = session.export(&root, &output, format)?;
            mark_used(&session, &target);
            out.export(&root, &output, entries)?;
        }
        Command::Ls { prefix } => {
            let store = open_store(g)?;
            let prefix = prefix.as_deref().unwrap_or("");
            out.ls(&store.keys(prefix)?, &store.last_used(prefix)?)?;
        }
        Command::Show { target, recursive } => {
            let store = open_store(g)?;
            // In a read session, so no gc deletes the trees being listed.
            let session = store.read()?;
            if cairn_store::Id::looks_like_id(&target) {
                let root = session.resolve(&target)?;
                out.tree_listing(&session, &root, recursive)?;
            } else {
                let rec = session.record(&Key::new(&target)?)?;
                if recursive {
                    out.tree_listing(&session, &rec.root, true)?;
                } else {
                    out.record(&rec, last_used_of(&store, &rec.key)?)?;
                }
            }
        }
        Command::Cat {
            target,
            path,
            attachment,
        } => {
            let store = open_store(g)?;
            let session = store.read()?;
            let root = match attachment {
                Some(name) => {
                    let rec = session.record(&Key::new(&target)?)?;
                    let a = rec
                        .attachments
                        .get(&cairn_store::AttachmentName::new(&name)?)
                        .with_context(|| format!("key {target} has no attachment {name:?}"))?;
                    Root::File {
                        id: a.id,
                        executable: false,
                    }
                }
                None => session.resolve(&target)?,
            };
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            match session.cat(&root, path.as_deref(), &mut lock) {
                Err(cairn_store::Error::Blob(cairn_store::blobs::BlobError::Sink {
                    source,
                    ..
                })) => return Err(output::stdout_error(source)),
                r => r?,
            };
            lock.flush().map_err(output::stdout_error)?;
            mark_used(&session, &target);
        }
        Command::Log { key } => {
            let store = open_store(g)?;
            out.log(&store.log(&Key::new(&key)?)?)?;
        }
        Command::Rm { keys, remote } => {
            let keys: Vec<Key> = keys.iter().map(|k| Key::new(k)).collect::<Result<_, _>>()?;
            if let Some(remote) = remote {
                let config = Config::load(&config_path(g)?)?;
                let remote = open_remote(g, &config, &remote)?;
                let removed = runtime()?.block_on(cairn_remote::remove_keys(&remote, &keys))?;
                out.removed_remote(remote.name(), &removed)?;
                return Ok(0);
            }
            let store = open_store(g)?;
            for key in &keys {
                let rec = store.remove_key(key)?;
                out.removed(key, rec.as_ref())?;
            }
        }
        Command::Verify {
            targets,
            signatures,
            remote,
        } => {
            if let Some(remote) = remote {
                let config = Config::load(&config_path(g)?)?;
                let trust = config.trust_for(&remote, &config_path(g)?)?;
                let remote = open_remote(g, &config, &remote)?;
                let keys: Vec<Key> = targets
                    .iter()
                    .map(|k| Key::new(k))
                    .collect::<Result<_, _>>()?;
                let report = runtime()?.block_on(cairn_remote::audit(&remote, &keys, &trust))?;
                output::print_json(&report)?;
                let mut code = 0;
                for k in &report.keys {
                    if !k.corrupt.is_empty() {
                        code |= EXIT_CORRUPT;
                    }
                    if !k.missing.is_empty() || k.root.is_none() {
                        code |= EXIT_MISSING;
                    }
                    if trust.required && !k.trusted {
                        code |= EXIT_UNTRUSTED;
                    }
                }
                return Ok(code);
            }
            let store = open_store(g)?;
            let session = store.read()?;
            let roots: Vec<Root> = targets
                .iter()
                .map(|t| session.resolve(t))
                .collect::<Result<_, _>>()?;
            let report = session.verify(&roots, progress)?;
            drop(session);
            let untrusted = if signatures {
                let config = Config::load(&config_path(g)?)?;
                let trust = config.trust_for("", &config_path(g)?)?;
                store
                    .keys("")?
                    .iter()
                    .filter_map(|r| cairn_store::sign::check_trusted(r, &trust.trusted).err())
                    .map(|e| e.to_string())
                    .collect()
            } else {
                Vec::new()
            };
            out.verify(&report, signatures.then_some(untrusted.as_slice()))?;
            let mut code = 0;
            if report.any_corrupt() {
                code |= EXIT_CORRUPT;
            }
            if report.any_missing() {
                code |= EXIT_MISSING;
            }
            if !untrusted.is_empty() {
                code |= EXIT_UNTRUSTED;
            }
            return Ok(code);
        }
        Command::Sign { key, key_file } => {
            let store = open_store(g)?;
            let sk = signing_key(g, key_file.as_deref())?
                .context("no signing key: give --key-file or set signing-key in the config")?;
            let rec = store.record(&Key::new(&key)?)?;
            let rec = store.add_signature(&rec, sk.sign(&rec))?;
            out.record(&rec, last_used_of(&store, &rec.key)?)?;
        }
        Command::Attach {
            key,
            name,
            file,
            sign,
        } => {
            let store = open_store(g)?;
            let key = Key::new(&key)?;
            let name = cairn_store::AttachmentName::new(&name)?;
            let (rec, dropped) = store.attach(&key, &name, &file)?;
            let rec = match signing_key(g, sign.as_deref())? {
                Some(sk) => store.add_signature(&rec, sk.sign(&rec))?,
                None => {
                    if dropped > 0 {
                        tracing::warn!(
                            "{key}: {dropped} signature(s) no longer cover the record and were removed; sign it again"
                        );
                    }
                    rec
                }
            };
            out.attachments(&rec)?;
        }
        Command::Attachments { key } => {
            let store = open_store(g)?;
            out.attachments(&store.record(&Key::new(&key)?)?)?;
        }
        Command::Oci(cmd) => {
            let link = match &cmd {
                args::OciCommand::Extract { link, .. } => link_mode(g, link.link)?,
                _ => cairn_store::LinkMode::Copy,
            };
            oci_cmd::run(cmd, &open_store(g)?, &out, progress, link)?
        }
        Command::Key(cmd) => match cmd {
            KeyCommand::Generate { name, dir } => {
                let dir = match dir {
                    Some(d) => d,
                    None => config_path(g)?
                        .parent()
                        .map(|p| p.join("keys"))
                        .context("no config folder for keys: give --dir")?,
                };
                let out_line = keys::generate(&name, &dir)?;
                output::outln!("{out_line}");
            }
            KeyCommand::Show { file } => output::outln!("{}", keys::public_line(&file)?),
        },
        Command::Gc {
            dry_run,
            policy,
            checkouts,
        } => {
            let store = open_store(g)?;
            let mut opts = cairn_store::GcOptions {
                dry_run,
                checkouts,
                ..Default::default()
            };
            if policy {
                let config = Config::load(&config_path(g)?)?;
                opts.rules = config.retention;
                opts.max_size = config.max_size;
                opts.min_free = config.min_free;
            }
            out.gc(&store.gc(&opts)?)?;
        }
        Command::Du => {
            let store = open_store(g)?;
            out.usage(&store.usage()?)?;
        }
        Command::Push { remote, keys, all } => {
            let store = open_store(g)?;
            let keys: Vec<Key> = if all {
                store.keys("")?.into_iter().map(|r| r.key).collect()
            } else if keys.is_empty() {
                bail!("name the keys to push, or --all");
            } else {
                keys.iter().map(|k| Key::new(k)).collect::<Result<_, _>>()?
            };
            soften(g, push_keys(g, &store, &remote, &keys, &out, progress))?;
        }
        Command::Pull { remote, keys } => {
            let store = open_store(g)?;
            let keys: Vec<Key> = keys.iter().map(|k| Key::new(k)).collect::<Result<_, _>>()?;
            let config = Config::load(&config_path(g)?)?;
            let trust = config.trust_for(&remote, &config_path(g)?)?;
            let r = (|| -> Result<()> {
                let remote = open_remote(g, &config, &remote)?;
                let summary = runtime()?
                    .block_on(cairn_remote::pull(&store, &remote, &keys, &trust, progress))?;
                out.pull(&summary)
            })();
            soften(g, r)?;
            auto_evict(g, &store, true, &keys)?;
        }
        Command::Remote(cmd) => {
            let path = config_path(g)?;
            let mut config = Config::load(&path)?;
            match cmd {
                RemoteCommand::Add {
                    name,
                    url,
                    read_only,
                    write_only,
                    options,
                    default,
                } => {
                    if name.contains("://") || name.is_empty() {
                        bail!("invalid remote name {name:?}: use a short name, not a URL");
                    }
                    let cfg = RemoteConfig {
                        url,
                        read_only,
                        write_only,
                        options: parse_labels(&options)?.into_iter().collect(),
                        ..RemoteConfig::default()
                    };
                    // Fail now, not at the first push, if object_store can't use it.
                    Remote::open(&name, &cfg, &TransferOptions::default())?;
                    config.remotes.insert(name.clone(), cfg);
                    if default || config.default_remote.is_none() {
                        config.default_remote = Some(name);
                    }
                    config.save(&path)?;
                }
                RemoteCommand::Ls => out.remotes(&config)?,
                RemoteCommand::Gc {
                    name,
                    dry_run,
                    grace,
                    exclusive,
                    policy,
                    repack_below,
                } => {
                    let remote = open_remote(g, &config, &name)?;
                    let settings = cairn_remote::GcSettings {
                        dry_run,
                        grace,
                        exclusive,
                        rules: if policy {
                            config.retention_for(&name).to_vec()
                        } else {
                            Vec::new()
                        },
                        repack_below,
                    };
                    let report =
                        runtime()?.block_on(cairn_remote::remote_gc(&remote, &settings))?;
                    out.remote_gc(&report)?;
                }
                RemoteCommand::Rm { name } => {
                    if config.remotes.remove(&name).is_none() {
                        bail!("no remote named {name:?} in {}", path.display());
                    }
                    if config.default_remote.as_deref() == Some(name.as_str()) {
                        config.default_remote = None;
                    }
                    config.save(&path)?;
                }
            }
        }
        Command::Serve(args) => serve_cmd::run(args, g, open_store(g)?, &config_path(g)?)?,
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "cairn", &mut script);
            std::io::Write::write_all(&mut std::io::stdout().lock(), &script)
                .map_err(output::stdout_error)?;
        }
    }
    Ok(0)
}
