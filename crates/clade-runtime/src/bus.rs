//! The bus: what carries the engine's signals between the places that act on a session. Live
//! events (text deltas, committed lifecycle events) go to whoever streams a session or an
//! agent ([`Bus::hub`]); wake-ups and cancels ([`Signal`]) go to the node that runs the
//! session ([`Bus::signal`]), which takes them from [`Bus::take_signals`].
//!
//! One node: [`LocalBus`], everything in process. A cluster carries the same over NATS
//! JetStream to the holder of the session's lease; the engine does not change.
//!
//! The wake-up the store's writer thread sends as an event commits (`Wake::Event`, which
//! carries the event's row so the actor need not read it back) stays in process, being the
//! turn path's fastest step, when this node runs the session ([`Bus::runs_here`]); otherwise
//! it goes over the bus to the node that does, which reads the event from the store.
//!
//! Rows committed to the outbox wake its dispatchers at once: in process through the engine's
//! outbox signal, and on a cluster's other nodes, one of which delivers the outbox, through
//! [`Bus::outbox_committed`] (without it they find the rows at their next look).

use std::sync::{Arc, Mutex};

use clade_core::{SessionId, TenantId};
use tokio::sync::{Notify, mpsc};

use crate::hub::Hub;

/// A request for the node that runs a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Something changed in the store (a turn was resumed, another node stored work for it):
    /// read it and run what is open.
    Wake(SessionId),
    /// Cancel the running turn, if there is one.
    Cancel(SessionId),
}

impl Signal {
    /// The session it is for.
    pub fn session(self) -> SessionId {
        match self {
            Signal::Wake(session) | Signal::Cancel(session) => session,
        }
    }
}

/// A signal with the tenant whose session it is for: what travels (a cluster's subjects name
/// the tenant) and what the node running the session takes.
pub type Addressed = (TenantId, Signal);

/// Carries live events and signals (see the module's documentation).
pub trait Bus: Send + Sync + 'static {
    /// Live events to the streams that subscribe to a session or an agent.
    fn hub(&self) -> &Hub;

    /// Sends `signal`, for a session of `tenant`, to the node that runs the session.
    fn signal(&self, tenant: TenantId, signal: Signal);

    /// The signals meant for this node; the engine takes them once, when it starts.
    fn take_signals(&self) -> Option<mpsc::UnboundedReceiver<Addressed>>;

    /// Whether this node runs `session` (holds its shard). One node runs every session.
    fn runs_here(&self, _session: SessionId) -> bool {
        true
    }

    /// Rows were committed to the outbox on this node: tells the other nodes, one of which may
    /// deliver it. One node has nothing to tell: its dispatchers share the engine's signal.
    fn outbox_committed(&self) {}

    /// Where the other nodes' outbox commits are told ([`Bus::outbox_committed`]): the signal
    /// this node's dispatchers wait on. The engine hands it over when it starts.
    fn on_outbox_commits(&self, _signal: Arc<Notify>) {}
}

/// The bus of one node: live events through its [`Hub`], signals to its own engine.
pub struct LocalBus {
    hub: Hub,
    tx: mpsc::UnboundedSender<Addressed>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Addressed>>>,
}

impl Default for LocalBus {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self { hub: Hub::default(), tx, rx: Mutex::new(Some(rx)) }
    }
}

impl Bus for LocalBus {
    fn hub(&self) -> &Hub {
        &self.hub
    }

    fn signal(&self, tenant: TenantId, signal: Signal) {
        // Closed only once the engine has gone, when there is no one left to tell.
        let _ = self.tx.send((tenant, signal));
    }

    fn take_signals(&self) -> Option<mpsc::UnboundedReceiver<Addressed>> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}
