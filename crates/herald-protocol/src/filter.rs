//! Tag filters: which publications a subscription receives, decided by the
//! publication's tags. The wire shape ([`FilterNode`]) is the Centrifuge protocol's
//! (`tf` in a subscribe request, the SDK's `tagsFilter` option); Herald also takes it in
//! tokens, where the client cannot change it. A tree is checked once
//! ([`Filter::compile`]) and then evaluated without allocating ([`Filter::matches`]).
//!
//! Leaves compare one tag (`key`) with `cmp`: `eq`, `neq`, `in`, `nin`, `ex`, `nex`,
//! `sw` (starts with), `ew` (ends with), `ct` (contains), `gt`, `gte`, `lt`, `lte`
//! (decimal comparisons: false unless both sides are numbers). Inner nodes are `and`,
//! `or` (at least one child) and `not` (exactly one).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The deepest tree accepted.
pub const MAX_DEPTH: usize = 16;
/// The most nodes a tree may have.
pub const MAX_NODES: usize = 256;

/// A filter tree as it travels (JSON or Protobuf).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterNode {
    /// `""` for a leaf, else `and`, `or` or `not`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub op: String,
    /// The tag a leaf compares.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// A leaf's comparison.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cmp: String,
    /// A leaf's value.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub val: String,
    /// A leaf's values (`in`, `nin`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vals: Vec<String>,
    /// An inner node's children.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<FilterNode>,
}

/// Why a tree is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// An `op` other than `""`, `and`, `or`, `not`.
    #[error("unknown filter op {0:?}")]
    UnknownOp(String),
    /// A `cmp` other than the known ones.
    #[error("unknown filter comparison {0:?}")]
    UnknownCmp(String),
    /// A node with the wrong parts for its kind.
    #[error("invalid filter node: {0}")]
    Invalid(&'static str),
    /// Deeper than [`MAX_DEPTH`] or larger than [`MAX_NODES`].
    #[error("filter too large (at most {MAX_DEPTH} levels and {MAX_NODES} nodes)")]
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Neq,
    In,
    Nin,
    Ex,
    Nex,
    Sw,
    Ew,
    Ct,
    Gt,
    Gte,
    Lt,
    Lte,
}

/// A checked filter tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every child matches.
    And(Vec<Filter>),
    /// Some child matches.
    Or(Vec<Filter>),
    /// The child does not match.
    Not(Box<Filter>),
    /// One tag compared.
    Leaf(Leaf),
}

/// One comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaf {
    key: String,
    cmp: Cmp,
    val: String,
    vals: Vec<String>,
    /// `val` as a number, for the ordering comparisons.
    num: Option<f64>,
}

impl Filter {
    /// Checks a tree.
    pub fn compile(node: &FilterNode) -> Result<Filter, FilterError> {
        let mut budget = MAX_NODES;
        Self::build(node, 1, &mut budget)
    }

    fn build(node: &FilterNode, depth: usize, budget: &mut usize) -> Result<Filter, FilterError> {
        if depth > MAX_DEPTH || *budget == 0 {
            return Err(FilterError::TooLarge);
        }
        *budget -= 1;
        let children = |budget: &mut usize| {
            node.nodes
                .iter()
                .map(|n| Self::build(n, depth + 1, budget))
                .collect::<Result<Vec<_>, _>>()
        };
        let inner_only = |what| {
            if node.key.is_empty()
                && node.cmp.is_empty()
                && node.val.is_empty()
                && node.vals.is_empty()
            {
                Ok(())
            } else {
                Err(FilterError::Invalid(what))
            }
        };
        match node.op.as_str() {
            "and" | "or" => {
                inner_only("and/or nodes have only children")?;
                if node.nodes.is_empty() {
                    return Err(FilterError::Invalid("and/or need at least one child"));
                }
                let nodes = children(budget)?;
                Ok(if node.op == "and" {
                    Filter::And(nodes)
                } else {
                    Filter::Or(nodes)
                })
            }
            "not" => {
                inner_only("not nodes have only a child")?;
                if node.nodes.len() != 1 {
                    return Err(FilterError::Invalid("not needs exactly one child"));
                }
                let mut nodes = children(budget)?;
                Ok(Filter::Not(Box::new(nodes.remove(0))))
            }
            "" => Self::leaf(node).map(Filter::Leaf),
            other => Err(FilterError::UnknownOp(other.to_owned())),
        }
    }

    fn leaf(node: &FilterNode) -> Result<Leaf, FilterError> {
        if !node.nodes.is_empty() {
            return Err(FilterError::Invalid("a comparison has no children"));
        }
        if node.key.is_empty() {
            return Err(FilterError::Invalid("a comparison needs a key"));
        }
        let cmp = match node.cmp.as_str() {
            "eq" => Cmp::Eq,
            "neq" => Cmp::Neq,
            "in" => Cmp::In,
            "nin" => Cmp::Nin,
            "ex" => Cmp::Ex,
            "nex" => Cmp::Nex,
            "sw" => Cmp::Sw,
            "ew" => Cmp::Ew,
            "ct" => Cmp::Ct,
            "gt" => Cmp::Gt,
            "gte" => Cmp::Gte,
            "lt" => Cmp::Lt,
            "lte" => Cmp::Lte,
            other => return Err(FilterError::UnknownCmp(other.to_owned())),
        };
        match cmp {
            Cmp::In | Cmp::Nin if node.vals.is_empty() || !node.val.is_empty() => {
                return Err(FilterError::Invalid("in/nin take vals, not val"));
            }
            Cmp::Ex | Cmp::Nex if !node.val.is_empty() || !node.vals.is_empty() => {
                return Err(FilterError::Invalid("ex/nex take neither val nor vals"));
            }
            Cmp::Eq
            | Cmp::Neq
            | Cmp::Sw
            | Cmp::Ew
            | Cmp::Ct
            | Cmp::Gt
            | Cmp::Gte
            | Cmp::Lt
            | Cmp::Lte
                if !node.vals.is_empty() =>
            {
                return Err(FilterError::Invalid("this comparison takes val, not vals"));
            }
            _ => {}
        }
        Ok(Leaf {
            key: node.key.clone(),
            cmp,
            val: node.val.clone(),
            vals: node.vals.clone(),
            num: node
                .val
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite()),
        })
    }

    /// Whether a publication with these tags passes.
    pub fn matches(&self, tags: &BTreeMap<String, String>) -> bool {
        match self {
            Filter::And(nodes) => nodes.iter().all(|n| n.matches(tags)),
            Filter::Or(nodes) => nodes.iter().any(|n| n.matches(tags)),
            Filter::Not(node) => !node.matches(tags),
            Filter::Leaf(leaf) => leaf.matches(tags.get(&leaf.key).map(String::as_str)),
        }
    }
}

impl Leaf {
    fn matches(&self, tag: Option<&str>) -> bool {
        let value = tag.unwrap_or("");
        let ordered = |f: fn(f64, f64) -> bool| match (value.trim().parse::<f64>(), self.num) {
            (Ok(a), Some(b)) if a.is_finite() => f(a, b),
            _ => false,
        };
        match self.cmp {
            Cmp::Eq => tag == Some(self.val.as_str()),
            Cmp::Neq => tag != Some(self.val.as_str()),
            Cmp::In => self.vals.iter().any(|v| v == value),
            Cmp::Nin => !self.vals.iter().any(|v| v == value),
            Cmp::Ex => tag.is_some(),
            Cmp::Nex => tag.is_none(),
            Cmp::Sw => tag.is_some_and(|t| t.starts_with(self.val.as_str())),
            Cmp::Ew => tag.is_some_and(|t| t.ends_with(self.val.as_str())),
            Cmp::Ct => tag.is_some_and(|t| t.contains(self.val.as_str())),
            Cmp::Gt => ordered(|a, b| a > b),
            Cmp::Gte => ordered(|a, b| a >= b),
            Cmp::Lt => ordered(|a, b| a < b),
            Cmp::Lte => ordered(|a, b| a <= b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(value: serde_json::Value) -> Result<Filter, FilterError> {
        Filter::compile(&serde_json::from_value(value).expect("a node"))
    }

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn comparisons() {
        let t = tags(&[
            ("type", "task"),
            ("id", "42"),
            ("team", "ops-eu"),
            ("load", "0.75"),
        ]);
        let yes = |v| assert!(filter(v).expect("valid").matches(&t));
        let no = |v| assert!(!filter(v).expect("valid").matches(&t));
        yes(json!({"key": "type", "cmp": "eq", "val": "task"}));
        no(json!({"key": "type", "cmp": "eq", "val": "board"}));
        no(json!({"key": "missing", "cmp": "eq", "val": ""}));
        yes(json!({"key": "missing", "cmp": "neq", "val": "x"}));
        yes(json!({"key": "id", "cmp": "in", "vals": ["41", "42"]}));
        no(json!({"key": "id", "cmp": "nin", "vals": ["41", "42"]}));
        yes(json!({"key": "missing", "cmp": "in", "vals": [""]}));
        yes(json!({"key": "team", "cmp": "ex"}));
        yes(json!({"key": "missing", "cmp": "nex"}));
        yes(json!({"key": "team", "cmp": "sw", "val": "ops"}));
        yes(json!({"key": "team", "cmp": "ew", "val": "-eu"}));
        yes(json!({"key": "team", "cmp": "ct", "val": "s-e"}));
        no(json!({"key": "missing", "cmp": "sw", "val": ""}));
        yes(json!({"key": "load", "cmp": "gt", "val": "0.5"}));
        yes(json!({"key": "load", "cmp": "lte", "val": "0.75"}));
        no(json!({"key": "load", "cmp": "lt", "val": "0.75"}));
        yes(json!({"key": "id", "cmp": "gte", "val": "42"}));
        no(json!({"key": "team", "cmp": "gt", "val": "1"}));
        no(json!({"key": "id", "cmp": "gt", "val": "not a number"}));
    }

    #[test]
    fn trees() {
        let t = tags(&[("type", "task"), ("board", "7")]);
        let f = filter(json!({"op": "and", "nodes": [
            {"key": "type", "cmp": "eq", "val": "task"},
            {"op": "or", "nodes": [
                {"key": "board", "cmp": "eq", "val": "7"},
                {"key": "board", "cmp": "eq", "val": "8"}
            ]},
            {"op": "not", "nodes": [{"key": "archived", "cmp": "ex"}]}
        ]}))
        .expect("valid");
        assert!(f.matches(&t));
        assert!(!f.matches(&tags(&[("type", "task"), ("board", "9")])));
        assert!(!f.matches(&tags(&[
            ("type", "task"),
            ("board", "7"),
            ("archived", "1")
        ])));
        assert!(!f.matches(&BTreeMap::new()));
    }

    #[test]
    fn invalid_trees_are_refused() {
        for bad in [
            json!({"op": "xor", "nodes": [{"key": "a", "cmp": "ex"}]}),
            json!({"op": "and"}),
            json!({"op": "not", "nodes": [{"key": "a", "cmp": "ex"}, {"key": "b", "cmp": "ex"}]}),
            json!({"op": "and", "key": "a", "nodes": [{"key": "a", "cmp": "ex"}]}),
            json!({"cmp": "eq", "val": "x"}),
            json!({"key": "a", "cmp": "like", "val": "x"}),
            json!({"key": "a", "cmp": "in", "val": "x"}),
            json!({"key": "a", "cmp": "in", "vals": []}),
            json!({"key": "a", "cmp": "eq", "vals": ["x"]}),
            json!({"key": "a", "cmp": "ex", "val": "x"}),
            json!({"key": "a", "cmp": "eq", "val": "x", "nodes": [{"key": "a", "cmp": "ex"}]}),
        ] {
            assert!(filter(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn size_is_bounded() {
        let mut deep = json!({"key": "a", "cmp": "ex"});
        for _ in 0..MAX_DEPTH {
            deep = json!({"op": "not", "nodes": [deep]});
        }
        assert_eq!(filter(deep), Err(FilterError::TooLarge));
        let wide: Vec<_> = (0..MAX_NODES)
            .map(|_| json!({"key": "a", "cmp": "ex"}))
            .collect();
        assert_eq!(
            filter(json!({"op": "or", "nodes": wide})),
            Err(FilterError::TooLarge)
        );
        let fits: Vec<_> = (0..MAX_NODES - 1)
            .map(|_| json!({"key": "a", "cmp": "ex"}))
            .collect();
        assert!(filter(json!({"op": "or", "nodes": fits})).is_ok());
    }
}
