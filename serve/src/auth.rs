//! Who may do what: the tokens file (`--tokens FILE`, TOML) maps secret tokens to scopes.
//!
//! ```toml
//! [[token]]
//! name = "ci"                          # logged instead of the secret
//! secret = "a long random string"      # `Authorization: Bearer …`, or the Basic password
//! scopes = ["app/*:read,write", "**:read"]
//!
//! [anonymous]                          # optional: what requests without a token may do
//! scopes = ["public/**:read"]
//! ```
//!
//! A scope is `GLOB:ACTIONS`: the glob matches repository names (and, for the team cache, key
//! names), `*` within one `/`-separated component, `**` across components; actions are `read`,
//! `write` and `delete`. Without a tokens file, everyone may read and nobody may write.
//! Secrets are compared in constant time (as sha256 digests, so their lengths do not leak
//! either) and never logged.

use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;
use sha2::Digest as _;
use subtle::ConstantTimeEq;

/// What a request wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// GET, HEAD.
    Read,
    /// POST, PATCH, PUT.
    Write,
    /// DELETE.
    Delete,
}

/// Shortest secret accepted in a tokens file: a guessable token is no protection.
pub const MIN_SECRET_LEN: usize = 16;

#[derive(Debug, Clone)]
struct Scope {
    glob: String,
    read: bool,
    write: bool,
    delete: bool,
}

impl Scope {
    fn parse(s: &str) -> Result<Scope, String> {
        let (glob, actions) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("scope {s:?}: want GLOB:ACTIONS"))?;
        if glob.is_empty() {
            return Err(format!("scope {s:?}: empty glob"));
        }
        let mut scope = Scope {
            glob: glob.to_string(),
            read: false,
            write: false,
            delete: false,
        };
        for a in actions.split(',') {
            match a.trim() {
                "read" => scope.read = true,
                "write" => scope.write = true,
                "delete" => scope.delete = true,
                other => return Err(format!("scope {s:?}: unknown action {other:?}")),
            }
        }
        Ok(scope)
    }

    fn allows(&self, name: &str, action: Action) -> bool {
        let has = match action {
            Action::Read => self.read,
            Action::Write => self.write,
            Action::Delete => self.delete,
        };
        has && glob_match(self.glob.as_bytes(), name.as_bytes())
    }
}

/// `*` matches within a `/`-separated component, `**` across them; everything else literally.
fn glob_match(glob: &[u8], name: &[u8]) -> bool {
    match glob {
        [] => name.is_empty(),
        [b'*', b'*', rest @ ..] => (0..=name.len()).any(|i| glob_match(rest, &name[i..])),
        [b'*', rest @ ..] => {
            let stop = name.iter().position(|&c| c == b'/').unwrap_or(name.len());
            (0..=stop).any(|i| glob_match(rest, &name[i..]))
        }
        [c, rest @ ..] => name.first() == Some(c) && glob_match(rest, &name[1..]),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    secret: String,
    scopes: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Anonymous {
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
    #[serde(default)]
    anonymous: Anonymous,
}

struct Token {
    name: String,
    secret_hash: [u8; 32],
    scopes: Vec<Scope>,
}

/// The caller of a request, once its credentials are checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No credentials.
    Anonymous,
    /// A token of the file, by name.
    Token(String),
}

/// Why credentials were refused.
#[derive(Debug, PartialEq, Eq)]
pub struct BadCredentials;

/// The access policy.
pub struct Auth {
    tokens: Option<Vec<Token>>,
    anonymous: Vec<Scope>,
}

fn hash(s: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(s).into()
}

impl Auth {
    /// No tokens file: anonymous read of everything, no writes.
    pub fn open() -> Auth {
        Auth {
            tokens: None,
            anonymous: vec![Scope::parse("**:read").expect("valid scope")],
        }
    }

    /// Reads a tokens file.
    pub fn load(path: &Path) -> Result<Auth, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Auth::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a tokens file's text.
    pub fn parse(text: &str) -> Result<Auth, String> {
        let file: TokensFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut tokens = Vec::new();
        for t in file.token {
            if t.secret.len() < MIN_SECRET_LEN {
                return Err(format!(
                    "token {:?}: secret shorter than {MIN_SECRET_LEN} characters",
                    t.name
                ));
            }
            if t.secret.contains(char::is_whitespace) {
                return Err(format!("token {:?}: secret contains whitespace", t.name));
            }
            let scopes = t
                .scopes
                .iter()
                .map(|s| Scope::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("token {:?}: {e}", t.name))?;
            tokens.push(Token {
                name: t.name,
                secret_hash: hash(t.secret.as_bytes()),
                scopes,
            });
        }
        let anonymous = file
            .anonymous
            .scopes
            .iter()
            .map(|s| Scope::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("anonymous: {e}"))?;
        Ok(Auth {
            tokens: Some(tokens),
            anonymous,
        })
    }

    /// Whether a tokens file is in force.
    pub fn has_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    /// Identifies the caller from an `Authorization` header value.
    pub fn identify(&self, authorization: Option<&[u8]>) -> Result<Caller, BadCredentials> {
        // Without a tokens file there is nothing to check credentials against: a client that
        // sends some anyway (stored by an earlier login elsewhere) is anonymous.
        let (Some(h), Some(tokens)) = (authorization, &self.tokens) else {
            return Ok(Caller::Anonymous);
        };
        let h = std::str::from_utf8(h).map_err(|_| BadCredentials)?.trim();
        let secret = if let Some(t) = strip_scheme(h, "Bearer") {
            t.trim().to_string()
        } else if let Some(b) = strip_scheme(h, "Basic") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|_| BadCredentials)?;
            let text = String::from_utf8(raw).map_err(|_| BadCredentials)?;
            let (user, password) = text.split_once(':').ok_or(BadCredentials)?;
            if user.is_empty() && password.is_empty() {
                // What a client without credentials sends after a Basic challenge.
                return Ok(Caller::Anonymous);
            }
            password.to_string()
        } else {
            return Err(BadCredentials);
        };
        let given = hash(secret.as_bytes());
        let mut found = None;
        // Every token is compared, in constant time, whichever matches.
        for t in tokens {
            if bool::from(t.secret_hash.ct_eq(&given)) {
                found = Some(t.name.clone());
            }
        }
        found.map(Caller::Token).ok_or(BadCredentials)
    }

    /// Whether `caller` may do `action` on `name` (a repository or key).
    pub fn allows(&self, caller: &Caller, name: &str, action: Action) -> bool {
        let scopes = match caller {
            Caller::Anonymous => &self.anonymous,
            Caller::Token(n) => match self
                .tokens
                .as_ref()
                .and_then(|ts| ts.iter().find(|t| t.name == *n))
            {
                Some(t) => &t.scopes,
                None => return false,
            },
        };
        scopes.iter().any(|s| s.allows(name, action))
    }

    /// Whether `caller` may do anything at all (for `/v2/` and the catalog).
    pub fn any_access(&self, caller: &Caller) -> bool {
        match caller {
            Caller::Anonymous => !self.has_tokens() || !self.anonymous.is_empty(),
            Caller::Token(_) => true,
        }
    }
}

fn strip_scheme<'a>(h: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = h.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[token]]
name = "ci"
secret = "0123456789abcdef-ci"
scopes = ["app/*:read,write", "lib:read"]

[[token]]
name = "admin"
secret = "0123456789abcdef-admin"
scopes = ["**:read,write,delete"]

[anonymous]
scopes = ["public/**:read"]
"#;

    fn basic(user: &str, pw: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        )
        .into_bytes()
    }

    #[test]
    fn tokens_and_scopes() {
        let a = Auth::parse(FILE).unwrap();
        let ci = a.identify(Some(b"Bearer 0123456789abcdef-ci")).unwrap();
        assert_eq!(ci, Caller::Token("ci".into()));
        assert_eq!(
            a.identify(Some(&basic("anyone", "0123456789abcdef-admin"))),
            Ok(Caller::Token("admin".into()))
        );
        assert_eq!(a.identify(Some(b"Bearer nope")), Err(BadCredentials));
        assert_eq!(a.identify(Some(b"Digest x")), Err(BadCredentials));
        assert_eq!(a.identify(None), Ok(Caller::Anonymous));
        assert_eq!(a.identify(Some(&basic("", ""))), Ok(Caller::Anonymous));
        assert!(a.allows(&ci, "app/x", Action::Write));
        assert!(!a.allows(&ci, "app/x/y", Action::Read));
        assert!(!a.allows(&ci, "app/x", Action::Delete));
        assert!(a.allows(&ci, "lib", Action::Read));
        assert!(!a.allows(&ci, "lib", Action::Write));
        assert!(!a.allows(&ci, "library", Action::Read));
        assert!(a.allows(&Caller::Anonymous, "public/a/b", Action::Read));
        assert!(!a.allows(&Caller::Anonymous, "app/x", Action::Read));
        let open = Auth::open();
        assert!(open.allows(&Caller::Anonymous, "any/thing", Action::Read));
        assert!(!open.allows(&Caller::Anonymous, "any", Action::Write));
        assert_eq!(
            open.identify(Some(b"Bearer 0123456789abcdef-ci")),
            Ok(Caller::Anonymous)
        );
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(Auth::parse("[[token]]\nname='a'\nsecret='short'\nscopes=[]").is_err());
        assert!(
            Auth::parse("[[token]]\nname='a'\nsecret='0123456789abcdefg'\nscopes=['x:fly']")
                .is_err()
        );
        assert!(
            Auth::parse("[[token]]\nname='a'\nsecret='0123456789abcdefg'\nscopes=['x']").is_err()
        );
        assert!(Auth::parse("bogus = 1").is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"**", b"a/b/c"));
        assert!(glob_match(b"a/*", b"a/b"));
        assert!(!glob_match(b"a/*", b"a/b/c"));
        assert!(glob_match(b"a/**", b"a/b/c"));
        assert!(glob_match(b"*-dev", b"app-dev"));
        assert!(!glob_match(b"app", b"apps"));
    }
}
