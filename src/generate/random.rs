//! The generator's randomness: a small seeded generator ([`Rng`]) with the
//! distributions the sample data needs, and discrete distributions given by
//! integer weights ([`Weighted`]). Every draw of `segql generate` comes from
//! an [`Rng`] keyed by the seed, a stream and a key, so the output depends
//! on nothing else.

/// splitmix64's finaliser: a bijective mix of 64 bits.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// A small seeded generator (splitmix64): fast, 64 bits of state, and the
/// same sequence on every run and platform for the same seed.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// An independent generator for one key (such as a customer id) of one
    /// stream, so each key's draws do not depend on the others'.
    pub fn for_key(seed: u64, stream: u64, key: u64) -> Self {
        Self::new(mix64(
            mix64(seed ^ stream.wrapping_mul(GOLDEN_GAMMA)) ^ key.wrapping_mul(GOLDEN_GAMMA),
        ))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// Uniform in [0, 1), with 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n) (0 when n is 0); the bias is below 2^-32 for the
    /// small n used here.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// One element of a non-empty slice, uniformly.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal with the given median and log-scale spread.
    pub fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// Exponential with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -(1.0 - self.unit()).ln() * mean
    }

    /// Geometric on 0, 1, 2, ... with the given mean (0 when the mean is
    /// not positive).
    pub fn geometric(&mut self, mean: f64) -> u64 {
        if mean.is_nan() || mean <= 0.0 {
            return 0;
        }
        let q = mean / (1.0 + mean);
        ((1.0 - self.unit()).ln() / q.ln()).floor() as u64
    }
}

/// A discrete distribution over 0..n given by integer weights.
#[derive(Debug, Clone)]
pub(crate) struct Weighted {
    cumulative: Vec<u64>,
}

impl Weighted {
    pub(crate) fn new(weights: impl IntoIterator<Item = u64>) -> Self {
        let mut total = 0;
        let cumulative = weights
            .into_iter()
            .map(|w| {
                total += w;
                total
            })
            .collect();
        Self { cumulative }
    }

    /// An index, chosen with probability proportional to its weight.
    pub(crate) fn pick(&self, rng: &mut Rng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0);
        let draw = rng.below(total);
        self.cumulative.partition_point(|&c| c <= draw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_splitmix64_matches_the_reference_sequence() {
        // The first outputs of splitmix64 seeded with 0, from the
        // reference implementation.
        let mut rng = Rng::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(rng.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn generate_streams_are_reproducible_and_distinct() {
        let draw = |seed, stream, key| Rng::for_key(seed, stream, key).next_u64();
        assert_eq!(draw(42, 2, 7), draw(42, 2, 7));
        assert_ne!(draw(42, 2, 7), draw(42, 2, 8));
        assert_ne!(draw(42, 2, 7), draw(42, 1, 7));
        assert_ne!(draw(42, 2, 7), draw(43, 2, 7));
    }

    fn mean(values: impl Iterator<Item = f64>) -> (f64, f64) {
        let values: Vec<f64> = values.collect();
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    #[test]
    fn generate_uniform_draws_stay_in_range() {
        let mut rng = Rng::new(1);
        for _ in 0..10_000 {
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
            assert!(rng.below(7) < 7);
        }
        assert_eq!(rng.below(0), 0);
        let (m, sd) = mean((0..100_000).map(|_| rng.unit()));
        assert!((m - 0.5).abs() < 0.01, "{m}");
        assert!((sd - (1.0f64 / 12.0).sqrt()).abs() < 0.01, "{sd}");
    }

    #[test]
    fn generate_distributions_have_their_moments() {
        let mut rng = Rng::new(2);
        let (m, sd) = mean((0..100_000).map(|_| rng.normal()));
        assert!(m.abs() < 0.02 && (sd - 1.0).abs() < 0.02, "{m} {sd}");
        let (m, _) = mean((0..100_000).map(|_| rng.exponential(3.0)));
        assert!((m - 3.0).abs() < 0.1, "{m}");
        let (m, _) = mean((0..100_000).map(|_| rng.geometric(4.0) as f64));
        assert!((m - 4.0).abs() < 0.1, "{m}");
        assert_eq!(rng.geometric(0.0), 0);
        assert_eq!(rng.geometric(f64::NAN), 0);
        let mut logs: Vec<f64> = (0..100_001).map(|_| rng.log_normal(10.0, 1.0)).collect();
        logs.sort_by(f64::total_cmp);
        let median = logs[50_000];
        assert!((median - 10.0).abs() < 0.3, "{median}");
        let hits = (0..100_000).filter(|_| rng.chance(0.05)).count();
        assert!((4_500..5_500).contains(&hits), "{hits}");
    }

    #[test]
    fn generate_weighted_picks_follow_the_weights() {
        let mut rng = Rng::new(3);
        let weighted = Weighted::new([1, 0, 3]);
        let mut counts = [0; 3];
        for _ in 0..40_000 {
            counts[weighted.pick(&mut rng)] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!((9_000..11_000).contains(&counts[0]), "{counts:?}");
        assert!((29_000..31_000).contains(&counts[2]), "{counts:?}");
    }
}
