//! Interop with Go's spdystream as shipped in the real `kubectl`: `kubectl port-forward` against a
//! minimal fake API server whose portforward endpoint runs `Session::server` and behaves like
//! kubelet's port-forward handler, forwarding to a local TCP echo server.

use std::collections::HashMap;
use std::convert::Infallible;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use spdy::{Session, Stream};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);

/// What the fake API server saw, as `METHOD path upgrade`.
type RequestLog = Arc<Mutex<Vec<String>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_runs_over_our_spdy_server() -> anyhow::Result<()> {
    let echo_port = start_echo_server().await?;
    let log = RequestLog::default();
    let api_port = start_api_server(echo_port, log.clone()).await?;

    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kubeconfig_yaml(api_port))?;
    let (mut kubectl, local_port) = start_port_forward(&kubeconfig, dir.path()).await?;

    let result = timeout(LIMIT, async {
        // One multi-MiB echo round trip.
        echo_round_trip(local_port, 6 << 20, 1).await?;
        // Several sequential connections.
        for seed in 2..5 {
            echo_round_trip(local_port, 200_000, seed).await?;
        }
        // A client that vanishes mid-transfer must not break the session for the next one.
        let mut rude = TcpStream::connect(("127.0.0.1", local_port)).await?;
        rude.write_all(&vec![7u8; 1 << 20]).await?;
        drop(rude);
        echo_round_trip(local_port, 300_000, 11).await?;
        // Several concurrent connections.
        let concurrent = (5..10).map(|seed| echo_round_trip(local_port, 1 << 20, seed));
        futures::future::try_join_all(concurrent).await?;
        anyhow::Ok(())
    })
    .await;
    if let Some(status) = kubectl.try_wait()? {
        let mut stderr = String::new();
        if let Some(mut pipe) = kubectl.stderr.take() {
            pipe.read_to_string(&mut stderr).await?;
        }
        bail!("kubectl exited ({status}): {stderr}");
    }
    result.context("port-forward round trips timed out")??;

    // kubectl reports forwarding failures (error stream messages, copy errors) as klog "E" lines.
    kubectl.start_kill()?;
    let mut stderr = String::new();
    if let Some(mut pipe) = kubectl.stderr.take() {
        timeout(LIMIT, pipe.read_to_string(&mut stderr)).await??;
    }
    // Only the vanished client may cause some: kubectl failing to copy to or from that local socket.
    let unexpected = stderr
        .lines()
        .filter(|l| l.starts_with('E') && !l.contains("local connection"));
    assert_eq!(unexpected.count(), 0, "kubectl logged errors:\n{stderr}");

    let log = log.lock().unwrap().clone();
    assert!(
        log.iter()
            .any(|l| l == "GET /api/v1/namespaces/default/pods/web/portforward websocket"),
        "kubectl tries WebSocket first: {log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l == "POST /api/v1/namespaces/default/pods/web/portforward SPDY/3.1"),
        "then falls back to SPDY/3.1: {log:?}"
    );
    Ok(())
}

/// Sends `len` bytes through the forwarded port while reading the echo, then half-closes.
async fn echo_round_trip(local_port: u16, len: usize, seed: u8) -> anyhow::Result<()> {
    let conn = TcpStream::connect(("127.0.0.1", local_port)).await?;
    let (mut reader, mut writer) = conn.into_split();
    let body: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(i as u8 >> 3))
        .collect();
    let sent = body.clone();
    let send = tokio::spawn(async move {
        for chunk in sent.chunks(50_000) {
            writer.write_all(chunk).await?;
        }
        writer.shutdown().await?;
        anyhow::Ok(())
    });
    let mut echoed = Vec::with_capacity(len);
    reader.read_to_end(&mut echoed).await?;
    send.await??;
    if echoed != body {
        bail!(
            "echo mismatch: sent {} bytes, got {}",
            body.len(),
            echoed.len()
        );
    }
    Ok(())
}

async fn start_echo_server() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = conn.into_split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
                let _ = writer.shutdown().await;
            });
        }
    });
    Ok(port)
}

async fn start_api_server(echo_port: u16, log: RequestLog) -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req| api(req, echo_port, log.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(conn), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Ok(port)
}

/// Just enough of the API server for `kubectl port-forward pod/web`.
async fn api(
    mut req: Request<Incoming>,
    echo_port: u16,
    log: RequestLog,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let upgrade = header("upgrade");
    log.lock()
        .unwrap()
        .push(format!("{} {} {upgrade}", req.method(), req.uri().path()));
    let json = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let response = match req.uri().path() {
        "/version" => json(StatusCode::OK, r#"{"major":"1","minor":"32","gitVersion":"v1.32.4","platform":"linux/amd64"}"#.into()),
        "/api" => json(StatusCode::OK, r#"{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[]}"#.into()),
        "/apis" => json(StatusCode::OK, r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[]}"#.into()),
        "/api/v1" => json(
            StatusCode::OK,
            r#"{"kind":"APIResourceList","groupVersion":"v1","resources":[
                {"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get","list"],"shortNames":["po"]},
                {"name":"pods/portforward","singularName":"","namespaced":true,"kind":"PodPortForwardOptions","verbs":["create","get"]}]}"#
                .into(),
        ),
        "/api/v1/namespaces/default/pods/web" => json(
            StatusCode::OK,
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"default","uid":"0b5a2d4e-9c1f-4d7e-8f00-000000000001"},
                "spec":{"containers":[{"name":"c","image":"busybox","ports":[{"containerPort":80}]}]},
                "status":{"phase":"Running"}}"#
                .into(),
        ),
        "/api/v1/namespaces/default/pods/web/portforward" if upgrade.eq_ignore_ascii_case("websocket") => {
            // Refuse the WebSocket tunnel so kubectl falls back to plain SPDY/3.1.
            json(StatusCode::BAD_REQUEST, status_json(400, "BadRequest", "websocket port-forward is not offered"))
        }
        "/api/v1/namespaces/default/pods/web/portforward"
            if upgrade.eq_ignore_ascii_case("SPDY/3.1")
                && header("x-stream-protocol-version").split(',').any(|p| p.trim() == "portforward.k8s.io") =>
        {
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    serve_port_forward(Session::server(TokioIo::new(upgraded)), echo_port).await;
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "Upgrade")
                .header("upgrade", "SPDY/3.1")
                .header("x-stream-protocol-version", "portforward.k8s.io")
                .body(Full::new(Bytes::new()))
                .unwrap()
        }
        _ => json(StatusCode::NOT_FOUND, status_json(404, "NotFound", "not found")),
    };
    Ok(response)
}

fn status_json(code: u16, reason: &str, message: &str) -> String {
    format!(
        r#"{{"kind":"Status","apiVersion":"v1","status":"Failure","message":"{message}","reason":"{reason}","code":{code}}}"#
    )
}

/// Kubelet's port-forward protocol: each forwarded connection is a pair of streams, `error` and
/// `data`, sharing a `requestID`. Data is proxied to the pod port; the error stream carries a
/// message only on failure and is closed (FIN) when the forward ends.
async fn serve_port_forward(session: Session, echo_port: u16) {
    let mut pending: HashMap<String, (Option<Stream>, Option<Stream>)> = HashMap::new();
    while let Some(stream) = session.accept().await {
        let request_id = stream
            .headers()
            .get("requestid")
            .unwrap_or_default()
            .to_string();
        let entry = pending.entry(request_id.clone()).or_default();
        match stream.headers().get("streamtype") {
            Some("error") => entry.0 = Some(stream),
            Some("data") => entry.1 = Some(stream),
            _ => {
                stream.reset();
                continue;
            }
        }
        if matches!(pending.get(&request_id), Some((Some(_), Some(_))))
            && let Some((Some(error), Some(data))) = pending.remove(&request_id)
        {
            tokio::spawn(forward(error, data, echo_port));
        }
    }
}

async fn forward(mut error_stream: Stream, data_stream: Stream, echo_port: u16) {
    let target = match data_stream.headers().get("port") {
        Some("80") => TcpStream::connect(("127.0.0.1", echo_port))
            .await
            .map_err(|e| e.to_string()),
        other => Err(format!("pod web has no port {other:?}")),
    };
    match target {
        Ok(tcp) => {
            let (mut from_client, mut to_client) = tokio::io::split(data_stream);
            let (mut from_pod, mut to_pod) = tcp.into_split();
            let upstream = async {
                let _ = tokio::io::copy(&mut from_client, &mut to_pod).await;
                let _ = to_pod.shutdown().await;
            };
            let downstream = async {
                let _ = tokio::io::copy(&mut from_pod, &mut to_client).await;
                let _ = to_client.shutdown().await;
            };
            tokio::join!(upstream, downstream);
        }
        Err(message) => {
            let _ = error_stream.write_all(message.as_bytes()).await;
        }
    }
    let _ = error_stream.shutdown().await;
}

fn kubeconfig_yaml(api_port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: http://127.0.0.1:{api_port}\n\
         contexts:\n- name: t\n  context:\n    cluster: t\n    user: u\n    namespace: default\n\
         current-context: t\nusers:\n- name: u\n  user: {{}}\n"
    )
}

/// Starts `kubectl port-forward pod/web :80` and waits for the local port it picked.
async fn start_port_forward(
    kubeconfig: &std::path::Path,
    home: &std::path::Path,
) -> anyhow::Result<(Child, u16)> {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["port-forward", "--address", "127.0.0.1", "pod/web", ":80"])
        .env("HOME", home)
        .env("KUBECACHEDIR", home.join("cache"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting kubectl")?;
    let stdout = child.stdout.take().context("kubectl stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let port = timeout(LIMIT, async {
        while let Some(line) = lines.next_line().await? {
            // "Forwarding from 127.0.0.1:40123 -> 80"
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                let port = rest.split_whitespace().next().unwrap_or_default();
                return Ok(port.parse::<u16>()?);
            }
        }
        bail!("kubectl port-forward ended before forwarding")
    })
    .await;
    let port = match port {
        Ok(Ok(port)) => port,
        failed => {
            let _ = child.start_kill();
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = timeout(Duration::from_secs(5), pipe.read_to_string(&mut stderr)).await;
            }
            bail!("kubectl port-forward did not start ({failed:?}): {stderr}");
        }
    };
    // Keep draining stdout so kubectl never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, port))
}
