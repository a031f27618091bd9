//! `commentary hypergrad` problem files: safetensors with the student, data, phi and the task
//! in metadata. A parsed problem's indices must all be in range and its shapes consistent,
//! since the engine indexes with them unchecked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schema::problem::{ProblemFile, ProblemTask};

fuzz_target!(|data: &[u8]| {
    let Ok(problem) = ProblemFile::parse(data) else {
        return;
    };
    let (d, classes) = (problem.widths[0], problem.widths[problem.widths.len() - 1]);
    let n = problem.train_y.len();
    assert_eq!(problem.train_x.len(), n * d);
    assert_eq!(problem.val_x.len(), problem.val_y.len() * d);
    assert!(
        problem
            .train_y
            .iter()
            .chain(&problem.val_y)
            .all(|&y| y >= 0 && (y as usize) < classes)
    );
    assert_eq!(
        problem.phi.len(),
        problem.phi_shape.iter().product::<usize>()
    );
    match &problem.task {
        ProblemTask::WeightBptt { batches, .. } => {
            assert!(
                batches
                    .iter()
                    .flatten()
                    .all(|&i| i >= 0 && (i as usize) < n)
            );
        }
        ProblemTask::BlendIft { pairs, .. } => {
            assert_eq!(pairs.len(), n);
            assert!(pairs.iter().all(|&i| i >= 0 && (i as usize) < n));
        }
    }
});
