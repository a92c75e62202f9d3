//! Real origins on loopback: an HTTP/1.1 app written with hyper 1 that
//! reports what reached it, and a WebSocket echo server.
//!
//! Each origin runs on its own thread and runtime, so it keeps serving while
//! a test blocks (on curl, say) whatever the test's runtime flavour.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// Chunks `/stream` sends.
pub(crate) const STREAM_CHUNKS: usize = 8;
/// Bytes in each chunk of `/stream`.
pub(crate) const STREAM_CHUNK_BYTES: usize = 16 * 1024;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The app behind the proxy.
///
/// - `/stream`: a chunked body of [`STREAM_CHUNKS`] chunks, see
///   [`expected_stream_body`]. With `?gated` it sends the first chunk, then
///   waits for [`Origin::release_stream`] before the rest.
/// - `/upload`: reads the request body as it streams in and answers
///   `<byte count> <fnv1a hex>` of what arrived.
/// - `/login?user=NAME[&session=VALUE]`: what an app's login does — names
///   the user in `Vigil-User`, and with `session`, opens a session with
///   `Set-Cookie: session=VALUE`.
/// - `/rolling`: the echo, with `Set-Cookie: session=VALUE; Max-Age=1800`
///   re-sending the request's `session` cookie (an app's rolling expiry).
/// - `/reauth`: what an app says once its user re-authenticated (passed a
///   step-up): `Vigil-Confirm: 1`.
/// - any other path: 200 with `<METHOD> <path?query>` on the first line, then
///   every request header it received as `name: value`, one per line.
#[derive(Debug)]
pub(crate) struct Origin {
    addr: SocketAddr,
    state: Arc<State>,
    server: Server,
}

/// A WebSocket server that echoes every text and binary message back.
#[derive(Debug)]
pub(crate) struct WsOrigin {
    addr: SocketAddr,
    server: Server,
}

#[derive(Debug, Default)]
struct State {
    hits: AtomicUsize,
    stream_gate: Notify,
}

/// An app that reads each request's head and then misbehaves, the same way
/// on every connection, to drive the proxy's answers to upstream failures.
#[derive(Debug)]
pub(crate) struct BadOrigin {
    addr: SocketAddr,
    server: Server,
}

/// What a [`BadOrigin`] does once it has read a request's head.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Misbehaviour {
    /// Keeps the connection open and never answers.
    Silent,
    /// Writes these bytes, then closes the connection (an empty slice:
    /// closes without answering).
    Send(&'static [u8]),
    /// Resets the connection (RST) without answering.
    Reset,
}

/// A thread running an accept loop; stopped and joined on drop.
#[derive(Debug)]
struct Server {
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The body `/stream` sends: chunk `i` is [`STREAM_CHUNK_BYTES`] copies of `b'a' + i`.
pub(crate) fn expected_stream_body() -> Vec<u8> {
    (0..STREAM_CHUNKS).flat_map(chunk_bytes).collect()
}

/// 64-bit FNV-1a of `bytes`, the digest `/upload` reports.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_update(0xcbf2_9ce4_8422_2325, bytes)
}

fn fnv1a_update(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn chunk_bytes(i: usize) -> Vec<u8> {
    let fill = b'a' + u8::try_from(i % 26).unwrap();
    vec![fill; STREAM_CHUNK_BYTES]
}

// === impl Origin ===

impl Origin {
    /// Starts the app on a free loopback port.
    pub(crate) fn start() -> Origin {
        let state = Arc::new(State::default());
        let served = state.clone();
        let (addr, server) = Server::spawn(move |stream| {
            let state = served.clone();
            async move {
                let service = service_fn(move |req| handle(req, state.clone()));
                // Errors are the client's business (the proxy hanging up on a
                // hostile request, say); the origin just drops the connection.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        });
        Origin {
            addr,
            state,
            server,
        }
    }

    /// The address the proxy's upstream should name.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests that reached the app so far.
    pub(crate) fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Lets a `/stream?gated` response send the rest of its chunks.
    pub(crate) fn release_stream(&self) {
        self.state.stream_gate.notify_one();
    }
}

async fn handle(req: Request<Incoming>, state: Arc<State>) -> Result<Response<Body>, Infallible> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let response = match req.uri().path() {
        "/stream" => {
            let gated = req.uri().query().is_some_and(|q| q.contains("gated"));
            stream(state, gated)
        }
        "/upload" => upload(req).await,
        "/login" => login(&req),
        "/rolling" => rolling(&req),
        "/reauth" => Response::builder()
            .header("vigil-confirm", "1")
            .body(Full::new(Bytes::from("welcome back\n")).boxed_unsync())
            .unwrap(),
        _ => echo(&req),
    };
    Ok(response)
}

fn echo(req: &Request<Incoming>) -> Response<Body> {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut text = format!("{} {target}\n", req.method());
    for (name, value) in req.headers() {
        text.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    Response::builder()
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(text)).boxed_unsync())
        .unwrap()
}

/// An app with a rolling expiry: the echo, re-sending the request's
/// `session` cookie with a fresh `Max-Age` on every response.
fn rolling(req: &Request<Incoming>) -> Response<Body> {
    let session = req
        .headers()
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix("session="))
        .map(str::to_owned);
    let mut response = echo(req);
    if let Some(session) = session {
        response.headers_mut().append(
            "set-cookie",
            format!("session={session}; Path=/; Max-Age=1800; HttpOnly")
                .parse()
                .unwrap(),
        );
    }
    response
}

fn login(req: &Request<Incoming>) -> Response<Body> {
    let query = req.uri().query().unwrap_or("");
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or("")
            .to_owned()
    };
    let mut response = Response::builder()
        .header("content-type", "text/plain")
        .header("vigil-user", param("user"));
    let session = param("session");
    if !session.is_empty() {
        response = response.header("set-cookie", format!("session={session}; Path=/; HttpOnly"));
    }
    response
        .body(Full::new(Bytes::from("welcome\n")).boxed_unsync())
        .unwrap()
}

fn stream(state: Arc<State>, gated: bool) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        for i in 0..STREAM_CHUNKS {
            if tx.send(Bytes::from(chunk_bytes(i))).await.is_err() {
                return;
            }
            if gated && i == 0 {
                state.stream_gate.notified().await;
            }
        }
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
    });
    // No content-length: hyper sends the body chunked, as it is produced.
    Response::builder()
        .header("content-type", "application/octet-stream")
        .body(StreamBody::new(chunks).boxed_unsync())
        .unwrap()
}

async fn upload(req: Request<Incoming>) -> Response<Body> {
    let mut body = req.into_body();
    let mut count = 0usize;
    let mut digest = fnv1a(&[]);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Response::builder()
                .status(400)
                .body(Full::new(Bytes::from("body error")).boxed_unsync())
                .unwrap();
        };
        if let Some(data) = frame.data_ref() {
            count += data.len();
            digest = fnv1a_update(digest, data);
        }
    }
    Response::builder()
        .body(Full::new(Bytes::from(format!("{count} {digest:016x}"))).boxed_unsync())
        .unwrap()
}

// === impl WsOrigin ===

impl WsOrigin {
    /// Starts the echo server on a free loopback port.
    pub(crate) fn start() -> WsOrigin {
        let (addr, server) = Server::spawn(|stream| async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                if message.is_close() {
                    return;
                }
                let data = matches!(message, Message::Text(_) | Message::Binary(_));
                if data && ws.send(message).await.is_err() {
                    return;
                }
            }
        });
        WsOrigin { addr, server }
    }

    /// The address the proxy's upstream should name.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

// === impl BadOrigin ===

impl BadOrigin {
    /// Starts it on a free loopback port.
    pub(crate) fn start(misbehaviour: Misbehaviour) -> BadOrigin {
        let (addr, server) = Server::spawn(move |mut stream| async move {
            if !read_head(&mut stream).await {
                return;
            }
            match misbehaviour {
                Misbehaviour::Silent => {
                    // Held until the server stops and its runtime drops the task.
                    std::future::pending::<()>().await;
                }
                Misbehaviour::Send(bytes) => {
                    let _ = stream.write_all(bytes).await;
                    let _ = stream.shutdown().await;
                }
                Misbehaviour::Reset => {
                    // Closing with a zero linger sends RST instead of FIN.
                    let _ = stream.set_zero_linger();
                    drop(stream);
                }
            }
        });
        BadOrigin { addr, server }
    }

    /// The address the proxy's upstream should name.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Reads up to the end of a request head; false if the peer went away
/// first or the head is implausibly large.
async fn read_head(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        if head.len() > 64 * 1024 {
            return false;
        }
    }
    true
}

// === impl Server ===

impl Server {
    fn spawn<F, Fut>(serve: F) -> (SocketAddr, Server)
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        // Binding port 0 here, before the thread starts, means the address is
        // ours and listening by the time the caller writes it into a config.
        let listener = super::config::held_listener();
        let addr = listener.local_addr().unwrap();
        let (shutdown, mut stop) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stop => return,
                        accepted = listener.accept() => {
                            if let Ok((stream, _)) = accepted {
                                tokio::spawn(serve(stream));
                            }
                        }
                    }
                }
            });
        });
        let server = Server {
            shutdown: Some(shutdown),
            thread: Some(thread),
        };
        (addr, server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
