//! Request paths → routes. Repository names hold `/`, so a path is split at the last of the
//! fixed words (`manifests`, `blobs`, `tags`, `referrers`) that ends it; names are checked by
//! [`Repo::parse`], which admits no `.`/`..` component, no `%` and no leading `/`, so no route
//! can name anything outside its repository.

use crate::names::Repo;

/// Prefix of the team cache (the store's remote layout, read-only).
pub const CACHE_PREFIX: &str = "/cache/";

/// What a request path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/tags/list`.
    Tags(Repo),
    /// `/v2/<name>/manifests/<reference>`.
    Manifest(Repo, String),
    /// `/v2/<name>/blobs/<digest>`.
    Blob(Repo, String),
    /// `/v2/<name>/blobs/uploads/`.
    UploadStart(Repo),
    /// `/v2/<name>/blobs/uploads/<id>`.
    Upload(Repo, String),
    /// `/v2/<name>/referrers/<digest>`.
    Referrers(Repo, String),
    /// `/health`.
    Health,
    /// `/metrics`.
    Metrics,
    /// `/cache/<path>`.
    Cache(String),
    /// A registry path whose repository name is invalid.
    BadName(String),
    /// Anything else.
    NotFound,
}

impl Route {
    /// A short name for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Tags(_) => "tags",
            Route::Manifest(..) => "manifest",
            Route::Blob(..) => "blob",
            Route::UploadStart(_) | Route::Upload(..) => "upload",
            Route::Referrers(..) => "referrers",
            Route::Health => "health",
            Route::Metrics => "metrics",
            Route::Cache(_) => "cache",
            Route::BadName(_) | Route::NotFound => "other",
        }
    }

    /// The repository the route is about, if any.
    pub fn repo(&self) -> Option<&Repo> {
        match self {
            Route::Tags(r)
            | Route::Manifest(r, _)
            | Route::Blob(r, _)
            | Route::UploadStart(r)
            | Route::Upload(r, _)
            | Route::Referrers(r, _) => Some(r),
            _ => None,
        }
    }
}

fn named(name: &str, make: impl FnOnce(Repo) -> Route) -> Route {
    match Repo::parse(name) {
        Some(r) => make(r),
        None => Route::BadName(name.to_string()),
    }
}

/// Routes a request path (without its query).
pub fn route(path: &str) -> Route {
    match path {
        "/v2" | "/v2/" => return Route::Base,
        "/v2/_catalog" => return Route::Catalog,
        "/health" => return Route::Health,
        "/metrics" => return Route::Metrics,
        _ => {}
    }
    if let Some(rest) = path.strip_prefix(CACHE_PREFIX) {
        return Route::Cache(rest.to_string());
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Route::NotFound;
    };
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return named(name, Route::Tags);
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return named(name, Route::UploadStart);
    }
    for (word, make) in [
        (
            "/blobs/uploads/",
            Route::Upload as fn(Repo, String) -> Route,
        ),
        ("/manifests/", Route::Manifest),
        ("/referrers/", Route::Referrers),
        ("/blobs/", Route::Blob),
    ] {
        if let Some((name, last)) = rest.rsplit_once(word)
            && !last.is_empty()
            && !last.contains('/')
        {
            return named(name, |r| make(r, last.to_string()));
        }
    }
    Route::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> Repo {
        Repo::parse(s).unwrap()
    }

    #[test]
    fn routes() {
        assert_eq!(route("/v2/"), Route::Base);
        assert_eq!(route("/v2"), Route::Base);
        assert_eq!(route("/v2/a/b/tags/list"), Route::Tags(repo("a/b")));
        assert_eq!(
            route("/v2/a/manifests/latest"),
            Route::Manifest(repo("a"), "latest".into())
        );
        assert_eq!(
            route("/v2/blobs/blobs/sha256:00"),
            Route::Blob(repo("blobs"), "sha256:00".into())
        );
        assert_eq!(route("/v2/a/blobs/uploads/"), Route::UploadStart(repo("a")));
        assert_eq!(
            route("/v2/a/blobs/uploads/xyz"),
            Route::Upload(repo("a"), "xyz".into())
        );
        assert_eq!(
            route("/v2/a/referrers/sha256:00"),
            Route::Referrers(repo("a"), "sha256:00".into())
        );
        assert_eq!(
            route("/cache/keys/a.key"),
            Route::Cache("keys/a.key".into())
        );
        assert!(matches!(route("/v2/../etc/manifests/x"), Route::BadName(_)));
        assert!(matches!(route("/v2/%2e%2e/manifests/x"), Route::BadName(_)));
        assert!(matches!(route("/v2//abs/manifests/x"), Route::BadName(_)));
        assert_eq!(route("/v2/a/manifests/"), Route::NotFound);
        assert_eq!(route("/etc/passwd"), Route::NotFound);
    }
}
