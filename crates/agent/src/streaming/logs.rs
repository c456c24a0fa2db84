//! Container logs (kubelet's `/containerLogs`), read from the CRI log files the runtime
//! writes: one record per line, `<RFC 3339 time> <stdout|stderr> <P|F> <content>`, where
//! `P` marks a partial line continued by the next record.

use std::collections::VecDeque;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::time::Duration;

use apimachinery::status::ApiError;
use bytes::Bytes;
use futures::StreamExt;
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};

use super::{Body, PodRef, Query, attempts};
use crate::Shared;
use crate::cri::api;

/// One record of a CRI log file.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// When the runtime wrote it (as written, RFC 3339 with nanoseconds).
    pub time: &'a str,
    /// `stdout` or `stderr`.
    pub stream: &'a str,
    /// Whether the line continues in the next record.
    pub partial: bool,
    /// The bytes of the line, without its newline.
    pub content: &'a str,
}

/// Parses one line of a CRI log file (without its newline).
pub fn parse_record(line: &str) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let stream = parts.next()?;
    let tags = parts.next()?;
    Some(Record {
        time,
        stream,
        partial: tags.split(':').any(|t| t == "P"),
        content: parts.next().unwrap_or_default(),
    })
}

/// What a log request asks for (PodLogOptions).
#[derive(Debug, Default)]
struct Options {
    follow: bool,
    tail_lines: Option<usize>,
    since: Option<jiff::Timestamp>,
    timestamps: bool,
    limit_bytes: Option<u64>,
}

impl Options {
    fn from_query(query: &Query) -> Result<Self, ApiError> {
        let number = |name: &str| -> Result<Option<i64>, ApiError> {
            query
                .get(name)
                .map(|v| {
                    v.parse::<i64>()
                        .map_err(|_| ApiError::bad_request(format!("invalid {name}: {v:?}")))
                })
                .transpose()
        };
        let since = match (number("sinceSeconds")?, query.get("sinceTime")) {
            (Some(s), _) => Some(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(s)),
            (None, Some(t)) => Some(
                t.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid sinceTime: {t:?}")))?,
            ),
            (None, None) => None,
        };
        Ok(Self {
            follow: query.flag("follow"),
            tail_lines: number("tailLines")?.map(|n| n.max(0) as usize),
            since,
            timestamps: query.flag("timestamps"),
            limit_bytes: number("limitBytes")?.map(|n| n.max(0) as u64),
        })
    }

    /// The bytes a record contributes to the output.
    fn render(&self, record: &Record<'_>) -> Option<Vec<u8>> {
        if let Some(since) = self.since {
            let time: jiff::Timestamp = record.time.parse().ok()?;
            if time < since {
                return None;
            }
        }
        let mut out = Vec::with_capacity(record.content.len() + 40);
        if self.timestamps {
            out.extend_from_slice(record.time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(record.content.as_bytes());
        if !record.partial {
            out.push(b'\n');
        }
        Some(out)
    }
}

/// Serves the log of `container` (its current run, or the previous one).
pub async fn serve(
    shared: &Shared,
    pod: &PodRef<'_>,
    container: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let options = Options::from_query(query)?;
    let runs = attempts(shared, pod, container).await?;
    let run = if query.flag("previous") {
        runs.into_iter().nth(1).ok_or_else(|| {
            ApiError::bad_request(format!(
                "previous terminated container {container:?} in pod {:?} not found",
                pod.name
            ))
        })?
    } else {
        runs.into_iter().next().ok_or_else(|| {
            ApiError::bad_request(format!(
                "container {container:?} in pod {:?} is waiting to start: ContainerCreating",
                pod.name
            ))
        })?
    };
    let status = shared
        .cri
        .container_status(&run.id)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let path = if status.log_path.starts_with('/') {
        PathBuf::from(&status.log_path)
    } else {
        shared
            .config
            .data_dir
            .join("pods")
            .join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid))
            .join(&status.log_path)
    };
    let following = options.follow && status.state == api::ContainerState::ContainerRunning as i32;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let cri = shared.cri.clone();
    let id = run.id.clone();
    tokio::spawn(async move {
        if let Err(e) = stream_file(&path, &options, following, &cri, &id, &tx).await {
            tracing::debug!(path = %path.display(), error = %e, "streaming a log");
        }
    });
    let frames = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|b| Ok::<_, std::convert::Infallible>(http_body::Frame::data(b)));
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    Ok(response)
}

/// Sends the selected records of `path`, then (when following) new ones until the
/// container stops or the reader goes away.
async fn stream_file(
    path: &std::path::Path,
    options: &Options,
    follow: bool,
    cri: &crate::cri::Cri,
    container_id: &str,
    tx: &tokio::sync::mpsc::Sender<Bytes>,
) -> std::io::Result<()> {
    let mut budget = options.limit_bytes.unwrap_or(u64::MAX);
    let mut send = async |chunk: Vec<u8>| -> bool {
        if budget == 0 {
            return false;
        }
        let mut chunk = chunk;
        if chunk.len() as u64 > budget {
            chunk.truncate(budget as usize);
        }
        budget -= chunk.len() as u64;
        tx.send(Bytes::from(chunk)).await.is_ok() && budget > 0
    };
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        // No output yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !follow => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut reader = BufReader::new(file);
    // The existing records: all of them, or the last `tail_lines`.
    let mut backlog: VecDeque<Vec<u8>> = VecDeque::new();
    let mut line = String::new();
    let mut offset = 0u64;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).await?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        offset += n as u64;
        if let Some(out) =
            parse_record(line.trim_end_matches('\n')).and_then(|r| options.render(&r))
        {
            backlog.push_back(out);
            if options.tail_lines.is_some_and(|t| backlog.len() > t) {
                backlog.pop_front();
            }
        }
    }
    for out in backlog {
        if !send(out).await {
            return Ok(());
        }
    }
    if !follow {
        return Ok(());
    }
    let mut last_check = tokio::time::Instant::now();
    reader.seek(SeekFrom::Start(offset)).await?;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).await?;
        if n > 0 && line.ends_with('\n') {
            offset += n as u64;
            if let Some(out) =
                parse_record(line.trim_end_matches('\n')).and_then(|r| options.render(&r))
                && !send(out).await
            {
                return Ok(());
            }
            continue;
        }
        // At the end, maybe inside a line being written: read it again next time.
        reader.seek(SeekFrom::Start(offset)).await?;
        if tx.is_closed() {
            return Ok(());
        }
        // At the end: stop once the container has exited and everything is sent.
        if last_check.elapsed() >= Duration::from_millis(500) {
            last_check = tokio::time::Instant::now();
            let running = cri
                .container_status(container_id)
                .await
                .is_ok_and(|s| s.state == api::ContainerState::ContainerRunning as i32);
            if !running {
                // One more pass picks up what was written just before the exit.
                reader.seek(SeekFrom::Start(offset)).await?;
                let mut rest = String::new();
                tokio::io::AsyncReadExt::read_to_string(&mut reader, &mut rest).await?;
                for l in rest.lines() {
                    if let Some(out) = parse_record(l).and_then(|r| options.render(&r))
                        && !send(out).await
                    {
                        return Ok(());
                    }
                }
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_with_and_without_content() {
        assert_eq!(
            parse_record("2026-11-23T10:00:00.123456789Z stdout F hello world"),
            Some(Record {
                time: "2026-11-23T10:00:00.123456789Z",
                stream: "stdout",
                partial: false,
                content: "hello world",
            })
        );
        let partial = parse_record("2026-11-23T10:00:00Z stderr P abc").unwrap();
        assert!(partial.partial);
        assert_eq!(
            parse_record("2026-11-23T10:00:00Z stdout F")
                .unwrap()
                .content,
            ""
        );
        assert_eq!(parse_record("garbage"), None);
    }

    #[test]
    fn rendering_applies_timestamps_since_and_partial_lines() {
        let options = Options {
            timestamps: true,
            since: Some("2026-11-23T10:00:00Z".parse().unwrap()),
            ..Default::default()
        };
        let old = parse_record("2026-11-23T09:59:59Z stdout F old").unwrap();
        assert_eq!(options.render(&old), None);
        let new = parse_record("2026-11-23T10:00:01Z stdout F new").unwrap();
        assert_eq!(
            options.render(&new).unwrap(),
            b"2026-11-23T10:00:01Z new\n".to_vec()
        );
        let plain = Options::default();
        let partial = parse_record("2026-11-23T10:00:01Z stdout P par").unwrap();
        assert_eq!(plain.render(&partial).unwrap(), b"par".to_vec());
    }
}
