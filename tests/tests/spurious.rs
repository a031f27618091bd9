//! The spurious-background variant of the MNIST fixture: patches follow the class in train and
//! do not in test; the digits themselves are intact.

use tempfile::TempDir;
use tests::mnist_fixture;
use trainer::data::spurious::{PATCH, SpuriousOptions, patch_slots, write_spurious};
use trainer::data::{Dataset, Limits};

/// Whether example `i`'s patch sits in the slot of `class`.
fn patch_at(image: &[u8], side: usize, slot: (usize, usize)) -> bool {
    (slot.0..slot.0 + PATCH).all(|y| (slot.1..slot.1 + PATCH).all(|x| image[y * side + x] == 255))
}

#[test]
fn patches_follow_the_class_in_train_and_not_in_test() {
    let tmp = TempDir::new().expect("tmp");
    let source = Dataset::open(&mnist_fixture(), Limits::default()).expect("fixture");
    write_spurious(
        &source,
        tmp.path(),
        SpuriousOptions {
            canvas: 40,
            seed: 3,
        },
    )
    .expect("write");
    let variant = Dataset::open(tmp.path(), Limits::default()).expect("variant");
    let slots = patch_slots(40, 10);

    let train = variant.load_split("train").expect("train");
    assert_eq!(
        (train.shape.height, train.shape.width, train.len()),
        (40, 40, 8004)
    );
    assert!((0..train.len()).all(|i| patch_at(
        train.image(i),
        40,
        slots[train.labels[i] as usize]
    )));

    let test = variant.load_split("test").expect("test");
    let matching = (0..test.len())
        .filter(|&i| patch_at(test.image(i), 40, slots[test.labels[i] as usize]))
        .count();
    let share = matching as f64 / test.len() as f64;
    assert!(
        (0.05..0.2).contains(&share),
        "share of test patches on the class slot: {share}"
    );

    // The digits sit intact in the middle: the variant is written in the source's canonical
    // order, and each source image reappears at offset (6, 6).
    let original = source.load_split("test").expect("source test");
    let mut index = 0;
    variant
        .for_each_example("test", &mut |example| {
            let inner: Vec<u8> = (0..28)
                .flat_map(|y| example.pixels[(y + 6) * 40 + 6..(y + 6) * 40 + 34].to_vec())
                .collect();
            assert_eq!(inner, original.image(index), "example {index}");
            assert_eq!(example.label, original.labels[index]);
            index += 1;
            Ok(())
        })
        .expect("decode");

    let err = write_spurious(
        &source,
        &tmp.path().join("small"),
        SpuriousOptions {
            canvas: 30,
            seed: 0,
        },
    )
    .expect_err("too small");
    assert!(err.to_string().contains("use at least 36"), "{err}");
}
