//! `herald-bench filter`: what a tag filter costs per evaluation, as the connection task
//! pays it for each publication of a filtered subscription: a leaf, an `in` over ten
//! values, and a tree of and/or/not with five comparisons, on publications with four
//! tags that pass and that do not.

use herald_protocol::{Filter, FilterNode};
use serde_json::json;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

/// Arguments of `filter`.
#[derive(Debug, clap::Args)]
pub(crate) struct FilterArgs {
    /// Evaluations per filter and tag set.
    #[arg(long, default_value_t = 10_000_000)]
    evaluations: u32,
}

/// Times each filter on each tag set and prints ns per evaluation.
// The measurements are this command's output.
#[allow(clippy::print_stdout)]
pub(crate) fn run(args: &FilterArgs) -> anyhow::Result<bool> {
    let filters = [
        (
            "leaf: board eq 7",
            json!({"key": "board", "cmp": "eq", "val": "7"}),
        ),
        (
            "in: board in 10 values",
            json!({"key": "board", "cmp": "in", "vals": ["1","2","3","4","5","6","7","8","9","10"]}),
        ),
        (
            "tree: 5 comparisons",
            json!({"op": "and", "nodes": [
                {"key": "tenant", "cmp": "eq", "val": "acme"},
                {"op": "or", "nodes": [
                    {"key": "board", "cmp": "eq", "val": "7"},
                    {"key": "priority", "cmp": "gte", "val": "3"}
                ]},
                {"op": "not", "nodes": [{"key": "archived", "cmp": "ex"}]},
                {"key": "type", "cmp": "sw", "val": "task"}
            ]}),
        ),
    ];
    let tags = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let sets = [
        (
            "passes",
            tags(&[
                ("tenant", "acme"),
                ("board", "7"),
                ("priority", "2"),
                ("type", "task.updated"),
            ]),
        ),
        (
            "fails",
            tags(&[
                ("tenant", "globex"),
                ("board", "12"),
                ("priority", "1"),
                ("type", "board.moved"),
            ]),
        ),
    ];
    println!(
        "tag filter evaluation, {} evaluations each (publications with 4 tags):",
        args.evaluations
    );
    for (label, tree) in filters {
        let node: FilterNode = serde_json::from_value(tree)?;
        let filter = Filter::compile(&node)?;
        for (set, t) in &sets {
            let start = Instant::now();
            let mut passed = 0u32;
            for _ in 0..args.evaluations {
                passed += u32::from(black_box(&filter).matches(black_box(t)));
            }
            let ns = start.elapsed().as_secs_f64() * 1e9 / f64::from(args.evaluations.max(1));
            println!(
                "  {label:<24} {set:<7} {ns:>7.1} ns per evaluation ({} passed)",
                if passed > 0 { "all" } else { "none" }
            );
        }
    }
    Ok(true)
}
