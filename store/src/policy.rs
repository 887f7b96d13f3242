//! Retention policies: which keys to remove, by rules over their names, ages, last uses and
//! sizes. Pure decisions over [`KeyInfo`]s, so the same rules apply to the local store
//! (`cairn gc --policy`) and to a remote (`cairn remote gc`).
//!
//! Each key is governed by the first rule whose pattern matches it (keys no rule matches are
//! kept). Within a rule, keys are grouped by *prefix*: the key up to and including its last
//! `/` (`app/main/abc` is in `app/main/`). A rule removes:
//! - `max-age-unused`: keys not used for longer than that (last use: the last recorded read,
//!   else the creation);
//! - `keep-last N`: all but the N newest keys (by creation) of each prefix;
//! - `max-size`: when the rule's keys together exceed it, least recently used keys until they
//!   hold at most [`SIZE_TARGET_PERCENT`] of it; first sparing the newest key of each prefix,
//!   then, if that is not enough, those too (the final tier, so a cap is always reached).
//!
//! The newest key of each prefix is kept by the first two rules (so `get --fallback PREFIX`
//! keeps finding something) unless the rule says `keep-newest = false`. Pinned keys are never
//! removed.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::key::Key;

/// A size cap is enforced down to this share of it, so that the next write does not trigger
/// another round at once.
pub const SIZE_TARGET_PERCENT: u64 = 90;

/// One rule of a retention policy (`[[retention]]` in the configuration).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Rule {
    /// Which keys: a glob (`*` within a segment, `**` across segments, `?` one character) if
    /// it holds `*` or `?`, else a prefix.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Remove keys unused for longer than this (`30s`, `15m`, `12h`, `7d`, `2w`).
    #[serde(
        default,
        deserialize_with = "de_duration",
        serialize_with = "ser_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age_unused: Option<Duration>,
    /// Keep only this many newest keys of each prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<usize>,
    /// Cap on the total size of the keys this rule governs (`500M`, `10G`).
    #[serde(
        default,
        deserialize_with = "de_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_size: Option<u64>,
    /// Keep the newest key of each prefix whatever `max-age-unused` and `keep-last` say.
    #[serde(default = "yes")]
    pub keep_newest: bool,
}

fn yes() -> bool {
    true
}

/// What a policy knows of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key.
    pub key: Key,
    /// When it was bound, seconds since the epoch.
    pub created: u64,
    /// When it was last used (at least `created`).
    pub last_used: u64,
    /// Its size, in bytes (the record's content size).
    pub size: u64,
    /// A pin holds it: never removed.
    pub pinned: bool,
}

/// Why a policy removes a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Unused for longer than the rule's `max-age-unused`.
    MaxAgeUnused,
    /// Beyond the rule's `keep-last` newest of its prefix.
    KeepLast,
    /// Least recently used while the rule's keys exceed its `max-size`.
    MaxSize,
    /// Least recently used while the store exceeds its size cap or lacks free space.
    StoreSize,
}

/// A key a policy removes, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Removal {
    /// The key.
    pub key: Key,
    /// Why.
    pub reason: Reason,
    /// Its size (the record's).
    pub size: u64,
}

/// The prefix a key is grouped under: up to and including its last `/` (empty for a key
/// without one).
pub fn prefix_of(key: &str) -> &str {
    key.rfind('/').map_or("", |i| &key[..=i])
}

/// Whether `pattern` (a glob or a prefix, see [`Rule::pattern`]) matches `key`.
pub fn matches(pattern: &str, key: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        return key.starts_with(pattern);
    }
    glob(pattern.as_bytes(), key.as_bytes())
}

/// Glob matching: `**` any run of bytes, `*` any run without `/`, `?` one byte but `/`.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') if p.get(1) == Some(&b'*') => {
            let rest = &p[2..];
            (0..=s.len()).any(|i| glob(rest, &s[i..]))
        }
        Some(b'*') => {
            let rest = &p[1..];
            let limit = s.iter().position(|&c| c == b'/').unwrap_or(s.len());
            (0..=limit).any(|i| glob(rest, &s[i..]))
        }
        Some(b'?') => !s.is_empty() && s[0] != b'/' && glob(&p[1..], &s[1..]),
        Some(&c) => s.first() == Some(&c) && glob(&p[1..], &s[1..]),
    }
}

/// The keys `rules` remove from `keys` at time `now` (each key once, with the first reason
/// that removes it).
pub fn apply(rules: &[Rule], keys: &[KeyInfo], now: u64) -> Vec<Removal> {
    let mut governed: Vec<Vec<&KeyInfo>> = vec![Vec::new(); rules.len()];
    for k in keys {
        if let Some(i) = rules
            .iter()
            .position(|r| matches(&r.pattern, k.key.as_str()))
        {
            governed[i].push(k);
        }
    }
    let mut out = Vec::new();
    for (rule, keys) in rules.iter().zip(governed) {
        out.extend(apply_rule(rule, &keys, now));
    }
    out
}

/// The newest key of each prefix (by creation, then name).
fn newest_of_prefixes<'a>(keys: &[&'a KeyInfo]) -> HashSet<&'a str> {
    let mut newest: BTreeMap<&str, &KeyInfo> = BTreeMap::new();
    for k in keys {
        let p = prefix_of(k.key.as_str());
        match newest.get(p) {
            Some(n) if (n.created, n.key.as_str()) >= (k.created, k.key.as_str()) => {}
            _ => {
                newest.insert(p, k);
            }
        }
    }
    newest.values().map(|k| k.key.as_str()).collect()
}

fn apply_rule(rule: &Rule, keys: &[&KeyInfo], now: u64) -> Vec<Removal> {
    let newest = newest_of_prefixes(keys);
    let spared = |k: &KeyInfo| k.pinned || (rule.keep_newest && newest.contains(k.key.as_str()));
    let mut removed: BTreeMap<String, Removal> = BTreeMap::new();
    fn remove(removed: &mut BTreeMap<String, Removal>, k: &KeyInfo, reason: Reason) {
        removed.entry(k.key.to_string()).or_insert(Removal {
            key: k.key.clone(),
            reason,
            size: k.size,
        });
    }
    if let Some(age) = rule.max_age_unused {
        for k in keys {
            if now.saturating_sub(k.last_used.max(k.created)) > age.as_secs() && !spared(k) {
                remove(&mut removed, k, Reason::MaxAgeUnused);
            }
        }
    }
    if let Some(n) = rule.keep_last {
        let mut by_prefix: BTreeMap<&str, Vec<&KeyInfo>> = BTreeMap::new();
        for k in keys {
            by_prefix
                .entry(prefix_of(k.key.as_str()))
                .or_default()
                .push(k);
        }
        for mut group in by_prefix.into_values() {
            group.sort_by(|a, b| (b.created, b.key.as_str()).cmp(&(a.created, a.key.as_str())));
            for k in group.into_iter().skip(n) {
                if !spared(k) {
                    remove(&mut removed, k, Reason::KeepLast);
                }
            }
        }
    }
    if let Some(cap) = rule.max_size {
        let mut left: Vec<&KeyInfo> = keys
            .iter()
            .copied()
            .filter(|k| !removed.contains_key(k.key.as_str()))
            .collect();
        let mut total: u64 = left.iter().map(|k| k.size).sum();
        if total > cap {
            let target = share(cap, SIZE_TARGET_PERCENT);
            left.sort_by_key(|k| (k.last_used.max(k.created), k.created, k.key.clone()));
            // Tier 1 spares the newest key of each prefix; the final tier spares only pins.
            for final_tier in [false, true] {
                for k in &left {
                    if total <= target {
                        break;
                    }
                    let keep = k.pinned || (!final_tier && newest.contains(k.key.as_str()));
                    if keep || removed.contains_key(k.key.as_str()) {
                        continue;
                    }
                    remove(&mut removed, k, Reason::MaxSize);
                    total -= k.size;
                }
            }
        }
    }
    removed.into_values().collect()
}

/// `percent` % of `n`, rounded down.
pub fn share(n: u64, percent: u64) -> u64 {
    (u128::from(n) * u128::from(percent) / 100) as u64
}

/// Parses a duration: a number and a unit, `s`, `m`, `h`, `d` or `w` (`7d`, `90m`).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let bad = || format!("invalid duration {s:?}: expected a number and s, m, h, d or w (7d)");
    let unit = t.chars().last().ok_or_else(bad)?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = t[..t.len() - 1].parse().map_err(|_| bad())?;
    n.checked_mul(mult).map(Duration::from_secs).ok_or_else(bad)
}

/// Parses a byte count with an optional K, M, G or T suffix (powers of 1024).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("invalid size {s:?}: unknown suffix {c:?}")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a number with an optional K/M/G/T"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

/// A size in a configuration file: a string with a suffix, or a plain number of bytes.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeText {
    Number(u64),
    Text(String),
}

/// Deserializes an optional size (see [`parse_size`]).
pub fn de_size<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    match SizeText::deserialize(d)? {
        SizeText::Number(n) => Ok(Some(n)),
        SizeText::Text(t) => parse_size(&t).map(Some).map_err(serde::de::Error::custom),
    }
}

/// Deserializes an optional duration (see [`parse_duration`]).
pub fn de_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Duration>, D::Error> {
    let t = String::deserialize(d)?;
    parse_duration(&t)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn ser_duration<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format!("{}s", d.as_secs())),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_prefixes() {
        assert!(matches("app/", "app/x"));
        assert!(!matches("app/", "apps/x"));
        assert!(matches("app/*/x", "app/main/x"));
        assert!(!matches("app/*/x", "app/a/b/x"));
        assert!(matches("app/**/x", "app/a/b/x"));
        assert!(matches("pr-?/*", "pr-1/abc"));
        assert!(matches("**", "anything/at/all"));
        assert_eq!(prefix_of("a/b/c"), "a/b/");
        assert_eq!(prefix_of("abc"), "");
    }

    #[test]
    fn parses_durations_and_sizes() {
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(parse_duration("90m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("d").is_err());
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert!(parse_size("1X").is_err());
    }

    fn info(key: &str, created: u64, last_used: u64, size: u64) -> KeyInfo {
        KeyInfo {
            key: Key::new(key).unwrap(),
            created,
            last_used,
            size,
            pinned: false,
        }
    }

    fn removed(rules: &[Rule], keys: &[KeyInfo], now: u64) -> Vec<String> {
        let mut v: Vec<String> = apply(rules, keys, now)
            .into_iter()
            .map(|r| r.key.to_string())
            .collect();
        v.sort();
        v
    }

    fn rule(pattern: &str) -> Rule {
        Rule {
            pattern: pattern.into(),
            max_age_unused: None,
            keep_last: None,
            max_size: None,
            keep_newest: true,
        }
    }

    #[test]
    fn first_match_wins_and_the_newest_of_a_prefix_stays() {
        let keys = [
            info("pr/1/a", 10, 10, 1),
            info("pr/1/b", 20, 20, 1),
            info("main/a", 10, 10, 1),
            info("main/b", 20, 20, 1),
        ];
        let rules = [
            Rule {
                max_age_unused: Some(Duration::from_secs(5)),
                ..rule("pr/")
            },
            Rule {
                keep_last: Some(5),
                ..rule("**")
            },
        ];
        // pr/1/b is the newest of pr/1/: kept although old.
        assert_eq!(removed(&rules, &keys, 100), vec!["pr/1/a"]);
        let rules = [Rule {
            keep_newest: false,
            ..rules[0].clone()
        }];
        assert_eq!(removed(&rules, &keys, 100), vec!["pr/1/a", "pr/1/b"]);
    }

    #[test]
    fn max_size_is_lru_then_the_final_tier() {
        let keys = [
            info("a/1", 1, 50, 40),
            info("a/2", 2, 10, 40),
            info("b/1", 3, 60, 40),
        ];
        let capped = |cap| Rule {
            max_size: Some(cap),
            ..rule("**")
        };
        // 120 > 100: down to 90 -> the least recently used non-newest (a/1... no: a/2 is the
        // newest of a/, a/1 is not) goes first.
        assert_eq!(removed(&[capped(100)], &keys, 100), vec!["a/1"]);
        // 60 needs two more: only newest keys are left, so the final tier takes the least
        // recently used of them.
        assert_eq!(removed(&[capped(60)], &keys, 100), vec!["a/1", "a/2"]);
        let mut pinned = keys.clone();
        pinned[0].pinned = true;
        assert_eq!(removed(&[capped(100)], &pinned, 100), vec!["a/2"]);
    }

    /// A synthetic history of 1,000 keys under four rules (the first match wins; `tmp/` has
    /// none), with the survivors written out by hand from the rules, not computed by them.
    #[test]
    fn a_history_of_a_thousand_keys() {
        const DAY: u64 = 86_400;
        const HOUR: u64 = 3_600;
        let now = 100 * DAY;
        let mut keys = Vec::new();
        // main/: 300 builds, one every 0.3 days; main/0005 is pinned.
        for i in 0..300u64 {
            let mut k = info(
                &format!("main/{i:04}"),
                i * 3 * DAY / 10,
                i * 3 * DAY / 10,
                1,
            );
            k.pinned = i == 5;
            keys.push(k);
        }
        // pr/N/C: 50 pull requests (opened on day 40 + N) of 8 commits (an hour apart); the
        // fourth commit of every tenth pull request was read on day 97.
        for n in 0..50u64 {
            for c in 0..8u64 {
                let created = (40 + n) * DAY + c * HOUR;
                let used = if n % 10 == 0 && c == 3 {
                    97 * DAY
                } else {
                    created
                };
                keys.push(info(&format!("pr/{n}/c{c}"), created, used, 1));
            }
        }
        // nightly/: 200 images of 10 MB, one every 0.4 days; nightly/0010 was read on day 99.
        for i in 0..200u64 {
            let created = i * 4 * DAY / 10;
            let used = if i == 10 { 99 * DAY } else { created };
            keys.push(info(&format!("nightly/{i:04}"), created, used, 10_000_000));
        }
        // tmp/: 100 keys no rule matches.
        for i in 0..100u64 {
            keys.push(info(&format!("tmp/{i:03}"), 0, 0, 1));
        }
        assert_eq!(keys.len(), 1000);
        let rules = [
            Rule {
                keep_last: Some(20),
                ..rule("main/")
            },
            // Pull requests 1 and 10-19 keep everything (and the next rule never sees them).
            Rule {
                keep_last: Some(8),
                ..rule("pr/1*/**")
            },
            Rule {
                max_age_unused: Some(Duration::from_secs(7 * DAY)),
                ..rule("pr/")
            },
            Rule {
                max_size: Some(500_000_000),
                ..rule("nightly/*")
            },
        ];
        let removals = apply(&rules, &keys, now);

        let mut survivors: Vec<String> = Vec::new();
        // main/: the 20 newest and the pinned one.
        survivors.extend((280..300).map(|i| format!("main/{i:04}")));
        survivors.push("main/0005".into());
        // pr/: all of 1 and 10-19; of the others (every commit older than 7 days) the newest
        // commit, and the fourth commit of 0, 20, 30 and 40.
        for n in 0..50u64 {
            if n == 1 || (10..20).contains(&n) {
                survivors.extend((0..8).map(|c| format!("pr/{n}/c{c}")));
            } else {
                survivors.push(format!("pr/{n}/c7"));
                if n % 10 == 0 {
                    survivors.push(format!("pr/{n}/c3"));
                }
            }
        }
        // nightly/: 2 GB over a 500 MB cap, down to 450 MB: 45 images, the read one and the
        // 44 newest.
        survivors.push("nightly/0010".into());
        survivors.extend((156..200).map(|i| format!("nightly/{i:04}")));
        survivors.extend((0..100).map(|i| format!("tmp/{i:03}")));
        survivors.sort();
        assert_eq!(survivors.len(), 21 + 88 + 39 + 4 + 45 + 100);

        let gone: HashSet<&str> = removals.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(gone.len(), removals.len(), "a key removed twice");
        let mut kept: Vec<String> = keys
            .iter()
            .map(|k| k.key.to_string())
            .filter(|k| !gone.contains(k.as_str()))
            .collect();
        kept.sort();
        assert_eq!(kept, survivors);
        for r in &removals {
            let want = match r.key.as_str().split('/').next() {
                Some("main") => Reason::KeepLast,
                Some("pr") => Reason::MaxAgeUnused,
                Some("nightly") => Reason::MaxSize,
                _ => panic!("{} removed", r.key),
            };
            assert_eq!(r.reason, want, "{}", r.key);
        }
    }
}
