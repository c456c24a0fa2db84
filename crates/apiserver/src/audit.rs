//! The audit log: one JSON line per request, in upstream's `audit.k8s.io/v1` Event form
//! (stage `ResponseComplete`), with the cluster and the latency as annotations.
//!
//! Lines are written by a thread of their own so a slow disk never holds a request; the
//! file is rotated by size (`path` → `path.1` → … → `path.<backups>`).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde_json::{Value, json};

use crate::authn::Identity;

/// How much of each request is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Nothing.
    None,
    /// Who did what to which object, and the answer's code.
    Metadata,
}

impl std::str::FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "metadata" => Ok(Self::Metadata),
            other => Err(format!("unknown audit level {other:?} (none, metadata)")),
        }
    }
}

/// Where and how the log is written.
#[derive(Clone, Debug)]
pub struct Config {
    /// The log file.
    pub path: PathBuf,
    /// Rotate when the file would grow past this many bytes.
    pub max_bytes: u64,
    /// How many rotated files to keep.
    pub max_backups: usize,
    /// What to record.
    pub level: Level,
}

/// One finished request, as the API server saw it.
pub struct Record<'a> {
    /// The cluster it addressed.
    pub cluster: &'a str,
    /// Who made it (after authentication, before impersonation); `None` if unauthenticated.
    pub user: Option<&'a Identity>,
    /// `Impersonate-User` and `Impersonate-Group`, if sent.
    pub impersonated: Option<(String, Vec<String>)>,
    /// The HTTP method.
    pub method: &'a http::Method,
    /// Path and query.
    pub uri: &'a http::Uri,
    /// The client's address, when known.
    pub source_ip: Option<std::net::IpAddr>,
    /// The answer's code.
    pub code: u16,
    /// When the request arrived.
    pub received: jiff::Timestamp,
    /// How long it took.
    pub latency: std::time::Duration,
}

/// A handle on the writer thread.
pub struct AuditLog {
    level: Level,
    lines: mpsc::Sender<String>,
    writer: std::thread::JoinHandle<()>,
}

impl AuditLog {
    /// Opens (appends to) the log and starts its writer thread.
    pub fn open(config: Config) -> std::io::Result<Self> {
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut writer = Writer::open(config.clone())?;
        let (lines, rx) = mpsc::channel::<String>();
        let writer = std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || {
                while let Ok(line) = rx.recv() {
                    writer.write(&line);
                    // Write what is queued, then flush once.
                    while let Ok(line) = rx.try_recv() {
                        writer.write(&line);
                    }
                    writer.flush();
                }
            })?;
        Ok(Self {
            level: config.level,
            lines,
            writer,
        })
    }

    /// Writes out what is queued and stops the writer.
    pub fn close(self) {
        drop(self.lines);
        let _ = self.writer.join();
    }

    /// Records one request.
    pub fn record(&self, record: &Record<'_>) {
        if self.level == Level::None {
            return;
        }
        let line = event(record).to_string();
        let _ = self.lines.send(line);
    }
}

/// The audit Event of a request.
fn event(r: &Record<'_>) -> Value {
    let path = r.uri.path();
    let target = crate::request::parse(path);
    let query = crate::query::Query::parse(r.uri.query());
    let mut event = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": uuid::Uuid::new_v4().to_string(),
        "stage": "ResponseComplete",
        "requestURI": r.uri.to_string(),
        "verb": verb(r.method, target.as_ref().map(|t| &t.route), &query),
        "user": match r.user {
            Some(u) => {
                let mut user = json!({"username": u.user, "groups": u.groups});
                if !u.uid.is_empty() {
                    user["uid"] = json!(u.uid);
                }
                if !u.extra.is_empty() {
                    user["extra"] = json!(u.extra);
                }
                user
            }
            None => json!({"username": "system:anonymous", "groups": ["system:unauthenticated"]}),
        },
        "sourceIPs": r.source_ip.map(|ip| vec![ip.to_string()]).unwrap_or_default(),
        "responseStatus": {"metadata": {}, "code": r.code},
        "requestReceivedTimestamp": r.received.to_string(),
        "stageTimestamp": jiff::Timestamp::now().to_string(),
        "annotations": {
            "kumo.dev/cluster": r.cluster,
            "kumo.dev/latency": format!("{:?}", r.latency),
        },
    });
    if let Some((user, groups)) = &r.impersonated {
        event["impersonatedUser"] = json!({"username": user, "groups": groups});
    }
    if let Some(crate::request::Route::Resource(p)) = target.map(|t| t.route) {
        let mut object = json!({"resource": p.resource, "apiVersion": p.version});
        if !p.group.is_empty() {
            object["apiGroup"] = json!(p.group);
        }
        for (key, value) in [
            ("namespace", &p.namespace),
            ("name", &p.name),
            ("subresource", &p.subresource),
        ] {
            if let Some(v) = value {
                object[key] = json!(v);
            }
        }
        event["objectRef"] = object;
    }
    event
}

fn verb(
    method: &http::Method,
    route: Option<&crate::request::Route>,
    query: &crate::query::Query,
) -> String {
    let Some(crate::request::Route::Resource(p)) = route else {
        return method.as_str().to_ascii_lowercase();
    };
    match (method.as_str(), p.name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if query.flag("watch") => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
    .to_owned()
}

/// The file end: appends lines and rotates by size.
struct Writer {
    config: Config,
    file: BufWriter<File>,
    size: u64,
}

impl Writer {
    fn open(config: Config) -> std::io::Result<Self> {
        let file = open_append(&config.path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            config,
            file: BufWriter::new(file),
            size,
        })
    }

    fn write(&mut self, line: &str) {
        let len = line.len() as u64 + 1;
        if self.size > 0
            && self.size + len > self.config.max_bytes
            && let Err(e) = self.rotate()
        {
            tracing::warn!(error = %e, "audit log: rotation failed");
        }
        if let Err(e) = writeln!(self.file, "{line}") {
            tracing::warn!(error = %e, "audit log: write failed");
            return;
        }
        self.size += len;
    }

    fn flush(&mut self) {
        if let Err(e) = self.file.flush() {
            tracing::warn!(error = %e, "audit log: flush failed");
        }
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let path = &self.config.path;
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", path.display()));
        if self.config.max_backups == 0 {
            std::fs::remove_file(path)?;
        } else {
            let _ = std::fs::remove_file(numbered(self.config.max_backups));
            for n in (1..self.config.max_backups).rev() {
                if numbered(n).exists() {
                    std::fs::rename(numbered(n), numbered(n + 1))?;
                }
            }
            std::fs::rename(path, numbered(1))?;
        }
        self.file = BufWriter::new(open_append(path)?);
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_who_did_what_and_rotates_by_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(Config {
            path: path.clone(),
            max_bytes: 2000,
            max_backups: 2,
            level: Level::Metadata,
        })
        .expect("open");
        let alice = Identity {
            user: "alice".into(),
            groups: vec!["dev".into()],
            ..Default::default()
        };
        let uri: http::Uri = "/clusters/team-a/api/v1/namespaces/ns/pods/p?dryRun=All"
            .parse()
            .expect("uri");
        for _ in 0..20 {
            log.record(&Record {
                cluster: "team-a",
                user: Some(&alice),
                impersonated: None,
                method: &http::Method::DELETE,
                uri: &uri,
                source_ip: Some([127, 0, 0, 1].into()),
                code: 200,
                received: jiff::Timestamp::now(),
                latency: std::time::Duration::from_millis(3),
            });
        }
        log.close();
        let current = std::fs::read_to_string(&path).expect("log");
        let first: Value =
            serde_json::from_str(current.lines().next().expect("a line")).expect("json");
        assert_eq!(first["user"]["username"], "alice");
        assert_eq!(first["verb"], "delete");
        assert_eq!(first["objectRef"]["namespace"], "ns");
        assert_eq!(first["objectRef"]["name"], "p");
        assert_eq!(first["annotations"]["kumo.dev/cluster"], "team-a");
        assert!(std::fs::metadata(&path).expect("size").len() <= 2000);
        assert!(dir.path().join("audit.log.1").exists(), "rotated");
        assert!(
            !dir.path().join("audit.log.3").exists(),
            "only two backups kept"
        );
    }
}
