//! The service-name responder on every bridge gateway and its upstream forwarder (SPEC §7
//! DNS; prior art §6.5 and bug #165).
//!
//! - [`zone`]: pure name rules — which names a (deployment, network) scope answers, refuses
//!   or forwards, and with which healthy replica addresses.
//! - [`forward`]: the ordered upstream chain with per-upstream deadlines (failure is SERVFAIL,
//!   never NXDOMAIN) and where upstreams come from (`resolv.conf` minus loop sources).
//! - [`server`]: the hickory UDP + TCP servers, one per bridge gateway, reconciled from the
//!   wanted listeners, answering from the current zone.
//!
//! This module does not read the replicated state, create bridges or point containers at the
//! responders; the network supervisor hands it zones and listeners.

pub mod forward;
pub mod server;
pub mod zone;

pub use forward::{DEFAULT_UPSTREAM_TIMEOUT, upstreams_from_resolv_conf, validate_forwarders};
pub use server::{Dns, DnsSettings, LOCAL_TTL, Listener};
pub use zone::{Lookup, Zone, ZoneRecord, ZoneService};
