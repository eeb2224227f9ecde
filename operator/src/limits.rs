//! Write pacing: a token bucket for template patches and a cap on rollouts in progress.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket; a rate of 0 means no limit.
#[derive(Debug)]
pub struct RateLimit {
    per_second: f64,
    burst: f64,
    state: Mutex<(f64, tokio::time::Instant)>,
}

impl RateLimit {
    pub fn new(per_second: f64, burst: u32) -> RateLimit {
        let burst = f64::from(burst.max(1));
        RateLimit {
            per_second,
            burst,
            state: Mutex::new((burst, tokio::time::Instant::now())),
        }
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        if self.per_second <= 0.0 {
            return;
        }
        loop {
            let wait = {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = tokio::time::Instant::now();
                let tokens =
                    (s.0 + now.duration_since(s.1).as_secs_f64() * self.per_second).min(self.burst);
                *s = (tokens, now);
                if tokens >= 1.0 {
                    s.0 -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - tokens) / self.per_second)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Rollouts started by the operator and not yet complete; a cap of 0 means no cap.
#[derive(Debug)]
pub struct Rollouts {
    cap: usize,
    timeout: Duration,
    /// Workload → (generation the patch produced, when).
    running: Mutex<HashMap<String, (i64, Instant)>>,
}

impl Rollouts {
    pub fn new(cap: usize, timeout: Duration) -> Rollouts {
        Rollouts {
            cap,
            timeout,
            running: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, Instant)>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether another rollout may start now (stale entries expire first).
    pub fn has_room(&self, key: &str) -> bool {
        if self.cap == 0 {
            return true;
        }
        let mut r = self.lock();
        let timeout = self.timeout;
        r.retain(|_, (_, at)| at.elapsed() < timeout);
        r.contains_key(key) || r.len() < self.cap
    }

    pub fn started(&self, key: String, generation: i64) {
        if self.cap > 0 {
            self.lock().insert(key, (generation, Instant::now()));
        }
    }

    /// The generation a running rollout waits for.
    pub fn waiting_for(&self, key: &str) -> Option<i64> {
        self.lock().get(key).map(|(g, _)| *g)
    }

    pub fn finished(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_holds_its_rate_after_the_burst() {
        let limit = RateLimit::new(50.0, 100);
        let start = tokio::time::Instant::now();
        for _ in 0..200 {
            limit.acquire().await;
        }
        // 100 at once, 100 more at 50/s: about two seconds.
        let took = start.elapsed().as_secs_f64();
        assert!((1.9..2.2).contains(&took), "{took}");
    }

    #[test]
    fn rollout_cap() {
        let r = Rollouts::new(2, Duration::from_secs(60));
        r.started("a".into(), 2);
        r.started("b".into(), 3);
        assert!(!r.has_room("c"));
        assert!(
            r.has_room("a"),
            "a workload already rolling may be patched again"
        );
        r.finished("a");
        assert!(r.has_room("c"));
        assert_eq!(r.waiting_for("b"), Some(3));
        assert!(Rollouts::new(0, Duration::ZERO).has_room("x"));
    }
}
