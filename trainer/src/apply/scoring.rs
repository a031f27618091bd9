//! Scoring per-example weights against known flipped labels: AUROC of "low weight" as a
//! detector, and precision among the lowest-weighted examples.

use schema::corruption::CorruptionRecord;
use schema::report::NoiseDetection;

/// How well low `weights` (canonical train order) find the labels `record` says were flipped.
/// None when there is nothing to score (no flips, or the sizes disagree).
pub fn noise_detection(weights: &[f32], record: &CorruptionRecord) -> Option<NoiseDetection> {
    let n = weights.len();
    if record.train_examples != n as u64 || record.flipped.is_empty() {
        return None;
    }
    let mut flipped = vec![false; n];
    for f in &record.flipped {
        *flipped.get_mut(usize::try_from(f.index).ok()?)? = true;
    }
    let positives = flipped.iter().filter(|&&f| f).count();
    let negatives = n - positives;
    if negatives == 0 {
        return None;
    }
    // Lowest weight first; ties share their average rank (Mann-Whitney U).
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| weights[a].total_cmp(&weights[b]));
    let mut rank_sum = 0f64;
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && weights[order[end]] == weights[order[start]] {
            end += 1;
        }
        // Ranks counted from the highest weight, so a flipped example ranked low scores high.
        let mean_rank = (n - start + n - end + 1) as f64 / 2.0;
        for &i in &order[start..end] {
            if flipped[i] {
                rank_sum += mean_rank;
            }
        }
        start = end;
    }
    let p = positives as f64;
    let auroc = (rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64);
    let hits = order[..positives].iter().filter(|&&i| flipped[i]).count();
    Some(NoiseDetection {
        examples: n as u64,
        flipped: positives as u64,
        auroc,
        precision_at_noise_rate: hits as f64 / p,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::Sha256;
    use schema::corruption::{CorruptionOptions, FlippedLabel, NoiseKind};

    fn record(flipped: &[u64], n: u64) -> CorruptionRecord {
        CorruptionRecord {
            source_digest: Sha256([0; 32]),
            digest: Sha256([1; 32]),
            options: CorruptionOptions {
                label_noise: 0.4,
                noise: NoiseKind::Pair,
                imbalance: 1.0,
                spurious: false,
                canvas: None,
                clean_val: 0,
                seed: 0,
            },
            train_examples: n,
            class_counts: vec![],
            flipped: flipped
                .iter()
                .map(|&index| FlippedLabel {
                    index,
                    true_class: 0,
                    label: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn perfect_separation_scores_one_and_reversed_scores_zero() {
        let weights = [0.1, 0.9, 0.2, 0.8];
        let found = noise_detection(&weights, &record(&[0, 2], 4)).expect("scored");
        assert_eq!((found.auroc, found.precision_at_noise_rate), (1.0, 1.0));
        let found = noise_detection(&weights, &record(&[1, 3], 4)).expect("scored");
        assert_eq!((found.auroc, found.precision_at_noise_rate), (0.0, 0.0));
    }

    #[test]
    fn equal_weights_score_chance() {
        let found = noise_detection(&[0.5; 6], &record(&[1, 4], 6)).expect("scored");
        assert!((found.auroc - 0.5).abs() < 1e-12, "{}", found.auroc);
    }

    #[test]
    fn a_record_of_another_size_is_not_scored() {
        assert!(noise_detection(&[0.5; 3], &record(&[1], 4)).is_none());
    }
}
