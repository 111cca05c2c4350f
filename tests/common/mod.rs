//! Helpers shared by the integration tests.

pub mod collector;
pub mod sandbox;
pub mod spec_body;
pub mod tls;

use std::time::{Duration, Instant};

/// Runs `done` every `every` until it holds; false once `limit` has passed.
#[allow(dead_code)] // not every test binary polls
pub fn poll_until(limit: Duration, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}
