//! The session: a background task that owns the connection, and the cheap [`Session`] handle.
//!
//! One task runs two loops over the split connection.
//! The read loop decodes frames and updates per-stream state; it never waits on the writer.
//! The write loop owns the send-side zlib context and drains two queues: an unbounded control
//! queue (SYN_STREAM, SYN_REPLY, RST_STREAM, PING, WINDOW_UPDATE, GOAWAY), always preferred, and a
//! bounded data queue that gives stream writers back-pressure. Because control is preferred, a
//! SYN_STREAM or SYN_REPLY queued before a stream's first DATA is always written before it.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::frame::{Frame, FrameDecoder, FrameEncoder, rst};
use crate::stream::{Stream, StreamShared};
use crate::{Error, Headers, Result};

/// Unread bytes buffered per stream: the SPDY/3.1 default initial window, which is what we advertise.
pub const STREAM_WINDOW: usize = 64 * 1024;
/// How long [`Session::open`] waits for SYN_REPLY (Kubernetes' `createStreamResponseTimeout`).
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Peer-opened streams waiting for [`Session::accept`]; more are refused.
const ACCEPT_BACKLOG: usize = 128;
/// DATA frames queued for the writer across all streams.
const DATA_QUEUE: usize = 32;
/// Replies (echoed PINGs, SYN_REPLY, RST_STREAM) queued for a peer that does not read; beyond this the session fails.
const MAX_QUEUED_CONTROL: usize = 16 * 1024;
/// How long the writer keeps flushing queued frames once the session ends.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// The writer batches queued frames up to this many bytes per write.
const WRITE_BATCH: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Client,
    Server,
}

/// A SPDY/3.1 session: a cheap, cloneable handle to the task that owns the connection.
///
/// The session runs until the peer sends GOAWAY or closes the connection, a protocol or IO error
/// occurs, [`Session::close`] is called, or every `Session` clone and every [`Stream`] is dropped.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
    guard: Arc<Guard>,
}

/// Closes the session once the last `Session` clone and the last `Stream` are gone.
pub(crate) struct Guard(Arc<Inner>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.close();
    }
}

pub(crate) struct Inner {
    role: Role,
    control_tx: mpsc::UnboundedSender<Frame>,
    control_queued: AtomicUsize,
    pub(crate) data_tx: mpsc::Sender<Frame>,
    state: Mutex<State>,
    ended: watch::Sender<Option<Result<()>>>,
    cancel: CancellationToken,
    accept_rx: tokio::sync::Mutex<mpsc::Receiver<Arc<StreamShared>>>,
    session_unacked: AtomicUsize,
    /// Set by a local close: the writer ends the connection with GOAWAY(last good stream id).
    goaway: OnceLock<u32>,
}

struct State {
    streams: HashMap<u32, Arc<StreamShared>>,
    next_stream_id: u32,
    last_peer_stream_id: u32,
    next_ping_id: u32,
    pings: HashMap<u32, oneshot::Sender<()>>,
}

impl Session {
    /// Runs the server side of a session over `io` (for example an upgraded `kubectl port-forward` request).
    ///
    /// Must be called inside a tokio runtime; the connection is driven by a spawned task.
    pub fn server<IO>(io: IO) -> Session
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Session::start(io, Role::Server)
    }

    /// Runs the client side of a session over `io` (for example an upgraded CRI streaming request).
    ///
    /// Must be called inside a tokio runtime; the connection is driven by a spawned task.
    pub fn client<IO>(io: IO) -> Session
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Session::start(io, Role::Client)
    }

    fn start<IO>(io: IO, role: Role) -> Session
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (data_tx, data_rx) = mpsc::channel(DATA_QUEUE);
        let (accept_tx, accept_rx) = mpsc::channel(ACCEPT_BACKLOG);
        let first_id = match role {
            Role::Client => 1,
            Role::Server => 2,
        };
        let inner = Arc::new(Inner {
            role,
            control_tx,
            control_queued: AtomicUsize::new(0),
            data_tx,
            state: Mutex::new(State {
                streams: HashMap::new(),
                next_stream_id: first_id,
                last_peer_stream_id: 0,
                next_ping_id: first_id,
                pings: HashMap::new(),
            }),
            ended: watch::Sender::new(None),
            cancel: CancellationToken::new(),
            accept_rx: tokio::sync::Mutex::new(accept_rx),
            session_unacked: AtomicUsize::new(0),
            goaway: OnceLock::new(),
        });
        tokio::spawn(run(inner.clone(), io, accept_tx, control_rx, data_rx));
        let guard = Arc::new(Guard(inner.clone()));
        Session { inner, guard }
    }

    /// The next stream the peer opened, already answered with SYN_REPLY; `None` once the session ended.
    pub async fn accept(&self) -> Option<Stream> {
        let shared = self.inner.accept_rx.lock().await.recv().await?;
        Some(Stream::new(shared, self.inner.clone(), self.guard.clone()))
    }

    /// Opens a stream with `headers` and waits (up to 30 s) for the peer's SYN_REPLY.
    ///
    /// With `fin` the stream is half-closed from the start: the peer may send, we may not.
    pub async fn open(&self, headers: Headers, fin: bool) -> Result<Stream> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let shared = {
            let mut state = self.inner.state();
            if self.inner.is_ended() {
                return Err(Error::SessionClosed);
            }
            let stream_id = state.next_stream_id;
            if stream_id > 0x7fff_ffff {
                return Err(Error::StreamIdsExhausted);
            }
            state.next_stream_id += 2;
            let shared = StreamShared::new(stream_id, headers.clone(), false, fin, Some(reply_tx));
            state.streams.insert(stream_id, shared.clone());
            // Queued under the state lock so stream ids reach the wire in increasing order.
            self.inner.send_control(Frame::SynStream {
                stream_id,
                associated_to: 0,
                priority: 0,
                fin,
                unidirectional: false,
                headers,
            });
            shared
        };
        let stream = Stream::new(shared, self.inner.clone(), self.guard.clone());
        match tokio::time::timeout(OPEN_TIMEOUT, reply_rx).await {
            Ok(Ok(Ok(()))) => Ok(stream),
            Ok(Ok(Err(err))) => Err(err),
            Ok(Err(_)) => Err(self.inner.end_error()),
            Err(_) => {
                stream.reset();
                Err(Error::Timeout)
            }
        }
    }

    /// Sends a PING and waits for the peer to echo it; returns the round-trip time.
    pub async fn ping(&self) -> Result<Duration> {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.inner.state();
            if self.inner.is_ended() {
                return Err(self.inner.end_error());
            }
            let id = state.next_ping_id;
            state.next_ping_id = if id > 0x7fff_fffd { 2 - id % 2 } else { id + 2 };
            state.pings.insert(id, tx);
            self.inner.send_control(Frame::Ping { id });
        }
        let start = Instant::now();
        rx.await.map_err(|_| self.inner.end_error())?;
        Ok(start.elapsed())
    }

    /// Resolves when the session has ended: `Ok` after GOAWAY, EOF or [`Session::close`], `Err` on a protocol or IO error.
    pub async fn closed(&self) -> Result<()> {
        let mut ended = self.inner.ended.subscribe();
        let result = ended.wait_for(Option::is_some).await.map(|v| v.clone());
        match result {
            Ok(Some(result)) => result,
            _ => Ok(()),
        }
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.inner.is_ended()
    }

    /// Sends GOAWAY, flushes frames already queued (for up to 5 s) and ends the session.
    pub fn close(&self) {
        self.inner.close();
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.inner.role)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn send_control(&self, frame: Frame) {
        if counts_against_control_limit(&frame) {
            self.control_queued.fetch_add(1, Ordering::Relaxed);
        }
        // The receiver lives as long as the connection task; after that, frames have nowhere to go.
        let _ = self.control_tx.send(frame);
    }

    fn dequeued_control(&self, frame: Frame) -> Frame {
        if counts_against_control_limit(&frame) {
            self.control_queued.fetch_sub(1, Ordering::Relaxed);
        }
        frame
    }

    fn is_ended(&self) -> bool {
        self.ended.borrow().is_some()
    }

    /// The error operations report once the session is over.
    pub(crate) fn end_error(&self) -> Error {
        match &*self.ended.borrow() {
            Some(Err(err)) => err.clone(),
            _ => Error::SessionClosed,
        }
    }

    pub(crate) fn remove_stream(&self, stream_id: u32) {
        self.state().streams.remove(&stream_id);
    }

    /// Counts bytes the application consumed towards the session-level WINDOW_UPDATE.
    pub(crate) fn consumed(&self, n: usize) {
        let unacked = self.session_unacked.fetch_add(n, Ordering::Relaxed) + n;
        if unacked >= STREAM_WINDOW / 2 {
            let delta = self.session_unacked.swap(0, Ordering::Relaxed);
            if delta > 0 {
                self.send_control(Frame::WindowUpdate {
                    stream_id: 0,
                    delta: delta as u32,
                });
            }
        }
    }

    fn close(&self) {
        if self.is_ended() {
            return;
        }
        // The writer sends GOAWAY itself after everything already queued, so it cannot overtake data.
        let _ = self.goaway.set(self.state().last_peer_stream_id);
        self.finish(Ok(()));
    }

    /// Records how the session ended (first caller wins), stops both loops and fails pending work.
    fn finish(&self, result: Result<()>) {
        let first = self.ended.send_if_modified(|ended| {
            if ended.is_some() {
                return false;
            }
            *ended = Some(result);
            true
        });
        self.cancel.cancel();
        if !first {
            return;
        }
        if let Some(Err(err)) = &*self.ended.borrow() {
            tracing::debug!(error = %err, "SPDY session failed");
        }
        let error = self.end_error();
        let (streams, pings) = {
            let mut state = self.state();
            (
                std::mem::take(&mut state.streams),
                std::mem::take(&mut state.pings),
            )
        };
        drop(pings);
        for stream in streams.into_values() {
            stream.session_ended(error.clone());
        }
    }

    fn stream(&self, stream_id: u32) -> Option<Arc<StreamShared>> {
        self.state().streams.get(&stream_id).cloned()
    }

    async fn on_data(&self, stream_id: u32, fin: bool, data: Bytes) {
        let Some(stream) = self.stream(stream_id) else {
            // Late frames for streams we already closed or reset are dropped, as spdystream does.
            return;
        };
        let len = data.len();
        let mut data = Some(data);
        while let Some(chunk) = data.take() {
            let space = {
                let mut st = stream.lock();
                if st.detached || st.reset.is_some() || st.remote_fin {
                    self.consumed(len);
                    break;
                }
                // A peer that ignores the window (spdystream does) is paused here until the reader
                // drains this stream; one frame is always taken so oversized frames cannot wedge us.
                if len == 0 || st.recv_len == 0 || st.recv_len + len <= STREAM_WINDOW {
                    if len > 0 {
                        st.recv_len += len;
                        st.recv.push_back(chunk);
                        st.wake_reader();
                    }
                    break;
                }
                data = Some(chunk);
                stream.space.notified()
            };
            tokio::select! {
                _ = space => {}
                _ = self.cancel.cancelled() => return,
            }
        }
        if fin {
            self.on_remote_fin(&stream);
        }
    }

    fn on_remote_fin(&self, stream: &Arc<StreamShared>) {
        let fully_closed = {
            let mut st = stream.lock();
            st.remote_fin = true;
            st.wake_reader();
            st.local_fin
        };
        if fully_closed {
            self.remove_stream(stream.id);
        }
    }

    fn on_syn_stream(
        &self,
        stream_id: u32,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
        accept_tx: &mpsc::Sender<Arc<StreamShared>>,
    ) {
        let peer_parity = match self.role {
            Role::Server => 1,
            Role::Client => 0,
        };
        let mut state = self.state();
        if stream_id % 2 != peer_parity || stream_id <= state.last_peer_stream_id {
            tracing::debug!(stream_id, "SPDY peer opened a stream with an invalid id");
            self.send_control(Frame::RstStream {
                stream_id,
                status: rst::PROTOCOL_ERROR,
            });
            return;
        }
        state.last_peer_stream_id = stream_id;
        let Ok(permit) = accept_tx.try_reserve() else {
            self.send_control(Frame::RstStream {
                stream_id,
                status: rst::REFUSED_STREAM,
            });
            return;
        };
        let shared = StreamShared::new(stream_id, headers, fin, unidirectional, None);
        if !(fin && unidirectional) {
            state.streams.insert(stream_id, shared.clone());
        }
        if !unidirectional {
            self.send_control(Frame::SynReply {
                stream_id,
                fin: false,
                headers: Headers::new(),
            });
        }
        permit.send(shared);
    }

    fn on_syn_reply(&self, stream_id: u32, fin: bool) {
        let Some(stream) = self.stream(stream_id) else {
            return;
        };
        if let Some(reply) = stream.lock().reply.take() {
            let _ = reply.send(Ok(()));
        }
        if fin {
            self.on_remote_fin(&stream);
        }
    }

    fn on_rst_stream(&self, stream_id: u32, status: u32) {
        let stream = self.state().streams.remove(&stream_id);
        if let Some(stream) = stream {
            stream.reset(status, true);
        }
    }

    fn on_ping(&self, id: u32) {
        let own_parity = match self.role {
            Role::Client => 1,
            Role::Server => 0,
        };
        if id % 2 == own_parity {
            if let Some(waiter) = self.state().pings.remove(&id) {
                let _ = waiter.send(());
            }
        } else {
            self.send_control(Frame::Ping { id });
        }
    }
}

/// WINDOW_UPDATEs grow with data the application reads, not with what the peer asks for, so they
/// do not count towards [`MAX_QUEUED_CONTROL`].
fn counts_against_control_limit(frame: &Frame) -> bool {
    !matches!(frame, Frame::WindowUpdate { .. })
}

async fn run<IO>(
    inner: Arc<Inner>,
    io: IO,
    accept_tx: mpsc::Sender<Arc<StreamShared>>,
    control_rx: mpsc::UnboundedReceiver<Frame>,
    data_rx: mpsc::Receiver<Frame>,
) where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (reader, writer) = tokio::io::split(io);
    let frames = FramedRead::new(reader, FrameDecoder::default());
    let read = async {
        let result = read_loop(&inner, frames, accept_tx).await;
        inner.finish(result);
    };
    let write = async {
        if let Err(err) = write_loop(&inner, writer, control_rx, data_rx).await {
            inner.finish(Err(err));
        }
    };
    tokio::join!(read, write);
}

async fn read_loop<R: AsyncRead + Unpin>(
    inner: &Inner,
    mut frames: FramedRead<R, FrameDecoder>,
    accept_tx: mpsc::Sender<Arc<StreamShared>>,
) -> Result<()> {
    loop {
        let frame = tokio::select! {
            _ = inner.cancel.cancelled() => return Ok(()),
            frame = frames.next() => match frame {
                None => return Ok(()),
                Some(frame) => frame?,
            },
        };
        if inner.control_queued.load(Ordering::Relaxed) > MAX_QUEUED_CONTROL {
            return Err(Error::Protocol(
                "peer does not read the frames it asks for".into(),
            ));
        }
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => inner.on_data(stream_id, fin, data).await,
            Frame::SynStream {
                stream_id,
                fin,
                unidirectional,
                headers,
                ..
            } => inner.on_syn_stream(stream_id, fin, unidirectional, headers, &accept_tx),
            Frame::SynReply { stream_id, fin, .. } => inner.on_syn_reply(stream_id, fin),
            Frame::RstStream { stream_id, status } => inner.on_rst_stream(stream_id, status),
            Frame::Headers { stream_id, fin, .. } => {
                if let (true, Some(stream)) = (fin, inner.stream(stream_id)) {
                    inner.on_remote_fin(&stream);
                }
            }
            Frame::Ping { id } => inner.on_ping(id),
            Frame::GoAway { .. } => return Ok(()),
            Frame::Settings { .. } | Frame::WindowUpdate { .. } | Frame::Unknown { .. } => {}
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    inner: &Inner,
    mut writer: W,
    mut control_rx: mpsc::UnboundedReceiver<Frame>,
    mut data_rx: mpsc::Receiver<Frame>,
) -> Result<()> {
    let mut encoder = FrameEncoder::default();
    let mut buf = BytesMut::with_capacity(WRITE_BATCH);
    loop {
        if buf.is_empty() {
            let frame = tokio::select! {
                biased;
                Some(frame) = control_rx.recv() => inner.dequeued_control(frame),
                Some(frame) = data_rx.recv() => frame,
                _ = inner.cancel.cancelled() => break,
            };
            encoder.encode_frame(&frame, &mut buf)?;
            while buf.len() < WRITE_BATCH {
                let frame = match control_rx.try_recv() {
                    Ok(frame) => inner.dequeued_control(frame),
                    Err(_) => match data_rx.try_recv() {
                        Ok(frame) => frame,
                        Err(_) => break,
                    },
                };
                encoder.encode_frame(&frame, &mut buf)?;
            }
        }
        // write_buf is cancel-safe: whatever was written is already gone from `buf`.
        tokio::select! {
            written = writer.write_buf(&mut buf) => {
                if written? == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
                }
            }
            _ = inner.cancel.cancelled() => break,
        }
        if buf.is_empty() {
            writer.flush().await?;
        }
    }
    // The session is over: send what was queued before the end (data first, GOAWAY last), then close.
    let drain = async {
        while let Ok(frame) = data_rx.try_recv() {
            encoder.encode_frame(&frame, &mut buf)?;
        }
        while let Ok(frame) = control_rx.try_recv() {
            encoder.encode_frame(&frame, &mut buf)?;
        }
        if let Some(&last_good_stream_id) = inner.goaway.get() {
            encoder.encode_frame(
                &Frame::GoAway {
                    last_good_stream_id,
                    status: 0,
                },
                &mut buf,
            )?;
        }
        writer.write_all(&buf).await?;
        writer.shutdown().await?;
        Ok::<(), Error>(())
    };
    match tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, drain).await {
        Ok(Err(err)) => tracing::debug!(error = %err, "SPDY session: final flush failed"),
        Err(_) => tracing::debug!("SPDY session: peer did not take the final frames in time"),
        Ok(Ok(())) => {}
    }
    Ok(())
}
