//! `cairn oci …`: OCI images in the store (import, byte-identical export, inspect, extract,
//! ls), over
//! `cairn-oci`. Output shapes are in docs/cli.md.

use anyhow::Result;
use cairn_oci::{ExtractOptions, Inspection, ListEntry, Node};
use cairn_store::{Key, Progress, Store};
use serde_json::json;

use crate::args::{OciCommand, RootfsSelect};
use crate::output::{Out, outln};

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `link_mode`: what `oci extract` does with regular files (from `--link` or the config).
pub fn run(
    cmd: OciCommand,
    store: &Store,
    out: &Out,
    progress: &dyn Progress,
    link_mode: cairn_store::LinkMode,
) -> Result<()> {
    match cmd {
        OciCommand::Import { src, name, image } => {
            let name = name.as_deref().map(Key::new).transpose()?;
            let done = cairn_oci::import(store, &src, name.as_ref(), image.as_deref())?;
            let rec = &done.record;
            if !done.dropped.is_empty() {
                tracing::warn!(
                    "{}: left out {} unreferenced file(s): {}",
                    src.display(),
                    done.dropped.len(),
                    done.dropped.join(", ")
                );
            }
            if out.json {
                return print_json(&json!({
                    "key": rec.key.as_str(),
                    "root": rec.root,
                    "source": done.source.name(),
                    "blobs": done.blobs,
                    "manifests": done.manifests,
                    "size": rec.size,
                    "files": rec.files,
                    "dropped": done.dropped,
                }));
            }
            tracing::info!(
                "{}: {} blobs, {} manifests, {} bytes",
                rec.key.as_str(),
                done.blobs,
                done.manifests,
                rec.size
            );
            outln!("{}", rec.root.id());
        }
        OciCommand::Export {
            target,
            layout,
            archive,
            docker_archive,
            tag,
            platform,
        } => {
            if let Some(dir) = layout {
                let stats = cairn_oci::export_layout(store, &target, &dir, progress)?;
                if out.json {
                    return print_json(&json!({
                        "target": target,
                        "layout": dir.display().to_string(),
                        "files": stats.files,
                        "bytes": stats.bytes,
                    }));
                }
            } else if let Some(file) = archive {
                let entries = cairn_oci::export_archive(store, &target, &file)?;
                if out.json {
                    return print_json(&json!({
                        "target": target,
                        "archive": file.display().to_string(),
                        "entries": entries,
                    }));
                }
            } else if let Some(file) = docker_archive {
                let done = cairn_oci::export_docker_archive(
                    store,
                    &target,
                    &file,
                    tag.as_deref(),
                    platform.as_ref(),
                )?;
                if out.json {
                    return print_json(&json!({
                        "target": target,
                        "docker_archive": file.display().to_string(),
                        "config": done.config,
                        "manifest": done.manifest,
                        "tag": done.tag,
                        "entries": done.entries,
                    }));
                }
            }
        }
        OciCommand::Extract {
            target,
            dest,
            select,
            force,
            link: _,
        } => {
            let mut opts = extract_options(select);
            opts.link = link_mode;
            let done = cairn_oci::extract(store, &target, &dest, force, &opts, progress)?;
            if done.stats.skipped > 0 {
                tracing::warn!(
                    "{}: skipped {} device node(s): creating them needs root",
                    dest.display(),
                    done.stats.skipped
                );
            }
            if out.json {
                return print_json(&done);
            }
            tracing::info!(
                "{target} ({}): {} files ({} linked, {} cloned, {} copied), {} dirs, {} symlinks, {} bytes",
                done.source.platform,
                done.stats.files,
                done.stats.linked,
                done.stats.cloned,
                done.stats.copied,
                done.stats.dirs,
                done.stats.symlinks,
                done.stats.bytes
            );
            outln!("{}", done.root.id());
        }
        OciCommand::Ls { target, select } => {
            let opts = extract_options(select);
            let (source, entries) = cairn_oci::list(store, &target, &opts, progress)?;
            if out.json {
                return print_json(&json!({
                    "manifest": source.manifest,
                    "platform": source.platform,
                    "layers": source.layers,
                    "entries": entries,
                }));
            }
            for e in &entries {
                print_entry(e)?;
            }
        }
        OciCommand::Inspect { target } => {
            let ins = cairn_oci::inspect(store, &target)?;
            if out.json {
                return print_json(&ins);
            }
            print_text(&target, &ins)?;
        }
    }
    Ok(())
}

fn extract_options(select: RootfsSelect) -> ExtractOptions {
    ExtractOptions {
        platform: select.platform,
        paths: select.paths,
        max_layer_bytes: select.max_layer_size,
        ..ExtractOptions::default()
    }
}

/// One `oci ls` line: type, mode, uid:gid, size, content id, path, and a link's target.
fn print_entry(e: &ListEntry) -> Result<()> {
    let size = e.size.map_or("-".to_string(), |s| s.to_string());
    let digest = e.digest.as_deref().unwrap_or("-");
    let mut line = format!(
        "{:<8} {:04o} {}:{} {:>10} {:<71} {}",
        e.kind, e.mode, e.uid, e.gid, size, digest, e.path
    );
    if let Some(t) = &e.target {
        line.push_str(if e.kind == "symlink" { " -> " } else { " => " });
        line.push_str(t);
    }
    if let Some((major, minor)) = e.device {
        line.push_str(&format!(" [{major},{minor}]"));
    }
    outln!("{line}");
    Ok(())
}

fn print_text(target: &str, ins: &Inspection) -> Result<()> {
    outln!(
        "{target}  {}  index.json {}",
        ins.root.id(),
        ins.media_type.as_deref().unwrap_or("(no mediaType)")
    );
    for (k, v) in &ins.annotations {
        outln!("  @{k}={v}");
    }
    for n in &ins.manifests {
        print_node(n, 1)?;
    }
    Ok(())
}

fn print_node(n: &Node, depth: usize) -> Result<()> {
    let pad = "  ".repeat(depth);
    let role = serde_json::to_value(n.role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut line = format!("{pad}{role:<8} {} {} {}", n.digest, n.size, n.media_type);
    if let Some(p) = &n.platform {
        line.push_str(&format!(" platform={p}"));
    }
    if let Some(a) = &n.artifact_type {
        line.push_str(&format!(" artifactType={a}"));
    }
    outln!("{line}");
    for (k, v) in &n.annotations {
        outln!("{pad}  @{k}={v}");
    }
    for c in &n.children {
        print_node(c, depth + 1)?;
    }
    Ok(())
}
