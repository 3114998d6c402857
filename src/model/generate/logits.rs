//! The logits processors of transformers.js that Florence-2's generation config turns on
//! (no-repeat n-gram, forced BOS, forced EOS) and the small reductions token choice needs.

/// Rules that shape every row's logits before a token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct LogitsRules {
    pub no_repeat_ngram_size: usize,
    pub forced_bos_token_id: Option<i64>,
    pub forced_eos_token_id: Option<i64>,
    pub eos_token_ids: Vec<i64>,
    pub length_penalty: f32,
    pub early_stopping: bool,
}

/// The logits processors of transformers.js, in its order, on one row. `sequence` holds every
/// decoder token so far, start token included.
pub fn apply_rules(scores: &mut [f32], sequence: &[i64], max_length: usize, rules: &LogitsRules) {
    let n = rules.no_repeat_ngram_size;
    if n > 0 && sequence.len() >= n {
        let prefix = &sequence[sequence.len() + 1 - n..];
        for window in sequence.windows(n) {
            if &window[..n - 1] == prefix
                && let Some(slot) = scores.get_mut(window[n - 1] as usize)
            {
                *slot = f32::NEG_INFINITY;
            }
        }
    }
    if let Some(bos) = rules.forced_bos_token_id
        && sequence.len() == 1
    {
        force(scores, bos);
    }
    if let Some(eos) = rules.forced_eos_token_id
        && sequence.len() + 1 == max_length
    {
        force(scores, eos);
    }
}

fn force(scores: &mut [f32], token: i64) {
    scores.fill(f32::NEG_INFINITY);
    if let Some(slot) = scores.get_mut(token as usize) {
        *slot = 0.0;
    }
}

/// Index of the largest value; the first one on ties, as transformers.js picks.
pub fn argmax(scores: &[f32]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best
}

pub(crate) fn log_softmax(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = scores.iter().map(|&s| (s - max).exp()).sum();
    let log_sum = max + sum.ln();
    for s in scores.iter_mut() {
        *s -= log_sum;
    }
}

/// Indices of the k largest values, largest first (ties: lower index first).
pub(crate) fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let mut best: Vec<usize> = Vec::with_capacity(k + 1);
    for (i, &s) in scores.iter().enumerate() {
        if best.len() == k && s <= scores[best[k - 1]] {
            continue;
        }
        let at = best.partition_point(|&j| scores[j] >= s);
        best.insert(at, i);
        best.truncate(k);
    }
    best
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn rules() -> LogitsRules {
        LogitsRules {
            no_repeat_ngram_size: 3,
            forced_bos_token_id: Some(0),
            forced_eos_token_id: Some(2),
            eos_token_ids: vec![2],
            length_penalty: 1.0,
            early_stopping: true,
        }
    }

    pub(crate) fn one_hot(vocab: usize, hot: usize, value: f32) -> Vec<f32> {
        let mut v = vec![0.0; vocab];
        v[hot] = value;
        v
    }

    #[test]
    fn no_repeat_ngram_bans_the_token_that_repeats_a_trigram() {
        let mut scores = vec![0.0; 10];
        // Sequence 2 0 5 6 5: the bigram (6 5)? no; last two tokens (6,5) never seen before.
        apply_rules(&mut scores, &[2, 0, 5, 6, 5], 100, &rules());
        assert!(scores.iter().all(|s| s.is_finite()));
        // Sequence 2 0 5 6 5 6: prefix (5,6) was followed by 5 → 5 banned.
        let mut scores = vec![0.0; 10];
        apply_rules(&mut scores, &[2, 0, 5, 6, 5, 6], 100, &rules());
        assert_eq!(scores[5], f32::NEG_INFINITY);
        assert_eq!(scores.iter().filter(|s| !s.is_finite()).count(), 1);
    }

    #[test]
    fn forced_bos_then_forced_eos_at_the_limit() {
        let mut scores = one_hot(10, 7, 5.0);
        apply_rules(&mut scores, &[2], 5, &rules());
        assert_eq!(argmax(&scores), 0);
        let mut scores = one_hot(10, 7, 5.0);
        apply_rules(&mut scores, &[2, 0, 7, 8], 5, &rules());
        assert_eq!(argmax(&scores), 2);
    }

    #[test]
    fn top_k_orders_and_breaks_ties_by_index() {
        assert_eq!(top_k(&[1.0, 3.0, 3.0, 2.0, 0.0], 3), vec![1, 2, 3]);
        assert_eq!(top_k(&[1.0], 4), vec![0]);
    }
}
