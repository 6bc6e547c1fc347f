//! Chains of nodes the session computes as one operator, because the values between them
//! are large, read once, and cheaper not to make:
//! - a `Conv`, then a `BatchNormalization` only it feeds (the frozen statistics fold into
//!   the kernel and a bias, so the normalisation costs nothing per pixel; one that learns
//!   its statistics from the batch runs on its own), then a SiLU
//!   (`Mul(x, Sigmoid(x))`, as every Ultralytics export writes it) or a `Relu`, each
//!   optional: one convolution whose activation is applied while its output is in cache;
//! - a SiLU after anything else: one pass instead of two.
//!
//! A chain applies to a forward only when nobody asked for a value inside it and none was
//! given as an input: then the graph computes exactly what the nodes would.

use std::collections::{BTreeMap, BTreeSet};

use tract_onnx::pb;

use super::pointwise::Act;

/// What a chain computes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fusion {
    /// `Mul(x, Sigmoid(x))` from `input`.
    Silu { input: String },
    /// The convolution node `conv`, the normalisation `norm` after it, and `activation`.
    Conv {
        conv: usize,
        norm: Option<usize>,
        activation: Option<Act>,
    },
}

/// A chain found in a graph: the nodes skipped, the last node (which computes the chain
/// and gives its output), and the values between them, never made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub skipped: Vec<usize>,
    pub at: usize,
    pub inner: Vec<String>,
    pub fusion: Fusion,
}

/// The chains of one forward: what to skip, and what to compute in their place.
#[derive(Default)]
pub struct Plan<'a> {
    pub skipped: BTreeSet<usize>,
    pub fused: BTreeMap<usize, &'a Found>,
    pub inner: BTreeSet<&'a str>,
}

/// Who reads each value of a graph.
struct Readers<'a> {
    graph: &'a pb::GraphProto,
    readers: BTreeMap<&'a str, Vec<usize>>,
    outputs: BTreeSet<&'a str>,
}

impl<'a> Readers<'a> {
    fn new(graph: &'a pb::GraphProto) -> Self {
        let mut readers: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (index, node) in graph.node.iter().enumerate() {
            for input in &node.input {
                readers.entry(input.as_str()).or_default().push(index);
            }
        }
        Readers {
            graph,
            readers,
            outputs: graph.output.iter().map(|o| o.name.as_str()).collect(),
        }
    }

    /// The nodes reading `value`; none if the graph returns it.
    fn of(&self, value: &str) -> &[usize] {
        if self.outputs.contains(value) {
            return &[];
        }
        self.readers.get(value).map_or(&[], Vec::as_slice)
    }

    /// The single output of node `index`.
    fn output(&self, index: usize) -> Option<&'a String> {
        match self.graph.node[index].output.as_slice() {
            [value] => Some(value),
            _ => None,
        }
    }

    /// The SiLU reading `value` and nothing else reading it: the `Sigmoid` and the `Mul`.
    fn silu(&self, value: &str) -> Option<(usize, usize)> {
        let nodes = &self.graph.node;
        let &[a, b] = self.of(value) else {
            return None;
        };
        let (sigmoid, mul) = if nodes[a].op_type == "Sigmoid" {
            (a, b)
        } else {
            (b, a)
        };
        let gate = self.output(sigmoid)?;
        let pair = nodes[mul].input.as_slice();
        let reads_both =
            pair.len() == 2 && pair.iter().any(|i| i == value) && pair.iter().any(|i| i == gate);
        (nodes[sigmoid].op_type == "Sigmoid"
            && nodes[sigmoid].input.as_slice() == [value.to_string()]
            && nodes[mul].op_type == "Mul"
            && reads_both
            && self.of(gate) == [mul])
        .then_some((sigmoid, mul))
    }

    /// The chain starting at convolution `conv`, if anything follows it; the
    /// normalisations in `unfoldable` are left out of it.
    fn conv_chain(&self, conv: usize, unfoldable: &BTreeSet<usize>) -> Option<Found> {
        let nodes = &self.graph.node;
        let mut value = self.output(conv)?;
        let (mut at, mut skipped, mut inner) = (conv, Vec::new(), Vec::new());
        let mut norm = None;
        if let &[reader] = self.of(value)
            && nodes[reader].op_type == "BatchNormalization"
            && !unfoldable.contains(&reader)
            && nodes[reader].input.first() == Some(value)
            && let Some(out) = self.output(reader)
        {
            skipped.push(at);
            inner.push(value.clone());
            (at, norm, value) = (reader, Some(reader), out);
        }
        let mut activation = None;
        if let Some((sigmoid, mul)) = self.silu(value) {
            skipped.extend([at, sigmoid]);
            inner.extend([value.clone(), self.output(sigmoid)?.clone()]);
            (at, activation) = (mul, Some(Act::Silu));
        } else if let &[reader] = self.of(value)
            && nodes[reader].op_type == "Relu"
        {
            skipped.push(at);
            inner.push(value.clone());
            (at, activation) = (reader, Some(Act::Relu));
        }
        (!skipped.is_empty()).then_some(Found {
            skipped,
            at,
            inner,
            fusion: Fusion::Conv {
                conv,
                norm,
                activation,
            },
        })
    }
}

/// The chains of `graph`, in graph order; the normalisations in `unfoldable` (those that
/// learn their statistics) are not folded into a convolution.
pub fn find(graph: &pb::GraphProto, unfoldable: &BTreeSet<usize>) -> Vec<Found> {
    let readers = Readers::new(graph);
    let mut found: Vec<Found> = Vec::new();
    let mut taken = BTreeSet::new();
    for (index, node) in graph.node.iter().enumerate() {
        if taken.contains(&index) {
            continue;
        }
        let chain = match node.op_type.as_str() {
            "Conv" => readers.conv_chain(index, unfoldable),
            "Sigmoid" => {
                let input = node.input.first();
                input
                    .and_then(|x| readers.silu(x).filter(|&(s, _)| s == index))
                    .map(|(sigmoid, mul)| Found {
                        skipped: vec![sigmoid],
                        at: mul,
                        inner: readers.output(sigmoid).cloned().into_iter().collect(),
                        fusion: Fusion::Silu {
                            input: input.cloned().unwrap_or_default(),
                        },
                    })
            }
            _ => None,
        };
        if let Some(chain) = chain {
            taken.extend(chain.skipped.iter().copied());
            taken.insert(chain.at);
            found.push(chain);
        }
    }
    found
}

/// The chains that apply to a forward asked for `wanted` and given `given`.
pub fn plan<'a>(found: &'a [Found], wanted: &[String], given: impl Fn(&str) -> bool) -> Plan<'a> {
    let mut plan = Plan::default();
    for f in found {
        if f.inner.iter().any(|v| wanted.contains(v) || given(v)) {
            continue;
        }
        plan.skipped.extend(f.skipped.iter().copied());
        plan.fused.insert(f.at, f);
        plan.inner.extend(f.inner.iter().map(String::as_str));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{ModelBuilder, Tensor};

    #[test]
    fn chains_are_found_where_their_inner_values_are_read_once() {
        let w = Tensor::zeros(vec![2, 2, 1, 1]);
        let c = Tensor::zeros(vec![2]);
        let mut b = ModelBuilder::new("chains");
        b.input("x", &[Some(1), Some(2), Some(3), Some(3)]);
        for name in ["w", "w2", "w3"] {
            b.weight(name, &w);
        }
        for name in ["s", "t", "m", "v"] {
            b.weight(name, &c);
        }
        // 0-3: Conv -> BatchNormalization -> SiLU.
        b.node("Conv", &["x", "w"], &["a"], &[])
            .node(
                "BatchNormalization",
                &["a", "s", "t", "m", "v"],
                &["n"],
                &[],
            )
            .node("Sigmoid", &["n"], &["g"], &[])
            .node("Mul", &["n", "g"], &["h"], &[])
            // 4-5: Conv -> Relu.
            .node("Conv", &["h", "w2"], &["r"], &[])
            .node("Relu", &["r"], &["q"], &[])
            // 6-8: Conv -> SiLU with the Mul's operands the other way round.
            .node("Conv", &["q", "w3"], &["k"], &[])
            .node("Sigmoid", &["k"], &["kg"], &[])
            .node("Mul", &["kg", "k"], &["y"], &[])
            .output("y", &[]);
        let model = b.build().unwrap();
        let graph = model.proto().graph.as_ref().unwrap();
        let found = find(graph, &BTreeSet::new());
        let chains: Vec<(Vec<usize>, usize, &Fusion)> = found
            .iter()
            .map(|f| (f.skipped.clone(), f.at, &f.fusion))
            .collect();
        assert_eq!(
            chains,
            [
                (
                    vec![0, 1, 2],
                    3,
                    &Fusion::Conv {
                        conv: 0,
                        norm: Some(1),
                        activation: Some(Act::Silu)
                    }
                ),
                (
                    vec![4],
                    5,
                    &Fusion::Conv {
                        conv: 4,
                        norm: None,
                        activation: Some(Act::Relu)
                    }
                ),
                (
                    vec![6, 7],
                    8,
                    &Fusion::Conv {
                        conv: 6,
                        norm: None,
                        activation: Some(Act::Silu)
                    }
                ),
            ]
        );
        // Asking for a value inside a chain runs its nodes as they are.
        let plan = plan(&found, &["n".to_string()], |_| false);
        assert_eq!(plan.fused.keys().copied().collect::<Vec<_>>(), [5, 8]);
        // A normalisation that learns its statistics runs on its own; its SiLU still fuses.
        let found = find(graph, &BTreeSet::from([1]));
        assert_eq!(
            (found[0].skipped.clone(), found[0].at),
            (vec![2], 3),
            "{found:?}"
        );
        assert_eq!(
            found[0].fusion,
            Fusion::Silu {
                input: "n".to_string()
            }
        );
    }
}
