//! `GET`/`HEAD /cache/<path>`: the team cache, the store's remote layout served read-only for
//! other cairns' `http://` remotes (object_store's HTTP client: whole files and ranges).

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::body::{self, Body};
use super::range::{self, Ranged};
use super::{App, Ctx, header_str};
use crate::auth::Action;
use crate::error::{ApiError, Code};

/// Answers a team-cache request.
pub async fn file(
    app: &Arc<App>,
    ctx: &Ctx,
    path: &str,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    // Key records are checked against the caller's scopes by key name; packs and blobs are
    // content-addressed (unguessable without a record naming them).
    match path
        .strip_prefix("keys/")
        .and_then(|k| k.strip_suffix(".key"))
    {
        Some(key) => app.check(&ctx.caller, key, Action::Read)?,
        None if app.auth.any_access(&ctx.caller) => {}
        None => return Err(ApiError::new(Code::Unauthorized, "a token is required")),
    }
    let p = path.to_string();
    let found = app
        .blocking(move |b| b.cache_file(&p))
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::new(Code::BlobUnknown, format!("team cache has no {path}")))?;
    let len = found.len;
    let (start, end, status) = match range::parse(header_str(req, header::RANGE), len) {
        Ranged::Whole => (0, len.saturating_sub(1), StatusCode::OK),
        Ranged::Part { start, end } => (start, end, StatusCode::PARTIAL_CONTENT),
        Ranged::Unsatisfiable => {
            let mut r = body::status(StatusCode::RANGE_NOT_SATISFIABLE);
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"),
            );
            return Ok(r);
        }
    };
    let n = if len == 0 { 0 } else { end - start + 1 };
    let body = if req.method() == Method::HEAD || n == 0 {
        body::empty()
    } else {
        let mut f = std::fs::File::open(&found.path)
            .map_err(|e| ApiError::new(Code::Unknown, format!("{}: {e}", found.path.display())))?;
        f.seek(SeekFrom::Start(start))
            .map_err(|e| ApiError::new(Code::Unknown, format!("{}: {e}", found.path.display())))?;
        let app2 = app.clone();
        let route = ctx.route;
        let shown = found.path.display().to_string();
        body::stream(
            Box::new(f.take(n)),
            0,
            n - 1,
            app.limits.body_idle_timeout,
            move |e| tracing::error!("{shown}: {e}"),
            move |k| app2.metrics.sent(route, k),
        )
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")).expect("ascii"),
        );
    }
    Ok(r)
}
