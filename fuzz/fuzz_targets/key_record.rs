//! JSON records and keys from untrusted sources: no panic, stable round trips, and every
//! accepted key obeys the documented rules.
#![no_main]

use cairn_remote::RemoteRecord;
use cairn_store::{Key, KeyRecord, MAX_KEY_LEN};
use libfuzzer_sys::fuzz_target;

fn round_trips<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = serde_json::from_slice::<T>(data) {
        let text = serde_json::to_vec(&v).expect("a parsed record must serialize");
        let back: T = serde_json::from_slice(&text).unwrap_or_else(|e| {
            panic!(
                "re-serialized record does not parse: {e}\n{}",
                String::from_utf8_lossy(&text)
            )
        });
        assert_eq!(back, v, "record changed in a JSON round trip");
    }
}

fn check_key(s: &str) {
    let Ok(key) = Key::new(s) else {
        return;
    };
    assert_eq!(key.as_str(), s);
    assert!(!s.is_empty() && s.len() <= MAX_KEY_LEN, "{s:?}: bad length");
    for seg in s.split('/') {
        assert!(!seg.is_empty(), "{s:?}: empty segment");
        assert!(seg != "." && seg != "..", "{s:?}: dot segment");
        assert!(
            seg.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._@+=:-".contains(&b)),
            "{s:?}: character outside [A-Za-z0-9._@+=:-]"
        );
    }
    // Keys travel as JSON strings too; the serde path must agree with `Key::new`.
    let json = serde_json::to_string(&key).unwrap();
    let back: Key = serde_json::from_str(&json).expect("an accepted key must deserialize");
    assert_eq!(back, key);
}

fuzz_target!(|data: &[u8]| {
    round_trips::<RemoteRecord>(data);
    round_trips::<KeyRecord>(data);
    if let Ok(s) = std::str::from_utf8(data) {
        check_key(s);
        // Also each line alone, so JSON seeds double as key seeds.
        for line in s.lines() {
            check_key(line);
        }
    } else {
        check_key(&String::from_utf8_lossy(data));
    }
    // The serde path must reject exactly what `Key::new` rejects.
    if let Ok(k) = serde_json::from_slice::<Key>(data) {
        assert!(Key::new(k.as_str()).is_ok());
    }
});
