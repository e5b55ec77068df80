//! Reading the credentials a request presents in its `Authorization` header.

use base64::Engine;

use crate::AuthError;

/// Longer headers are refused before any decoding (JWTs from IdPs stay well under this).
pub const MAX_AUTHORIZATION_BYTES: usize = 16 * 1024;

/// What a request presented. `Debug` never shows a password or a token.
#[derive(Clone, PartialEq, Eq)]
pub enum Presented {
    Nothing,
    Basic { user: String, password: String },
    Bearer(String),
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Presented::Nothing => write!(f, "Nothing"),
            Presented::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
            Presented::Bearer(_) => write!(f, "Bearer(***)"),
        }
    }
}

/// Parse an `Authorization` header value (absent: [`Presented::Nothing`]).
pub fn parse(header: Option<&[u8]>) -> Result<Presented, AuthError> {
    let Some(raw) = header else {
        return Ok(Presented::Nothing);
    };
    if raw.len() > MAX_AUTHORIZATION_BYTES {
        return Err(AuthError::Malformed("longer than 16 KiB"));
    }
    let text = std::str::from_utf8(raw).map_err(|_| AuthError::Malformed("not UTF-8"))?;
    let (scheme, value) = text
        .trim()
        .split_once(' ')
        .ok_or(AuthError::Malformed("expected \"<scheme> <credentials>\""))?;
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|_| AuthError::Malformed("Basic credentials are not base64"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| AuthError::Malformed("Basic credentials are not UTF-8"))?;
        let (user, password) = decoded.split_once(':').ok_or(AuthError::Malformed(
            "Basic credentials lack \"user:password\"",
        ))?;
        if user.is_empty() {
            return Err(AuthError::Malformed("empty user name"));
        }
        Ok(Presented::Basic {
            user: user.to_string(),
            password: password.to_string(),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let token68 = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
        if value.is_empty() || !value.bytes().all(token68) {
            return Err(AuthError::Malformed(
                "Bearer token has characters a token cannot",
            ));
        }
        Ok(Presented::Bearer(value.to_string()))
    } else {
        Err(AuthError::Malformed("only Basic and Bearer are supported"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn basic_and_bearer() {
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:pa:ss")
        );
        assert_eq!(
            parse(Some(basic.as_bytes())).unwrap(),
            Presented::Basic {
                user: "alice".into(),
                password: "pa:ss".into()
            }
        );
        assert_eq!(
            parse(Some(b"bearer abc.def.ghi")).unwrap(),
            Presented::Bearer("abc.def.ghi".into())
        );
        assert_eq!(parse(None).unwrap(), Presented::Nothing);
        let printed = format!("{:?}", parse(Some(basic.as_bytes())).unwrap());
        assert!(!printed.contains("pa:ss"));
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [
            &b"Basic"[..],
            b"Basic !!!",
            b"Basic Zm9v",
            b"Digest x",
            b"Bearer a b",
            b"Bearer ",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(parse(Some(bad)), Err(AuthError::Malformed(_))),
                "{bad:?}"
            );
        }
        let huge = vec![b'a'; MAX_AUTHORIZATION_BYTES + 1];
        assert!(parse(Some(&huge)).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = parse(Some(&bytes));
        }
    }
}
