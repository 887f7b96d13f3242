//! `Accept` negotiation for manifests: the media types a client lists, over any number of
//! headers, each a comma-separated list with optional parameters (`q=` is ignored: a type is
//! either acceptable or not).

/// Whether a client with these `Accept` header values takes a manifest of `media_type`. No
/// header, `*/*` or `application/*` take anything.
pub fn accepts<'a>(headers: impl IntoIterator<Item = &'a str>, media_type: &str) -> bool {
    let mut any_header = false;
    for h in headers {
        for item in h.split(',') {
            let t = item.split(';').next().unwrap_or("").trim();
            if t.is_empty() {
                continue;
            }
            any_header = true;
            if t == "*/*" || t == "application/*" || t.eq_ignore_ascii_case(media_type) {
                return true;
            }
        }
    }
    !any_header
}

#[cfg(test)]
mod tests {
    use super::*;

    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
    const DOCKER: &str = "application/vnd.docker.distribution.manifest.v2+json";

    #[test]
    fn negotiation() {
        assert!(accepts([], OCI));
        assert!(accepts([""], OCI));
        assert!(accepts(["*/*"], OCI));
        assert!(accepts([&format!("{DOCKER}, {OCI};q=0.5")[..]], OCI));
        assert!(accepts([DOCKER, OCI], OCI));
        assert!(!accepts([DOCKER], OCI));
        assert!(!accepts(["text/plain", DOCKER], OCI));
        assert!(accepts(["application/*;q=0.1"], OCI));
    }
}
