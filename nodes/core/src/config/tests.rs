//! The configuration: parsing, the environment, validation, the example file.

#[test]
fn wildcard_cluster_addresses_need_an_advertised_one() {
    for wildcard in [
        "0.0.0.0:6000",
        "[::]:6000",
        "0:6000",
        ":6000",
        "[0:0::0]:6000",
    ] {
        let mut c = Config::default();
        c.cluster.listen = wildcard.into();
        assert!(
            c.validate().is_err(),
            "{wildcard} accepted without advertise"
        );
        c.cluster.advertise = "10.0.0.1:6000".into();
        c.cluster.insecure = true;
        assert!(c.validate().is_ok(), "{wildcard} with advertise");
    }
    for dialable in ["10.0.0.1:6000", "[::1]:6000", "wharf-0.wharf:6000"] {
        let mut c = Config::default();
        c.cluster.listen = dialable.into();
        c.cluster.secret_file = "/run/secrets/cluster-key".into();
        assert!(c.validate().is_ok(), "{dialable}");
    }
}

use super::*;

#[test]
fn max_voters_must_be_odd() {
    for (max_voters, ok) in [
        (0, false),
        (1, true),
        (2, false),
        (3, true),
        (4, false),
        (5, true),
    ] {
        let mut c = Config::default();
        c.cluster.listen = "127.0.0.1:6000".into();
        c.cluster.max_voters = max_voters;
        assert_eq!(c.validate().is_ok(), ok, "max_voters = {max_voters}");
    }
}

#[test]
fn default_is_valid_docker_hub_mirror() {
    let c = Config::default();
    c.validate().unwrap();
    assert_eq!(c.upstreams[0].name, "docker.io");
    assert!(c.upstreams[0].is_docker_hub());
}

#[test]
fn storage_targets() {
    let mut c = Config::default();
    assert_eq!(
        c.storage_target().unwrap(),
        StorageTarget::LocalDisk("./wharf-data".into())
    );
    c.storage = "s3://bucket/some/prefix/".into();
    assert_eq!(
        c.storage_target().unwrap(),
        StorageTarget::S3 {
            bucket: "bucket".into(),
            prefix: "some/prefix".into()
        }
    );
    c.storage = "file:///var/cache/wharf".into();
    assert_eq!(
        c.storage_target().unwrap(),
        StorageTarget::LocalDisk("/var/cache/wharf".into())
    );
    for bad in ["s3://", "gs://x", "file://"] {
        c.storage = bad.into();
        assert!(c.validate().is_err(), "{bad}");
    }
}

#[test]
fn unknown_keys_are_refused() {
    assert!(Config::from_toml("listen = \"0.0.0.0:1\"\nlisen = 1").is_err());
}

#[test]
fn reads_distribution_config() {
    let c = Config::from_distribution_yaml(
        r#"
version: 0.1
log:
  level: info
http:
  addr: :5000
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
proxy:
  remoteurl: https://registry-1.docker.io
  username: alice
  password: s3cret
"#,
    )
    .unwrap();
    assert_eq!(c.listen, "0.0.0.0:5000");
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/registry"));
    assert_eq!(c.upstreams.len(), 1);
    assert_eq!(c.upstreams[0].name, "docker.io");
    assert_eq!(c.upstreams[0].username.as_deref(), Some("alice"));
    assert_eq!(c.upstreams[0].password.as_deref(), Some("s3cret"));
}

#[test]
fn distribution_config_without_proxy_is_refused() {
    let err = Config::from_distribution_yaml("version: 0.1\nhttp:\n  addr: :5000\n");
    assert!(matches!(err, Err(ConfigError::Invalid(_))));
}

#[test]
fn env_and_flag_override_default_upstream() {
    let mut c = Config::default();
    c.set_default_upstream_url("http://127.0.0.1:5001/");
    c.apply_env(|k| match k {
        "WHARF_UPSTREAM_USERNAME" => Some("u".into()),
        "WHARF_UPSTREAM_PASSWORD" => Some("p".into()),
        _ => None,
    });
    c.validate().unwrap();
    assert_eq!(c.upstreams[0].url, "http://127.0.0.1:5001");
    assert_eq!(c.upstreams[0].name, "127.0.0.1:5001");
    assert_eq!(
        c.upstreams[0].resolved_password(true).unwrap().as_deref(),
        Some("p")
    );
}

#[test]
fn validation_catches_mistakes() {
    let mut c = Config::default();
    c.upstreams
        .push(UpstreamConfig::new("docker.io", "https://x", false));
    assert!(c.validate().is_err());
    let mut c = Config::default();
    c.upstreams[0].password = Some("p".into());
    assert!(c.validate().is_err(), "password without username");
    let c = Config {
        listen: "nope".into(),
        ..Config::default()
    };
    assert!(c.validate().is_err());
}

#[test]
fn password_file_is_read_and_trimmed() {
    let dir = std::env::temp_dir().join(format!("wharf-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pw");
    std::fs::write(&file, "hunter2\n").unwrap();
    let mut u = UpstreamConfig::new("r", "https://r", true);
    u.username = Some("me".into());
    u.password_file = Some(file);
    assert_eq!(
        u.resolved_password(true).unwrap().as_deref(),
        Some("hunter2")
    );
}

#[test]
fn a_secret_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile_dir("wharf-secret");
    let file = dir.join("pw");
    std::fs::write(&file, "hunter2\n").unwrap();
    let mut u = UpstreamConfig::new("r", "https://r", true);
    u.username = Some("me".into());
    u.password_file = Some(file.clone());
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = u.resolved_password(false).unwrap_err().to_string();
    assert!(err.contains("other users can read it"), "{err}");
    assert!(!err.contains("hunter2"));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        u.resolved_password(false).unwrap().as_deref(),
        Some("hunter2")
    );
    // Group read for wharf's own group (the file was created with it): a Kubernetes
    // secret volume with fsGroup. Group write, or world read, never.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o440)).unwrap();
    assert!(u.resolved_password(false).is_ok());
    for exposed in [0o460, 0o604, 0o620] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(exposed)).unwrap();
        assert!(u.resolved_password(false).is_err(), "{exposed:o}");
    }
}

#[test]
fn debug_output_never_shows_the_password() {
    let mut c = Config::default();
    c.upstreams[0].username = Some("robot".into());
    c.upstreams[0].password = Some("hunter2-secret".into());
    let printed = format!("{c:?} {c:#?}");
    assert!(!printed.contains("hunter2-secret"), "{printed}");
    assert!(printed.contains("robot") && printed.contains("<redacted>"));
}

#[test]
fn security_sections_are_checked() {
    let mut c = Config::default();
    c.tls.cert_file = "/c.pem".into();
    assert!(c.validate().is_err(), "cert without key");
    c.tls.key_file = "/k.pem".into();
    c.validate().unwrap();
    c.auth.jwt.push(JwtIssuerConfig {
        issuer: "https://idp".into(),
        audience: "wharf".into(),
        ..JwtIssuerConfig::default()
    });
    assert!(c.validate().is_err(), "issuer without keys");
    c.auth.jwt[0].jwks_url = "http://idp/jwks".into();
    assert!(c.validate().is_err(), "keys over plain HTTP");
    c.auth.jwt[0].allow_http_jwks = true;
    c.validate().unwrap();
    c.auth.jwt[0].allow_http_jwks = false;
    c.auth.jwt[0].jwks_url = "https://idp/jwks".into();
    c.validate().unwrap();
    // A cluster port reachable from other hosts needs the key, or an explicit waiver.
    let mut clustered = Config::default();
    clustered.cluster.listen = "127.0.0.1:6000".into();
    clustered.validate().unwrap();
    clustered.cluster.listen = "[::1]:6000".into();
    clustered.validate().unwrap();
    clustered.cluster.listen = "10.0.0.5:6000".into();
    let err = clustered.validate().unwrap_err().to_string();
    assert!(err.contains("secret_file"), "{err}");
    clustered.cluster.advertise = "wharf1:6000".into();
    clustered.cluster.listen = "0.0.0.0:6000".into();
    assert!(clustered.validate().is_err());
    clustered.cluster.secret_file = "/run/secrets/cluster-key".into();
    clustered.validate().unwrap();
    clustered.cluster.secret_file = PathBuf::new();
    clustered.cluster.insecure = true;
    clustered.validate().unwrap();
    // Review #3: unsigned CDN URLs and client auth do not go together.
    let mut cdn = Config {
        storage: "s3://bucket".into(),
        ..Config::default()
    };
    cdn.s3.redirect_blobs = true;
    cdn.s3.redirect_base_url = "https://cdn.example".into();
    cdn.validate().unwrap();
    cdn.auth.htpasswd_file = "/etc/wharf/htpasswd".into();
    let err = cdn.validate().unwrap_err().to_string();
    assert!(err.contains("redirect_base_url"), "{err}");
    c.access.push(AccessRule {
        repositories: vec![],
        users: vec![],
        groups: vec![],
        anonymous: true,
        allow: true,
    });
    assert!(c.validate().is_err(), "rule without repositories");
}

fn tempfile_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
