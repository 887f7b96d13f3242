//! Response bodies and reading request bodies within limits.

use std::convert::Infallible;
use std::io::Read;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};

use crate::error::{ApiError, Code};

/// Every response's body type.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// Size of the chunks a blob streams in.
const CHUNK: usize = 256 * 1024;
/// Chunks queued between the reading thread and the connection.
const QUEUED_CHUNKS: usize = 2;

/// An empty body.
pub fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

/// A body of `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

/// A response with a status and no body.
pub fn status(s: StatusCode) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = s;
    r
}

/// The error's JSON answer.
pub fn error(e: &ApiError) -> Response<Body> {
    let body = e.body();
    let mut r = Response::new(full(body));
    *r.status_mut() = e.code.status();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Streams bytes `start..=end` of what `reader` yields (its whole content is read, so a
/// verifying reader checks everything) from a blocking thread. The last chunk is held back
/// until the reader has reached its end without error: a reader that fails its check ends
/// the body with an error, so hyper aborts the connection and the client never receives a
/// complete wrong body. A client that reads nothing for `idle` has its answer aborted, so a
/// slow reader cannot hold the reading thread. `on_sent` counts bytes as they go.
pub fn stream(
    mut reader: Box<dyn Read + Send>,
    start: u64,
    end: u64,
    idle: Duration,
    on_error: impl FnOnce(std::io::Error) + Send + 'static,
    on_sent: impl Fn(u64) + Send + 'static,
) -> Body {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(QUEUED_CHUNKS);
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        // Ok(false): the client went away or stalled.
        let send = |item| -> bool {
            matches!(
                rt.block_on(tokio::time::timeout(idle, tx.send(item))),
                Ok(Ok(()))
            )
        };
        let mut pos = 0u64;
        let mut held: Option<Bytes> = None;
        let mut buf = BytesMut::new();
        loop {
            buf.resize(CHUNK, 0);
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let msg = e.to_string();
                    on_error(e);
                    send(Err(std::io::Error::other(msg)));
                    return;
                }
            };
            let chunk = buf.split_to(n).freeze();
            let (a, b) = (pos, pos + n as u64);
            pos = b;
            // The part of this chunk inside start..=end.
            let lo = start.max(a);
            let hi = (end + 1).min(b);
            if lo >= hi {
                continue;
            }
            let part = chunk.slice((lo - a) as usize..(hi - a) as usize);
            if let Some(prev) = held.replace(part) {
                on_sent(prev.len() as u64);
                if !send(Ok(prev)) {
                    return;
                }
            }
        }
        if let Some(last) = held {
            on_sent(last.len() as u64);
            send(Ok(last));
        }
    });
    let s = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(|r| r.map(Frame::data));
    BodyExt::boxed(StreamBody::new(s))
}

use futures::StreamExt as _;

/// Reads a whole request body of at most `max` bytes, waiting at most `idle` for each piece.
pub async fn read_limited(body: Incoming, max: usize, idle: Duration) -> Result<Bytes, ApiError> {
    let mut body = body;
    let mut out = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(ApiError::new(
                    Code::BlobUploadInvalid,
                    format!("no request body data for {} s", idle.as_secs()),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::new(
                    Code::BlobUploadInvalid,
                    format!("reading the request body: {e}"),
                ));
            }
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > max {
                return Err(ApiError::new(
                    Code::TooLarge,
                    format!("request body over the {max}-byte limit"),
                ));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}
