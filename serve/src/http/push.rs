//! The push side: blob uploads (monolithic, POST then PUT, streamed and chunked PATCH), upload
//! status and cancel, cross-repository mounts, manifest PUT and DELETE.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use cairn_oci::OciDigest;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use super::body::{self, Body};
use super::pull::{DIGEST_HEADER, parse_digest};
use super::{App, Ctx, header_str, query};
use crate::auth::Action;
use crate::error::{ApiError, Code};
use crate::manifest::MAX_MANIFEST_BYTES;
use crate::names::{Reference, ReferenceError, Repo};
use crate::uploads::{Appender, Session, StartError};

/// Chunks queued between a request body and the thread writing the upload file.
const QUEUED_CHUNKS: usize = 8;

fn upload_location(repo: &Repo, id: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("/v2/{repo}/blobs/uploads/{id}")).expect("ascii")
}

/// `202 Accepted` (or `204` for status) describing a session.
fn session_answer(status: StatusCode, repo: &Repo, id: &str, size: u64) -> Response<Body> {
    let mut r = body::status(status);
    let h = r.headers_mut();
    h.insert(header::LOCATION, upload_location(repo, id));
    // distribution's form: `0-<last byte>`, and `0-0` before the first byte.
    h.insert(
        header::RANGE,
        HeaderValue::from_str(&format!("0-{}", size.saturating_sub(1))).expect("ascii"),
    );
    h.insert(
        "docker-upload-uuid",
        HeaderValue::from_str(id).expect("ascii"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    r
}

/// `201 Created` for a blob now in the repository.
fn created(repo: &Repo, d: &OciDigest) -> Response<Body> {
    let mut r = body::status(StatusCode::CREATED);
    let h = r.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/v2/{repo}/blobs/{d}")).expect("ascii"),
    );
    h.insert(
        DIGEST_HEADER,
        HeaderValue::from_str(&d.to_string()).expect("ascii"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    r
}

fn unknown_upload(id: &str) -> ApiError {
    ApiError::new(Code::BlobUploadUnknown, format!("upload {id}"))
}

/// Appends a request body to a session on a blocking thread; the session comes back with
/// whatever arrived before an error (its hashes always match its file).
async fn append(
    app: &Arc<App>,
    route: &'static str,
    session: Session,
    mut body: Incoming,
) -> (Session, Result<(), ApiError>) {
    let base = session.size;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(QUEUED_CHUNKS);
    let writer =
        tokio::task::spawn_blocking(move || -> Result<Session, (Session, std::io::Error)> {
            let mut a: Appender = session.appender()?;
            while let Some(chunk) = rx.blocking_recv() {
                if let Err(e) = a.write(&chunk) {
                    return Err((a.abandon(), e));
                }
            }
            a.finish()
        });
    let max = app.uploads.max_size;
    let idle = app.limits.body_idle_timeout;
    let mut received = 0u64;
    let mut failure = None;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                failure = Some(ApiError::new(
                    Code::BlobUploadInvalid,
                    format!("no upload data for {} s", idle.as_secs()),
                ));
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                failure = Some(ApiError::new(
                    Code::BlobUploadInvalid,
                    format!("reading the upload: {e}"),
                ));
                break;
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received += data.len() as u64;
        if base + received > max {
            failure = Some(ApiError::new(
                Code::TooLarge,
                format!("upload over the {max}-byte limit (--max-upload-size)"),
            ));
            break;
        }
        if tx.send(data).await.is_err() {
            break; // the writer failed; its error comes back below
        }
    }
    drop(tx);
    app.metrics.received(route, received);
    app.metrics
        .upload_bytes
        .fetch_add(received, Ordering::Relaxed);
    match writer.await.expect("upload writer does not panic") {
        Ok(s) => {
            let over = s.size > max;
            let result = match failure {
                Some(e) => Err(e),
                None if over => Err(ApiError::new(
                    Code::TooLarge,
                    format!("upload over the {max}-byte limit (--max-upload-size)"),
                )),
                None => Ok(()),
            };
            (s, result)
        }
        Err((s, e)) => (
            s,
            Err(ApiError::new(
                Code::Unknown,
                format!("writing the upload: {e}"),
            )),
        ),
    }
}

/// Checks a `Content-Range: <start>-<end>` against the session's size.
fn check_content_range(
    req: &Request<Incoming>,
    repo: &Repo,
    id: &str,
    size: u64,
) -> Result<(), Box<Response<Body>>> {
    let Some(cr) = header_str(req, header::CONTENT_RANGE) else {
        return Ok(());
    };
    let cr = cr
        .trim()
        .trim_start_matches("bytes ")
        .trim_start_matches("bytes=");
    let start = cr
        .split_once('-')
        .and_then(|(a, _)| a.trim().parse::<u64>().ok());
    if start == Some(size) {
        return Ok(());
    }
    // Out of order (or unparsable): 416 with where the upload stands.
    let mut r = session_answer(StatusCode::RANGE_NOT_SATISFIABLE, repo, id, size);
    let e = ApiError::new(
        Code::BlobUploadInvalid,
        format!("Content-Range {cr:?} does not continue the upload at byte {size}"),
    );
    tracing::warn!("upload {id} in {repo}: {e}");
    *r.body_mut() = body::full(e.body());
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(e.body().len()));
    Err(Box::new(r))
}

/// Stores a complete session's content as blob `want` of `repo`.
async fn commit(
    app: &Arc<App>,
    repo: &Repo,
    session: Session,
    want: &OciDigest,
) -> Result<Response<Body>, ApiError> {
    let got = session.digest();
    if got != *want {
        return Err(ApiError::new(
            Code::DigestInvalid,
            format!(
                "upload of {} bytes hashes to {got}, not {want}",
                session.size
            ),
        ));
    }
    let size = session.size;
    let done = session.complete();
    let r2 = repo.clone();
    app.blocking(move |b| b.commit_upload(&r2, done))
        .await
        .map_err(ApiError::from)?;
    // Counted per blob, so a push that reuses layers shows in the log what it really sent.
    tracing::info!("received blob {want} ({size} bytes) in {repo}");
    Ok(created(repo, want))
}

/// `POST /v2/<name>/blobs/uploads/`: a mount, a monolithic upload, or a new session.
pub async fn start(
    app: &Arc<App>,
    ctx: &Ctx,
    repo: &Repo,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if let (Some(mount), Some(from)) = (query(&req, "mount"), query(&req, "from")) {
        let digest = parse_digest(&mount)?;
        // 201 only when the caller may read the source and it has the blob; else 202.
        if let Some(from) = Repo::parse(&from)
            && app.auth.allows(&ctx.caller, from.as_str(), Action::Read)
        {
            let (r2, d2) = (repo.clone(), digest.clone());
            if app
                .blocking(move |b| b.mount(&r2, &from, &d2))
                .await
                .map_err(ApiError::from)?
            {
                tracing::info!("mounted blob {digest} into {repo}");
                return Ok(created(repo, &digest));
            }
        }
    }
    let monolithic = query(&req, "digest")
        .map(|d| parse_digest(&d))
        .transpose()?;
    let id = app.uploads.start(repo).map_err(|e| match e {
        StartError::TooMany => ApiError::new(
            Code::TooManyRequests,
            format!(
                "{} uploads in progress (--max-uploads)",
                app.uploads.max_sessions
            ),
        ),
        StartError::Io(e) => ApiError::new(Code::Unknown, e),
    })?;
    let Some(want) = monolithic else {
        return Ok(session_answer(StatusCode::ACCEPTED, repo, &id, 0));
    };
    let result = finish_with_body(app, ctx, repo, &id, req, &want).await;
    app.uploads.remove(&id);
    result
}

/// Takes session `id` of `repo` out of its slot for the length of a request.
async fn take(
    app: &Arc<App>,
    repo: &Repo,
    id: &str,
) -> Result<(Arc<tokio::sync::Mutex<Option<Session>>>, Session), ApiError> {
    let slot = app.uploads.get(id).ok_or_else(|| unknown_upload(id))?;
    let session = slot.lock().await.take().ok_or_else(|| unknown_upload(id))?;
    if session.repo != *repo {
        *slot.lock().await = Some(session);
        return Err(unknown_upload(id));
    }
    Ok((slot, session))
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`: a chunk (with `Content-Range`) or a stream.
pub async fn patch(
    app: &Arc<App>,
    ctx: &Ctx,
    repo: &Repo,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let (slot, session) = take(app, repo, id).await?;
    if let Err(r) = check_content_range(&req, repo, id, session.size) {
        *slot.lock().await = Some(session);
        return Ok(*r);
    }
    let (session, result) = append(app, ctx.route, session, req.into_body()).await;
    match result {
        Ok(()) => {
            let size = session.size;
            *slot.lock().await = Some(session);
            Ok(session_answer(StatusCode::ACCEPTED, repo, id, size))
        }
        Err(e) if e.code == Code::BlobUploadInvalid => {
            // A client that went away or stalled: keep what arrived, so it can resume.
            *slot.lock().await = Some(session);
            Err(e)
        }
        Err(e) => {
            app.uploads.remove(id);
            Err(e)
        }
    }
}

async fn finish_with_body(
    app: &Arc<App>,
    ctx: &Ctx,
    repo: &Repo,
    id: &str,
    req: Request<Incoming>,
    want: &OciDigest,
) -> Result<Response<Body>, ApiError> {
    let slot = app.uploads.get(id).ok_or_else(|| unknown_upload(id))?;
    let session = slot.lock().await.take().ok_or_else(|| unknown_upload(id))?;
    let (session, result) = append(app, ctx.route, session, req.into_body()).await;
    result?;
    commit(app, repo, session, want).await
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=…`: the last chunk (if any), then the check.
pub async fn finish(
    app: &Arc<App>,
    ctx: &Ctx,
    repo: &Repo,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let want = query(&req, "digest")
        .ok_or_else(|| ApiError::new(Code::DigestInvalid, "PUT without ?digest="))
        .and_then(|d| parse_digest(&d))?;
    let (slot, session) = take(app, repo, id).await?;
    if let Err(r) = check_content_range(&req, repo, id, session.size) {
        *slot.lock().await = Some(session);
        return Ok(*r);
    }
    // The session ends here whatever the outcome: a failed digest check drops it.
    app.uploads.remove(id);
    let (session, result) = append(app, ctx.route, session, req.into_body()).await;
    result?;
    commit(app, repo, session, &want).await
}

/// `GET /v2/<name>/blobs/uploads/<id>`: where the upload stands.
pub async fn status(app: &Arc<App>, repo: &Repo, id: &str) -> Result<Response<Body>, ApiError> {
    let (slot, session) = take(app, repo, id).await?;
    let size = session.size;
    *slot.lock().await = Some(session);
    Ok(session_answer(StatusCode::NO_CONTENT, repo, id, size))
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`: cancel.
pub async fn cancel(app: &Arc<App>, repo: &Repo, id: &str) -> Result<Response<Body>, ApiError> {
    let (_slot, session) = take(app, repo, id).await?;
    app.uploads.remove(id);
    drop(session); // deletes its file
    Ok(body::status(StatusCode::NO_CONTENT))
}

/// `PUT /v2/<name>/manifests/<reference>`.
pub async fn put_manifest(
    app: &Arc<App>,
    _ctx: &Ctx,
    repo: &Repo,
    reference: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let reference = match Reference::parse(reference) {
        Ok(r) => r,
        Err(ReferenceError::Digest(e)) => return Err(ApiError::new(Code::DigestInvalid, e)),
        Err(ReferenceError::Tag) => {
            return Err(ApiError::new(
                Code::TagInvalid,
                format!("{reference:?} is neither a valid tag nor a digest"),
            ));
        }
    };
    if let Reference::Digest(d) = &reference
        && d.alg != cairn_oci::Alg::Sha256
    {
        return Err(ApiError::new(
            Code::DigestInvalid,
            format!("{d}: manifests are addressed by sha256"),
        ));
    }
    let content_type = header_str(&req, header::CONTENT_TYPE).map(str::to_string);
    let bytes = body::read_limited(
        req.into_body(),
        MAX_MANIFEST_BYTES,
        app.limits.body_idle_timeout,
    )
    .await
    .map_err(|e| {
        if e.code == Code::TooLarge {
            ApiError::new(
                Code::ManifestInvalid,
                format!("manifest over the {MAX_MANIFEST_BYTES}-byte limit"),
            )
        } else {
            e
        }
    })?;
    app.metrics.received("manifest", bytes.len() as u64);
    let r2 = repo.clone();
    let ref2 = reference.clone();
    let put = app
        .blocking(move |b| b.put_manifest(&r2, &ref2, &bytes, content_type.as_deref()))
        .await
        .map_err(ApiError::from)?;
    let mut r = body::status(StatusCode::CREATED);
    let h = r.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/v2/{repo}/manifests/{}", put.digest)).expect("ascii"),
    );
    h.insert(
        DIGEST_HEADER,
        HeaderValue::from_str(&put.digest.to_string()).expect("ascii"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    if let Some(s) = put.subject
        && let Ok(v) = HeaderValue::from_str(&s)
    {
        h.insert("oci-subject", v);
    }
    Ok(r)
}

/// `DELETE /v2/<name>/manifests/<reference>`: a tag, or a manifest and every tag naming it.
pub async fn delete_manifest(
    app: &Arc<App>,
    repo: &Repo,
    reference: &str,
) -> Result<Response<Body>, ApiError> {
    let reference = match Reference::parse(reference) {
        Ok(r) => r,
        Err(ReferenceError::Digest(e)) => return Err(ApiError::new(Code::DigestInvalid, e)),
        Err(ReferenceError::Tag) => {
            return Err(ApiError::new(Code::TagInvalid, format!("{reference:?}")));
        }
    };
    let (r2, ref2) = (repo.clone(), reference.clone());
    let removed = app
        .blocking(move |b| b.delete_manifest(&r2, &ref2))
        .await
        .map_err(ApiError::from)?;
    if removed.is_empty() {
        return Err(ApiError::new(
            Code::ManifestUnknown,
            format!("{repo}:{reference}"),
        ));
    }
    tracing::info!("deleted {}", removed.join(", "));
    Ok(body::status(StatusCode::ACCEPTED))
}
