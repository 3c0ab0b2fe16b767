//! Test fixture shared by the raft integration tests: [`CountingCore`], a stand-in for the real
//! replicated state machine that records every command it is given.
//!
//! It is a fixture, not an implementation of jaco's state: it exists so the raft layer can be
//! tested without depending on `state`. Nothing outside `tests/` may use it.

#![allow(dead_code)]

pub mod cluster;

use std::sync::{Arc, RwLock};

use jaco::raft::{SharedCore, StateMachineCore};
use serde::{Deserialize, Serialize};

/// Appends each applied command, with its index, to a list. The result of a command is an
/// encoded `CommandResult` acknowledging it at its raft index, as the real state machine
/// answers, so a test can check which entry answered.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountingCore {
    /// (raft index, command bytes) in apply order.
    pub applied: Vec<(u64, Vec<u8>)>,
}

impl StateMachineCore for CountingCore {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        self.applied.push((index, command.to_vec()));
        let result = jaco::proto::v1::CommandResult {
            index,
            outcome: Some(jaco::proto::v1::command_result::Outcome::Ack(
                jaco::proto::v1::CommandAck {},
            )),
        };
        prost::Message::encode_to_vec(&result)
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a list of numbers and bytes encodes")
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        *self = serde_json::from_slice(snapshot).map_err(|error| error.to_string())?;
        Ok(())
    }

    fn last_applied(&self) -> u64 {
        self.applied.last().map_or(0, |(index, _)| *index)
    }
}

/// A fresh, empty core shared the way `RaftNode::start` takes it.
pub fn shared_core() -> SharedCore<CountingCore> {
    Arc::new(RwLock::new(CountingCore::default()))
}

/// The commands a core has applied, without their indexes.
pub fn commands(core: &SharedCore<CountingCore>) -> Vec<Vec<u8>> {
    core.read()
        .expect("core lock")
        .applied
        .iter()
        .map(|(_, command)| command.clone())
        .collect()
}
