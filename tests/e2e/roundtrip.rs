//! put → get → export → verify on a small tree.

use crate::common::{Env, sample_tree};

#[test]
fn put_get_round_trip_restores_the_tree() {
    let env = Env::new();
    let src = env.path("src");
    sample_tree(&src);
    let id = env.ok(&["put", "app/v1", src.to_str().unwrap()]);
    assert!(id.starts_with("blake3:"), "{id}");
    assert_eq!(env.ok(&["hash", src.to_str().unwrap()]), id);
    let out = env.path("out");
    env.ok(&["get", "app/v1", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(out.join("a/f.txt")).unwrap(), b"hello\n");
    assert_eq!(
        std::fs::read_link(out.join("a/link")).unwrap().to_str(),
        Some("../run.sh")
    );
    assert!(out.join("empty").is_dir());
    // The restored tree hashes to the same id.
    assert_eq!(env.ok(&["hash", out.to_str().unwrap()]), id);
}
