//! A token issuer for distribution's `auth: token:` mode: ES256 JWTs with an `x5c` header,
//! signed by a key whose self-signed certificate the registry trusts. Key and certificate are
//! made with the `openssl` command ([`crate::tls::openssl`]); signing uses aws-lc-rs.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;

pub const SERVICE: &str = "wharf-test-registry";
pub const ISSUER: &str = "wharf-test-issuer";

pub struct TokenIssuer {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    pub cert_pem: PathBuf,
    /// `Some((user, password))`: token requests must carry these as basic auth.
    credentials: Option<(String, String)>,
    /// When set, per-user logins instead: each user gets pull on its own repositories only
    /// (anonymous callers get a token granting nothing).
    users: Vec<TokenUser>,
    /// Who asked for each token over HTTP (`anonymous` when nobody logged in) and for which
    /// scopes (`alice repository:team-a/app:pull`), in order.
    pub asked_by: std::sync::Mutex<Vec<String>>,
    /// Tokens handed out over HTTP (not counting [`TokenIssuer::mint`] calls).
    pub issued: AtomicUsize,
    pub port: u16,
    _dir: tempfile::TempDir,
}

fn openssl(args: &[&str]) -> anyhow::Result<()> {
    crate::tls::openssl(std::path::Path::new("."), args)
}

/// A user of [`TokenIssuer::start_with_users`] and the repositories it may pull.
#[derive(Clone, Debug)]
pub struct TokenUser {
    pub name: String,
    pub password: String,
    pub repositories: Vec<String>,
}

impl TokenIssuer {
    /// Make a key and certificate, and serve `/token` on a loopback port.
    pub async fn start(credentials: Option<(String, String)>) -> anyhow::Result<Arc<TokenIssuer>> {
        Self::start_inner(credentials, Vec::new()).await
    }

    /// As [`TokenIssuer::start`], granting each user its own repositories (a registry with
    /// accounts and permissions, as Harbor or GitLab's are); tokens name the user as `sub`.
    pub async fn start_with_users(users: Vec<TokenUser>) -> anyhow::Result<Arc<TokenIssuer>> {
        Self::start_inner(None, users).await
    }

    async fn start_inner(
        credentials: Option<(String, String)>,
        users: Vec<TokenUser>,
    ) -> anyhow::Result<Arc<TokenIssuer>> {
        let dir = tempfile::tempdir()?;
        let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &p("key.pem"),
            "-out",
            &p("cert.pem"),
            "-subj",
            "/CN=wharf-test-token",
            "-days",
            "2",
        ])?;
        openssl(&[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            &p("key.pem"),
            "-outform",
            "DER",
            "-out",
            &p("key.der"),
        ])?;
        openssl(&[
            "x509",
            "-in",
            &p("cert.pem"),
            "-outform",
            "DER",
            "-out",
            &p("cert.der"),
        ])?;
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &std::fs::read(p("key.der"))?,
        )
        .map_err(|e| anyhow::anyhow!("loading token key: {e}"))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let issuer = Arc::new(TokenIssuer {
            key,
            cert_der: std::fs::read(p("cert.der"))?,
            cert_pem: p("cert.pem").into(),
            credentials,
            users,
            asked_by: std::sync::Mutex::new(Vec::new()),
            issued: AtomicUsize::new(0),
            port,
            _dir: dir,
        });
        let app = axum::Router::new()
            .route("/token", axum::routing::get(token_endpoint))
            .with_state(issuer.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(issuer)
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// A signed token granting `actions` on `repo`.
    pub fn mint(&self, repo: &str, actions: &[&str]) -> String {
        self.mint_access(&[json!({"type": "repository", "name": repo, "actions": actions})])
    }

    fn mint_access(&self, access: &[serde_json::Value]) -> String {
        self.mint_for("wharf", access)
    }

    fn mint_for(&self, subject: &str, access: &[serde_json::Value]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header =
            json!({"typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(&self.cert_der)]});
        let claims = json!({
            "iss": ISSUER, "sub": subject, "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": format!("{now}-{}", self.issued.load(Ordering::Relaxed)),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .expect("ES256 signing");
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }
}

async fn token_endpoint(
    State(issuer): State<Arc<TokenIssuer>>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    if let Some((user, password)) = &issuer.credentials {
        let expected = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        let given = headers.get("authorization").and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
        }
    }
    if !issuer.users.is_empty() {
        return per_user_token(&issuer, &params, &headers);
    }
    // Only pull is ever granted over HTTP.
    let access: Vec<_> = asked_scopes(&params)
        .map(|(kind, name)| json!({"type": kind, "name": name, "actions": ["pull"]}))
        .collect();
    issuer.issued.fetch_add(1, Ordering::Relaxed);
    let token = issuer.mint_access(&access);
    (
        [("content-type", "application/json")],
        json!({"token": token, "expires_in": 300}).to_string(),
    )
        .into_response()
}

/// A token for the user the request's Basic login names: pull on the asked repositories that
/// user is granted; anonymous callers get one that grants nothing; a wrong password a 401.
fn per_user_token(
    issuer: &TokenIssuer,
    params: &[(String, String)],
    headers: &HeaderMap,
) -> Response {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| STANDARD.decode(b64).ok())
        .and_then(|raw| String::from_utf8(raw).ok());
    let user = match given {
        None => None,
        Some(pair) => {
            let (name, password) = pair.split_once(':').unwrap_or((&pair, ""));
            match issuer
                .users
                .iter()
                .find(|u| u.name == name && u.password == password)
            {
                Some(user) => Some(user),
                None => return (StatusCode::UNAUTHORIZED, "bad credentials").into_response(),
            }
        }
    };
    let subject = user.map_or("anonymous", |u| u.name.as_str());
    let scopes: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.as_str())
        .collect();
    issuer
        .asked_by
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(
            format!("{subject} {}", scopes.join(" "))
                .trim_end()
                .to_string(),
        );
    let access: Vec<_> = asked_scopes(params)
        .filter(|(_, name)| user.is_some_and(|u| u.repositories.iter().any(|r| r == name)))
        .map(|(kind, name)| json!({"type": kind, "name": name, "actions": ["pull"]}))
        .collect();
    issuer.issued.fetch_add(1, Ordering::Relaxed);
    let token = issuer.mint_for(subject, &access);
    (
        [("content-type", "application/json")],
        json!({"token": token, "expires_in": 300}).to_string(),
    )
        .into_response()
}

/// The `(type, name)` of each `scope=repository:<name>:<actions>` parameter.
fn asked_scopes(params: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
    params
        .iter()
        .filter(|(k, _)| k == "scope")
        .filter_map(|(_, scope)| {
            let mut parts = scope.splitn(3, ':');
            Some((parts.next()?, parts.next()?))
        })
}
