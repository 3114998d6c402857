//! HTTPS (`--tls-cert`, `--tls-key`): the PEM files read into a rustls server configuration on
//! the ring provider, and reloaded without a restart on SIGHUP or when either file changes
//! (polled every `--tls-reload-poll-secs`). One task owns the files and publishes each new
//! configuration on a `watch` channel; the accept loop takes the latest one for each new
//! connection, and connections already open keep theirs, so a reload drops nothing in flight.
//! A reload that fails (a file missing or half-written, a key that does not match) keeps the
//! certificate being served, and says so in the log and in `altimage_tls_reloads_total`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::metrics::Metrics;

/// Where the certificate and its key are, and how often to look for new ones.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// Its private key: PKCS#8, PKCS#1 or SEC1 (PEM).
    pub key: PathBuf,
    pub poll: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate chain {path} (--tls-cert): {reason}")]
    Cert { path: String, reason: String },
    #[error("cannot read the private key {path} (--tls-key): {reason}")]
    Key { path: String, reason: String },
    #[error(
        "the certificate (--tls-cert {cert}) and the private key (--tls-key {key}) do not make a usable pair: {reason}"
    )]
    Pair {
        cert: String,
        key: String,
        reason: String,
    },
}

/// Reads both files into a server configuration: HTTP/1.1 (the only protocol served), TLS 1.2
/// and 1.3, ring's safe defaults.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_error = |reason: String| TlsError::Cert {
        path: files.cert.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_error("no `CERTIFICATE` block in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.display().to_string(),
        reason: e.to_string(),
    })?;
    let pair_error = |reason: String| TlsError::Pair {
        cert: files.cert.display().to_string(),
        key: files.key.display().to_string(),
        reason,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| pair_error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| pair_error(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The current configuration, cheap to clone: what the accept loop reads per connection.
#[derive(Clone)]
pub struct Tls {
    current: watch::Receiver<Arc<ServerConfig>>,
}

impl Tls {
    /// An acceptor for the next connection, with the newest certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.borrow().clone())
    }

    /// Loads the files (an error here fails start-up) and starts the task that reloads them on
    /// SIGHUP and when they change, until `stop` turns true.
    pub fn start(
        files: TlsFiles,
        metrics: Arc<Metrics>,
        stop: watch::Receiver<bool>,
    ) -> Result<(Tls, tokio::task::JoinHandle<()>), TlsError> {
        let config = load(&files)?;
        let (sender, current) = watch::channel(config);
        let task = tokio::spawn(reload_loop(files, sender, metrics, stop));
        Ok((Tls { current }, task))
    }
}

/// The files' contents, hashed: a change of either, however it was written (in place, by a
/// rename, with the same modification time), is a change.
fn fingerprint(files: &TlsFiles) -> Option<[u8; 32]> {
    let read = |path: &Path| std::fs::read(path).ok();
    let mut hash = Sha256::new();
    hash.update(read(&files.cert)?);
    hash.update(read(&files.key)?);
    Some(hash.finalize().into())
}

async fn reload_loop(
    files: TlsFiles,
    sender: watch::Sender<Arc<ServerConfig>>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; certificates reload when their files change only");
            None
        }
    };
    // What was last tried, loaded or not: a broken pair is tried again only once it changes,
    // so that it is reported once, not every poll. (A certificate written before its key fails
    // once, and loads when the key follows.)
    let mut tried = fingerprint(&files);
    loop {
        let signalled = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            _ = async {
                match hangup.as_mut() {
                    Some(signal) => { signal.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => true,
            _ = tokio::time::sleep(files.poll) => false,
        };
        let now = fingerprint(&files);
        if !signalled && (now.is_none() || now == tried) {
            continue;
        }
        tried = now;
        let files = files.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&files))
            .await
            .expect("loading a certificate does not panic");
        match loaded {
            Ok(config) => {
                sender.send_replace(config);
                metrics.tls_reloads.with_label_values(&["reloaded"]).inc();
                tracing::info!(
                    signalled,
                    "TLS certificate reloaded; new connections get it"
                );
            }
            Err(error) => {
                metrics.tls_reloads.with_label_values(&["failed"]).inc();
                tracing::warn!(%error, "TLS certificate reload failed; still serving the previous one");
            }
        }
    }
}
