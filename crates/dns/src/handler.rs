//! The request handler: questions in the cluster zone (and reverse names of cluster
//! addresses) are answered from the current [`Zone`], authoritatively; everything else goes
//! to the forwarder, as CoreDNS's `kubernetes` plugin falls through to `forward`.

use std::iter;
use std::sync::Arc;

use hickory_proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{LowerName, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::forwarder::ForwardZoneHandler;
use hickory_server::zone_handler::{Catalog, LookupOptions, MessageResponseBuilder, ZoneHandler};
use tokio::sync::watch;

use crate::records::{Answer, Zone};

/// The forwarder, both as a catalog (to answer forwarded questions whole) and as a zone
/// handler (to resolve the targets of ExternalName CNAMEs).
pub struct Forwarder {
    catalog: Catalog,
    handler: Arc<ForwardZoneHandler>,
}

impl Forwarder {
    /// A forwarder for every name, through `handler`.
    pub fn new(handler: ForwardZoneHandler) -> Self {
        let handler = Arc::new(handler);
        let mut catalog = Catalog::new();
        catalog.upsert(
            LowerName::new(&hickory_proto::rr::Name::root()),
            vec![handler.clone() as Arc<dyn ZoneHandler>],
        );
        Self { catalog, handler }
    }
}

/// Answers DNS requests.
pub struct Handler {
    zone: watch::Receiver<Arc<Zone>>,
    forwarder: Option<Forwarder>,
}

impl Handler {
    /// A handler answering from the zones `zone` publishes.
    pub fn new(zone: watch::Receiver<Arc<Zone>>, forwarder: Option<Forwarder>) -> Self {
        Self { zone, forwarder }
    }

    /// The A/AAAA records of a CNAME's target outside the zone, through the forwarder.
    async fn chase(&self, answers: &[Record], rtype: RecordType) -> Vec<Record> {
        let Some(forwarder) = &self.forwarder else {
            return Vec::new();
        };
        if !matches!(rtype, RecordType::A | RecordType::AAAA) {
            return Vec::new();
        }
        let mut chased = Vec::new();
        for record in answers {
            let RData::CNAME(target) = &record.data else {
                continue;
            };
            let lookup = forwarder
                .handler
                .lookup(
                    &LowerName::new(&target.0),
                    rtype,
                    None,
                    LookupOptions::default(),
                )
                .await;
            if let Some(Ok(found)) = lookup.map_result() {
                chased.extend(found.iter().cloned());
            }
        }
        chased
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let is_query = request.metadata.message_type == MessageType::Query
            && request.metadata.op_code == OpCode::Query;
        let info = request.request_info().ok().filter(|_| is_query);
        let zone = self.zone.borrow().clone();
        let answer = match &info {
            Some(info) => zone.answer(info.query.name(), info.query.query_type()),
            // Malformed or not a query: the catalog answers FormErr/NotImp as hickory does.
            None => Answer::NotOurs,
        };
        if answer == Answer::NotOurs {
            return match &self.forwarder {
                Some(forwarder) => {
                    forwarder
                        .catalog
                        .handle_request::<R, T>(request, response_handle)
                        .await
                }
                None => {
                    send(
                        request,
                        ResponseCode::Refused,
                        &[],
                        &[],
                        &[],
                        response_handle,
                    )
                    .await
                }
            };
        }
        let rtype = info.map_or(RecordType::A, |i| i.query.query_type());
        match answer {
            Answer::Records(mut answers, additionals) => {
                let chased = self.chase(&answers, rtype).await;
                answers.extend(chased);
                send(
                    request,
                    ResponseCode::NoError,
                    &answers,
                    &[],
                    &additionals,
                    response_handle,
                )
                .await
            }
            Answer::NoData => {
                send(
                    request,
                    ResponseCode::NoError,
                    &[],
                    &[zone.soa()],
                    &[],
                    response_handle,
                )
                .await
            }
            Answer::NxDomain => {
                send(
                    request,
                    ResponseCode::NXDomain,
                    &[],
                    &[zone.soa()],
                    &[],
                    response_handle,
                )
                .await
            }
            // Forwarded above.
            Answer::NotOurs => {
                send(
                    request,
                    ResponseCode::ServFail,
                    &[],
                    &[],
                    &[],
                    response_handle,
                )
                .await
            }
        }
    }
}

/// Sends an authoritative answer.
async fn send<R: ResponseHandler>(
    request: &Request,
    code: ResponseCode,
    answers: &[Record],
    authorities: &[Record],
    additionals: &[Record],
    mut response_handle: R,
) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.authoritative = code != ResponseCode::Refused;
    metadata.recursion_available = true;
    metadata.response_code = code;
    let edns = request.edns.as_ref().map(|asked| {
        let mut edns = Edns::new();
        edns.set_max_payload(asked.max_payload().max(512));
        edns.set_version(0);
        edns
    });
    let mut builder = MessageResponseBuilder::from_message_request(request);
    if let Some(edns) = &edns {
        builder.edns(edns);
    }
    let response = builder.build(
        metadata,
        answers.iter(),
        authorities.iter(),
        iter::empty(),
        additionals.iter(),
    );
    match response_handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            tracing::warn!(%error, "sending a DNS response failed");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(hickory_proto::op::Header {
                metadata,
                counts: Default::default(),
            })
        }
    }
}
