//! End-to-end tests: each runs the real `cairn` binary against a temporary store.

mod common;
mod roundtrip;
