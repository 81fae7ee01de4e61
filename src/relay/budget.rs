//! One budget, shared by every connection of a listener, for the bytes of
//! requests held while a rewriter needs them whole.
//!
//! The message assembler already caps what one connection may hold, but
//! that cap times `listen.max_connections` is far more memory than a host
//! has: clients that each send a large request and never its last packet
//! could together exhaust it. Holding a packet therefore first takes room
//! from this budget; the room goes back when the request is forwarded,
//! answered or dropped. A connection that finds no room waits a little,
//! since others release theirs as their requests complete, and then ends
//! with a logged reason. Requests that pass through untouched never hold
//! anything and never wait.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::relay::error::RelayError;

/// How long a connection waits for room before it gives up.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);

/// Bytes all connections may hold at once, in whole packets.
#[derive(Debug, Clone)]
pub struct RequestBudget {
    room: Arc<Semaphore>,
    total: usize,
    wait: Duration,
}

/// Room taken from a [`RequestBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Room(OwnedSemaphorePermit);

impl Room {
    /// Adds `other` to this room, so both go back together.
    pub fn merge(&mut self, other: Room) {
        self.0.merge(other.0);
    }
}

impl RequestBudget {
    /// A budget of `total` bytes (capped at what a semaphore can count).
    pub fn new(total: usize, wait: Duration) -> Self {
        let total = total.min(Semaphore::MAX_PERMITS);
        RequestBudget {
            room: Arc::new(Semaphore::new(total)),
            total,
            wait,
        }
    }

    /// The budget's size in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes not held by any connection right now.
    pub fn available(&self) -> usize {
        self.room.available_permits()
    }

    /// Takes room for `bytes`, waiting up to the budget's wait for other
    /// connections to release theirs.
    pub async fn reserve(&self, bytes: usize) -> Result<Room, RelayError> {
        let exhausted = || RelayError::RequestBudget { total: self.total };
        let count = u32::try_from(bytes).map_err(|_| exhausted())?;
        if bytes > self.total {
            return Err(exhausted());
        }
        if let Ok(permit) = Arc::clone(&self.room).try_acquire_many_owned(count) {
            return Ok(Room(permit));
        }
        match tokio::time::timeout(self.wait, Arc::clone(&self.room).acquire_many_owned(count))
            .await
        {
            Ok(Ok(permit)) => Ok(Room(permit)),
            // Timed out, or the semaphore was closed (it never is).
            _ => Err(exhausted()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn room_comes_back_when_dropped_and_merged_rooms_go_back_together() {
        let budget = RequestBudget::new(100, Duration::from_millis(10));
        let mut first = budget.reserve(40).await.unwrap();
        let second = budget.reserve(60).await.unwrap();
        assert_eq!(budget.available(), 0);
        first.merge(second);
        drop(first);
        assert_eq!(budget.available(), 100);
    }

    #[tokio::test]
    async fn a_full_budget_ends_the_request_after_the_wait() {
        let budget = RequestBudget::new(100, Duration::from_millis(20));
        let held = budget.reserve(90).await.unwrap();
        let err = budget.reserve(20).await.unwrap_err();
        assert!(matches!(err, RelayError::RequestBudget { total: 100 }));
        assert!(budget.reserve(200).await.is_err());
        drop(held);
        assert!(budget.reserve(20).await.is_ok());
    }

    #[tokio::test]
    async fn a_waiting_request_gets_room_another_connection_releases() {
        let budget = RequestBudget::new(100, Duration::from_secs(5));
        let held = budget.reserve(100).await.unwrap();
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reserve(50).await.map(drop) })
        };
        tokio::task::yield_now().await;
        drop(held);
        waiter.await.unwrap().unwrap();
    }
}
