//! A loopback app for load runs: answers every request with a small body,
//! and the corpus's logins (`<login path>?session=ID&user=NAME`) with
//! `Set-Cookie: session=ID` and `Vigil-User: NAME`, so that Vigil binds the
//! session to its user as it would behind a real app. It counts what it
//! received, so a run's report can be checked against it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// What the origin received.
#[derive(Debug, Default)]
pub struct Received {
    /// Requests in all.
    pub requests: AtomicU64,
    /// Logins among them.
    pub logins: AtomicU64,
    /// Requests that carried a session cookie.
    pub with_session: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
}

/// The origin's answer body.
const BODY: &[u8] = b"hello from the origin\n";

/// Serves on `listener` until the task is dropped, counting into `received`.
/// HTTP/1.1 and cleartext HTTP/2.
pub async fn serve(listener: TcpListener, login_path: String, received: Arc<Received>) {
    let login_path: Arc<str> = login_path.into();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        received.connections.fetch_add(1, Ordering::Relaxed);
        let received = received.clone();
        let login_path = login_path.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let answer = answer(&req, &login_path, &received);
                async move { Ok::<_, Infallible>(answer) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// Binds `addr` and serves; returns the bound address.
pub async fn start(
    addr: SocketAddr,
    login_path: String,
    received: Arc<Received>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((local, tokio::spawn(serve(listener, login_path, received))))
}

fn answer(req: &Request<Incoming>, login_path: &str, received: &Received) -> Response<Full<Bytes>> {
    received.requests.fetch_add(1, Ordering::Relaxed);
    if req.headers().get(http::header::COOKIE).is_some_and(|c| {
        c.to_str()
            .is_ok_and(|c| c.split(';').any(|p| p.trim_start().starts_with("session=")))
    }) {
        received.with_session.fetch_add(1, Ordering::Relaxed);
    }
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    if req.uri().path() == login_path {
        received.logins.fetch_add(1, Ordering::Relaxed);
        let query = req.uri().query().unwrap_or_default();
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v)
        };
        // The values were percent-encoded with unreserved characters kept;
        // the corpus's ids and user names are made of those.
        if let (Some(session), Some(user)) = (param("session"), param("user")) {
            let cookie = HeaderValue::from_str(&format!("session={session}; Path=/; HttpOnly"));
            let user = HeaderValue::from_str(user);
            if let (Ok(cookie), Ok(user)) = (cookie, user) {
                response
                    .headers_mut()
                    .insert(http::header::SET_COOKIE, cookie);
                response
                    .headers_mut()
                    .insert(http::HeaderName::from_static("vigil-user"), user);
            }
        }
    }
    response
}
