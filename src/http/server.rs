//! The HTTP/1.1 server around the router: a cap on open connections (503 beyond it), HTTPS when
//! `--tls-cert` is set (the handshake on the connection's own task, within the header time
//! limit, with the newest certificate: `tls`), a time limit for request headers, the peer
//! address for handlers, and graceful shutdown. hyper speaks the protocol; what it refuses
//! before the router sees a request (bad framing 400, headers too large 431) is answered by
//! hyper itself, without a JSON body (README, "Errors").

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use super::error::{ApiError, ErrorKind};
use super::tls::Tls;
use crate::metrics::Metrics;

/// Per-connection limits, from `serve`'s flags.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// A request's headers (and, on a kept-alive connection, the next request's) must arrive
    /// within this time, or the connection is closed.
    pub header_read_timeout: Duration,
    /// What a refused connection is told to wait.
    pub retry_after: Duration,
}

/// Refused connections being answered at once, so that a flood cannot make the refusals
/// themselves unbounded.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// How long a refusal may take to write its answer and read what the client still sends.
const REFUSAL_TIME: Duration = Duration::from_secs(2);
/// Bytes of a refused connection's request read before answering (its head) and after (its
/// body, dropped).
const MAX_REFUSED_HEAD: usize = 64 * 1024;
const MAX_REFUSED_BODY: usize = 1024 * 1024;

/// Serves `router` on `listener` (over TLS when `tls` is set) until `shutdown` completes, then
/// waits for the open connections to finish their requests (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()>,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            metrics.reject("connections");
            // Beyond this many answers at once the loop waits, and new connections wait in
            // the kernel's backlog: refusals stay bounded and none is dropped unanswered.
            let refusal = refusals
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let acceptor = tls.as_ref().map(Tls::acceptor);
            tokio::spawn(async move {
                match acceptor {
                    None => refuse(stream, limits).await,
                    Some(acceptor) => {
                        if let Ok(Ok(stream)) =
                            tokio::time::timeout(REFUSAL_TIME, acceptor.accept(stream)).await
                        {
                            refuse(stream, limits).await;
                        }
                    }
                }
                drop(refusal);
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request.map(Body::new))
        });
        // Taken now, so that a certificate reloaded while this handshake runs does not change
        // what this connection was offered.
        let acceptor = tls.as_ref().map(Tls::acceptor);
        let (builder, watcher, metrics) = (builder.clone(), graceful.watcher(), metrics.clone());
        metrics.open_connections.inc();
        tokio::spawn(async move {
            let served = match acceptor {
                None => {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection).await
                }
                Some(acceptor) => {
                    // Within the header time limit, as a plain request's head would be; a
                    // client that speaks plain HTTP to this port fails here.
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => {
                            let connection =
                                builder.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(connection).await
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%error, %peer, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(error) = served {
                // Header timeouts, resets and malformed requests: the client's doing.
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            metrics.open_connections.dec();
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Accept errors are about one connection (reset before accept) or about the process (out of
/// file descriptors). Neither may end the server; the second would spin, so wait a little.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    tracing::warn!(%error, "accept failed (out of file descriptors? see --max-connections)");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Answers a connection beyond `--max-connections` with the API's 503 and closes it. The
/// request's head is read first (clients treat an answer that comes before their request as a
/// broken connection, not as an answer); what follows it is read and dropped for a moment, so
/// that closing with unread data does not reset the connection before the answer is read.
async fn refuse(mut stream: impl AsyncRead + AsyncWrite + Unpin, limits: ConnectionLimits) {
    let error = ApiError::retry_later(
        ErrorKind::Unavailable,
        "too_many_connections",
        format!(
            "the server has its maximum of {} connections open (--max-connections); retry shortly",
            limits.max_connections
        ),
        limits.retry_after,
    );
    let body = serde_json::to_string(&error.body()).expect("serialisable; this is a bug");
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nx-content-type-options: nosniff\r\nretry-after: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        limits.retry_after.as_secs().max(1),
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REFUSED_HEAD {
            match stream.read(&mut buf).await? {
                0 => return Ok(()),
                n => head.extend_from_slice(&buf[..n]),
            }
        }
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut drained = 0;
        while drained < MAX_REFUSED_BODY {
            match stream.read(&mut buf).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}
