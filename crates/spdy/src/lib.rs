//! SPDY/3.1 sessions over tokio, wire-compatible with Go's `github.com/moby/spdystream`.
//!
//! Kubernetes still speaks SPDY/3.1 for `kubectl port-forward` (and as the fallback for exec and
//! attach), and containerd's CRI streaming server speaks it for exec/attach/port-forward.
//! No maintained Rust SPDY crate exists, so this one is hand-rolled from the SPDY/3.1 draft and
//! from what spdystream (the only peer that matters) actually does on the wire.
//!
//! A [`Session`] runs over any `AsyncRead + AsyncWrite` (a TCP stream after an HTTP
//! `Upgrade: SPDY/3.1`, or a WebSocket tunnel) in either role.
//! Client-opened streams have odd ids, server-opened ones even ids.
//! Each [`Stream`] is an `AsyncRead + AsyncWrite`; `shutdown()` half-closes it with an empty
//! DATA frame carrying FLAG_FIN, and reads return EOF after the peer's FIN.
//!
//! Behaviour chosen to match spdystream:
//! - Flow control: spdystream never sends WINDOW_UPDATE and ignores the ones it receives, so
//!   honouring SPDY/3.1 send windows would stall every transfer after 64 KiB. This crate
//!   therefore does not limit what it sends. On the receive side it still bounds memory: each
//!   stream buffers at most [`STREAM_WINDOW`] unread bytes (the SPDY/3.1 default window, which is
//!   what it advertises), and it sends WINDOW_UPDATEs as the application reads, so a strictly
//!   compliant peer never stalls either. When a peer ignores the window, the session stops
//!   reading the connection until the application drains that stream (back-pressure through TCP,
//!   as spdystream itself does). Applications must therefore keep reading (or drop) every stream.
//! - PING: pings the peer initiated (ids of the peer's parity) are echoed; [`Session::ping`]
//!   sends our own.
//! - GOAWAY ends the session: spdystream stops reading as soon as it receives one, and sends one
//!   only when it is closing the connection.
//! - SETTINGS, WINDOW_UPDATE and unknown control frames are accepted and ignored.

mod dictionary;
pub mod frame;
mod headers;
mod session;
mod stream;

use std::sync::Arc;

pub use headers::Headers;
pub use session::{STREAM_WINDOW, Session};
pub use stream::Stream;

/// Why a session or stream operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The peer broke the SPDY framing rules; the session is over.
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
    /// Reading or writing the underlying connection failed.
    #[error("SPDY connection failed: {0}")]
    Io(#[source] Arc<std::io::Error>),
    /// The stream was reset (by the peer, with this RST_STREAM status, or locally).
    #[error("stream reset (status {status})")]
    StreamReset {
        /// The RST_STREAM status code, see [`frame::rst`].
        status: u32,
    },
    /// The peer did not answer a new stream's SYN_STREAM in time.
    #[error("timed out waiting for the peer to accept the stream")]
    Timeout,
    /// The session has ended (GOAWAY, EOF, local close) or is going away.
    #[error("SPDY session closed")]
    SessionClosed,
    /// All 2^30 stream ids of this side are used up.
    #[error("no stream ids left in this session")]
    StreamIdsExhausted,
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Error {
        Error::Io(Arc::new(err))
    }
}

impl From<Error> for std::io::Error {
    fn from(err: Error) -> std::io::Error {
        use std::io::ErrorKind;
        let kind = match &err {
            Error::Protocol(_) => ErrorKind::InvalidData,
            Error::Io(io) => io.kind(),
            Error::StreamReset { .. } => ErrorKind::ConnectionReset,
            Error::Timeout => ErrorKind::TimedOut,
            Error::SessionClosed => ErrorKind::ConnectionAborted,
            Error::StreamIdsExhausted => ErrorKind::Other,
        };
        std::io::Error::new(kind, err)
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
