//! The pull side: manifests and blobs by tag and digest (GET and HEAD), ranges, tags, the
//! catalog and referrers.

use std::io::Read;
use std::sync::Arc;

use cairn_oci::OciDigest;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::body::{self, Body};
use super::range::{self, Ranged};
use super::{App, Ctx, accept, header_str, query};
use crate::auth::Action;
use crate::backend::BlobInfo;
use crate::error::{ApiError, Code};
use crate::names::{Reference, ReferenceError, Repo};

/// Blobs up to this size are read (and verified) whole before the answer starts, so a corrupt
/// one is a 500; larger ones stream, verified as they go (see [`body::stream`]), after a
/// first full check per blob file that the backend remembers.
pub const IN_MEMORY_MAX: u64 = 4 * 1024 * 1024;
/// Default page size of `tags/list` and `_catalog` when `n` is not given (the whole list).
const NO_LIMIT: usize = usize::MAX;

/// The `Docker-Content-Digest` header name.
pub const DIGEST_HEADER: &str = "docker-content-digest";

pub(super) fn parse_digest(s: &str) -> Result<OciDigest, ApiError> {
    OciDigest::parse(s).map_err(|e| ApiError::new(Code::DigestInvalid, e))
}

fn etag(d: &OciDigest) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{d}\"")).expect("ascii")
}

/// Whether `If-None-Match` names `d` (quoted or not, in a list, or `*`).
fn not_modified(req: &Request<Incoming>, d: &OciDigest) -> bool {
    let want = d.to_string();
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == want || t == "*")
}

fn content_headers(r: &mut Response<Body>, d: &OciDigest, media_type: &str, len: u64) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(media_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        DIGEST_HEADER,
        HeaderValue::from_str(&d.to_string()).expect("ascii"),
    );
    h.insert(header::ETAG, etag(d));
}

fn not_modified_answer(d: &OciDigest) -> Response<Body> {
    let mut r = body::status(StatusCode::NOT_MODIFIED);
    r.headers_mut().insert(header::ETAG, etag(d));
    r.headers_mut().insert(
        DIGEST_HEADER,
        HeaderValue::from_str(&d.to_string()).expect("ascii"),
    );
    r
}

/// `GET`/`HEAD /v2/<name>/manifests/<reference>`.
pub async fn manifest(
    app: &Arc<App>,
    _ctx: &Ctx,
    repo: &Repo,
    reference: &str,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let reference = match Reference::parse(reference) {
        Ok(r) => r,
        Err(ReferenceError::Digest(e)) => return Err(ApiError::new(Code::DigestInvalid, e)),
        Err(ReferenceError::Tag) => {
            return Err(ApiError::new(
                Code::ManifestUnknown,
                format!("{reference:?} is neither a tag nor a digest"),
            ));
        }
    };
    let (r2, ref2) = (repo.clone(), reference.clone());
    let hit = app
        .blocking(move |b| b.manifest(&r2, &ref2))
        .await
        .map_err(ApiError::from)?;
    let accepts = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok());
    if !accept::accepts(accepts, &hit.media_type) {
        return Err(ApiError::new(
            Code::ManifestUnknown,
            format!(
                "{repo}:{reference} is a {}, which the Accept header does not list",
                hit.media_type
            ),
        ));
    }
    if not_modified(req, &hit.digest) {
        return Ok(not_modified_answer(&hit.digest));
    }
    let len = hit.bytes.len() as u64;
    let body = if req.method() == Method::HEAD {
        body::empty()
    } else {
        app.metrics.sent("manifest", len);
        body::full(hit.bytes)
    };
    let mut r = Response::new(body);
    content_headers(&mut r, &hit.digest, &hit.media_type, len);
    Ok(r)
}

/// `GET`/`HEAD /v2/<name>/blobs/<digest>`.
pub async fn blob(
    app: &Arc<App>,
    ctx: &Ctx,
    repo: &Repo,
    digest: &str,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let digest = parse_digest(digest)?;
    let (r2, d2) = (repo.clone(), digest.clone());
    let info = app
        .blocking(move |b| b.blob(&r2, &d2))
        .await
        .map_err(ApiError::from)?;
    if not_modified(req, &digest) {
        return Ok(not_modified_answer(&digest));
    }
    let size = info.size;
    let (start, end, status) = match range::parse(header_str(req, header::RANGE), size) {
        Ranged::Whole => (0, size.saturating_sub(1), StatusCode::OK),
        Ranged::Part { start, end } => (start, end, StatusCode::PARTIAL_CONTENT),
        Ranged::Unsatisfiable => {
            let mut r = body::error(&ApiError::new(
                Code::RangeInvalid,
                format!("range outside the {size} bytes of {digest}"),
            ));
            *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
            );
            return Ok(r);
        }
    };
    let len = if size == 0 { 0 } else { end - start + 1 };
    let body = if req.method() == Method::HEAD || len == 0 {
        body::empty()
    } else {
        blob_body(app, ctx.route, info, start, end).await?
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    content_headers(&mut r, &digest, "application/octet-stream", len);
    r.headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        r.headers_mut().insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")).expect("ascii"),
        );
    }
    Ok(r)
}

fn corrupt(info: &BlobInfo, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        Code::Unknown,
        format!("blob {} failed its integrity check: {e}", info.digest),
    )
}

/// The body of bytes `start..=end` of a blob: read whole and checked first if small, else
/// streamed (checked whole once per blob file before its first stream).
async fn blob_body(
    app: &Arc<App>,
    route: &'static str,
    info: BlobInfo,
    start: u64,
    end: u64,
) -> Result<Body, ApiError> {
    if info.size <= IN_MEMORY_MAX {
        let i2 = info.clone();
        let bytes = app
            .blocking(move |b| -> Result<Vec<u8>, ApiError> {
                let (mut r, _) = b.open_blob(&i2).map_err(ApiError::from)?;
                let mut out = Vec::with_capacity(i2.size as usize);
                r.read_to_end(&mut out).map_err(|e| corrupt(&i2, e))?;
                Ok(out)
            })
            .await?;
        let part = bytes::Bytes::from(bytes).slice(start as usize..=end as usize);
        app.metrics.sent(route, part.len() as u64);
        return Ok(body::full(part));
    }
    let i2 = info.clone();
    let reader = app
        .blocking(move |b| -> Result<Box<dyn Read + Send>, ApiError> {
            let (r, verified) = b.open_blob(&i2).map_err(ApiError::from)?;
            if verified {
                return Ok(r);
            }
            drop(r);
            b.verify_blob(&i2).map_err(|e| corrupt(&i2, e))?;
            Ok(b.open_blob(&i2).map_err(ApiError::from)?.0)
        })
        .await?;
    let digest = info.digest.clone();
    let app2 = app.clone();
    let app3 = app.clone();
    Ok(body::stream(
        reader,
        start,
        end,
        app.limits.body_idle_timeout,
        move |e| {
            app2.metrics.error(route, Code::Unknown.as_str());
            tracing::error!("blob {digest}: aborted the answer: {e}");
        },
        move |n| app3.metrics.sent(route, n),
    ))
}

/// `n` and `last` of a paginated list.
fn page(req: &Request<Incoming>) -> (usize, Option<String>) {
    let n = query(req, "n")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(NO_LIMIT);
    (n, query(req, "last").filter(|l| !l.is_empty()))
}

/// The page of `all` (sorted) after `last`, and whether more follow.
fn paginate(all: Vec<String>, n: usize, last: Option<&str>) -> (Vec<String>, bool) {
    let rest: Vec<String> = all
        .into_iter()
        .filter(|t| last.is_none_or(|l| t.as_str() > l))
        .collect();
    let more = rest.len() > n;
    (rest.into_iter().take(n).collect(), more)
}

fn json(v: &serde_json::Value, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(body::full(serde_json::to_vec(v).expect("json")));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn link(r: &mut Response<Body>, base: &str, n: usize, last: &str) {
    let v = format!("<{base}?n={n}&last={last}>; rel=\"next\"");
    if let Ok(v) = HeaderValue::from_str(&v) {
        r.headers_mut().insert(header::LINK, v);
    }
}

/// `GET /v2/<name>/tags/list`.
pub async fn tags(
    app: &Arc<App>,
    repo: &Repo,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let r2 = repo.clone();
    let all = app
        .blocking(move |b| b.tags(&r2))
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::new(Code::NameUnknown, format!("repository {repo}")))?;
    let (n, last) = page(req);
    let (tags, more) = paginate(all, n, last.as_deref());
    let mut r = json(
        &serde_json::json!({"name": repo.as_str(), "tags": tags}),
        "application/json",
    );
    if more && let Some(l) = tags.last() {
        link(&mut r, &format!("/v2/{repo}/tags/list"), n, l);
    }
    Ok(r)
}

/// `GET /v2/_catalog`: the repositories the caller may read.
pub async fn catalog(
    app: &Arc<App>,
    ctx: &Ctx,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let all: Vec<String> = app
        .blocking(|b| b.repositories())
        .await
        .map_err(ApiError::from)?
        .into_iter()
        .filter(|r| app.auth.allows(&ctx.caller, r, Action::Read))
        .collect();
    let (n, last) = page(req);
    let (repos, more) = paginate(all, n, last.as_deref());
    let mut r = json(
        &serde_json::json!({ "repositories": repos }),
        "application/json",
    );
    if more && let Some(l) = repos.last() {
        link(&mut r, "/v2/_catalog", n, l);
    }
    Ok(r)
}

/// `GET /v2/<name>/referrers/<digest>[?artifactType=…]`.
pub async fn referrers(
    app: &Arc<App>,
    repo: &Repo,
    digest: &str,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let digest = parse_digest(digest)?;
    let (r2, d2) = (repo.clone(), digest.clone());
    let mut found = app
        .blocking(move |b| b.referrers(&r2, &d2))
        .await
        .map_err(ApiError::from)?;
    let filter = query(req, "artifactType").filter(|a| !a.is_empty());
    if let Some(a) = &filter {
        found.retain(|d| d.artifact_type.as_deref() == Some(a.as_str()));
    }
    let mut r = json(
        &serde_json::json!({
            "schemaVersion": 2,
            "mediaType": cairn_oci::media::OCI_INDEX,
            "manifests": found,
        }),
        cairn_oci::media::OCI_INDEX,
    );
    if filter.is_some() {
        r.headers_mut().insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination() {
        let all: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            paginate(all.clone(), 2, None),
            (vec!["a".into(), "b".into()], true)
        );
        assert_eq!(
            paginate(all.clone(), 2, Some("b")),
            (vec!["c".into(), "d".into()], false)
        );
        assert_eq!(paginate(all.clone(), 0, None), (vec![], true));
        assert_eq!(paginate(all, NO_LIMIT, Some("d")), (vec![], false));
    }
}
