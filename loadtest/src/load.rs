//! Load generators shared by the benchmarks: clients looping GETs for a request rate and
//! latency, blob streams for throughput and the server's CPU per GB.

use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;

use crate::mirrors::Mirror;
use crate::scenarios::ACCEPT;

pub async fn get_ok(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let response = http.get(url).header("accept", ACCEPT).send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        chunk?;
    }
    Ok(())
}

/// How load clients connect: which CA they trust (TLS) and what they send as credentials.
#[derive(Clone, Default)]
pub struct Load {
    pub ca_pem: Option<Vec<u8>>,
    pub authorization: Option<String>,
    /// Refuse HTTP/2 (over TLS, ALPN would pick it).
    pub http1_only: bool,
}

impl Load {
    pub fn plain() -> Load {
        Load::default()
    }

    fn client(&self, pool: usize) -> anyhow::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder().pool_max_idle_per_host(pool);
        if let Some(pem) = &self.ca_pem {
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
        }
        if self.http1_only {
            builder = builder.http1_only();
        }
        Ok(builder.build()?)
    }

    fn get(&self, client: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
        let request = client.get(url).header("accept", ACCEPT);
        match &self.authorization {
            Some(auth) => request.header("authorization", auth),
            None => request,
        }
    }
}

/// `connections` clients looping GETs for `seconds`: requests per second and p99 latency (ms).
pub async fn request_rate(
    load: &Load,
    url: &str,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<(f64, f64)> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let client = load.client(connections)?;
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (client, url, load) = (client.clone(), url.to_string(), load.clone());
            tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new(3)?;
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    match load.get(&client, &url).send().await {
                        Ok(r) if r.status().is_success() => {
                            r.bytes().await?;
                            hist.record(t0.elapsed().as_micros() as u64)?;
                        }
                        _ => errors += 1,
                    }
                }
                anyhow::Ok((hist, errors))
            })
        })
        .collect();
    let mut total = Histogram::<u64>::new(3)?;
    let mut errors = 0;
    for w in workers {
        let (h, e) = w.await??;
        total.add(h)?;
        errors += e;
    }
    anyhow::ensure!(errors == 0, "{errors} failed requests against {url}");
    Ok((
        total.len() as f64 / seconds as f64,
        total.value_at_quantile(0.99) as f64 / 1000.0,
    ))
}

/// 4 clients downloading a warm blob for `seconds`: GB/s, and the mirror's CPU seconds per GB.
pub async fn blob_rate_and_cpu(
    load: &Load,
    mirror: &Mirror,
    url: &str,
    seconds: u64,
) -> anyhow::Result<(f64, f64)> {
    let cpu_before = mirror.cpu_seconds().unwrap_or(0.0);
    let (bytes, secs) = throughput(load, url, 4, seconds).await?;
    let cpu = mirror.cpu_seconds().unwrap_or(0.0) - cpu_before;
    let gb = bytes as f64 / 1e9;
    Ok((gb / secs, cpu / gb))
}

/// `clients` downloading a blob in a loop for `seconds`: bytes moved and the time taken.
pub async fn throughput(
    load: &Load,
    url: &str,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (url, load) = (url.to_string(), load.clone());
            tokio::spawn(async move {
                let client = load.client(1)?;
                let mut bytes = 0u64;
                while Instant::now() < deadline {
                    let response = load.get(&client, &url).send().await?;
                    anyhow::ensure!(
                        response.status().is_success(),
                        "GET {url}: {}",
                        response.status()
                    );
                    let mut stream = response.bytes_stream();
                    while let Some(chunk) = stream.next().await {
                        bytes += chunk?.len() as u64;
                    }
                }
                anyhow::Ok(bytes)
            })
        })
        .collect();
    let mut bytes = 0;
    for w in workers {
        bytes += w.await??;
    }
    Ok((bytes, started.elapsed().as_secs_f64()))
}
