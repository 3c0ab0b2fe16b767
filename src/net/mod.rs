//! Networking on every node (SPEC §7): what turns the subnets, replicas and routes of the
//! replicated state into kernel and socket objects on this machine.
//!
//! - [`nft`]: the `inet jaco` isolation table — pure rendering, atomic apply, self-test,
//!   drift detection, and the exemptions Docker's own iptables rules need.
//! - [`mesh`]: the WireGuard mesh between nodes — key, peers from state, kernel or in-process
//!   userspace implementation.
//! - [`dns`]: the service-name responder on every bridge gateway and its upstream forwarder.
//! - [`l4`]: the cluster-wide TCP routes every node listens on.
//! - [`view`]: what the replicated state asks of this node's networking, as plain values.
//! - [`supervisor`]: the loop on every node that keeps the four in line with the view and
//!   reports the node's isolation condition.
//!
//! The submodules take plain values (scopes, peers, zones, routes); reading the replicated
//! state ([`view`]) and deciding what to hand them is the network supervisor's job, and only
//! it writes to the replicated state (the node's isolation condition, repair audits).

mod command;
pub mod dns;
pub mod l4;
pub mod mesh;
pub mod nft;
pub mod supervisor;
pub mod view;
