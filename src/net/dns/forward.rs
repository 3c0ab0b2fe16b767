//! The upstream chain behind every responder (SPEC §7 DNS, prior-art bug #165): names that are
//! not ours go to the node's upstream resolvers, one after the other, each with its own
//! deadline.
//!
//! Rules: upstreams are tried in order; a timeout, a transport error or any answer other than
//! NOERROR/NXDOMAIN (SERVFAIL, REFUSED, NOTIMP, FORMERR, …) falls through to the next one; the
//! first NOERROR or NXDOMAIN is the answer; a truncated UDP answer is asked again over TCP
//! within the same deadline. When every upstream failed — or none is configured — the caller
//! answers SERVFAIL: an upstream failure must never become NXDOMAIN (a container would take
//! "does not exist" for a fact). The queries are made with hickory's client streams (random
//! source port and ID, answer matched by source, ID and question), not the system resolver.
//!
//! Also here, pure: where upstreams come from (`/etc/resolv.conf` minus the addresses that
//! would loop back into a responder) and the check of configured forwarders. This module must
//! not decide which names are local; that is the zone's job.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::net::tcp::TcpClientStream;
use hickory_server::net::udp::UdpClientStream;
use hickory_server::net::xfer::{DnsHandle, DnsRequestSender, FirstAnswer};
use hickory_server::proto::op::{DnsRequest, DnsRequestOptions, Message, Query, ResponseCode};
use ipnet::Ipv4Net;
use tracing::{debug, warn};

use crate::error::{Code, Error};

/// How long one upstream gets before the chain moves on (prior art: 2 s).
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Docker's embedded resolver inside containers; forwarding to it would come back to us.
pub const DOCKER_EMBEDDED_RESOLVER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

/// The EDNS UDP payload size we advertise upstream (DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;

/// Why an upstream address would loop back into a jaco responder, if it would.
fn loop_reason(ip: IpAddr, exclude: &[Ipv4Net]) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) if v4 == DOCKER_EMBEDDED_RESOLVER => {
            Some("docker's embedded resolver, which forwards to the jaco responders")
        }
        IpAddr::V4(v4) if exclude.iter().any(|net| net.contains(&v4)) => {
            Some("inside the IPAM pool, where the jaco responders listen")
        }
        ip if ip.is_unspecified() => Some("the unspecified address"),
        _ => None,
    }
}

/// The upstreams of a resolv.conf text: every `nameserver` on port 53, in order and without
/// duplicates, minus docker's embedded resolver (127.0.0.11), anything inside `exclude` (the
/// IPAM pool: our own gateways) and addresses that do not parse (IPv6 with a zone index).
pub fn upstreams_from_resolv_conf(text: &str, exclude: &[Ipv4Net]) -> Vec<SocketAddr> {
    let mut upstreams = Vec::new();
    for line in text.lines() {
        let mut words = line
            .split(['#', ';'])
            .next()
            .unwrap_or("")
            .split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        let upstream = SocketAddr::new(ip, 53);
        if loop_reason(ip, exclude).is_none() && !upstreams.contains(&upstream) {
            upstreams.push(upstream);
        }
    }
    upstreams
}

/// Checks explicitly configured forwarders: one that would loop back into a responder
/// (docker's embedded resolver, an address inside the IPAM pool) is a configuration error,
/// not something to drop silently.
pub fn validate_forwarders(forwarders: &[SocketAddr], exclude: &[Ipv4Net]) -> Result<(), Error> {
    for (index, forwarder) in forwarders.iter().enumerate() {
        if let Some(reason) = loop_reason(forwarder.ip(), exclude) {
            return Err(Error::new(
                Code::ValidationFailed,
                format!("dns.forwarders[{index}]: {forwarder} is {reason}; it would loop"),
            )
            .with("field", format!("dns.forwarders[{index}]")));
        }
    }
    Ok(())
}

/// Whether an upstream's response code ends the chain (the answer is final).
fn settles(code: ResponseCode) -> bool {
    matches!(code, ResponseCode::NoError | ResponseCode::NXDomain)
}

/// The ordered upstream chain of one node.
pub(crate) struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    /// Keeps the background tasks of TCP exchanges alive while a query waits on them.
    provider: TokioRuntimeProvider,
    /// Set once every upstream failed, so the warning is logged once per outage.
    dead: AtomicBool,
}

impl Forwarder {
    /// A chain over `upstreams`, `timeout` per upstream.
    pub(crate) fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Forwarder {
        Forwarder {
            upstreams,
            timeout,
            provider: TokioRuntimeProvider::new(),
            dead: AtomicBool::new(false),
        }
    }

    /// The first settling answer (NOERROR or NXDOMAIN) of the chain for `query`, or `None`
    /// when every upstream failed: the caller answers SERVFAIL.
    pub(crate) async fn forward(&self, query: &Query, recursion_desired: bool) -> Option<Message> {
        let mut options = DnsRequestOptions::default();
        options.recursion_desired = recursion_desired;
        options.edns_payload_len = EDNS_PAYLOAD;
        for &upstream in &self.upstreams {
            let request = DnsRequest::from_query(query.clone(), options);
            let outcome = tokio::time::timeout(self.timeout, self.ask(upstream, request)).await;
            match outcome {
                Ok(Ok(answer)) if settles(answer.metadata.response_code) => {
                    if self.dead.swap(false, Ordering::Relaxed) {
                        warn!(%upstream, "an upstream DNS resolver answers again");
                    }
                    return Some(answer);
                }
                Ok(Ok(answer)) => debug!(
                    %upstream, code = %answer.metadata.response_code, "upstream refused; next"
                ),
                Ok(Err(error)) => debug!(%upstream, %error, "upstream failed; next"),
                Err(_) => debug!(%upstream, timeout = ?self.timeout, "upstream timed out; next"),
            }
        }
        if !self.dead.swap(true, Ordering::Relaxed) {
            warn!(
                upstreams = ?self.upstreams,
                "no upstream DNS resolver answers; forwarded names get SERVFAIL"
            );
        }
        None
    }

    /// One upstream's answer: over UDP, again over TCP when the UDP answer is truncated.
    async fn ask(&self, upstream: SocketAddr, request: DnsRequest) -> Result<Message, NetError> {
        let answer = UdpClientStream::builder(upstream, self.provider.clone())
            .with_timeout(Some(self.timeout))
            .build()
            .send_message(request.clone())
            .first_answer()
            .await?
            .into_message();
        if !answer.metadata.truncation {
            return Ok(answer);
        }
        debug!(%upstream, "truncated UDP answer; asking again over TCP");
        let tcp =
            TcpClientStream::exchange(upstream, None, self.timeout, None, self.provider.clone())
                .await?;
        Ok(tcp.send(request).first_answer().await?.into_message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Vec<Ipv4Net> {
        vec!["10.244.0.0/16".parse().expect("pool")]
    }

    #[test]
    fn test_resolv_conf_nameservers_in_order_on_port_53() {
        let text = "\
# generated
search example.com
options ndots:2
nameserver 192.0.2.1
nameserver 198.51.100.7 # trailing comment
  nameserver   2001:db8::53
;nameserver 192.0.2.99
nameserver 192.0.2.1
";
        let got = upstreams_from_resolv_conf(text, &pool());
        let want: Vec<SocketAddr> = ["192.0.2.1:53", "198.51.100.7:53", "[2001:db8::53]:53"]
            .iter()
            .map(|s| s.parse().expect("addr"))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn test_resolv_conf_drops_loop_sources_and_garbage() {
        let text = "\
nameserver 127.0.0.11
nameserver 10.244.3.1
nameserver 10.244.255.254
nameserver 0.0.0.0
nameserver fe80::1%eth0
nameserver not-an-address
nameserver
nameservers 192.0.2.5
nameserver 127.0.0.53
nameserver 10.245.0.1
";
        let got = upstreams_from_resolv_conf(text, &pool());
        let want: Vec<SocketAddr> = ["127.0.0.53:53", "10.245.0.1:53"]
            .iter()
            .map(|s| s.parse().expect("addr"))
            .collect();
        assert_eq!(got, want);
        assert!(upstreams_from_resolv_conf("", &pool()).is_empty());
        // Without a pool only docker's resolver is dropped.
        assert_eq!(
            upstreams_from_resolv_conf("nameserver 10.244.3.1\n", &[]).len(),
            1
        );
    }

    #[test]
    fn test_configured_forwarders_that_loop_are_rejected() {
        let ok: Vec<SocketAddr> = vec![
            "192.0.2.1:53".parse().expect("a"),
            "[::1]:5353".parse().expect("b"),
        ];
        assert!(validate_forwarders(&ok, &pool()).is_ok());
        for bad in ["127.0.0.11:53", "10.244.7.1:53", "0.0.0.0:53"] {
            let forwarders = vec![ok[0], bad.parse().expect("bad")];
            let error = validate_forwarders(&forwarders, &pool()).expect_err(bad);
            assert_eq!(error.code, Code::ValidationFailed, "{bad}");
            assert!(
                error.message.contains("dns.forwarders[1]"),
                "{}",
                error.message
            );
        }
    }

    #[test]
    fn test_only_noerror_and_nxdomain_settle() {
        assert!(settles(ResponseCode::NoError));
        assert!(settles(ResponseCode::NXDomain));
        for code in [
            ResponseCode::ServFail,
            ResponseCode::Refused,
            ResponseCode::NotImp,
            ResponseCode::FormErr,
        ] {
            assert!(!settles(code), "{code}");
        }
    }
}
