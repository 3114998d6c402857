//! The load bench's client side: one request (`send`, timed, with the server's timing headers)
//! and the closed-loop driver (`run_level`: a pool of clients, each sending its next image as
//! soon as its previous one is answered), with what one level measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::report::ms;

/// One answered (or failed) request.
pub struct Sample {
    /// `None`: the request failed before a status arrived (connection error, client timeout).
    pub status: Option<u16>,
    pub latency: Duration,
    pub queue_ms: Option<f64>,
    pub inference_ms: Option<f64>,
    pub tokens: Option<usize>,
    pub text: Option<String>,
}

impl Sample {
    pub fn ok(&self) -> bool {
        self.status == Some(201)
    }
}

pub async fn send(client: &reqwest::Client, url: &str, image: Bytes) -> Sample {
    let started = Instant::now();
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "image/png")
        .body(image)
        .send()
        .await;
    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let (status, queue_ms, inference_ms, body) = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let queue_ms = header(&response, "x-queue-time-ms");
            let inference_ms = header(&response, "x-inference-time-ms");
            match response.bytes().await {
                Ok(body) => (Some(status), queue_ms, inference_ms, body),
                Err(_) => (None, None, None, Bytes::new()),
            }
        }
        Err(_) => (None, None, None, Bytes::new()),
    };
    let latency = started.elapsed();
    let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    Sample {
        status,
        latency,
        queue_ms,
        inference_ms,
        tokens: json
            .as_ref()
            .and_then(|j| j["generated_tokens"].as_u64())
            .map(|t| t as usize),
        text: json.and_then(|j| j["text"].as_str().map(str::to_string)),
    }
}

pub struct Level {
    pub concurrency: usize,
    pub planned: usize,
    pub samples: Vec<Sample>,
    pub wall: Duration,
    /// CPU time the server process used during the level, in cores (CPU seconds / wall
    /// seconds). On this shared machine it shows how much of the CPU the server actually got.
    pub server_cores: Option<f64>,
}

impl Level {
    pub fn ok(&self) -> usize {
        self.samples.iter().filter(|s| s.ok()).count()
    }

    pub fn throughput(&self) -> f64 {
        self.ok() as f64 / self.wall.as_secs_f64()
    }

    /// Images per CPU-second the server used: less sensitive than images/s to other work
    /// taking CPU from the server, though not immune (a starved thread pool also spins).
    pub fn per_cpu_second(&self) -> f64 {
        self.server_cores
            .map_or(f64::NAN, |cores| self.throughput() / cores)
    }

    pub fn latencies(&self) -> Vec<f64> {
        let mut latencies: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.ok())
            .map(|s| ms(s.latency))
            .collect();
        latencies.sort_by(f64::total_cmp);
        latencies
    }
}

/// Closed loop: `concurrency` clients share a counter of `requests` tickets; each sends its next
/// image as soon as its previous one is answered. No ticket is taken after `level_time`.
pub async fn run_level(
    client: &reqwest::Client,
    url: &str,
    images: &[Bytes],
    concurrency: usize,
    requests: usize,
    level_time: Duration,
) -> Level {
    let tickets = Arc::new(AtomicUsize::new(0));
    let images = Arc::new(images.to_vec());
    let started = Instant::now();
    let deadline = started + level_time;
    let clients: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, images, tickets) = (
                client.clone(),
                url.to_string(),
                images.clone(),
                tickets.clone(),
            );
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while Instant::now() < deadline {
                    let ticket = tickets.fetch_add(1, Ordering::SeqCst);
                    if ticket >= requests {
                        break;
                    }
                    let image = images[ticket % images.len()].clone();
                    samples.push(send(&client, &url, image).await);
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(requests);
    for handle in clients {
        samples.extend(handle.await.expect("client task"));
    }
    Level {
        concurrency,
        planned: requests,
        samples,
        wall: started.elapsed(),
        server_cores: None,
    }
}
