//! A test certificate authority made with the `openssl` command: a CA, a server certificate
//! for loopback, the Docker bridge address and `localhost`, and a client certificate for mTLS.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// PEM files of a test PKI, in a temporary directory.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A cluster member's certificate: the server names, for serving and for dialling peers
    /// (serverAuth and clientAuth).
    pub member_cert: PathBuf,
    pub member_key: PathBuf,
}

/// Run the `openssl` command in `dir`; its stderr becomes the error.
pub fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .context("running openssl")?;
    if !out.status.success() {
        bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl TestPki {
    /// A CA and certificates signed by it; `server_names` go into the server certificate's
    /// subjectAltName (IP addresses and DNS names).
    pub fn new(server_names: &[&str]) -> anyhow::Result<TestPki> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=wharf test CA",
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(d, &args)?;
        let sans: Vec<String> = server_names
            .iter()
            .map(|n| {
                if n.parse::<std::net::IpAddr>().is_ok() {
                    format!("IP:{n}")
                } else {
                    format!("DNS:{n}")
                }
            })
            .collect();
        std::fs::write(
            d.join("server.ext"),
            format!(
                "subjectAltName={}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
                sans.join(",")
            ),
        )?;
        std::fs::write(
            d.join("client.ext"),
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        )?;
        std::fs::write(
            d.join("member.ext"),
            format!(
                "subjectAltName={}\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n",
                sans.join(",")
            ),
        )?;
        for (name, cn) in [
            ("server", "wharf test server"),
            ("client", "wharf test client"),
            ("member", "wharf test member"),
        ] {
            let mut args = vec!["req"];
            args.extend(ec);
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let subj = format!("/CN={cn}");
            args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            openssl(d, &args)?;
            let crt = format!("{name}.crt");
            let ext = format!("{name}.ext");
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &crt,
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                ],
            )?;
        }
        Ok(TestPki {
            ca_cert: d.join("ca.crt"),
            server_cert: d.join("server.crt"),
            server_key: d.join("server.key"),
            client_cert: d.join("client.crt"),
            client_key: d.join("client.key"),
            member_cert: d.join("member.crt"),
            member_key: d.join("member.key"),
            dir,
        })
    }

    /// A reqwest client trusting this CA (and presenting the client certificate if `mtls`).
    pub fn client(&self, mtls: bool) -> anyhow::Result<reqwest::Client> {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.ca_cert)?)?;
        let mut builder = reqwest::Client::builder().add_root_certificate(ca);
        if mtls {
            let mut pem = std::fs::read(&self.client_cert)?;
            pem.extend(std::fs::read(&self.client_key)?);
            builder = builder.identity(reqwest::Identity::from_pem(&pem)?);
        }
        Ok(builder.build()?)
    }
}
