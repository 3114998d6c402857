//! Token choice for instruct families: the repetition penalty transformers.js applies (even when
//! greedy), greedy choice, and sampling with temperature, top-k and top-p from a seeded stream,
//! so a given seed always gives the same text ("give me another version" sends another seed).

use super::logits::argmax;

/// Sampling instead of greedy choice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Divides the logits; above 0.
    pub temperature: f32,
    /// The smallest set of tokens whose probabilities add up to at least this; in (0, 1].
    pub top_p: f32,
    /// At most this many candidates (0 = no limit).
    pub top_k: usize,
    pub seed: u64,
}

impl Eq for Sampling {}

/// transformers.js's `RepetitionPenaltyLogitsProcessor`: each id seen in the row once, its
/// logit divided by `penalty` when positive, multiplied when negative.
pub fn apply_repetition_penalty(logits: &mut [f32], seen: &[i64], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut ids: Vec<usize> = seen
        .iter()
        .filter_map(|&id| usize::try_from(id).ok())
        .filter(|&id| id < logits.len())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        let x = &mut logits[id];
        *x = if *x < 0.0 { *x * penalty } else { *x / penalty };
    }
}

/// A seeded stream of uniform numbers (SplitMix64): small, fast, and the same on every platform.
#[derive(Debug, Clone)]
pub struct Stream(u64);

impl Stream {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In [0, 1), 53 bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The next token: the first largest logit, or a draw from `sampling`'s distribution.
pub fn choose(logits: &[f32], sampling: Option<&Sampling>, stream: &mut Stream) -> usize {
    let Some(sampling) = sampling else {
        return argmax(logits);
    };
    let temperature = f64::from(sampling.temperature.max(1e-6));
    let mut candidates: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_finite())
        .map(|(i, &l)| (i, f64::from(l) / temperature))
        .collect();
    if candidates.is_empty() {
        return argmax(logits);
    }
    // Largest first; ties by id so the order does not depend on the sort.
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if sampling.top_k > 0 {
        candidates.truncate(sampling.top_k);
    }
    let max = candidates[0].1;
    let mut total = 0.0;
    for (_, weight) in &mut candidates {
        *weight = (*weight - max).exp();
        total += *weight;
    }
    let mut kept = 0.0;
    let mut keep = 0;
    for (_, weight) in &candidates {
        kept += weight / total;
        keep += 1;
        if kept >= f64::from(sampling.top_p) {
            break;
        }
    }
    candidates.truncate(keep);
    let mass: f64 = candidates.iter().map(|(_, w)| w).sum();
    let mut draw = stream.next_f64() * mass;
    for &(id, weight) in &candidates {
        if draw < weight {
            return id;
        }
        draw -= weight;
    }
    candidates[candidates.len() - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_penalty_counts_each_seen_id_once_in_either_direction() {
        let mut logits = vec![2.0, -2.0, 1.0];
        apply_repetition_penalty(&mut logits, &[0, 1, 1, 7, -3], 2.0);
        assert_eq!(logits, vec![1.0, -4.0, 1.0]);
    }

    #[test]
    fn greedy_takes_the_first_largest_and_sampling_repeats_for_a_seed() {
        let logits = vec![1.0, 3.0, 3.0, 0.5];
        assert_eq!(choose(&logits, None, &mut Stream::new(0)), 1);
        let sampling = Sampling {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            seed: 42,
        };
        let draws = |seed: u64| -> Vec<usize> {
            let mut stream = Stream::new(seed);
            (0..32)
                .map(|_| choose(&logits, Some(&sampling), &mut stream))
                .collect()
        };
        assert_eq!(draws(42), draws(42));
        assert_ne!(draws(42), draws(43));
        assert!(draws(7).iter().all(|&t| t < 4));
        // top_k 1 and a tiny top_p both leave only the first largest.
        let narrow = Sampling {
            top_k: 1,
            ..sampling
        };
        assert_eq!(choose(&logits, Some(&narrow), &mut Stream::new(9)), 1);
        let narrow = Sampling {
            top_p: 0.01,
            ..sampling
        };
        assert_eq!(choose(&logits, Some(&narrow), &mut Stream::new(9)), 1);
    }
}
