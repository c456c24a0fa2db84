//! One SPDY stream as an `AsyncRead + AsyncWrite`, and the state it shares with the session task.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::PollSender;

use crate::frame::{Frame, rst};
use crate::session::{Guard, Inner, STREAM_WINDOW};
use crate::{Error, Headers, Result};

/// The largest DATA payload one write produces (what Go's `io.Copy` writes per call).
const MAX_DATA_CHUNK: usize = 32 * 1024;

/// A stream of a [`Session`](crate::Session).
///
/// Reading returns buffered DATA and then EOF once the peer sent FIN; after a reset, reads
/// return what the peer sent before it and then fail, and writes fail. `shutdown()` sends FIN (half-close); reading stays possible.
/// Dropping a stream we have not half-closed resets it with CANCEL, as spdystream's `Reset` does.
/// Use `tokio::io::split` to read and write from different tasks.
pub struct Stream {
    shared: Arc<StreamShared>,
    inner: Arc<Inner>,
    data_tx: PollSender<Frame>,
    _guard: Arc<Guard>,
}

pub(crate) struct StreamShared {
    pub(crate) id: u32,
    headers: Headers,
    state: Mutex<StreamState>,
    /// Signalled whenever the reader frees buffer space or the stream stops accepting data.
    pub(crate) space: Notify,
}

pub(crate) struct StreamState {
    pub(crate) recv: VecDeque<Bytes>,
    pub(crate) recv_len: usize,
    pub(crate) remote_fin: bool,
    pub(crate) local_fin: bool,
    /// The RST_STREAM status once either side reset the stream.
    pub(crate) reset: Option<u32>,
    /// Set when the session ended before the stream did.
    pub(crate) session_error: Option<Error>,
    /// Completes `Session::open` when SYN_REPLY or RST_STREAM arrives.
    pub(crate) reply: Option<oneshot::Sender<Result<()>>>,
    /// No `Stream` handle is left; incoming data is discarded.
    pub(crate) detached: bool,
    read_waker: Option<Waker>,
    /// Bytes read since the last stream WINDOW_UPDATE.
    unacked: usize,
}

impl StreamState {
    pub(crate) fn wake_reader(&mut self) {
        if let Some(waker) = self.read_waker.take() {
            waker.wake();
        }
    }
}

impl StreamShared {
    pub(crate) fn new(
        id: u32,
        headers: Headers,
        remote_fin: bool,
        local_fin: bool,
        reply: Option<oneshot::Sender<Result<()>>>,
    ) -> Arc<StreamShared> {
        Arc::new(StreamShared {
            id,
            headers,
            state: Mutex::new(StreamState {
                recv: VecDeque::new(),
                recv_len: 0,
                remote_fin,
                local_fin,
                reset: None,
                session_error: None,
                reply,
                detached: false,
                read_waker: None,
                unacked: 0,
            }),
            space: Notify::new(),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, StreamState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks the stream reset (by the peer or locally). Data the peer sent before its
    /// reset stays readable, as with spdystream; a local reset discards it.
    pub(crate) fn reset(&self, status: u32, keep_data: bool) {
        let mut st = self.lock();
        if st.reset.is_none() {
            st.reset = Some(status);
        }
        if !keep_data {
            st.recv.clear();
            st.recv_len = 0;
        }
        if let Some(reply) = st.reply.take() {
            let _ = reply.send(Err(Error::StreamReset { status }));
        }
        st.wake_reader();
        drop(st);
        self.space.notify_one();
    }

    pub(crate) fn session_ended(&self, error: Error) {
        let mut st = self.lock();
        if st.session_error.is_none() {
            st.session_error = Some(error.clone());
        }
        if let Some(reply) = st.reply.take() {
            let _ = reply.send(Err(error));
        }
        st.wake_reader();
        drop(st);
        self.space.notify_one();
    }
}

impl Stream {
    pub(crate) fn new(shared: Arc<StreamShared>, inner: Arc<Inner>, guard: Arc<Guard>) -> Stream {
        let data_tx = PollSender::new(inner.data_tx.clone());
        Stream {
            shared,
            inner,
            data_tx,
            _guard: guard,
        }
    }

    /// The stream id: odd if the client opened it, even if the server did.
    pub fn id(&self) -> u32 {
        self.shared.id
    }

    /// The headers of the SYN_STREAM that opened the stream.
    pub fn headers(&self) -> &Headers {
        &self.shared.headers
    }

    /// Aborts the stream with RST_STREAM(CANCEL); later reads and writes fail.
    pub fn reset(&self) {
        {
            let st = self.shared.lock();
            let fully_closed = st.local_fin && st.remote_fin;
            if st.reset.is_some() || st.session_error.is_some() || fully_closed {
                return;
            }
        }
        self.shared.reset(rst::CANCEL, false);
        // Behind the data already written, so the peer reads that first (as Go's peer
        // does); the control queue only when the data queue is full.
        let frame = Frame::RstStream {
            stream_id: self.shared.id,
            status: rst::CANCEL,
        };
        if let Err(e) = self.inner.data_tx.try_send(frame) {
            self.inner.send_control(e.into_inner());
        }
        self.inner.remove_stream(self.shared.id);
    }

    fn write_error(&self) -> Option<io::Error> {
        let st = self.shared.lock();
        if let Some(status) = st.reset {
            return Some(Error::StreamReset { status }.into());
        }
        if let Some(err) = &st.session_error {
            return Some(err.clone().into());
        }
        if st.local_fin {
            return Some(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write on a half-closed SPDY stream",
            ));
        }
        None
    }

    fn queue_closed(&self) -> io::Error {
        self.inner.end_error().into()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut st = this.shared.lock();
        // Data that arrived before a reset is still delivered, as spdystream does: the
        // CRI streaming server writes the exit status and then resets every stream.
        if let Some(front) = st.recv.front_mut() {
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front[..n]);
            front.advance(n);
            if front.is_empty() {
                st.recv.pop_front();
            }
            st.recv_len -= n;
            st.unacked += n;
            // Give a flow-controlling peer its window back once half of it has been read.
            let update = (st.unacked >= STREAM_WINDOW / 2 && !st.remote_fin)
                .then(|| std::mem::take(&mut st.unacked));
            drop(st);
            this.shared.space.notify_one();
            if let Some(delta) = update {
                this.inner.send_control(Frame::WindowUpdate {
                    stream_id: this.shared.id,
                    delta: delta as u32,
                });
            }
            this.inner.consumed(n);
            return Poll::Ready(Ok(()));
        }
        if let Some(status) = st.reset {
            return Poll::Ready(Err(Error::StreamReset { status }.into()));
        }
        if st.remote_fin {
            return Poll::Ready(Ok(()));
        }
        if let Some(err) = &st.session_error {
            return Poll::Ready(Err(err.clone().into()));
        }
        st.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(err) = this.write_error() {
            return Poll::Ready(Err(err));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if ready!(this.data_tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(this.queue_closed()));
        }
        // The stream may have been reset while we waited for queue space.
        if let Some(err) = this.write_error() {
            this.data_tx.abort_send();
            return Poll::Ready(Err(err));
        }
        let n = buf.len().min(MAX_DATA_CHUNK);
        let frame = Frame::Data {
            stream_id: this.shared.id,
            fin: false,
            data: Bytes::copy_from_slice(&buf[..n]),
        };
        if this.data_tx.send_item(frame).is_err() {
            return Poll::Ready(Err(this.queue_closed()));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Frames are handed to the session task as they are written; it flushes the connection.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.shared.lock().local_fin {
            return Poll::Ready(Ok(()));
        }
        if let Some(err) = this.write_error() {
            return Poll::Ready(Err(err));
        }
        if ready!(this.data_tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(this.queue_closed()));
        }
        let fully_closed = {
            let mut st = this.shared.lock();
            if st.reset.is_some() || st.session_error.is_some() {
                drop(st);
                this.data_tx.abort_send();
                return Poll::Ready(Err(this
                    .write_error()
                    .unwrap_or_else(|| this.queue_closed())));
            }
            if st.local_fin {
                drop(st);
                this.data_tx.abort_send();
                return Poll::Ready(Ok(()));
            }
            st.local_fin = true;
            st.remote_fin
        };
        let frame = Frame::Data {
            stream_id: this.shared.id,
            fin: true,
            data: Bytes::new(),
        };
        if this.data_tx.send_item(frame).is_err() {
            return Poll::Ready(Err(this.queue_closed()));
        }
        if fully_closed {
            this.inner.remove_stream(this.shared.id);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let (cancel, fully_closed) = {
            let mut st = self.shared.lock();
            st.detached = true;
            st.recv.clear();
            st.recv_len = 0;
            let gone = st.reset.is_some() || st.session_error.is_some();
            (!gone && !st.local_fin, st.local_fin && st.remote_fin)
        };
        self.shared.space.notify_one();
        if cancel {
            self.shared.reset(rst::CANCEL, false);
            self.inner.send_control(Frame::RstStream {
                stream_id: self.shared.id,
                status: rst::CANCEL,
            });
            self.inner.remove_stream(self.shared.id);
        } else if fully_closed {
            self.inner.remove_stream(self.shared.id);
        }
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.shared.id)
            .field("headers", &self.shared.headers)
            .finish()
    }
}
