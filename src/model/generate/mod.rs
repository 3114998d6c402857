//! Token choice for a batch of requests: greedy and beam search over logits shaped by
//! `logits::apply_rules`. Pure bookkeeping over logits, no ONNX here:
//! each step says which cache rows survive (their parents) and which token each appends, so
//! finished requests leave the running batch and beams reorder it.

pub mod logits;
pub mod sample;

pub use logits::LogitsRules;
use logits::{apply_rules, argmax, log_softmax, top_k};

/// What one request asks of the search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSpec {
    /// 1 = greedy.
    pub num_beams: usize,
    /// Decoder length limit including the start token (= 1 + max_new_tokens).
    pub max_length: usize,
}

/// Why a request's generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model emitted end-of-sequence.
    Eos,
    /// `max_new_tokens` was reached (EOS was forced).
    Length,
    /// The caller gave up; no result is wanted.
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Eos => "eos",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// A request's result: the chosen sequence, start token included.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupResult {
    pub tokens: Vec<i64>,
    pub finish_reason: FinishReason,
}

/// The rows of the next decoder call: `parents[i]` is the row of the current call whose cache
/// row i continues, `tokens[i]` the token it feeds. Identity parents need no cache reordering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepPlan {
    pub parents: Vec<usize>,
    pub tokens: Vec<i64>,
}

impl StepPlan {
    pub fn is_identity(&self, current_rows: usize) -> bool {
        self.parents.len() == current_rows && self.parents.iter().enumerate().all(|(i, &p)| i == p)
    }
}

#[derive(Debug, Clone)]
struct Row {
    group: usize,
    tokens: Vec<i64>,
    /// Sum of log-probabilities (beam search only).
    score: f32,
}

#[derive(Debug, Clone)]
struct Group {
    spec: GroupSpec,
    /// Finished hypotheses with their length-normalised score (best first when read).
    finished: Vec<(Vec<i64>, f32, FinishReason)>,
    done: bool,
    cancelled: bool,
}

/// The search state of one batch.
#[derive(Debug, Clone)]
pub struct Search {
    rules: LogitsRules,
    groups: Vec<Group>,
    rows: Vec<Row>,
}

impl Search {
    /// Every request starts as one row holding the decoder start token; beams fan out after the
    /// first step, so the encoder state is not duplicated before it must be.
    pub fn new(rules: LogitsRules, specs: &[GroupSpec], decoder_start_token_id: i64) -> Self {
        let groups = specs
            .iter()
            .map(|&spec| Group {
                spec,
                finished: Vec::new(),
                done: false,
                cancelled: false,
            })
            .collect();
        let rows = (0..specs.len())
            .map(|group| Row {
                group,
                tokens: vec![decoder_start_token_id],
                score: 0.0,
            })
            .collect();
        Self {
            rules,
            groups,
            rows,
        }
    }

    /// Tokens each current row feeds to the next decoder call.
    pub fn last_tokens(&self) -> Vec<i64> {
        self.rows
            .iter()
            .map(|r| *r.tokens.last().expect("rows are never empty"))
            .collect()
    }

    /// The request each current row belongs to.
    pub fn row_groups(&self) -> Vec<usize> {
        self.rows.iter().map(|r| r.group).collect()
    }

    pub fn live_rows(&self) -> usize {
        self.rows.len()
    }

    pub fn is_done(&self) -> bool {
        self.rows.is_empty()
    }

    /// Marks a request as abandoned; its rows leave at the next step.
    pub fn cancel(&mut self, group: usize) {
        if let Some(g) = self.groups.get_mut(group) {
            g.cancelled = true;
            g.done = true;
        }
    }

    /// Consumes one decoder call's last-position logits (`rows × vocab`, row-major) and plans
    /// the next call. Rows of finished or cancelled requests are left out.
    pub fn step(&mut self, logits: &[f32], vocab: usize) -> StepPlan {
        assert_eq!(
            logits.len(),
            self.rows.len() * vocab,
            "logits must be rows × vocab"
        );
        let mut next_rows = Vec::with_capacity(self.rows.len());
        let mut parents = Vec::with_capacity(self.rows.len());
        let mut row = 0;
        while row < self.rows.len() {
            let group = self.rows[row].group;
            let mut end = row;
            while end < self.rows.len() && self.rows[end].group == group {
                end += 1;
            }
            if !self.groups[group].done {
                if self.groups[group].spec.num_beams <= 1 {
                    self.greedy_step(
                        row,
                        &logits[row * vocab..(row + 1) * vocab],
                        &mut next_rows,
                        &mut parents,
                    );
                } else {
                    self.beam_step(group, row..end, logits, vocab, &mut next_rows, &mut parents);
                }
            }
            row = end;
        }
        self.rows = next_rows;
        StepPlan {
            parents,
            tokens: self.last_tokens(),
        }
    }

    fn greedy_step(
        &mut self,
        row: usize,
        logits: &[f32],
        next_rows: &mut Vec<Row>,
        parents: &mut Vec<usize>,
    ) {
        let current = &self.rows[row];
        let spec = self.groups[current.group].spec;
        let mut scores = logits.to_vec();
        apply_rules(&mut scores, &current.tokens, spec.max_length, &self.rules);
        let token = argmax(&scores) as i64;
        let mut tokens = current.tokens.clone();
        tokens.push(token);
        let group = current.group;
        if self.rules.eos_token_ids.contains(&token) || tokens.len() >= spec.max_length {
            let reason =
                if self.rules.eos_token_ids.contains(&token) && tokens.len() < spec.max_length {
                    FinishReason::Eos
                } else {
                    finish_reason_at_limit(&tokens, &self.rules)
                };
            let g = &mut self.groups[group];
            g.finished.push((tokens, 0.0, reason));
            g.done = true;
        } else {
            next_rows.push(Row {
                group,
                tokens,
                score: 0.0,
            });
            parents.push(row);
        }
    }

    fn beam_step(
        &mut self,
        group: usize,
        rows: std::ops::Range<usize>,
        logits: &[f32],
        vocab: usize,
        next_rows: &mut Vec<Row>,
        parents: &mut Vec<usize>,
    ) {
        let spec = self.groups[group].spec;
        let beams = spec.num_beams;
        // (total score, parent row, token) of the best 2×beams continuations over all beams.
        let mut candidates: Vec<(f32, usize, i64)> = Vec::with_capacity(rows.len() * 2 * beams);
        for row in rows.clone() {
            let mut scores = logits[row * vocab..(row + 1) * vocab].to_vec();
            log_softmax(&mut scores);
            apply_rules(
                &mut scores,
                &self.rows[row].tokens,
                spec.max_length,
                &self.rules,
            );
            for token in top_k(&scores, 2 * beams) {
                let score = scores[token];
                if score.is_finite() {
                    candidates.push((self.rows[row].score + score, row, token as i64));
                }
            }
        }
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        candidates.truncate(2 * beams);

        let mut kept = 0;
        for (rank, &(score, parent, token)) in candidates.iter().enumerate() {
            let mut tokens = self.rows[parent].tokens.clone();
            tokens.push(token);
            if self.rules.eos_token_ids.contains(&token) {
                // As in transformers: an EOS outside the top `beams` candidates is not a hypothesis.
                if rank < beams {
                    let normalised =
                        score / length_norm(tokens.len() - 1, self.rules.length_penalty);
                    let reason = if tokens.len() < spec.max_length {
                        FinishReason::Eos
                    } else {
                        finish_reason_at_limit(&tokens, &self.rules)
                    };
                    self.groups[group]
                        .finished
                        .push((tokens, normalised, reason));
                }
            } else if kept < beams {
                next_rows.push(Row {
                    group,
                    tokens,
                    score,
                });
                parents.push(parent);
                kept += 1;
            }
        }

        let new_rows = next_rows.len() - kept..next_rows.len();
        let g = &mut self.groups[group];
        let best_running = next_rows[new_rows.clone()]
            .iter()
            .map(|r| r.score)
            .fold(f32::NEG_INFINITY, f32::max);
        let running_len = next_rows
            .get(new_rows.start)
            .map_or(0, |r| r.tokens.len() - 1);
        let enough = g.finished.len() >= beams;
        let cannot_improve = enough && {
            let worst_kept = worst_of_best(&g.finished, beams);
            best_running / length_norm(running_len, self.rules.length_penalty) <= worst_kept
        };
        let at_limit = running_len + 1 >= spec.max_length;
        if kept == 0 || at_limit || (enough && (self.rules.early_stopping || cannot_improve)) {
            // Nothing more can enter the result: drop this request's rows.
            if g.finished.is_empty() {
                for r in &next_rows[new_rows.clone()] {
                    let normalised =
                        r.score / length_norm(r.tokens.len() - 1, self.rules.length_penalty);
                    g.finished
                        .push((r.tokens.clone(), normalised, FinishReason::Length));
                }
            }
            g.done = true;
            next_rows.truncate(new_rows.start);
            parents.truncate(new_rows.start);
        }
    }

    /// The best sequence of every request, in request order.
    pub fn results(&self) -> Vec<GroupResult> {
        self.groups
            .iter()
            .map(|g| {
                if g.cancelled {
                    return GroupResult {
                        tokens: Vec::new(),
                        finish_reason: FinishReason::Cancelled,
                    };
                }
                let best = g
                    .finished
                    .iter()
                    .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.len().cmp(&a.0.len())));
                match best {
                    Some((tokens, _, reason)) => GroupResult {
                        tokens: tokens.clone(),
                        finish_reason: *reason,
                    },
                    None => GroupResult {
                        tokens: Vec::new(),
                        finish_reason: FinishReason::Length,
                    },
                }
            })
            .collect()
    }
}

/// A sequence that ends at the length limit ended by the limit, even when the forced token is EOS.
fn finish_reason_at_limit(tokens: &[i64], rules: &LogitsRules) -> FinishReason {
    match (rules.forced_eos_token_id, tokens.last()) {
        (Some(forced), Some(&last)) if forced == last => FinishReason::Length,
        (_, Some(last)) if rules.eos_token_ids.contains(last) => FinishReason::Eos,
        _ => FinishReason::Length,
    }
}

fn length_norm(generated: usize, penalty: f32) -> f32 {
    (generated.max(1) as f32).powf(penalty)
}

fn worst_of_best(finished: &[(Vec<i64>, f32, FinishReason)], beams: usize) -> f32 {
    let mut scores: Vec<f32> = finished.iter().map(|f| f.1).collect();
    scores.sort_by(|a, b| b.total_cmp(a));
    scores.get(beams - 1).copied().unwrap_or(f32::NEG_INFINITY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::generate::logits::tests::{one_hot, rules};

    #[test]
    fn greedy_rows_leave_when_finished() {
        let specs = [
            GroupSpec {
                num_beams: 1,
                max_length: 10,
            },
            GroupSpec {
                num_beams: 1,
                max_length: 4,
            },
        ];
        let mut search = Search::new(rules(), &specs, 2);
        let vocab = 10;
        // Step 0: forced BOS for both.
        let plan = search.step(
            &[one_hot(vocab, 5, 1.0), one_hot(vocab, 5, 1.0)].concat(),
            vocab,
        );
        assert_eq!(
            plan,
            StepPlan {
                parents: vec![0, 1],
                tokens: vec![0, 0]
            }
        );
        // Step 1: row 0 says EOS and leaves; row 1 continues.
        let plan = search.step(
            &[one_hot(vocab, 2, 9.0), one_hot(vocab, 7, 9.0)].concat(),
            vocab,
        );
        assert_eq!(
            plan,
            StepPlan {
                parents: vec![1],
                tokens: vec![7]
            }
        );
        // Step 2: row 1 hits its limit: EOS forced.
        let plan = search.step(&one_hot(vocab, 7, 9.0), vocab);
        assert!(plan.parents.is_empty() && search.is_done());
        let results = search.results();
        assert_eq!(
            results[0],
            GroupResult {
                tokens: vec![2, 0, 2],
                finish_reason: FinishReason::Eos
            }
        );
        assert_eq!(
            results[1],
            GroupResult {
                tokens: vec![2, 0, 7, 2],
                finish_reason: FinishReason::Length
            }
        );
    }

    #[test]
    fn beam_search_prefers_the_better_total_score() {
        // Greedy would take token 5 (0.55) then get a bad continuation; beam search takes 6.
        let specs = [GroupSpec {
            num_beams: 2,
            max_length: 5,
        }];
        let mut search = Search::new(rules(), &specs, 2);
        let vocab = 8;
        let plan = search.step(&one_hot(vocab, 5, 1.0), vocab);
        assert_eq!(plan.tokens, vec![0]);
        let probs = |pairs: &[(usize, f32)]| -> Vec<f32> {
            let mut v = vec![1e-6f32; vocab];
            for &(i, p) in pairs {
                v[i] = p;
            }
            v.iter().map(|p| p.ln()).collect()
        };
        let plan = search.step(&probs(&[(5, 0.55), (6, 0.45)]), vocab);
        assert_eq!(plan.parents, vec![0, 0]);
        assert_eq!(plan.tokens, vec![5, 6]);
        // After 5 everything is uncertain; after 6, EOS is near-certain.
        let uniform = probs(&[(3, 0.25), (4, 0.25), (6, 0.25), (7, 0.25)]);
        let plan = search.step(&[uniform, probs(&[(2, 0.99)])].concat(), vocab);
        assert!(plan.parents.iter().all(|&p| p == 0));
        let flat = probs(&[(2, 0.9), (3, 0.1)]);
        search.step(&vec![flat; plan.parents.len()].concat(), vocab);
        let results = search.results();
        assert_eq!(results[0].tokens, vec![2, 0, 6, 2]);
        assert_eq!(results[0].finish_reason, FinishReason::Eos);
    }

    #[test]
    fn cancelled_groups_leave_and_report_cancelled() {
        let specs = [GroupSpec {
            num_beams: 1,
            max_length: 10,
        }; 2];
        let mut search = Search::new(rules(), &specs, 2);
        search.cancel(0);
        let plan = search.step(&[one_hot(10, 5, 1.0), one_hot(10, 5, 1.0)].concat(), 10);
        assert_eq!(plan.parents, vec![1]);
        assert_eq!(search.results()[0].finish_reason, FinishReason::Cancelled);
    }
}
