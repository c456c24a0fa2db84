//! Session behaviour between two `spdy` sessions, and against a hand-driven raw frame peer.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use spdy::frame::{Frame, FrameDecoder, FrameEncoder, rst};
use spdy::{Error, Headers, Session, Stream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);

fn pair(buffer: usize) -> (Session, Session) {
    let (a, b) = tokio::io::duplex(buffer);
    (Session::client(a), Session::server(b))
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs.iter().copied().collect()
}

async fn read_all<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    reader.read_to_end(&mut out).await?;
    Ok(out)
}

/// Deterministic test payload.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 13) as u8)
        .collect()
}

/// Echoes every accepted stream: a header line describing the stream, then the request body.
async fn echo_server(server: Session) {
    while let Some(mut stream) = server.accept().await {
        tokio::spawn(async move {
            let body = read_all(&mut stream).await.unwrap();
            let h = stream.headers();
            let line = format!(
                "{} {} {} {}\n",
                stream.id(),
                h.get("streamtype").unwrap_or("-"),
                h.get("requestid").unwrap_or("-"),
                h.get_all("multi").collect::<Vec<_>>().join(",")
            );
            stream.write_all(line.as_bytes()).await.unwrap();
            stream.write_all(&body).await.unwrap();
            stream.shutdown().await.unwrap();
        });
    }
}

#[tokio::test]
async fn many_concurrent_streams_round_trip_headers_and_data() {
    let (client, server) = pair(8 * 1024);
    tokio::spawn(echo_server(server));
    let tasks = (0..64).map(|i| {
        let client = client.clone();
        tokio::spawn(async move {
            let mut h = headers(&[
                ("streamType", "data"),
                ("requestID", &i.to_string()),
                ("multi", "a"),
            ]);
            h.append("Multi", "b");
            let mut stream = client.open(h, false).await.unwrap();
            assert_eq!(stream.id() % 2, 1, "client streams are odd");
            let body = payload(100_000 + i * 997, i as u8);
            stream.write_all(&body).await.unwrap();
            stream.shutdown().await.unwrap();
            let reply = read_all(&mut stream).await.unwrap();
            let newline = reply.iter().position(|b| *b == b'\n').unwrap();
            let line = std::str::from_utf8(&reply[..newline]).unwrap();
            assert_eq!(line, format!("{} data {i} a,b", stream.id()));
            assert_eq!(&reply[newline + 1..], &body[..]);
        })
    });
    timeout(LIMIT, futures::future::try_join_all(tasks))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn half_close_works_in_both_directions() {
    let (client, server) = pair(64 * 1024);

    // Client half-closes first; the server still answers after reading EOF.
    let mut c = client
        .open(headers(&[("streamtype", "stdin")]), false)
        .await
        .unwrap();
    let mut s = server.accept().await.unwrap();
    c.write_all(b"request").await.unwrap();
    c.shutdown().await.unwrap();
    let err = c.write_all(b"more").await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    assert_eq!(read_all(&mut s).await.unwrap(), b"request");
    s.write_all(b"response").await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(read_all(&mut c).await.unwrap(), b"response");

    // Server half-closes first on a server-opened stream; the client keeps writing.
    let mut s2 = server
        .open(headers(&[("streamtype", "data")]), false)
        .await
        .unwrap();
    assert_eq!(s2.id() % 2, 0, "server streams are even");
    let mut c2 = client.accept().await.unwrap();
    assert_eq!(c2.id(), s2.id());
    assert_eq!(c2.headers().get("streamtype"), Some("data"));
    s2.shutdown().await.unwrap();
    assert_eq!(read_all(&mut c2).await.unwrap(), b"");
    c2.write_all(b"after fin").await.unwrap();
    c2.shutdown().await.unwrap();
    assert_eq!(read_all(&mut s2).await.unwrap(), b"after fin");

    // Opening with fin: the opener may not write, the acceptor sees EOF at once.
    let mut c3 = client.open(Headers::new(), true).await.unwrap();
    let mut s3 = server.accept().await.unwrap();
    assert_eq!(read_all(&mut s3).await.unwrap(), b"");
    assert!(c3.write_all(b"x").await.is_err());
    s3.write_all(b"only one way").await.unwrap();
    s3.shutdown().await.unwrap();
    assert_eq!(read_all(&mut c3).await.unwrap(), b"only one way");
}

#[tokio::test]
async fn eight_mib_each_way_at_once_does_not_stall() {
    const LEN: usize = 8 << 20;
    let (client, server) = pair(16 * 1024);
    let stream = client.open(Headers::new(), false).await.unwrap();
    let accepted = server.accept().await.unwrap();

    async fn send_and_receive(stream: Stream, seed: u8, expect_seed: u8) {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let send = tokio::spawn(async move {
            for chunk in payload(LEN, seed).chunks(100_000) {
                writer.write_all(chunk).await.unwrap();
            }
            writer.shutdown().await.unwrap();
            writer
        });
        let received = read_all(&mut reader).await.unwrap();
        assert_eq!(received.len(), LEN);
        assert!(received == payload(LEN, expect_seed), "payload corrupted");
        drop(send.await.unwrap());
    }
    let both = futures::future::join(
        send_and_receive(stream, 1, 2),
        send_and_receive(accepted, 2, 1),
    );
    timeout(LIMIT, both).await.expect("8 MiB each way stalled");
}

#[tokio::test]
async fn reset_fails_reads_and_writes_on_the_other_side() {
    let (client, server) = pair(64 * 1024);
    let mut c = client.open(Headers::new(), false).await.unwrap();
    let s = server.accept().await.unwrap();
    s.reset();
    let err = timeout(LIMIT, read_all(&mut c)).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(
        c.write_all(b"x").await.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionReset
    );

    // Dropping a stream that was not half-closed resets it too.
    let c2 = client.open(Headers::new(), false).await.unwrap();
    let mut s2 = server.accept().await.unwrap();
    drop(c2);
    let err = timeout(LIMIT, read_all(&mut s2))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);

    // The session itself is unaffected.
    let mut c3 = client.open(Headers::new(), false).await.unwrap();
    let mut s3 = server.accept().await.unwrap();
    c3.shutdown().await.unwrap();
    s3.write_all(b"still fine").await.unwrap();
    s3.shutdown().await.unwrap();
    assert_eq!(read_all(&mut c3).await.unwrap(), b"still fine");
}

/// The CRI streaming server writes an exec's exit status and then resets every stream:
/// what arrived before the reset must still be read, then the reset reported.
#[tokio::test]
async fn data_sent_before_a_reset_is_still_read() {
    let (client, server) = pair(64 * 1024);
    let mut c = client.open(Headers::new(), false).await.unwrap();
    let mut s = server.accept().await.unwrap();
    s.write_all(b"exit status").await.unwrap();
    s.reset();
    // Let both frames arrive before the first read.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut got = Vec::new();
    let err = timeout(LIMIT, c.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(got, b"exit status");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn pings_are_answered_both_ways() {
    let (client, server) = pair(64 * 1024);
    for _ in 0..3 {
        timeout(LIMIT, client.ping()).await.unwrap().unwrap();
        timeout(LIMIT, server.ping()).await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn goaway_ends_the_session_on_both_sides() {
    let (client, server) = pair(64 * 1024);
    let mut c = client.open(Headers::new(), false).await.unwrap();
    let mut s = server.accept().await.unwrap();
    s.write_all(b"queued before close").await.unwrap();
    s.shutdown().await.unwrap();
    server.close();
    timeout(LIMIT, server.closed()).await.unwrap().unwrap();
    timeout(LIMIT, client.closed()).await.unwrap().unwrap();
    // Data and FIN written before close() still arrive.
    let got = read_all(&mut c).await;
    assert_eq!(got.unwrap(), b"queued before close");
    assert!(matches!(
        client.open(Headers::new(), false).await,
        Err(Error::SessionClosed)
    ));
    assert!(client.accept().await.is_none());
    assert!(server.accept().await.is_none());
    assert!(
        read_all(&mut s).await.is_err(),
        "a stream cut off by the session end must not look complete"
    );
}

#[tokio::test]
async fn dropping_every_handle_closes_the_session() {
    let (client, server) = pair(64 * 1024);
    drop(server);
    timeout(LIMIT, client.closed()).await.unwrap().unwrap();
}

/// A peer driven frame by frame, to check exact wire behaviour.
struct RawPeer {
    io: DuplexStream,
    encoder: FrameEncoder,
    decoder: FrameDecoder,
    buf: BytesMut,
}

impl RawPeer {
    fn new(io: DuplexStream) -> RawPeer {
        RawPeer {
            io,
            encoder: FrameEncoder::default(),
            decoder: FrameDecoder::default(),
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, frame: Frame) {
        let mut wire = BytesMut::new();
        self.encoder.encode_frame(&frame, &mut wire).unwrap();
        self.io.write_all(&wire).await.unwrap();
    }

    /// The next frame that is not a WINDOW_UPDATE.
    async fn recv(&mut self) -> Frame {
        loop {
            match self.recv_any().await {
                Frame::WindowUpdate { .. } => continue,
                frame => return frame,
            }
        }
    }

    async fn recv_any(&mut self) -> Frame {
        timeout(LIMIT, async {
            loop {
                if let Some(frame) = self.decoder.decode_frame(&mut self.buf).unwrap() {
                    return frame;
                }
                assert_ne!(
                    self.io.read_buf(&mut self.buf).await.unwrap(),
                    0,
                    "unexpected EOF"
                );
            }
        })
        .await
        .expect("no frame in time")
    }
}

fn raw_server() -> (RawPeer, Session) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    (RawPeer::new(a), Session::server(b))
}

#[tokio::test]
async fn server_replies_to_syn_stream_and_echoes_client_pings() {
    let (mut peer, server) = raw_server();
    let h = headers(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]);
    peer.send(Frame::SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 0,
        fin: false,
        unidirectional: false,
        headers: h.clone(),
    })
    .await;
    assert_eq!(
        peer.recv().await,
        Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: Headers::new()
        }
    );
    let stream = server.accept().await.unwrap();
    assert_eq!(stream.headers(), &h);

    peer.send(Frame::Ping { id: 7 }).await;
    assert_eq!(peer.recv().await, Frame::Ping { id: 7 });

    // A reused or wrong-parity stream id is refused with PROTOCOL_ERROR and not accepted.
    peer.send(Frame::SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 0,
        fin: false,
        unidirectional: false,
        headers: Headers::new(),
    })
    .await;
    assert_eq!(
        peer.recv().await,
        Frame::RstStream {
            stream_id: 1,
            status: rst::PROTOCOL_ERROR
        }
    );
    peer.send(Frame::SynStream {
        stream_id: 4,
        associated_to: 0,
        priority: 0,
        fin: false,
        unidirectional: false,
        headers: Headers::new(),
    })
    .await;
    assert_eq!(
        peer.recv().await,
        Frame::RstStream {
            stream_id: 4,
            status: rst::PROTOCOL_ERROR
        }
    );

    // SETTINGS, WINDOW_UPDATE and unknown control frames are ignored; the session keeps working.
    peer.send(Frame::Settings { entries: vec![] }).await;
    peer.send(Frame::WindowUpdate {
        stream_id: 1,
        delta: 1000,
    })
    .await;
    peer.send(Frame::Unknown { frame_type: 10 }).await;
    peer.send(Frame::Ping { id: 9 }).await;
    assert_eq!(peer.recv().await, Frame::Ping { id: 9 });
    drop(stream);
}

#[tokio::test]
async fn open_fails_when_the_peer_refuses() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let mut peer = RawPeer::new(a);
    let client = Session::client(b);
    let open = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .open(headers(&[("streamtype", "stdin")]), false)
                .await
        }
    });
    let Frame::SynStream {
        stream_id,
        headers: h,
        ..
    } = peer.recv().await
    else {
        panic!("expected SYN_STREAM")
    };
    assert_eq!(stream_id, 1);
    assert_eq!(h.get("streamtype"), Some("stdin"));
    peer.send(Frame::RstStream {
        stream_id,
        status: rst::REFUSED_STREAM,
    })
    .await;
    let result = timeout(LIMIT, open).await.unwrap().unwrap();
    assert!(
        matches!(result, Err(Error::StreamReset { status: 3 })),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_peer_ignoring_the_window_is_paused_not_buffered() {
    let (mut peer, server) = raw_server();
    peer.send(Frame::SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 0,
        fin: false,
        unidirectional: false,
        headers: Headers::new(),
    })
    .await;
    assert!(matches!(
        peer.recv().await,
        Frame::SynReply { stream_id: 1, .. }
    ));
    let mut stream = server.accept().await.unwrap();

    // Like spdystream, the peer sends 1 MiB without waiting for WINDOW_UPDATE. The session buffers
    // only one window and then stops reading, so the peer's writes back up (the duplex holds 64 KiB).
    let total = 1 << 20;
    let body = Bytes::from(payload(total, 5));
    let (mut peer_read, mut peer_write) = tokio::io::split(peer.io);
    let mut encoder = peer.encoder;
    let sender = tokio::spawn(async move {
        for chunk in body.chunks(32 * 1024) {
            let mut wire = BytesMut::new();
            let frame = Frame::Data {
                stream_id: 1,
                fin: false,
                data: Bytes::copy_from_slice(chunk),
            };
            encoder.encode_frame(&frame, &mut wire).unwrap();
            peer_write.write_all(&wire).await.unwrap();
        }
        let mut wire = BytesMut::new();
        encoder
            .encode_frame(
                &Frame::Data {
                    stream_id: 1,
                    fin: true,
                    data: Bytes::new(),
                },
                &mut wire,
            )
            .unwrap();
        peer_write.write_all(&wire).await.unwrap();
        peer_write
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !sender.is_finished(),
        "the session buffered far more than its window"
    );

    // Reading drains the stream; the session resumes and credits the window back.
    let received = timeout(LIMIT, read_all(&mut stream))
        .await
        .unwrap()
        .unwrap();
    assert!(received == payload(total, 5));
    let _peer_write = timeout(LIMIT, sender).await.unwrap().unwrap();
    let mut stream_credit = 0;
    let mut session_credit = 0;
    let mut decoder = peer.decoder;
    let mut buf = peer.buf;
    while stream_credit < total as u32 - spdy::STREAM_WINDOW as u32 {
        let frame = timeout(LIMIT, async {
            loop {
                if let Some(frame) = decoder.decode_frame(&mut buf).unwrap() {
                    return frame;
                }
                assert_ne!(peer_read.read_buf(&mut buf).await.unwrap(), 0);
            }
        })
        .await
        .expect("WINDOW_UPDATEs for the data read");
        match frame {
            Frame::WindowUpdate {
                stream_id: 1,
                delta,
            } => stream_credit += delta,
            Frame::WindowUpdate {
                stream_id: 0,
                delta,
            } => session_credit += delta,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(session_credit > 0);
}

#[tokio::test]
async fn garbage_ends_the_session_with_an_error() {
    let (mut peer, server) = raw_server();
    peer.io.write_all(&[0xff; 64]).await.unwrap();
    let result = timeout(LIMIT, server.closed()).await.unwrap();
    assert!(matches!(result, Err(Error::Protocol(_))), "{result:?}");
    assert!(server.accept().await.is_none());
}

#[tokio::test]
async fn eof_mid_stream_ends_the_session_and_fails_open_streams() {
    let (mut peer, server) = raw_server();
    peer.send(Frame::SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 0,
        fin: false,
        unidirectional: false,
        headers: Headers::new(),
    })
    .await;
    let mut stream = server.accept().await.unwrap();
    peer.send(Frame::Data {
        stream_id: 1,
        fin: false,
        data: Bytes::from_static(b"partial"),
    })
    .await;
    drop(peer);
    timeout(LIMIT, server.closed()).await.unwrap().unwrap();
    let mut got = [0u8; 7];
    stream.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"partial");
    let err = stream.read(&mut got).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted);
}

#[allow(dead_code)]
fn assert_send<T: Send + AsyncRead + AsyncWrite>() {}

#[test]
fn streams_and_sessions_are_send() {
    assert_send::<Stream>();
    fn sync_send<T: Send + Sync>() {}
    sync_send::<Session>();
}
