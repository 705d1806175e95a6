//! The HTTP/1 accept loop, with the bounds a public port needs: a deadline for a request's
//! headers (slowloris), a cap on header size, a cap on open connections, connection upgrades
//! (WebSockets), and a graceful stop that lets requests in flight and upgraded sessions finish.
//! (Bodies are bounded in size and time where they are read: `http::execute::read_body`.)

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

use crate::http::Holds;

type Request = hyper::Request<hyper::body::Incoming>;
use tracing::{debug, warn};

/// Largest request head (request line and headers) read; more is answered 431.
pub const MAX_HEAD_BYTES: usize = 64 << 10;

#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `router` until `stop` resolves, then stops accepting and waits for every open
/// connection to finish the request it is serving, and for every session in `sessions` (the
/// WebSockets the router's handlers upgraded to) to end.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    sessions: TaskTracker,
    stop: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let connections = TaskTracker::new();
    let (stopping_tx, stopping) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors, mostly: wait a little rather than spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(%peer, max = limits.max_connections, "too many connections; closed");
            continue;
        };
        // Held by the connection and by each of its requests: a request upgraded to a
        // WebSocket keeps its connection's slot for as long as its session lasts.
        let slot: Arc<dyn Send + Sync> = Arc::new(slot);
        let held = slot.clone();
        let service = tower::ServiceExt::map_request(router.clone(), move |mut req: Request| {
            req.extensions_mut().insert(Holds::new(held.clone()));
            req
        });
        // Small answers go out at once rather than waiting on Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let conn = http
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
            .with_upgrades();
        let mut stopping = stopping.clone();
        connections.spawn(async move {
            tokio::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = stopping.changed() => {
                    // The request being served is answered; the connection then closes.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                debug!(%peer, error = %e, "connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    connections.close();
    connections.wait().await;
    sessions.close();
    sessions.wait().await;
}
