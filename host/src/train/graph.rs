//! A model prepared for training: weights held in `Constant` nodes lifted into
//! initializers, the trainable set chosen, shared trainable weights untied (one copy per
//! use), and every node checked against the operators the engine supports.

use std::collections::{BTreeMap, BTreeSet};

use tract_onnx::pb::{self, tensor_proto::DataType};

use super::ops::SUPPORTED;

/// Which weights train.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Trainable {
    /// Every float weight of Conv, Gemm, MatMul (and the Add that biases it) and
    /// BatchNormalization (scale and shift; the statistics stay frozen).
    #[default]
    All,
    /// Only the layer that produces the output: the last of those nodes.
    Head,
    /// Float initializers whose names start with one of these.
    Prefixes(Vec<String>),
}

impl Trainable {
    /// `all`, `head`, or comma-separated name prefixes.
    pub fn parse(text: &str) -> Self {
        match text.trim() {
            "" | "all" => Trainable::All,
            "head" => Trainable::Head,
            list => Trainable::Prefixes(
                list.split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect(),
            ),
        }
    }
}

/// Whether `name` is `prefix` or starts with it at a boundary: `model.1` names
/// `model.1.conv.weight`, not `model.10.conv.weight`.
pub fn matches_prefix(name: &str, prefix: &str) -> bool {
    match name.strip_prefix(prefix) {
        Some(rest) => {
            rest.is_empty()
                || prefix.ends_with(|c: char| !c.is_ascii_alphanumeric())
                || rest.starts_with(|c: char| !c.is_ascii_alphanumeric())
        }
        None => false,
    }
}

/// Initializers every use of which is a fixed input: BatchNormalization's statistics, or
/// the shapes, scales, axes and bounds of layout ops. A prefix never makes them train.
fn fixed_inputs(graph: &pb::GraphProto) -> BTreeSet<String> {
    let fixed_slot = |op: &str, slot: usize| match op {
        "BatchNormalization" => slot >= 3,
        "Resize" | "Upsample" | "Reshape" | "Slice" | "Split" | "Squeeze" | "Unsqueeze"
        | "Gather" | "Pow" | "Clip" => slot >= 1,
        "ConstantOfShape" => true,
        _ => false,
    };
    let mut variable = BTreeSet::new();
    let mut fixed = BTreeSet::new();
    for node in &graph.node {
        for (slot, input) in node.input.iter().enumerate() {
            if fixed_slot(&node.op_type, slot) {
                fixed.insert(input.clone());
            } else {
                variable.insert(input.clone());
            }
        }
    }
    fixed.retain(|name| !variable.contains(name));
    fixed
}

/// The inputs of `op` that hold its weights (by position).
fn weight_slots(op: &str) -> &'static [usize] {
    match op {
        "Conv" | "Gemm" => &[1, 2],
        "MatMul" => &[0, 1],
        "BatchNormalization" => &[1, 2],
        _ => &[],
    }
}

/// The model, edited for training, with what the session needs to know about it.
pub struct Prepared {
    pub proto: pb::ModelProto,
    /// Trainable initializer names (after untying), in graph order.
    pub trainable: Vec<String>,
}

fn is_float(t: &pb::TensorProto) -> bool {
    t.data_type == DataType::Float as i32 || t.data_type == DataType::Double as i32
}

/// Prepares `proto` (a model named `name`) for training.
pub fn prepare(
    name: &str,
    mut proto: pb::ModelProto,
    trainable: &Trainable,
    freeze: &[String],
) -> Result<Prepared, String> {
    let graph = proto.graph.as_mut().ok_or("the model has no graph")?;
    check_ops(graph)?;
    lift_constants(graph);
    let floats: BTreeSet<String> = graph
        .initializer
        .iter()
        .filter(|t| is_float(t))
        .map(|t| t.name.clone())
        .collect();
    let frozen = |w: &str| freeze.iter().any(|f| matches_prefix(w, f));
    let candidates = weight_candidates(graph, &floats);
    let chosen: Vec<String> = match trainable {
        Trainable::All => candidates.iter().flat_map(|(_, w)| w.clone()).collect(),
        // The last layer that still has a weight to train once `freeze` is applied.
        Trainable::Head => candidates
            .iter()
            .rev()
            .find(|(_, w)| w.iter().any(|w| !frozen(w)))
            .map(|(_, w)| w.clone())
            .unwrap_or_default(),
        Trainable::Prefixes(prefixes) => {
            let fixed = fixed_inputs(graph);
            let chosen: Vec<String> = graph
                .initializer
                .iter()
                .filter(|t| is_float(t) && !fixed.contains(&t.name))
                .filter(|t| prefixes.iter().any(|p| matches_prefix(&t.name, p)))
                .map(|t| t.name.clone())
                .collect();
            if chosen.is_empty() {
                return Err(format!(
                    "no trainable weight of {name} is named by {prefixes:?}: give name prefixes of its initializers (`model.1` is `model.1.*`, not `model.10`), `head` or `all`"
                ));
            }
            chosen
        }
    };
    let mut seen = BTreeSet::new();
    let chosen: Vec<String> = chosen
        .into_iter()
        .filter(|w| !frozen(w))
        .filter(|w| seen.insert(w.clone()))
        .collect();
    if chosen.is_empty() {
        let all: Vec<&str> = candidates
            .iter()
            .flat_map(|(_, w)| w.iter().map(String::as_str))
            .take(8)
            .collect();
        return Err(format!(
            "nothing of {name} would train: `trainable` chose no weight, or `freeze` {freeze:?} froze them all (its weights include {all:?})"
        ));
    }
    let mut trainable = chosen.clone();
    for (original, copy) in untie(graph, &chosen) {
        let at = trainable
            .iter()
            .position(|n| *n == original)
            .expect("chosen");
        trainable.insert(at + 1, copy);
    }
    Ok(Prepared { proto, trainable })
}

fn check_ops(graph: &pb::GraphProto) -> Result<(), String> {
    for (index, node) in graph.node.iter().enumerate() {
        let standard = node.domain.is_empty() || node.domain == "ai.onnx";
        if !standard || !SUPPORTED.contains(&node.op_type.as_str()) {
            let name = if node.name.is_empty() {
                format!("#{index}")
            } else {
                node.name.clone()
            };
            let op = if standard {
                node.op_type.clone()
            } else {
                format!("{}::{}", node.domain, node.op_type)
            };
            return Err(format!(
                "node `{name}` is a `{op}`, which the training engine cannot run or differentiate. \
                 Export the model without it (Ultralytics: `yolo export ... format=onnx`, opset 12 or later; \
                 leave post-processing such as NMS out of the graph), or train only the part of the model after it \
                 by exporting that part alone. The engine supports: {}",
                SUPPORTED.join(", ")
            ));
        }
    }
    Ok(())
}

/// Float `Constant` nodes become initializers of the same name, so that a PaddlePaddle
/// export's weights train like any other.
fn lift_constants(graph: &mut pb::GraphProto) {
    let mut lifted = Vec::new();
    graph.node.retain(|node| {
        if node.op_type != "Constant" || node.output.len() != 1 {
            return true;
        }
        let Some(tensor) = node
            .attribute
            .iter()
            .find(|a| a.name == "value")
            .and_then(|a| a.t.as_ref())
        else {
            return true;
        };
        if !is_float(tensor) || tensor.dims.is_empty() {
            return true;
        }
        let mut tensor = tensor.clone();
        tensor.name = node.output[0].clone();
        lifted.push(tensor);
        false
    });
    graph.initializer.extend(lifted);
}

/// For each weight-bearing node, in graph order, the float initializers in its weight
/// slots (plus the constant operand of an `Add` that follows a `MatMul`: a bias).
fn weight_candidates(
    graph: &pb::GraphProto,
    floats: &BTreeSet<String>,
) -> Vec<(usize, Vec<String>)> {
    let mut matmul_outputs = BTreeSet::new();
    let mut out: Vec<(usize, Vec<String>)> = Vec::new();
    for (index, node) in graph.node.iter().enumerate() {
        let mut weights: Vec<String> = weight_slots(&node.op_type)
            .iter()
            .filter_map(|&slot| node.input.get(slot))
            .filter(|name| floats.contains(*name))
            .cloned()
            .collect();
        if node.op_type == "MatMul" {
            matmul_outputs.extend(node.output.iter().cloned());
        }
        if node.op_type == "Add" && node.input.iter().any(|i| matmul_outputs.contains(i)) {
            let bias: Vec<String> = node
                .input
                .iter()
                .filter(|i| floats.contains(*i))
                .cloned()
                .collect();
            if let Some(last) = out.last_mut().filter(|(_, w)| !w.is_empty()) {
                last.1.extend(bias);
                continue;
            }
            weights.extend(bias);
        }
        if !weights.is_empty() {
            out.push((index, weights));
        }
    }
    out
}

/// Gives every use of an initializer in `chosen` read by several nodes its own copy
/// (named `<name>.<use>`), so that training one layer does not move another. Returns the
/// copies made, each with the initializer it copies.
pub fn untie(graph: &mut pb::GraphProto, chosen: &[String]) -> Vec<(String, String)> {
    let mut uses: BTreeMap<&str, usize> = BTreeMap::new();
    for node in &graph.node {
        for input in &node.input {
            if let Some(name) = chosen.iter().find(|c| *c == input) {
                *uses.entry(name.as_str()).or_default() += 1;
            }
        }
    }
    let shared: BTreeSet<String> = uses
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(name, _)| name.to_string())
        .collect();
    let mut counter: BTreeMap<String, usize> = BTreeMap::new();
    let mut copies = Vec::new();
    for node in graph.node.iter_mut() {
        for input in node.input.iter_mut() {
            if !shared.contains(input.as_str()) {
                continue;
            }
            let n = counter.entry(input.clone()).or_default();
            *n += 1;
            if *n == 1 {
                continue;
            }
            let copy = format!("{input}.{n}");
            copies.push((input.clone(), copy.clone()));
            *input = copy;
        }
    }
    for (original, copy) in &copies {
        let mut tensor = graph
            .initializer
            .iter()
            .find(|t| &t.name == original)
            .expect("an untied value is an initializer")
            .clone();
        tensor.name = copy.clone();
        graph.initializer.push(tensor);
    }
    copies
}
