//! Pairs of nodes the session computes as one operator, because the value between them
//! is large, read once, and cheaper not to make: a `Sigmoid` read only by the `Mul` of its
//! own input (`x σ(x)`, the SiLU of every Ultralytics export), and a `Conv` read only by a
//! `BatchNormalization` (whose frozen statistics fold into the kernel and a bias, so the
//! normalisation costs nothing per pixel, forward or backward).
//!
//! A fusion applies to a forward only when nobody asked for its inner value and it was not
//! given as an input: then the graph computes exactly what the nodes would, one pass over
//! the activations fewer.

use std::collections::{BTreeMap, BTreeSet};

use tract_onnx::pb;

/// Two nodes computed as one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fusion {
    /// `Mul(x, Sigmoid(x))`: computed at the `Mul` from `input`.
    Silu { input: String },
    /// `BatchNormalization(Conv(...))`: computed at the normalisation, from the `Conv`'s
    /// inputs.
    ConvBatchNorm { conv: usize },
}

/// A fusion found in a graph: the node skipped, the node that computes both, and the
/// value between them that is never made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub skipped: usize,
    pub at: usize,
    pub inner: String,
    pub fusion: Fusion,
}

/// The fusions of one forward: what to skip, and what to compute in their place.
#[derive(Default)]
pub struct Plan<'a> {
    pub skipped: BTreeSet<usize>,
    pub fused: BTreeMap<usize, &'a Found>,
    pub inner: BTreeSet<&'a str>,
}

/// The fusions of `graph`, in graph order.
pub fn find(graph: &pb::GraphProto) -> Vec<Found> {
    let mut readers: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, node) in graph.node.iter().enumerate() {
        for input in &node.input {
            readers.entry(input.as_str()).or_default().push(index);
        }
    }
    let outputs: BTreeSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    // The one node reading `value`, unless the graph returns it.
    let only_reader = |value: &str| match readers.get(value).map(Vec::as_slice) {
        Some(&[reader]) if !outputs.contains(value) => Some(reader),
        _ => None,
    };
    let mut found = Vec::new();
    for (index, node) in graph.node.iter().enumerate() {
        let [value] = node.output.as_slice() else {
            continue;
        };
        let Some(reader) = only_reader(value) else {
            continue;
        };
        let next = &graph.node[reader];
        match (node.op_type.as_str(), next.op_type.as_str()) {
            ("Sigmoid", "Mul") => {
                let [input] = node.input.as_slice() else {
                    continue;
                };
                let pair = next.input.as_slice();
                if pair == [input.clone(), value.clone()] || pair == [value.clone(), input.clone()]
                {
                    found.push(Found {
                        skipped: index,
                        at: reader,
                        inner: value.clone(),
                        fusion: Fusion::Silu {
                            input: input.clone(),
                        },
                    });
                }
            }
            ("Conv", "BatchNormalization") if next.input.first() == Some(value) => {
                found.push(Found {
                    skipped: index,
                    at: reader,
                    inner: value.clone(),
                    fusion: Fusion::ConvBatchNorm { conv: index },
                });
            }
            _ => {}
        }
    }
    found
}

/// The fusions that apply to a forward asked for `wanted` and given `given`.
pub fn plan<'a>(
    found: &'a [Found],
    wanted: &[String],
    given: impl Fn(&str) -> bool,
) -> Plan<'a> {
    let mut plan = Plan::default();
    for f in found {
        if wanted.contains(&f.inner) || given(&f.inner) {
            continue;
        }
        plan.skipped.insert(f.skipped);
        plan.fused.insert(f.at, f);
        plan.inner.insert(&f.inner);
    }
    plan
}
