//! End-to-end tests: each runs the real `cairn` binary against a temporary store.

mod bad_input;
mod common;
mod concurrency;
mod crash;
mod deep_remote;
mod docs;
mod features;
mod full_disk;
mod hostile_archive;
mod hostile_table;
mod lifecycle;
mod link;
mod oci;
mod oci_extract;
mod real_tools;
mod records;
mod remote;
mod repack;
mod roundtrip;
mod serve;
mod serve_daemons;
mod tools;
