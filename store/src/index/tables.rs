//! The redb tables and the fixed-size forms of their rows (byte-exact in `docs/format.md`,
//! "redb tables"). Only the `index` module opens them.

use redb::TableDefinition;

/// Key name → JSON [`crate::KeyRecord`].
pub(super) const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
/// (key name, sequence number) → JSON [`crate::LogEntry`].
pub(super) const KEY_LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("key_log");
/// Blob id → (content size, stored size, encoding code).
pub(super) const BLOBS: TableDefinition<&[u8; 32], (u64, u64, u8)> = TableDefinition::new("blobs");
/// Tree id → canonical tree encoding.
pub(super) const TREES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("trees");
/// Blob id → (pack id, offset of its stored bytes) for blobs kept in a pack file; a blob with
/// no row here has a file of its own.
pub(super) const PACKED: TableDefinition<&[u8; 32], (u128, u64)> = TableDefinition::new("packed");
/// (namespace, source blob id) → (tree id, payload): a tree derived from a blob by a caller of
/// the library (say, the files listed by an archive blob), kept as long as its source blob is.
pub(super) const DERIVED: TableDefinition<DerivedKey, DerivedValue> =
    TableDefinition::new("derived");
/// A `derived` key: (namespace, source blob id).
pub(super) type DerivedKey = (&'static str, &'static [u8; 32]);
/// A `derived` value: (tree id, payload).
pub(super) type DerivedValue = (&'static [u8; 32], &'static [u8]);
/// Alias (an external name of some content, such as another hash of it) → blob id; dropped
/// with its blob.
pub(super) const ALIASES: TableDefinition<&str, &[u8; 32]> = TableDefinition::new("aliases");
/// Key name → when it was last read (`get`, `cat`, `export`, `oci extract`, served), seconds
/// since the epoch; written at most once per key per [`crate::USAGE_RESOLUTION`].
pub(super) const USAGE: TableDefinition<&str, u64> = TableDefinition::new("usage");
/// Pin name → JSON [`crate::Pin`]: a root (or a key) gc keeps and eviction skips until the pin
/// expires (temporary roots).
pub(super) const PINS: TableDefinition<&str, &[u8]> = TableDefinition::new("pins");
/// (blob id, variant name) → (size, mtime seconds, mtime nanoseconds, inode): a checkout
/// object (`checkouts/`), recorded once it is complete, verified and durable, with what its
/// `lstat` showed then (a file that no longer shows it was modified and is replaced).
pub(super) const CHECKOUTS: TableDefinition<CheckoutKey, CheckoutRow> =
    TableDefinition::new("checkouts");
/// A `checkouts` key: (blob id, variant name).
pub(super) type CheckoutKey = (&'static [u8; 32], &'static str);
/// A `checkouts` value: (size, mtime seconds, mtime nanoseconds, inode).
pub(crate) type CheckoutRow = (u64, i64, u32, u64);
/// Store-wide settings, such as the layout version.
pub(super) const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// Names of every table of the current layout; an upgrade drops any other table (a cache or
/// index an older layout kept, which the new one rebuilds on demand).
pub(super) const ALL: [&str; 11] = [
    "keys",
    "key_log",
    "blobs",
    "trees",
    "packed",
    "derived",
    "aliases",
    "usage",
    "pins",
    "checkouts",
    "meta",
];
