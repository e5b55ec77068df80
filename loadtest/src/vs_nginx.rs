//! `--vs-nginx`: the warm path against the physical limit on this machine, nginx (Debian's)
//! serving the same bytes as files, in one run: warm manifest requests by tag and by digest
//! (wrk, 32 connections), a warm blob's GB/s and the server's CPU seconds per GB (plain HTTP,
//! both with sendfile), and the memory each idle keep-alive connection costs at 10,000 of them
//! with a request's latency meanwhile. Both write one access line per request to a file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wharf_testkit::image::{Format, big_image, image};
use wharf_testkit::push::{PushAuth, Pusher};
use wharf_testkit::registry::{Registry, RegistryOptions};
use wharf_testkit::{free_port, wait_until};

use crate::Args;
use crate::load::{Load, throughput};
use crate::scenarios::ACCEPT;

const WRK: &str = "/usr/bin/wrk";
const NGINX: &str = "/usr/sbin/nginx";
const IDLE_CONNECTIONS: usize = 10_000;

/// One server under test: its URL and its processes (nginx: master and workers).
struct Server {
    name: &'static str,
    url: String,
    child: Child,
}

impl Server {
    /// The server's processes: the one started and its children.
    fn pids(&self) -> Vec<u32> {
        let root = self.child.id();
        let mut pids = vec![root];
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                if parent_of(pid) == Some(root) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    fn cpu_seconds(&self) -> f64 {
        self.pids().into_iter().filter_map(cpu_seconds).sum()
    }

    fn rss_kib(&self) -> u64 {
        self.pids()
            .into_iter()
            .filter_map(wharf_testkit::registry::rss_kib)
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for pid in self.pids().into_iter().skip(1) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let fields = stat_fields(pid)?;
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// One server's figures.
struct Figures {
    name: &'static str,
    by_tag: f64,
    /// The server's CPU microseconds per request by tag.
    tag_cpu_us: f64,
    by_digest: f64,
    gb_per_s: f64,
    cpu_per_gb: f64,
    idle_kib: f64,
    latency_ms: f64,
}

/// One round's manifest figures for one server.
struct ManifestRates {
    by_tag: f64,
    /// The server's CPU microseconds per request by tag.
    tag_cpu_us: f64,
    by_digest: f64,
}

/// wharf's manifest figures against nginx's: the median over rounds of each round's ratio.
struct RoundRatios {
    by_tag: f64,
    tag_cpu_us: f64,
    by_digest: f64,
}

/// `server`'s warm manifest rate by tag (and its CPU a request), then by digest.
fn manifest_rates(server: &Server, digest: &str, args: &Args) -> anyhow::Result<ManifestRates> {
    let tag_url = format!("{}/v2/bench/sec/manifests/v1", server.url);
    let digest_url = format!("{}/v2/bench/sec/manifests/{digest}", server.url);
    let cpu_before = server.cpu_seconds();
    let by_tag = wrk_rate(&tag_url, args.connections, args.seconds)?;
    // The server's CPU per request: steadier than the rate on a machine wrk shares.
    let tag_cpu_us = (server.cpu_seconds() - cpu_before) * 1e6 / (by_tag * args.seconds as f64);
    let by_digest = wrk_rate(&digest_url, args.connections, args.seconds)?;
    Ok(ManifestRates {
        by_tag,
        tag_cpu_us,
        by_digest,
    })
}

/// The middle value (the mean of the two middle ones for an even count); 0 for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The benchmark upstream's name in wharf's config: also its path prefix.
const ROUTED_NAME: &str = "bench.registry";

pub async fn vs_nginx(args: &Args) -> anyhow::Result<()> {
    for (tool, package) in [(WRK, "wrk"), (NGINX, "nginx")] {
        anyhow::ensure!(
            Path::new(tool).exists(),
            "{tool} not found: apt-get install {package}"
        );
    }
    let upstream = Registry::start(RegistryOptions::default()).await?;
    let pusher = Pusher::new(&upstream.url(), PushAuth::None);
    let small = image(Format::Docker, "bench-nginx", "amd64", 2);
    let warm = big_image(9, args.warm_blob_mib * 1024 * 1024);
    pusher.push_image("bench/sec", "v1", &small).await?;
    pusher.push_image("bench/warm", "v1", &warm).await?;
    let dir = tempfile::tempdir()?;

    let access_log = !args.no_access_log;
    let wharf = start_wharf(&args.wharf_bin, &upstream.url(), dir.path(), access_log).await?;
    // Warm wharf, and take the bytes nginx will serve from it.
    let http = reqwest::Client::new();
    let manifest = http
        .get(format!("{}/v2/bench/sec/manifests/v1", wharf.url))
        .header("accept", ACCEPT)
        .send()
        .await?
        .error_for_status()?;
    let content_type = header(&manifest, "content-type")?;
    let digest = header(&manifest, "docker-content-digest")?;
    let manifest = manifest.bytes().await?;
    let blob_digest = warm.layers[0].digest.clone();
    let blob = http
        .get(format!("{}/v2/bench/warm/blobs/{blob_digest}", wharf.url))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let root = dir.path().join("root");
    let manifests = root.join("v2/bench/sec/manifests");
    let blobs = root.join("v2/bench/warm/blobs");
    std::fs::create_dir_all(&manifests)?;
    std::fs::create_dir_all(&blobs)?;
    std::fs::write(manifests.join("v1"), &manifest)?;
    std::fs::write(manifests.join(&digest), &manifest)?;
    std::fs::write(blobs.join(&blob_digest), &blob)?;
    let nginx = start_nginx(dir.path(), &root, &content_type, &digest, access_log).await?;

    // The manifest phases in rounds, nginx then wharf in each: the VM's speed drifts over
    // seconds, so each round's ratio compares neighbours in time.
    let servers = [&nginx, &wharf];
    let mut manifests = [Vec::new(), Vec::new()];
    for round in 1..=args.rounds.max(1) {
        for (server, samples) in servers.iter().zip(manifests.iter_mut()) {
            let sample = manifest_rates(server, &digest, args)?;
            eprintln!(
                "round {round}, {}: {:.0} req/s by tag ({:.1} CPU-µs each), {:.0} by digest",
                server.name, sample.by_tag, sample.tag_cpu_us, sample.by_digest
            );
            samples.push(sample);
        }
    }
    let [nginx_rounds, wharf_rounds] = &manifests;
    let ratio = |f: fn(&ManifestRates) -> f64| {
        median(
            nginx_rounds
                .iter()
                .zip(wharf_rounds)
                .map(|(n, w)| f(w) / f(n))
                .collect(),
        )
    };
    let ratios = RoundRatios {
        by_tag: ratio(|m| m.by_tag),
        tag_cpu_us: ratio(|m| m.tag_cpu_us),
        by_digest: ratio(|m| m.by_digest),
    };
    let mut rows = Vec::new();
    for (server, samples) in servers.iter().zip(&manifests) {
        let blob_url = format!("{}/v2/bench/warm/blobs/{blob_digest}", server.url);
        let tag_url = format!("{}/v2/bench/sec/manifests/v1", server.url);
        let cpu_before = server.cpu_seconds();
        let (bytes, secs) = throughput(&Load::plain(), &blob_url, 4, args.seconds).await?;
        let cpu = server.cpu_seconds() - cpu_before;
        let gb = bytes as f64 / 1e9;
        let (idle_kib, latency_ms) = idle_cost(server, &tag_url).await?;
        let figures = Figures {
            name: server.name,
            by_tag: median(samples.iter().map(|m| m.by_tag).collect()),
            tag_cpu_us: median(samples.iter().map(|m| m.tag_cpu_us).collect()),
            by_digest: median(samples.iter().map(|m| m.by_digest).collect()),
            gb_per_s: gb / secs,
            cpu_per_gb: cpu / gb,
            idle_kib,
            latency_ms,
        };
        eprintln!(
            "{}: {:.0} req/s by tag ({:.1} CPU-µs each), {:.0} by digest (medians of {} rounds), {:.2} GB/s at {:.3} CPU-s/GB, {idle_kib:.1} KiB per idle connection, {latency_ms:.1} ms meanwhile",
            server.name,
            figures.by_tag,
            figures.tag_cpu_us,
            figures.by_digest,
            samples.len(),
            figures.gb_per_s,
            figures.cpu_per_gb
        );
        rows.push(figures);
    }
    let n = &rows[0];
    println!(
        "| server | manifest by tag, {c} conns (req/s) | CPU-µs a request by tag | by digest (req/s) | warm {m} MiB blob, 4 clients (GB/s) | CPU-s/GB | KiB per idle connection ({IDLE_CONNECTIONS}) | a request meanwhile (ms) |",
        c = args.connections,
        m = args.warm_blob_mib
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (i, r) in rows.iter().enumerate() {
        // wharf's manifest ratios: the median of the rounds' own ratios.
        let (tag, cpu, digest) = if i == 0 {
            (1.0, 1.0, 1.0)
        } else {
            (ratios.by_tag, ratios.tag_cpu_us, ratios.by_digest)
        };
        println!(
            "| {} | {:.0} ({tag:.2}x) | {:.1} ({cpu:.2}x) | {:.0} ({digest:.2}x) | {:.2} | {:.3} ({:.2}x) | {:.1} | {:.1} |",
            r.name,
            r.by_tag,
            r.tag_cpu_us,
            r.by_digest,
            r.gb_per_s,
            r.cpu_per_gb,
            r.cpu_per_gb / n.cpu_per_gb,
            r.idle_kib,
            r.latency_ms
        );
    }
    // What routing by the registry's name costs: the same manifest through its prefix.
    let prefixed = format!("{}/v2/{ROUTED_NAME}/bench/sec/manifests/v1", wharf.url);
    // (A build from before routing by prefix answers 404 there.)
    extra_row(
        &format!("wharf by prefix (`/v2/{ROUTED_NAME}/bench/sec/...`)"),
        &wharf,
        &prefixed,
        None,
        args,
        n,
    );
    drop(wharf);
    // The framework's floor: hyper alone with the same answer made once (loadtest/src/floor.rs).
    let floor_dir = dir.path().join("floor");
    std::fs::create_dir_all(&floor_dir)?;
    std::fs::write(floor_dir.join("manifest"), &manifest)?;
    std::fs::write(floor_dir.join("content-type"), &content_type)?;
    std::fs::write(floor_dir.join("digest"), &digest)?;
    let floor = start_floor(&floor_dir).await?;
    extra_row(
        "hyper alone, the answer made once (the framework's floor)",
        &floor,
        &format!("{}/v2/bench/sec/manifests/v1", floor.url),
        None,
        args,
        n,
    );
    drop(floor);
    // What each client's own upstream login costs where it is used: another wharf whose
    // upstream takes clients' logins (credentials = "client"), the same manifest with a Basic
    // login on every request (the verdict cached; the registry here lets everyone in).
    let label = "wharf, each client's own upstream login (`credentials = \"client\"`)";
    let private = ClientLogins::Yes;
    match start_wharf_with(
        &args.wharf_bin,
        &upstream.url(),
        dir.path(),
        access_log,
        private,
    )
    .await
    {
        Ok(wharf) => {
            let url = format!("{}/v2/bench/sec/manifests/v1", wharf.url);
            let login = "Basic YWxpY2U6YWxpY2UtcGFzc3dvcmQ="; // alice:alice-password
            match wrk_rate_with(&url, 2, 1, Some(login)) {
                Ok(_) => extra_row(label, &wharf, &url, Some(login), args, n),
                Err(e) => println!("| {label} | not measured: {e} | | | | | | |"),
            }
        }
        // A build from before per-user logins refuses the setting.
        Err(e) => println!("| {label} | not measured: {e} | | | | | | |"),
    }
    Ok(())
}

/// One more row of the table: `server`'s rate and CPU a request on `url` (with `authorization`),
/// against nginx's by-tag figures `n`.
fn extra_row(
    label: &str,
    server: &Server,
    url: &str,
    authorization: Option<&str>,
    args: &Args,
    n: &Figures,
) {
    let cpu_before = server.cpu_seconds();
    match wrk_rate_with(url, args.connections, args.seconds, authorization) {
        Ok(rate) => {
            let cpu_us = (server.cpu_seconds() - cpu_before) * 1e6 / (rate * args.seconds as f64);
            println!(
                "| {label} | {rate:.0} ({:.2}x) | {cpu_us:.1} ({:.2}x) | | | | | |",
                rate / n.by_tag,
                cpu_us / n.tag_cpu_us
            );
        }
        Err(e) => println!("| {label} | not measured: {e} | | | | | | |"),
    }
}

/// Whether the benchmark upstream takes each client's own login.
#[derive(Clone, Copy, PartialEq)]
enum ClientLogins {
    No,
    Yes,
}

fn header(response: &reqwest::Response, name: &str) -> anyhow::Result<String> {
    Ok(response
        .headers()
        .get(name)
        .ok_or_else(|| anyhow::anyhow!("no {name} header"))?
        .to_str()?
        .to_string())
}

/// wharf on local disk, its access lines (and nothing else) going to a file, or no lines.
async fn start_wharf(
    bin: &Path,
    upstream: &str,
    dir: &Path,
    access_log: bool,
) -> anyhow::Result<Server> {
    start_wharf_with(bin, upstream, dir, access_log, ClientLogins::No).await
}

async fn start_wharf_with(
    bin: &Path,
    upstream: &str,
    dir: &Path,
    access_log: bool,
    client_logins: ClientLogins,
) -> anyhow::Result<Server> {
    let port = free_port();
    let data = dir.join(format!("wharf-data-{port}"));
    let log = std::fs::File::create(dir.join("wharf-access.log"))?;
    // The upstream under a name that is a path component, so it can also be reached by prefix.
    let config = dir.join(format!("wharf-{port}.toml"));
    let mut text =
        format!("[[upstream]]\nname = \"{ROUTED_NAME}\"\nurl = \"{upstream}\"\ndefault = true\n");
    if client_logins == ClientLogins::Yes {
        text.push_str("credentials = \"client\"\n");
    }
    std::fs::write(&config, text)?;
    let child = Command::new(bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .env(
            "WHARF_LOG",
            if access_log {
                "warn,wharf::access=info"
            } else {
                "warn,wharf::access=off"
            },
        )
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let server = Server {
        name: "wharf",
        url: format!("http://127.0.0.1:{port}"),
        child,
    };
    wait_up(port).await?;
    Ok(server)
}

/// This loadtest binary serving the framework floor (`--serve-floor`) from `dir`.
async fn start_floor(dir: &Path) -> anyhow::Result<Server> {
    let port = free_port();
    let child = Command::new(std::env::current_exe()?)
        .arg("--serve-floor")
        .arg(port.to_string())
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()?;
    let server = Server {
        name: "hyper",
        url: format!("http://127.0.0.1:{port}"),
        child,
    };
    wait_up(port).await?;
    Ok(server)
}

/// nginx serving `root` as files: the manifest with its media type and digest header, the
/// blob as octets, with sendfile, an access line per request (or none) and two workers.
async fn start_nginx(
    dir: &Path,
    root: &Path,
    content_type: &str,
    digest: &str,
    access_log: bool,
) -> anyhow::Result<Server> {
    let port = free_port();
    let d = dir.join("nginx");
    std::fs::create_dir_all(&d)?;
    let d = d.display();
    let root = root.display();
    let access = if access_log {
        format!("{d}/access.log")
    } else {
        "off".to_string()
    };
    let config = format!(
        r#"daemon off;
worker_processes 2;
worker_rlimit_nofile 30000;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 15000; }}
http {{
  access_log {access};
  sendfile on;
  tcp_nopush on;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port};
    root {root};
    location /v2/bench/sec/manifests/ {{
      default_type {content_type};
      add_header Docker-Content-Digest {digest};
    }}
    location /v2/bench/warm/blobs/ {{
      default_type application/octet-stream;
    }}
  }}
}}
"#
    );
    let path: PathBuf = dir.join("nginx/nginx.conf");
    std::fs::write(&path, config)?;
    let child = Command::new(NGINX)
        .arg("-c")
        .arg(&path)
        .arg("-e")
        .arg(dir.join("nginx/error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let server = Server {
        name: "nginx",
        url: format!("http://127.0.0.1:{port}"),
        child,
    };
    wait_up(port).await?;
    Ok(server)
}

async fn wait_up(port: u16) -> anyhow::Result<()> {
    let up = wait_until(Duration::from_secs(20), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    anyhow::ensure!(up, "the server on port {port} did not start");
    Ok(())
}

/// wrk with two threads and `connections` connections for `seconds` on `url`: requests per
/// second.
fn wrk_rate(url: &str, connections: usize, seconds: u64) -> anyhow::Result<f64> {
    wrk_rate_with(url, connections, seconds, None)
}

/// [`wrk_rate`], each request carrying `authorization` when given.
fn wrk_rate_with(
    url: &str,
    connections: usize,
    seconds: u64,
    authorization: Option<&str>,
) -> anyhow::Result<f64> {
    let mut wrk = Command::new(WRK);
    wrk.args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .args(["-H", &format!("Accept: {ACCEPT}")]);
    if let Some(authorization) = authorization {
        wrk.args(["-H", &format!("Authorization: {authorization}")]);
    }
    let out = wrk.arg(url).output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "wrk against {url}: {text}"
    );
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no rate in wrk's output: {text}"))
}

/// Open [`IDLE_CONNECTIONS`] keep-alive connections, each after one request, and leave them
/// idle: the server's memory per connection, and how long one more request takes meanwhile.
async fn idle_cost(server: &Server, url: &str) -> anyhow::Result<(f64, f64)> {
    let addr = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('/'))
        .map(|(host, _)| host.to_string())
        .ok_or_else(|| anyhow::anyhow!("bad url {url}"))?;
    let path = url
        .split_once(addr.as_str())
        .map_or("/", |(_, p)| p)
        .to_string();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = server.rss_kib();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {ACCEPT}\r\n\r\n");
    let mut open = Vec::with_capacity(IDLE_CONNECTIONS);
    let mut buf = vec![0u8; 16 * 1024];
    for _ in 0..IDLE_CONNECTIONS {
        let mut stream = tokio::net::TcpStream::connect(&addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await??;
        anyhow::ensure!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{}: {}",
            server.name,
            String::from_utf8_lossy(&buf[..n.min(200)])
        );
        open.push(stream);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.rss_kib();
    let started = Instant::now();
    reqwest::Client::new()
        .get(url)
        .header("accept", ACCEPT)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let latency = started.elapsed().as_secs_f64() * 1000.0;
    drop(open);
    Ok((
        after.saturating_sub(before) as f64 / IDLE_CONNECTIONS as f64,
        latency,
    ))
}
