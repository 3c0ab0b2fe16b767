//! DNS test support: unique loopback addresses, a real DNS client (hickory's client streams over
//! UDP and TCP) and fake upstream resolvers on loopback whose behaviour a test chooses
//! (answer, error code, silence, truncation over UDP).
//!
//! Any 127.x.y.z address is local on Linux, so every responder and fake upstream gets its own
//! random one and tests run in parallel. A fake upstream stops (and unbinds) on `Drop`. Test
//! support only.

#![allow(dead_code)] // each test binary uses a different part of the support code

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::net::tcp::TcpClientStream;
use hickory_server::net::udp::UdpClientStream;
use hickory_server::net::xfer::{DnsHandle, DnsRequestSender, FirstAnswer};
use hickory_server::proto::op::{
    DnsRequest, DnsRequestOptions, Message, OpCode, Query, ResponseCode,
};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use jaco::net::dns::server::Listener;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

/// How long the test client waits for one answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A random loopback address (127.1-254.0-255.1-254), distinct per call in practice.
pub fn loopback() -> Ipv4Addr {
    Ipv4Addr::new(
        127,
        rand::random_range(1..=254),
        rand::random::<u8>(),
        rand::random_range(1..=254),
    )
}

/// A listener of scope (`deployment`, `network`) on a fresh loopback address.
pub fn listener(deployment: &str, network: &str) -> Listener {
    Listener {
        deployment: deployment.into(),
        network: network.into(),
        address: loopback(),
    }
}

/// The transport a query goes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One UDP datagram each way.
    Udp,
    /// A fresh TCP connection.
    Tcp,
}

/// Asks `server` for `name`/`record_type` and returns the whole answer message.
pub async fn ask(
    server: SocketAddr,
    name: &str,
    record_type: RecordType,
    transport: Transport,
) -> Message {
    let name = Name::from_ascii(name).expect("query name");
    let request = DnsRequest::from_query(
        Query::query(name, record_type),
        DnsRequestOptions::default(),
    );
    let provider = TokioRuntimeProvider::new();
    let answer = match transport {
        Transport::Udp => {
            UdpClientStream::builder(server, provider)
                .with_timeout(Some(CLIENT_TIMEOUT))
                .build()
                .send_message(request)
                .first_answer()
                .await
        }
        Transport::Tcp => {
            let exchange =
                TcpClientStream::exchange(server, None, CLIENT_TIMEOUT, None, provider.clone())
                    .await
                    .expect("tcp connect to the responder");
            exchange.send(request).first_answer().await
        }
    };
    answer
        .unwrap_or_else(|e| panic!("query {server} over {transport:?}: {e}"))
        .into_message()
}

/// The A addresses of an answer, sorted.
pub fn addresses(answer: &Message) -> Vec<Ipv4Addr> {
    let mut addresses: Vec<Ipv4Addr> = answer
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    addresses.sort();
    addresses
}

/// What a fake upstream does with each query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// NOERROR with one A record.
    Answer(Ipv4Addr),
    /// An empty answer with this code (SERVFAIL, REFUSED, NXDOMAIN, …).
    Code(ResponseCode),
    /// Never answers.
    Silent,
    /// Over UDP an empty answer with TC set; over TCP NOERROR with one A record.
    TruncatedOverUdp(Ipv4Addr),
}

/// A fake upstream resolver on a loopback address, UDP and TCP on the same port.
pub struct FakeUpstream {
    /// Where it listens.
    pub address: SocketAddr,
    udp_queries: Arc<AtomicUsize>,
    tcp_queries: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl FakeUpstream {
    /// Starts a fake upstream with `behaviour` on a fresh loopback address.
    pub async fn start(behaviour: Behaviour) -> FakeUpstream {
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind((loopback(), 0))
                .await
                .expect("bind fake upstream udp");
            if let Ok(tcp) = TcpListener::bind(udp.local_addr().expect("udp address")).await {
                break (udp, tcp);
            }
        };
        let address = udp.local_addr().expect("udp address");
        let udp_queries = Arc::new(AtomicUsize::new(0));
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        let udp_task = {
            let queries = udp_queries.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0; 4096];
                while let Ok((len, from)) = udp.recv_from(&mut buffer).await {
                    queries.fetch_add(1, Ordering::SeqCst);
                    if let Some(reply) = respond(&buffer[..len], behaviour, Transport::Udp) {
                        let _ = udp.send_to(&reply, from).await;
                    }
                }
            })
        };
        let tcp_task = {
            let queries = tcp_queries.clone();
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = tcp.accept().await {
                    let queries = queries.clone();
                    tokio::spawn(async move {
                        while let Ok(len) = stream.read_u16().await {
                            let mut buffer = vec![0; usize::from(len)];
                            if stream.read_exact(&mut buffer).await.is_err() {
                                return;
                            }
                            queries.fetch_add(1, Ordering::SeqCst);
                            let Some(reply) = respond(&buffer, behaviour, Transport::Tcp) else {
                                continue;
                            };
                            let len = u16::try_from(reply.len()).expect("short reply");
                            if stream.write_u16(len).await.is_err()
                                || stream.write_all(&reply).await.is_err()
                            {
                                return;
                            }
                        }
                    });
                }
            })
        };
        FakeUpstream {
            address,
            udp_queries,
            tcp_queries,
            tasks: vec![udp_task, tcp_task],
        }
    }

    /// Queries received over UDP so far.
    pub fn udp_queries(&self) -> usize {
        self.udp_queries.load(Ordering::SeqCst)
    }

    /// Queries received over TCP so far.
    pub fn tcp_queries(&self) -> usize {
        self.tcp_queries.load(Ordering::SeqCst)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The fake's reply to one query message, or `None` to stay silent.
fn respond(query: &[u8], behaviour: Behaviour, transport: Transport) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let mut reply = Message::response(request.metadata.id, OpCode::Query);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.queries = request.queries.clone();
    let name = request.queries.first()?.name().clone();
    let a = |address| Record::from_rdata(name.clone(), 60, RData::A(A(address)));
    match behaviour {
        Behaviour::Answer(address) => {
            reply.add_answer(a(address));
        }
        Behaviour::Code(code) => reply.metadata.response_code = code,
        Behaviour::Silent => return None,
        Behaviour::TruncatedOverUdp(address) => match transport {
            Transport::Udp => reply.metadata.truncation = true,
            Transport::Tcp => {
                reply.add_answer(a(address));
            }
        },
    }
    reply.to_vec().ok()
}
