//! Fossil deltas: every patch reconstructs its target, text patches stay text, and no
//! input makes `apply` panic. Also prints the encode cost for a typical state object.

use herald_protocol::fossil::{apply, create};
use proptest::prelude::*;
use std::time::Instant;

/// A target derived from `source` by edits: (position fraction, delete count, insert).
fn edited(source: &[u8], edits: &[(f64, usize, Vec<u8>)]) -> Vec<u8> {
    let mut out = source.to_vec();
    for (at, delete, insert) in edits {
        // `at` is in [0, 1): the position is at most `out.len()`.
        let pos = ((out.len() as f64) * at) as usize;
        let end = (pos + delete).min(out.len());
        out.splice(pos..end, insert.iter().copied());
    }
    out
}

fn edits() -> impl Strategy<Value = Vec<(f64, usize, Vec<u8>)>> {
    prop::collection::vec(
        (
            0.0..1.0f64,
            0..40usize,
            prop::collection::vec(any::<u8>(), 0..40),
        ),
        0..8,
    )
}

/// Text with many multi-byte characters, so that matches start and end inside them.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!["a", "b", "é", "ж", "€", "😀", " ", "{\"k\":1}"]),
        0..400,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_pairs_round_trip(a in prop::collection::vec(any::<u8>(), 0..600), b in prop::collection::vec(any::<u8>(), 0..600)) {
        let patch = create(&a, &b);
        prop_assert_eq!(apply(&a, &patch), Ok(b));
    }

    #[test]
    fn similar_pairs_round_trip_and_shrink(a in prop::collection::vec(any::<u8>(), 200..3000), edits in edits()) {
        let b = edited(&a, &edits);
        let patch = create(&a, &b);
        prop_assert_eq!(apply(&a, &patch), Ok(b));
        let changed: usize = edits.iter().map(|(_, d, i)| d + i.len()).sum();
        // A few edits cost their literal bytes and a handful of commands, not the target.
        prop_assert!(patch.len() <= changed + 24 * (edits.len() + 1) + 16,
            "{} byte patch for {} changed bytes", patch.len(), changed);
    }

    #[test]
    fn text_patches_are_text(a in text(), b in text(), edits in edits()) {
        for target in [b.into_bytes(), edited(a.as_bytes(), &edits)] {
            let Ok(target) = String::from_utf8(target) else { continue };
            let patch = create(a.as_bytes(), target.as_bytes());
            prop_assert!(std::str::from_utf8(&patch).is_ok(), "patch is not UTF-8");
            prop_assert_eq!(apply(a.as_bytes(), &patch), Ok(target.into_bytes()));
        }
    }

    #[test]
    fn apply_never_panics(source in prop::collection::vec(any::<u8>(), 0..64), patch in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = apply(&source, &patch);
    }

    #[test]
    fn damaged_patches_fail_or_stay_exact(a in prop::collection::vec(any::<u8>(), 50..400), edits in edits(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let b = edited(&a, &edits);
        let mut patch = create(&a, &b);
        let i = at.index(patch.len());
        patch[i] = byte;
        // Either detected, or the damage did not change the output (the checksum and the
        // size guard everything else).
        if let Ok(out) = apply(&a, &patch) {
            prop_assert_eq!(out.len(), b.len());
        }
    }
}

/// A ~2 KB KPI object: 80 numeric fields with stable names.
fn kpi_object(values: &[u64]) -> String {
    let fields: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("\"metric_{i:03}\":{{\"value\":{v},\"unit\":\"ms\"}}"))
        .collect();
    format!("{{{}}}", fields.join(","))
}

// The encode cost is printed for BENCHMARKS.md (`--nocapture`), never asserted.
#[allow(clippy::print_stdout)]
#[test]
fn a_state_object_changed_by_five_percent_costs_little() {
    let mut values: Vec<u64> = (0..60).map(|i| 1000 + i * 37).collect();
    let before = kpi_object(&values);
    // Three of sixty values (5 %) change.
    for i in [7, 29, 51] {
        values[i] += 123_457;
    }
    let after = kpi_object(&values);
    assert!(
        (1800..2600).contains(&before.len()),
        "{} bytes",
        before.len()
    );
    let patch = create(before.as_bytes(), after.as_bytes());
    assert_eq!(
        apply(before.as_bytes(), &patch).as_deref(),
        Ok(after.as_bytes())
    );
    assert!(patch.len() < after.len() / 10, "{} byte patch", patch.len());

    let rounds = 2000;
    let start = Instant::now();
    let mut total = 0;
    for _ in 0..rounds {
        total += create(std::hint::black_box(before.as_bytes()), after.as_bytes()).len();
    }
    let per = start.elapsed() / rounds;
    assert_eq!(total, patch.len() * rounds as usize);
    println!(
        "fossil create: {} byte object, {} byte patch, {:?} per encode ({} build)",
        after.len(),
        patch.len(),
        per,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
}
