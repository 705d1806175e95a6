//! Demand forecasting for a pool: how many sandboxes should be ready now so that the arrivals
//! expected while a refill takes place find one.

/// Arrival rates over two horizons, as exponentially decaying counts: each arrival adds `1/τ`,
/// and the estimate decays as `e^(-Δt/τ)`. The short one follows a burst within seconds; the
/// long one remembers the usual load. Time is in seconds from any fixed origin, so a recorded
/// trace can be replayed deterministically.
#[derive(Debug, Clone)]
pub struct Forecaster {
    short: Ewma,
    long: Ewma,
}

#[derive(Debug, Clone)]
struct Ewma {
    tau: f64,
    rate: f64,
    at: f64,
}

impl Ewma {
    fn decayed(&self, now: f64) -> f64 {
        let dt = (now - self.at).max(0.0);
        self.rate * (-dt / self.tau).exp()
    }

    fn observe(&mut self, now: f64) {
        self.rate = self.decayed(now) + 1.0 / self.tau;
        self.at = self.at.max(now);
    }
}

/// Seconds the short horizon remembers.
pub const SHORT_TAU_S: f64 = 2.0;
/// Seconds the long horizon remembers.
pub const LONG_TAU_S: f64 = 30.0;
/// Expected arrivals per refill below which a pool is idle.
pub const IDLE_BELOW: f64 = 0.1;
/// Ready sandboxes beyond the bare forecast, as a factor, for the noise in arrivals.
pub const HEADROOM: f64 = 1.5;

impl Default for Forecaster {
    fn default() -> Self {
        Forecaster::new(SHORT_TAU_S, LONG_TAU_S)
    }
}

impl Forecaster {
    pub fn new(short_tau_s: f64, long_tau_s: f64) -> Self {
        let ewma = |tau| Ewma {
            tau,
            rate: 0.0,
            at: 0.0,
        };
        Forecaster {
            short: ewma(short_tau_s),
            long: ewma(long_tau_s),
        }
    }

    /// Records one arrival at `now`.
    pub fn observe(&mut self, now: f64) {
        self.short.observe(now);
        self.long.observe(now);
    }

    /// Expected arrivals per second in the near future. A short rate above the long one is a
    /// rising trend and is extrapolated by their difference; a falling one is followed at once.
    pub fn rate(&self, now: f64) -> f64 {
        let short = self.short.decayed(now);
        let long = self.long.decayed(now);
        short + (short - long).max(0.0)
    }

    /// Ready sandboxes wanted: the arrivals expected during one refill, with headroom, within
    /// `[min, max]`.
    pub fn target(&self, now: f64, refill_s: f64, min: usize, max: usize) -> usize {
        let expected = self.rate(now) * refill_s * HEADROOM;
        // A decaying rate never reaches zero; below a tenth of an arrival per refill nothing
        // is worth keeping ready beyond the minimum.
        let want = if !expected.is_finite() {
            max
        } else if expected < IDLE_BELOW {
            0
        } else {
            expected.ceil() as usize
        };
        want.clamp(min, max.max(min))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed arrival trace (made up, not recorded from traffic): 60 s at 1 req/s, a 20 s
    /// burst at 40 req/s, then 60 s at 1 req/s.
    fn trace() -> Vec<f64> {
        let mut t = Vec::new();
        t.extend((0..60).map(f64::from));
        t.extend((0..800).map(|i| 60.0 + f64::from(i) / 40.0));
        t.extend((0..60).map(|i| 80.0 + f64::from(i)));
        t
    }

    /// Replays the trace and samples the target at the given times (refill 0.3 s, pool 1..=32).
    fn replay(samples: &[f64]) -> Vec<usize> {
        let mut f = Forecaster::default();
        let arrivals = trace();
        let mut next = 0;
        samples
            .iter()
            .map(|&at| {
                while next < arrivals.len() && arrivals[next] <= at {
                    f.observe(arrivals[next]);
                    next += 1;
                }
                f.target(at, 0.3, 1, 32)
            })
            .collect()
    }

    #[test]
    fn target_rises_before_the_bursts_second_half_and_falls_after() {
        // Before the burst, a quarter into it, at its middle, 10 s and 40 s after it.
        let t = replay(&[59.5, 65.0, 70.0, 90.0, 120.0]);
        let (before, early, middle, after, later) = (t[0], t[1], t[2], t[3], t[4]);
        assert!(before <= 2, "quiet load needs little: {t:?}");
        // 40 req/s × 0.3 s refill × 1.5 headroom = 18 sandboxes for the steady burst.
        assert!(
            early >= 12,
            "the target has risen well before the second half: {t:?}"
        );
        assert!(middle >= 18, "{t:?}");
        assert!(
            after < middle / 2,
            "and falls once the burst is over: {t:?}"
        );
        assert!(later <= 2, "back to the quiet level: {t:?}");
        // Long after the last arrival, nothing is kept beyond the minimum.
        assert_eq!(replay(&[400.0])[0], 1);
        let mut f = Forecaster::default();
        f.observe(0.0);
        assert_eq!(f.target(0.0, 0.3, 0, 8), 1);
        assert_eq!(f.target(60.0, 0.3, 0, 8), 0);
    }

    #[test]
    fn no_demand_means_the_minimum_and_max_bounds_the_target() {
        let f = Forecaster::default();
        assert_eq!(f.target(100.0, 0.3, 2, 8), 2);
        let mut f = Forecaster::default();
        for i in 0..10_000 {
            f.observe(f64::from(i) / 1000.0);
        }
        assert_eq!(f.target(10.0, 0.3, 0, 8), 8);
    }
}
