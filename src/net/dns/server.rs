//! The DNS responders of one node (SPEC §7 DNS): a UDP + TCP hickory server on each bridge
//! gateway, answering for that bridge's (deployment, network) scope from the shared [`Zone`]
//! and forwarding other names through the node's upstream chain.
//!
//! [`Dns`] owns the listeners and the current zone. The network supervisor calls
//! [`Dns::set_zone`] whenever replicas or health change (a pointer swap: the next query sees
//! the new zone) and [`Dns::set_listeners`] with the bridges this node hosts (it starts the
//! missing servers, stops the unwanted ones and reports bind failures, which it retries on its
//! next call). This module must not read the replicated state, create bridges or decide which
//! names are local (that is [`Zone::resolve`]); it only turns lookups into DNS messages.
//!
//! Answers: local names are authoritative A records with a short TTL ([`LOCAL_TTL`]) in a
//! fresh random order per query; other record types of local names (AAAA, MX, …) get NOERROR
//! with no records; forwarded names carry the upstream's records and code; a failed chain is
//! SERVFAIL, never NXDOMAIN.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use rand::seq::SliceRandom;
use tokio::net::{TcpListener, UdpSocket};
use tracing::debug;

use super::forward::{DEFAULT_UPSTREAM_TIMEOUT, Forwarder};
use super::zone::{Lookup, Zone};
use crate::error::{Code, Error};

/// TTL of local answers, in seconds: short, so an unhealthy replica leaves caches quickly.
pub const LOCAL_TTL: u32 = 2;

/// How long an idle TCP client connection is kept open.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Responses buffered per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;

/// How the node's responders reach the outside world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// The upstream resolvers, tried in order (configured, or
    /// [`upstreams_from_resolv_conf`](super::forward::upstreams_from_resolv_conf)).
    pub forwarders: Vec<SocketAddr>,
    /// How long each upstream gets before the next one is asked.
    pub upstream_timeout: Duration,
    /// The port the responders listen on (53).
    pub port: u16,
}

impl Default for DnsSettings {
    /// No upstream, 2 s per upstream, port 53.
    fn default() -> Self {
        DnsSettings {
            forwarders: Vec::new(),
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
            port: 53,
        }
    }
}

/// One responder: a bridge gateway address and the scope it answers for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Listener {
    /// The deployment of the bridge.
    pub deployment: String,
    /// The network of the bridge.
    pub network: String,
    /// The bridge's gateway address, where the responder binds.
    pub address: Ipv4Addr,
}

/// What every responder of the node shares.
struct Shared {
    zone: RwLock<Arc<Zone>>,
    forwarder: Forwarder,
}

/// The node's DNS responders.
pub struct Dns {
    shared: Arc<Shared>,
    port: u16,
    servers: tokio::sync::Mutex<HashMap<Listener, Server<Handler>>>,
}

impl Dns {
    /// The node's responders: none listening yet, an empty zone, `settings`' upstreams.
    pub fn new(settings: DnsSettings) -> Dns {
        Dns {
            shared: Arc::new(Shared {
                zone: RwLock::new(Arc::new(Zone::default())),
                forwarder: Forwarder::new(settings.forwarders, settings.upstream_timeout),
            }),
            port: settings.port,
            servers: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the zone; queries arriving after this call see the new one.
    pub fn set_zone(&self, zone: Zone) {
        *self
            .shared
            .zone
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(zone);
    }

    /// Makes the running responders exactly `wanted`: stops (and unbinds) the others first,
    /// then binds UDP and TCP on `address:port` for each missing one. Returns the listeners
    /// that could not be bound (address not on an interface yet, port taken); call again to
    /// retry them.
    pub async fn set_listeners(&self, wanted: &[Listener]) -> Vec<(Ipv4Addr, Error)> {
        let mut servers = self.servers.lock().await;
        let unwanted: Vec<Listener> = servers
            .keys()
            .filter(|running| !wanted.contains(running))
            .cloned()
            .collect();
        for listener in unwanted {
            if let Some(mut server) = servers.remove(&listener) {
                if let Err(error) = server.shutdown_gracefully().await {
                    debug!(?listener, %error, "dns responder ended with an error");
                }
                debug!(?listener, "dns responder stopped");
            }
        }
        let mut failures = Vec::new();
        for listener in wanted {
            if servers.contains_key(listener) {
                continue;
            }
            match self.start(listener).await {
                Ok(server) => {
                    debug!(?listener, "dns responder started");
                    servers.insert(listener.clone(), server);
                }
                Err(error) => failures.push((listener.address, error)),
            }
        }
        failures
    }

    async fn start(&self, listener: &Listener) -> Result<Server<Handler>, Error> {
        let address = SocketAddr::from((listener.address, self.port));
        let bind_error = |protocol: &str, error: std::io::Error| {
            Error::new(
                Code::Internal,
                format!("cannot bind the dns responder on {protocol} {address}: {error}"),
            )
            .with("address", address)
            .with("protocol", protocol)
            .with("deployment", &listener.deployment)
            .with("network", &listener.network)
        };
        let udp = UdpSocket::bind(address)
            .await
            .map_err(|e| bind_error("udp", e))?;
        let tcp = TcpListener::bind(address)
            .await
            .map_err(|e| bind_error("tcp", e))?;
        let mut server = Server::new(Handler {
            deployment: listener.deployment.clone(),
            network: listener.network.clone(),
            shared: self.shared.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        Ok(server)
    }
}

/// The responder of one scope.
struct Handler {
    deployment: String,
    network: String,
    shared: Arc<Shared>,
}

/// A reply before encoding.
struct Reply {
    metadata: Metadata,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn empty(request: &Request, code: ResponseCode) -> Reply {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        metadata.response_code = code;
        Reply {
            metadata,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

impl Handler {
    async fn reply(&self, request: &Request) -> Reply {
        if request.metadata.op_code != OpCode::Query {
            return Reply::empty(request, ResponseCode::NotImp);
        }
        let Ok(info) = request.request_info() else {
            return Reply::empty(request, ResponseCode::FormErr);
        };
        let query = info.query;
        let name = query.name().to_string();
        let zone = self
            .shared
            .zone
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let lookup = zone.resolve(&self.deployment, &self.network, &name);
        debug!(
            deployment = %self.deployment, network = %self.network, %name,
            qtype = %query.query_type(), ?lookup, "dns query"
        );
        match lookup {
            Lookup::Local(mut addresses) => {
                let mut reply = Reply::empty(request, ResponseCode::NoError);
                reply.metadata.authoritative = true;
                if query.query_type() == RecordType::A && query.query_class() == DNSClass::IN {
                    addresses.shuffle(&mut rand::rng());
                    let owner = query.original().name();
                    reply.answers = addresses
                        .into_iter()
                        .map(|address| {
                            Record::from_rdata(owner.clone(), LOCAL_TTL, RData::A(A(address)))
                        })
                        .collect();
                }
                reply
            }
            Lookup::NxDomain => {
                let mut reply = Reply::empty(request, ResponseCode::NXDomain);
                reply.metadata.authoritative = true;
                reply
            }
            Lookup::Forward => {
                let recursion_desired = request.metadata.recursion_desired;
                match self
                    .shared
                    .forwarder
                    .forward(query.original(), recursion_desired)
                    .await
                {
                    Some(answer) => {
                        let mut reply = Reply::empty(request, answer.metadata.response_code);
                        reply.answers = answer.answers;
                        reply.authorities = answer.authorities;
                        reply.additionals = answer.additionals;
                        reply
                    }
                    None => Reply::empty(request, ResponseCode::ServFail),
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let reply = self.reply(request).await;
        // A client that speaks EDNS gets an OPT record back, with its own payload size (which
        // also bounds the UDP answer; a larger one is truncated and the client retries on TCP).
        let edns = request.edns.as_ref().map(|_| {
            let mut edns = Edns::new();
            edns.set_max_payload(request.max_payload());
            edns
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let metadata = reply.metadata;
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                debug!(%error, "cannot send a dns response");
                let mut failed = metadata;
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata: failed,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}
