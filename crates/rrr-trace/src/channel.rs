//! The engine's end of the bounded channel to the writer thread: full batches go over, emptied
//! ones come back, so the steady state allocates nothing.

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::record::Batch;

/// What the engine does when the writer falls behind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backpressure {
    /// Wait for the writer (the default: a replay loses nothing by waiting).
    #[default]
    Block,
    /// Drop the batch, count it, and report the loss in the trace's stats and on stderr.
    Drop,
}

/// The engine's end of the channel.
pub(crate) struct BatchSender {
    tx: Option<Sender<Batch>>,
    recycled: Receiver<Batch>,
    policy: Backpressure,
    batch_len: usize,
    dropped: u64,
}

impl BatchSender {
    /// The engine's end of `tx`, taking emptied batches back from `recycled`.
    pub fn new(
        tx: Sender<Batch>,
        recycled: Receiver<Batch>,
        policy: Backpressure,
        batch_len: usize,
    ) -> Self {
        BatchSender {
            tx: Some(tx),
            recycled,
            policy,
            batch_len,
            dropped: 0,
        }
    }

    /// Records per batch.
    pub fn batch_len(&self) -> usize {
        self.batch_len
    }

    /// An empty batch: a recycled one if there is one.
    pub fn empty_batch(&self) -> Batch {
        match self.recycled.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(_) => Batch::with_capacity(self.batch_len),
        }
    }

    /// Sends `batch` and leaves an empty one in its place.
    pub fn send(&mut self, batch: &mut Batch) {
        let mut full = std::mem::replace(batch, self.empty_batch());
        full.dropped_before = self.dropped;
        let Some(tx) = &self.tx else { return };
        let n = full.records.len() as u64;
        let result = match self.policy {
            Backpressure::Block => tx.send(full).map_err(|e| e.into_inner()),
            Backpressure::Drop => tx.try_send(full).map_err(|e| match e {
                TrySendError::Full(b) | TrySendError::Disconnected(b) => b,
            }),
        };
        match result {
            Ok(()) => self.dropped = 0,
            Err(mut back) => {
                self.dropped += n;
                back.clear();
                *batch = back;
            }
        }
    }

    /// Closes the channel: the writer finishes once it has what was sent.
    pub fn close(&mut self) {
        self.tx = None;
    }
}
