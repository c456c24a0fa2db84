//! Content negotiation: which media type a client accepts (plain JSON, Table, aggregated
//! discovery) and how a request body is encoded.

/// One media range of an `Accept` header, with its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaRange {
    /// `type/subtype`, lower-cased.
    pub essence: String,
    /// Parameters as (name, value), names lower-cased.
    pub params: Vec<(String, String)>,
}

impl MediaRange {
    /// A parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// True for `application/json`, `application/*`, `*/*`.
    pub fn is_json(&self) -> bool {
        matches!(
            self.essence.as_str(),
            "application/json" | "application/*" | "*/*"
        )
    }
}

/// Parses an `Accept` header into its media ranges, in the client's order.
pub fn parse_accept(header: &str) -> Vec<MediaRange> {
    header
        .split(',')
        .filter_map(|range| {
            let mut parts = range.split(';');
            let essence = parts.next()?.trim().to_ascii_lowercase();
            if essence.is_empty() {
                return None;
            }
            let params = parts
                .filter_map(|p| {
                    let (n, v) = p.split_once('=')?;
                    Some((
                        n.trim().to_ascii_lowercase(),
                        v.trim().trim_matches('"').to_owned(),
                    ))
                })
                .collect();
            Some(MediaRange { essence, params })
        })
        .collect()
}

/// The response form a client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The object or list as JSON.
    Json,
    /// A `meta.k8s.io/v1` Table.
    Table,
    /// Metadata only: `PartialObjectMetadata` (get, watch) or `PartialObjectMetadataList`
    /// (list), as metadata informers (client-go's, kube-rs's `metadata_watcher`) ask.
    Metadata,
    /// Aggregated discovery (`apidiscovery.k8s.io/v2`).
    AggregatedDiscovery,
    /// Nothing we can produce.
    Unacceptable,
}

/// Chooses the response form for an `Accept` header: the first range we can serve wins.
/// Tables and metadata-only forms are offered for resource requests (`resource_ok`),
/// aggregated discovery for discovery requests.
pub fn choose(accept: Option<&str>, resource_ok: bool, discovery_ok: bool) -> Output {
    let table_ok = resource_ok;
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Output::Json;
    };
    for range in parse_accept(accept) {
        let as_ = range.param("as");
        let g = range.param("g");
        match (as_, g) {
            (Some("Table"), Some("meta.k8s.io"))
                if table_ok
                    && range.param("v") == Some("v1")
                    && range.essence == "application/json" =>
            {
                return Output::Table;
            }
            (Some("PartialObjectMetadata" | "PartialObjectMetadataList"), Some("meta.k8s.io"))
                if resource_ok
                    && range.essence == "application/json"
                    && matches!(range.param("v"), Some("v1" | "v1beta1")) =>
            {
                return Output::Metadata;
            }
            (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io"))
                if discovery_ok
                    && range.essence == "application/json"
                    && range.param("v") == Some("v2") =>
            {
                return Output::AggregatedDiscovery;
            }
            (None, _) if range.is_json() => return Output::Json,
            _ => {}
        }
    }
    Output::Unacceptable
}

/// How a request body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
    /// Kubernetes protobuf envelope.
    Protobuf,
    /// RFC 6902 JSON patch.
    JsonPatch,
    /// RFC 7386 merge patch.
    MergePatch,
    /// Strategic merge patch.
    StrategicMergePatch,
    /// Server-side apply.
    ApplyPatch,
}

/// Classifies a `Content-Type`; `None` for types the server does not accept.
pub fn body_format(content_type: Option<&str>) -> Option<BodyFormat> {
    let essence = content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Some(match essence.as_str() {
        "" | "application/json" => BodyFormat::Json,
        "application/yaml" | "application/x-yaml" | "text/yaml" => BodyFormat::Yaml,
        "application/vnd.kubernetes.protobuf" => BodyFormat::Protobuf,
        "application/json-patch+json" => BodyFormat::JsonPatch,
        "application/merge-patch+json" => BodyFormat::MergePatch,
        "application/strategic-merge-patch+json" => BodyFormat::StrategicMergePatch,
        "application/apply-patch+yaml" | "application/apply-patch+json" => BodyFormat::ApplyPatch,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL_GET: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    const KUBECTL_DISCOVERY: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

    #[test]
    fn chooses_like_kube_apiserver() {
        assert_eq!(choose(Some(KUBECTL_GET), true, false), Output::Table);
        assert_eq!(choose(Some(KUBECTL_GET), false, false), Output::Json);
        assert_eq!(
            choose(Some(KUBECTL_DISCOVERY), false, true),
            Output::AggregatedDiscovery
        );
        assert_eq!(choose(Some(KUBECTL_DISCOVERY), false, false), Output::Json);
        assert_eq!(
            choose(
                Some("application/vnd.kubernetes.protobuf,application/json"),
                true,
                true
            ),
            Output::Json
        );
        assert_eq!(
            choose(Some("application/vnd.kubernetes.protobuf"), true, true),
            Output::Unacceptable
        );
        assert_eq!(choose(None, true, true), Output::Json);
        let metadata = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
        assert_eq!(choose(Some(metadata), true, false), Output::Metadata);
        assert_eq!(choose(Some(metadata), false, true), Output::Unacceptable);
        assert_eq!(choose(Some("*/*"), true, true), Output::Json);
    }

    #[test]
    fn body_formats() {
        assert_eq!(
            body_format(Some("application/json; charset=utf-8")),
            Some(BodyFormat::Json)
        );
        assert_eq!(
            body_format(Some("application/strategic-merge-patch+json")),
            Some(BodyFormat::StrategicMergePatch)
        );
        assert_eq!(
            body_format(Some("application/vnd.kubernetes.protobuf")),
            Some(BodyFormat::Protobuf)
        );
        assert_eq!(body_format(Some("text/html")), None);
        assert_eq!(body_format(None), Some(BodyFormat::Json));
    }
}
