//! Hand-written HTTP/1.1 over a raw socket, for requests no well-behaved
//! client would send.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::REQUEST_TIMEOUT;

/// A response read off a raw socket.
#[derive(Debug, Clone)]
pub(crate) struct RawResponse {
    /// The status code; `None` when the server closed the connection without
    /// answering.
    pub(crate) status: Option<u16>,
    /// The status line and headers as text.
    pub(crate) head: String,
    /// The body, de-chunked.
    pub(crate) body: Vec<u8>,
}

/// Sends `request` as-is and reads one response. Panics if the server neither
/// answers nor closes the connection within [`REQUEST_TIMEOUT`]: that is a
/// hang.
pub(crate) async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // The server may answer and close before it has read everything.
        let _ = stream.write_all(request).await;
        read_response(&mut stream).await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("no response within {REQUEST_TIMEOUT:?}: the proxy hung"))
}

/// `GET path` with `Connection: close` and the given extra header lines
/// (each without its CRLF), as bytes so that they may be anything.
pub(crate) async fn raw_get(addr: SocketAddr, path: &str, headers: &[&[u8]]) -> RawResponse {
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n").into_bytes();
    for header in headers {
        request.extend_from_slice(header);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    raw_exchange(addr, &request).await
}

/// POSTs `chunks` chunks of `chunk` to `path` with chunked transfer
/// encoding, one write per chunk, and reads the response.
pub(crate) async fn raw_chunked_upload(
    addr: SocketAddr,
    path: &str,
    chunk: &[u8],
    chunks: usize,
) -> RawResponse {
    let upload = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let size = format!("{:x}\r\n", chunk.len());
        for _ in 0..chunks {
            stream.write_all(size.as_bytes()).await.unwrap();
            stream.write_all(chunk).await.unwrap();
            stream.write_all(b"\r\n").await.unwrap();
        }
        stream.write_all(b"0\r\n\r\n").await.unwrap();
        read_response(&mut stream).await
    };
    tokio::time::timeout(REQUEST_TIMEOUT * 3, upload)
        .await
        .unwrap_or_else(|_| panic!("upload not answered within {:?}", REQUEST_TIMEOUT * 3))
}

/// Reads one response off `stream`, leaving the connection open for the
/// next when the response is framed (a length or chunks).
pub(crate) async fn read_response(stream: &mut TcpStream) -> RawResponse {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                return RawResponse {
                    status: None,
                    head: String::from_utf8_lossy(&buf).into_owned(),
                    body: Vec::new(),
                };
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    let mut rest = buf[head_end..].to_vec();
    let lower = head.to_ascii_lowercase();
    let body = if lower.contains("transfer-encoding: chunked") {
        read_chunked(stream, rest).await
    } else if let Some(len) = content_length(&lower) {
        while rest.len() < len {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
            }
        }
        rest.truncate(len);
        rest
    } else {
        let _ = stream.read_to_end(&mut rest).await;
        rest
    };
    RawResponse { status, head, body }
}

async fn read_chunked(stream: &mut TcpStream, mut buf: Vec<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        // Make sure a whole size line, then the whole chunk and its CRLF, is buffered.
        let line_end = loop {
            if let Some(i) = find(&buf[pos..], b"\r\n") {
                break pos + i;
            }
            if !fill(stream, &mut buf).await {
                return body;
            }
        };
        let size_text = String::from_utf8_lossy(&buf[pos..line_end]).into_owned();
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return body;
        };
        if size == 0 {
            return body;
        }
        let start = line_end + 2;
        while buf.len() < start + size + 2 {
            if !fill(stream, &mut buf).await {
                return body;
            }
        }
        body.extend_from_slice(&buf[start..start + size]);
        pos = start + size + 2;
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

fn content_length(lower_head: &str) -> Option<usize> {
    lower_head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// === impl RawResponse ===

impl RawResponse {
    /// The body as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}
