//! The HTTP side: routing, access checks, metrics and the log line of every error; the
//! handlers of each part of the API live in the submodules.

pub mod accept;
pub mod body;
mod cache;
mod pull;
mod push;
pub mod range;
pub mod router;

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::auth::{Action, Auth, Caller};
use crate::backend::Backend;
use crate::config::Limits;
use crate::error::{ApiError, Code};
use crate::metrics::Metrics;
use crate::uploads::Uploads;
use body::Body;
use router::Route;

/// The API version header every `/v2/` answer carries.
pub const API_VERSION: (&str, &str) = ("docker-distribution-api-version", "registry/2.0");
/// The realm of `WWW-Authenticate` challenges.
const REALM: &str = "cairn";

/// Everything a request handler needs.
pub struct App {
    /// The store.
    pub backend: Arc<dyn Backend>,
    /// Upload sessions.
    pub uploads: Uploads,
    /// Access policy.
    pub auth: Auth,
    /// Counters.
    pub metrics: Metrics,
    /// Refuse every write.
    pub read_only: bool,
    /// Size and time limits.
    pub limits: Limits,
}

/// One request, as the handlers see it.
pub struct Ctx {
    /// The route label, for metrics.
    pub route: &'static str,
    /// Who is asking.
    pub caller: Caller,
}

impl App {
    /// Runs a blocking backend call on tokio's blocking pool.
    pub async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&dyn Backend) -> T + Send + 'static,
    ) -> T {
        let app = self.clone();
        tokio::task::spawn_blocking(move || f(app.backend.as_ref()))
            .await
            .expect("backend calls do not panic")
    }

    fn action(method: &Method) -> Action {
        match *method {
            Method::GET | Method::HEAD => Action::Read,
            Method::DELETE => Action::Delete,
            _ => Action::Write,
        }
    }

    /// Checks that `caller` may do `action` on `name`.
    pub fn check(&self, caller: &Caller, name: &str, action: Action) -> Result<(), ApiError> {
        if action != Action::Read && self.read_only {
            return Err(ApiError::new(
                Code::Unsupported,
                "the registry is read-only (cairn serve --read-only)",
            ));
        }
        if self.auth.allows(caller, name, action) {
            return Ok(());
        }
        let what = match action {
            Action::Read => "read",
            Action::Write => "write",
            Action::Delete => "delete",
        };
        Err(match caller {
            Caller::Anonymous => {
                ApiError::new(Code::Unauthorized, format!("{what} access to {name}"))
            }
            Caller::Token(t) => {
                ApiError::new(Code::Denied, format!("token {t:?} may not {what} {name}"))
            }
        })
    }
}

/// Answers one request.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = router::route(&path);
    let label = route.label();
    let auth_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    let result = match app.auth.identify(auth_header.as_deref()) {
        Err(_) => Err(ApiError::new(Code::Unauthorized, "invalid credentials")),
        Ok(caller) => {
            let ctx = Ctx {
                route: label,
                caller,
            };
            dispatch(&app, &ctx, route, req).await
        }
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            app.metrics.error(label, e.code.as_str());
            // One line per refused request; credentials are never part of it.
            if e.code.status().is_server_error() {
                tracing::error!("{method} {path}: {e}");
            } else {
                tracing::warn!("{method} {path}: {e}");
            }
            let mut r = body::error(&e);
            if e.code == Code::Unauthorized {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_str(&format!("Basic realm=\"{REALM}\""))
                        .expect("ascii header"),
                );
            }
            if method == Method::HEAD {
                // As distribution does: the length of the error body a GET would get.
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(e.body().len()));
                *r.body_mut() = body::empty();
            }
            r
        }
    };
    if path.starts_with("/v2") {
        resp.headers_mut()
            .insert(API_VERSION.0, HeaderValue::from_static(API_VERSION.1));
    }
    let status = resp.status().as_u16();
    app.metrics.request(label, method.as_str(), status);
    tracing::debug!(
        "{method} {path} {status} {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    resp
}

async fn dispatch(
    app: &Arc<App>,
    ctx: &Ctx,
    route: Route,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let action = App::action(&method);
    if let Some(repo) = route.repo() {
        app.check(&ctx.caller, repo.as_str(), action)?;
    }
    match (route, method) {
        (Route::Health, Method::GET | Method::HEAD) => Ok(text(StatusCode::OK, "ok\n")),
        (Route::Metrics, Method::GET) => {
            Ok(text(StatusCode::OK, app.metrics.render(app.uploads.len())))
        }
        (Route::Base, Method::GET | Method::HEAD) => {
            // With a tokens file, 200 only for a valid token: an anonymous ping gets the Basic
            // challenge, so clients holding credentials learn to send them (and `docker login`
            // checks them); anonymous clients go on without, within the anonymous scopes.
            let ok = match &ctx.caller {
                Caller::Token(_) => true,
                Caller::Anonymous => !app.auth.has_tokens(),
            };
            if ok {
                let mut r = body::full("{}");
                if req.method() == Method::HEAD {
                    r = body::empty();
                }
                let mut resp = Response::new(r);
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Ok(resp)
            } else {
                Err(ApiError::new(Code::Unauthorized, "a token is required"))
            }
        }
        (Route::Catalog, Method::GET) => pull::catalog(app, ctx, &req).await,
        (Route::Tags(repo), Method::GET) => pull::tags(app, &repo, &req).await,
        (Route::Manifest(repo, r), Method::GET | Method::HEAD) => {
            pull::manifest(app, ctx, &repo, &r, &req).await
        }
        (Route::Manifest(repo, r), Method::PUT) => {
            push::put_manifest(app, ctx, &repo, &r, req).await
        }
        (Route::Manifest(repo, r), Method::DELETE) => push::delete_manifest(app, &repo, &r).await,
        (Route::Blob(repo, d), Method::GET | Method::HEAD) => {
            pull::blob(app, ctx, &repo, &d, &req).await
        }
        (Route::Blob(..), Method::DELETE) => Err(ApiError::new(
            Code::Unsupported,
            "blob deletion is not offered: remove the images that hold it and run cairn gc",
        )),
        (Route::Referrers(repo, d), Method::GET) => pull::referrers(app, &repo, &d, &req).await,
        (Route::UploadStart(repo), Method::POST) => push::start(app, ctx, &repo, req).await,
        (Route::Upload(repo, id), Method::PATCH) => push::patch(app, ctx, &repo, &id, req).await,
        (Route::Upload(repo, id), Method::PUT) => push::finish(app, ctx, &repo, &id, req).await,
        (Route::Upload(repo, id), Method::GET) => push::status(app, &repo, &id).await,
        (Route::Upload(repo, id), Method::DELETE) => push::cancel(app, &repo, &id).await,
        (Route::Cache(path), Method::GET | Method::HEAD) => {
            cache::file(app, ctx, &path, &req).await
        }
        (Route::BadName(name), _) => Err(ApiError::new(
            Code::NameInvalid,
            format!("invalid repository name {name:?}"),
        )),
        (Route::NotFound, _) => Err(ApiError::new(Code::NameUnknown, "no such route")),
        (_, m) => Err(ApiError::new(
            Code::Unsupported,
            format!("method {m} is not supported here"),
        )),
    }
}

fn text(status: StatusCode, s: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(body::full(s.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// A header's value as text, if present and valid.
pub fn header_str(req: &Request<Incoming>, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The query parameter `name`, percent-decoded.
pub fn query(req: &Request<Incoming>, name: &str) -> Option<String> {
    let q = req.uri().query()?;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding() {
        assert_eq!(super::percent_decode("sha256%3Aab"), "sha256:ab");
        assert_eq!(super::percent_decode("a%2"), "a%2");
        assert_eq!(super::percent_decode("%zz"), "%zz");
    }
}
