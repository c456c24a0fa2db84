//! Registry credentials from a pod's imagePullSecrets, as kubelet's keyring finds them:
//! `kubernetes.io/dockerconfigjson` (`{"auths": {...}}`) and `kubernetes.io/dockercfg`
//! secrets map registry keys (`host[:port][/path]`, maybe as a URL, maybe with a `*.`
//! wildcard label) to a username and password or a base64 `auth`. Every entry whose key
//! matches the image is a candidate, most specific path first; the pull tries them in turn.
//!
//! Like kubelet, the credentials go to CRI without a `server_address`: containerd parses
//! that field as a URL and withholds the credentials unless the URL's host is the host it
//! is talking to, which a bare `host[:port]` never is (and a mirror's host is not either).

use base64::Engine;
use k8s_openapi::api::core::v1::{LocalObjectReference, Secret};
use kube::Api;
use serde_json::Value;

use crate::cri::api::AuthConfig;

/// The credentials in `secrets` (of `namespace`) that apply to `image`. Missing or
/// malformed secrets are skipped, as kubelet does (with a warning).
pub async fn credentials(
    client: &kube::Client,
    namespace: &str,
    secrets: &[LocalObjectReference],
    image: &str,
) -> Vec<AuthConfig> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut entries = Vec::new();
    for reference in secrets {
        match api.get_opt(&reference.name).await {
            Ok(Some(secret)) => entries.extend(parse_secret(&secret)),
            Ok(None) => {
                tracing::warn!(secret = %reference.name, %namespace, "imagePullSecret not found");
            }
            Err(e) => {
                tracing::warn!(secret = %reference.name, %namespace, error = %e, "reading an imagePullSecret");
            }
        }
    }
    matching(&entries, image)
}

/// One registry entry of a secret: its key and credentials.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: String,
    pub auth: AuthConfig,
}

/// The entries of a docker config secret.
pub fn parse_secret(secret: &Secret) -> Vec<Entry> {
    let data = secret.data.clone().unwrap_or_default();
    let document = |key: &str| -> Option<Value> {
        data.get(key)
            .and_then(|bytes| serde_json::from_slice(&bytes.0).ok())
    };
    let auths = match secret.type_.as_deref() {
        Some("kubernetes.io/dockerconfigjson") => {
            document(".dockerconfigjson").and_then(|d| d.get("auths").cloned())
        }
        Some("kubernetes.io/dockercfg") => document(".dockercfg"),
        _ => None,
    };
    let Some(Value::Object(auths)) = auths else {
        return Vec::new();
    };
    auths
        .into_iter()
        .filter_map(|(key, value)| {
            let text = |field: &str| {
                value
                    .get(field)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let (mut username, mut password) = (text("username"), text("password"));
            let encoded = text("auth");
            if username.is_empty()
                && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(&encoded)
                && let Some((u, p)) = String::from_utf8_lossy(&decoded).split_once(':')
            {
                username = u.to_owned();
                password = p.to_owned();
            }
            if username.is_empty() && password.is_empty() {
                return None;
            }
            Some(Entry {
                key,
                auth: AuthConfig {
                    username,
                    password,
                    ..Default::default()
                },
            })
        })
        .collect()
}

/// The registry host and repository path of an image reference (`docker.io` for short
/// names, as container runtimes resolve them).
fn registry_and_path(image: &str) -> (String, String) {
    let name = image.split('@').next().unwrap_or(image);
    let (first, rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_owned(), rest.to_owned())
        }
        _ => ("docker.io".to_owned(), name.to_owned()),
    };
    // Drop the tag (a colon after the last slash).
    let path = match rest.rsplit_once('/') {
        Some((dir, last)) => format!("{dir}/{}", last.split(':').next().unwrap_or(last)),
        None => rest.split(':').next().unwrap_or(&rest).to_owned(),
    };
    let host = match first.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        _ => first,
    };
    (host, path)
}

/// Whether a key's host matches the image's host (`*` matches one DNS label).
fn host_matches(pattern: &str, host: &str) -> bool {
    let (pattern, pattern_port) = pattern.split_once(':').unwrap_or((pattern, ""));
    let (host, host_port) = host.split_once(':').unwrap_or((host, ""));
    if pattern_port != host_port {
        return false;
    }
    let pattern: Vec<&str> = pattern.split('.').collect();
    let host: Vec<&str> = host.split('.').collect();
    pattern.len() == host.len()
        && pattern
            .iter()
            .zip(&host)
            .all(|(p, h)| *p == "*" || p.eq_ignore_ascii_case(h))
}

/// The entries that apply to `image`, most specific key first.
pub fn matching(entries: &[Entry], image: &str) -> Vec<AuthConfig> {
    let (host, path) = registry_and_path(image);
    let mut found: Vec<(usize, AuthConfig)> = entries
        .iter()
        .filter_map(|entry| {
            let key = entry
                .key
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            let (key_host, key_path) = key.split_once('/').unwrap_or((key, ""));
            let key_host = match key_host {
                "index.docker.io" | "registry-1.docker.io" => "docker.io",
                h => h,
            };
            // A `/v1/` or `/v2/` path names the registry's API, not a repository (Docker
            // Hub's legacy key is `https://index.docker.io/v1/`).
            let key_path = ["v1", "v2"]
                .iter()
                .find_map(|api| {
                    (key_path == *api)
                        .then_some("")
                        .or_else(|| key_path.strip_prefix(&format!("{api}/")))
                })
                .unwrap_or(key_path);
            let path_matches = key_path.is_empty()
                || path == key_path
                || path.starts_with(&format!("{key_path}/"));
            (host_matches(key_host, &host) && path_matches)
                .then(|| (key_path.len(), entry.auth.clone()))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().map(|(_, auth)| auth).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(type_: &str, key: &str, json: &str) -> Secret {
        Secret {
            type_: Some(type_.into()),
            data: Some([(key.to_owned(), ByteString(json.as_bytes().to_vec()))].into()),
            ..Default::default()
        }
    }

    #[test]
    fn both_secret_types_parse_with_auth_or_fields() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let json = secret(
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            &format!(r#"{{"auths": {{"registry.local:5000": {{"auth": "{encoded}"}}}}}}"#),
        );
        let entries = parse_secret(&json);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].auth.username, "alice");
        assert_eq!(entries[0].auth.password, "s3cret");
        let legacy = secret(
            "kubernetes.io/dockercfg",
            ".dockercfg",
            r#"{"https://index.docker.io/v1/": {"username": "bob", "password": "pw"}}"#,
        );
        assert_eq!(parse_secret(&legacy)[0].auth.username, "bob");
        // Other secret types carry no registry credentials.
        assert!(parse_secret(&secret("Opaque", ".dockerconfigjson", "{}")).is_empty());
    }

    #[test]
    fn keys_match_by_host_port_wildcard_and_path() {
        let entry = |key: &str, user: &str| Entry {
            key: key.into(),
            auth: AuthConfig {
                username: user.into(),
                ..Default::default()
            },
        };
        let entries = vec![
            entry("registry.local:5000", "host"),
            entry("registry.local:5000/team", "team"),
            entry("*.corp.example", "wild"),
            entry("https://index.docker.io/v1/", "hub"),
            entry("http://mirror.local/v2/", "api"),
            entry("mirror.local/v1/team", "api-team"),
        ];
        let users = |image: &str| -> Vec<String> {
            matching(&entries, image)
                .into_iter()
                .map(|a| a.username)
                .collect()
        };
        assert_eq!(users("registry.local:5000/team/app:1"), ["team", "host"]);
        assert_eq!(users("registry.local:5000/other/app"), ["host"]);
        assert!(
            users("registry.local/team/app").is_empty(),
            "the port must match"
        );
        assert_eq!(users("images.corp.example/app:2"), ["wild"]);
        assert!(users("a.b.corp.example/app").is_empty(), "* is one label");
        assert_eq!(users("busybox:1.36"), ["hub"]);
        // An API version path names no repository.
        assert_eq!(users("mirror.local/team/app"), ["api-team", "api"]);
        assert_eq!(users("mirror.local/other"), ["api"]);
        assert_eq!(
            users("registry.local:5000/team/app@sha256:00"),
            ["team", "host"]
        );
        // containerd drops credentials whose server address is not a URL of the host it
        // talks to, so none is sent (as kubelet sends none).
        assert!(
            matching(&entries, "registry.local:5000/team/app")
                .iter()
                .all(|a| a.server_address.is_empty())
        );
    }
}
