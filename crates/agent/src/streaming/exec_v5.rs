//! WebSocket `v5.channel.k8s.io` exec and attach (kubectl ≥ 1.30, kube-rs), translated to
//! the runtime's SPDY remote-command protocol v4, as kube-apiserver's stream translator
//! does for kubelet.
//!
//! Every WebSocket message is binary, its first byte the channel: 0 stdin, 1 stdout,
//! 2 stderr, 3 error (a `Status` in JSON, the last message), 4 resize (`{"Width","Height"}`)
//! and, new in v5, 255 close (`[255, channel]`: the client's stdin has ended). Over SPDY each
//! channel is its own stream, named by the `streamType` header; closing stdin is the
//! stream's half-close, which v4 WebSockets cannot express.

use apimachinery::status::ApiError;
use futures::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::Body;
use super::runtime_proxy::{V5_CHANNEL, accept_websocket, runtime_spdy, server_websocket};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// Which standard streams the session carries.
#[derive(Clone, Copy, Debug)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Accepts the client's WebSocket and runs the session against the runtime at `url`.
pub async fn serve(
    mut req: Request<Incoming>,
    url: &str,
    streams: Streams,
) -> Result<Response<Body>, ApiError> {
    let accepted = accept_websocket(req.headers(), V5_CHANNEL)?;
    // Connect to the runtime first, so its refusal is an HTTP error, not a dead socket.
    let runtime = runtime_spdy(url, "v4.channel.k8s.io").await?;
    let session = spdy::Session::client(TokioIo::new(runtime));
    let client_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Some(ws) = server_websocket(client_upgrade).await else {
            session.close();
            return;
        };
        if let Err(e) = run(ws, &session, streams).await {
            tracing::debug!(error = %e, "exec session failed");
        }
        session.close();
    });
    Ok(accepted)
}

async fn open(session: &spdy::Session, kind: &str) -> anyhow::Result<spdy::Stream> {
    let mut headers = spdy::Headers::new();
    headers.insert("streamType", kind);
    Ok(session.open(headers, false).await?)
}

async fn run<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    session: &spdy::Session,
    streams: Streams,
) -> anyhow::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // The order client-go uses; the runtime waits for exactly these.
    let mut error = open(session, "error").await?;
    let mut stdin = match streams.stdin {
        true => Some(open(session, "stdin").await?),
        false => None,
    };
    let stdout = match streams.stdout {
        true => Some(open(session, "stdout").await?),
        false => None,
    };
    let stderr = match streams.stderr {
        true => Some(open(session, "stderr").await?),
        false => None,
    };
    let mut resize = match streams.tty {
        true => Some(open(session, "resize").await?),
        false => None,
    };

    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(32);

    // Runtime output → client messages, each pump ending at the stream's end.
    let mut pumps = Vec::new();
    for (channel, stream) in [(STDOUT, stdout), (STDERR, stderr)] {
        let Some(mut stream) = stream else { continue };
        let out = out_tx.clone();
        pumps.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut message = Vec::with_capacity(n + 1);
                        message.push(channel);
                        message.extend_from_slice(&buf[..n]);
                        if out.send(Message::binary(message)).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }));
    }

    // The writer: the only task that writes to the client.
    let writer = tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            let closing = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });

    // Client input → runtime streams, until the client goes away.
    let input_out = out_tx.clone();
    let input = tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            // Text frames carry the same bytes: the Python client sends its str input as
            // text, and upstream's server reads both kinds alike.
            let message = match message {
                Message::Text(text) => {
                    Message::Binary(bytes::Bytes::from(text.as_str().to_owned()))
                }
                other => other,
            };
            match message {
                Message::Binary(data) if !data.is_empty() => match data[0] {
                    STDIN => {
                        if let Some(s) = stdin.as_mut()
                            && s.write_all(&data[1..]).await.is_err()
                        {
                            stdin = None;
                        }
                    }
                    RESIZE => {
                        if let Some(r) = resize.as_mut() {
                            let _ = r.write_all(&data[1..]).await;
                        }
                    }
                    CLOSE if data.get(1) == Some(&STDIN) => {
                        if let Some(mut s) = stdin.take() {
                            let _ = s.shutdown().await;
                        }
                    }
                    _ => {}
                },
                // Pings are answered by the writer's next flush.
                Message::Ping(payload) => {
                    let _ = input_out.send(Message::Pong(payload)).await;
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    });

    // The runtime ends the session with a Status on the error stream (empty: success),
    // after the command's output streams have ended.
    let mut status = Vec::new();
    if let Err(e) = error.read_to_end(&mut status).await {
        tracing::debug!(error = %e, "reading the runtime's exec status");
    }
    tracing::debug!(status = %String::from_utf8_lossy(&status), "exec ended");
    for pump in pumps {
        let _ = pump.await;
    }
    let status = if status.iter().all(u8::is_ascii_whitespace) {
        br#"{"metadata":{},"status":"Success"}"#.to_vec()
    } else {
        status
    };
    let mut message = vec![ERROR];
    message.extend_from_slice(&status);
    let _ = out_tx.send(Message::binary(message)).await;
    let _ = out_tx
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    drop(out_tx);
    let _ = writer.await;
    input.abort();
    Ok(())
}
