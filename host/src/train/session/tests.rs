//! Gradient checks (every supported operator, f64 central differences against the
//! engine's backward, on small random shapes), and the session's behaviour: losses,
//! optimizers, frozen weights, refusals, export.

use candle_core::{DType, Device, Tensor as Dense};

use super::{Options, Precision, Session};
use crate::media::{Attr, Model, ModelBuilder, Tensor};
use crate::train::{Loss, Optimizer, Statistics, Trainable};

/// A seeded stream of numbers in [-1, 1).
struct Random(u64);

impl Random {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn tensor(&mut self, dims: &[usize]) -> Tensor {
        let len = dims.iter().product();
        Tensor {
            dims: dims.to_vec(),
            data: (0..len).map(|_| self.next()).collect(),
        }
    }
}

/// A graph under test: input `x` of `dims`, weights named `w*` (all trained), output `y`.
struct Case {
    builder: ModelBuilder,
    random: Random,
    input: Vec<usize>,
    trained: Vec<String>,
    statistics: Statistics,
}

impl Case {
    fn new(input: &[usize]) -> Self {
        let mut builder = ModelBuilder::new("check");
        let dims: Vec<Option<usize>> = input.iter().map(|&d| Some(d)).collect();
        builder.input("x", &dims);
        Case {
            builder,
            random: Random(input.iter().product::<usize>() as u64),
            input: input.to_vec(),
            trained: Vec::new(),
            statistics: Statistics::Frozen,
        }
    }

    fn weight(&mut self, name: &str, dims: &[usize]) -> &mut Self {
        let tensor = self.random.tensor(dims);
        self.add(name, &tensor)
    }

    fn add(&mut self, name: &str, tensor: &Tensor) -> &mut Self {
        self.builder.weight(name, tensor);
        if name.starts_with('w') {
            self.trained.push(name.to_string());
        }
        self
    }

    /// A weight of positive values (variances, divisors).
    fn positive(&mut self, name: &str, dims: &[usize]) -> &mut Self {
        let mut tensor = self.random.tensor(dims);
        tensor.data.iter_mut().for_each(|v| *v = 0.5 + v.abs());
        self.add(name, &tensor)
    }

    /// Normalisations learn their statistics from the batch.
    fn learning_statistics(&mut self) -> &mut Self {
        self.statistics = Statistics::Learn { momentum: None };
        self
    }

    fn node(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attrs: &[Attr]) -> &mut Self {
        self.builder.node(op, inputs, outputs, attrs);
        self
    }

    /// Checks every trained weight's gradient of `sum(y * g)` for a random `g` against
    /// central differences, element by element.
    fn check(&mut self) {
        self.builder.output("y", &[]);
        let model = self.builder.build().expect("a valid model");
        let options = Options {
            trainable: Trainable::Prefixes(self.trained.clone()),
            precision: Precision::F64,
            threads: 1,
            ..Options::default()
        };
        let mut session = Session::open(&model, options).expect("the session opens");
        session
            .set_statistics(self.statistics)
            .expect("statistics chosen");
        let inputs = vec![("x".to_string(), self.random.tensor(&self.input))];
        let [(_, y)] = session
            .forward(&inputs, &["y".into()])
            .expect("forward")
            .try_into()
            .expect("one output");
        let g = self.random.tensor(&y.dims);
        session
            .backward(&[("y".into(), g.clone())])
            .expect("backward");
        let g = Dense::from_vec(g.data.clone(), g.dims.as_slice(), &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F64))
            .expect("tensor");
        const H: f64 = 1e-5;
        for (w, name) in session.trainable().iter().enumerate() {
            let analytic = session.gradient_f64(w);
            for (i, &a) in analytic.iter().enumerate() {
                session.nudge(w, i, H);
                let plus = session.objective(&inputs, "y", &g);
                session.nudge(w, i, -2.0 * H);
                let minus = session.objective(&inputs, "y", &g);
                session.nudge(w, i, H);
                let numeric = (plus - minus) / (2.0 * H);
                let error = (a - numeric).abs() / a.abs().max(numeric.abs()).max(1e-3);
                assert!(
                    error < 1e-6,
                    "`{name}`[{i}]: backward {a}, central difference {numeric} (relative error {error:.1e})"
                );
            }
        }
    }
}

fn ints(name: &'static str, values: &[i64]) -> Attr {
    Attr::Ints(name, values.to_vec())
}

#[test]
fn conv_with_bias_pads_strides_and_groups() {
    Case::new(&[2, 4, 7, 6])
        .weight("w1", &[6, 4, 3, 3])
        .weight("w2", &[6])
        .node(
            "Conv",
            &["x", "w1", "w2"],
            &["a"],
            &[ints("pads", &[1, 1, 1, 1])],
        )
        .weight("w3", &[4, 3, 3, 2])
        .node(
            "Conv",
            &["a", "w3"],
            &["b"],
            &[
                Attr::Int("group", 2),
                ints("strides", &[2, 2]),
                ints("pads", &[0, 1, 1, 0]),
            ],
        )
        .weight("w4", &[4, 4, 2, 2])
        .node(
            "Conv",
            &["b", "w4"],
            &["y"],
            &[ints("dilations", &[2, 2]), ints("pads", &[1, 1, 1, 1])],
        )
        .check();
}

#[test]
fn a_convolution_and_the_normalisation_folded_into_it() {
    // Conv -> BatchNormalization -> SiLU (fused: the statistics fold into the kernel), a
    // biased 1x1 convolution in two groups (its columns are its input), normalised too,
    // a normalisation whose input a second node also reads (not fused), Conv -> Relu.
    Case::new(&[2, 4, 5, 5])
        .weight("w1", &[6, 4, 3, 3])
        .node("Conv", &["x", "w1"], &["a"], &[ints("pads", &[1, 1, 1, 1])])
        .weight("w2", &[6])
        .weight("w3", &[6])
        .weight("mean1", &[6])
        .positive("var1", &[6])
        .node(
            "BatchNormalization",
            &["a", "w2", "w3", "mean1", "var1"],
            &["b"],
            &[Attr::Float("epsilon", 1e-3)],
        )
        .node("Sigmoid", &["b"], &["s"], &[])
        .node("Mul", &["s", "b"], &["c"], &[])
        .weight("w4", &[4, 3, 1, 1])
        .weight("w5", &[4])
        .node("Conv", &["c", "w4", "w5"], &["d"], &[Attr::Int("group", 2)])
        .weight("w6", &[4])
        .weight("w7", &[4])
        .weight("mean2", &[4])
        .positive("var2", &[4])
        .node(
            "BatchNormalization",
            &["d", "w6", "w7", "mean2", "var2"],
            &["e"],
            &[],
        )
        .weight("w8", &[4, 4, 1, 1])
        .node("Conv", &["e", "w8"], &["f"], &[])
        .node(
            "BatchNormalization",
            &["f", "w6", "w7", "mean2", "var2"],
            &["g"],
            &[],
        )
        .node("Add", &["g", "f"], &["h"], &[])
        .weight("w9", &[3, 4, 2, 2])
        .node("Conv", &["h", "w9"], &["i"], &[ints("strides", &[2, 2])])
        .node("Relu", &["i"], &["y"], &[])
        .check();
}

#[test]
fn gemm_matmul_and_the_add_that_biases_it() {
    Case::new(&[3, 5])
        .weight("w1", &[4, 5])
        .weight("w2", &[4])
        .node(
            "Gemm",
            &["x", "w1", "w2"],
            &["a"],
            &[
                Attr::Int("transB", 1),
                Attr::Float("alpha", 0.7),
                Attr::Float("beta", 1.3),
            ],
        )
        .weight("w3", &[4, 3])
        .node("MatMul", &["a", "w3"], &["b"], &[])
        .weight("w4", &[3])
        .node("Add", &["b", "w4"], &["y"], &[])
        .check();
}

#[test]
fn batch_normalization_trains_scale_and_shift() {
    Case::new(&[2, 3, 4, 4])
        .weight("w1", &[3])
        .weight("w2", &[3])
        .weight("mean", &[3])
        .positive("var", &[3])
        .node(
            "BatchNormalization",
            &["x", "w1", "w2", "mean", "var"],
            &["y"],
            &[Attr::Float("epsilon", 1e-3)],
        )
        .check();
}

#[test]
fn batch_statistics_carry_gradients_to_every_input_of_their_channel() {
    // Conv -> BatchNormalization (batch statistics) -> SiLU, then a second normalisation
    // sharing the first one's running statistics whose input a second node also reads.
    Case::new(&[3, 2, 4, 4])
        .learning_statistics()
        .weight("w1", &[4, 2, 3, 3])
        .node("Conv", &["x", "w1"], &["a"], &[ints("pads", &[1, 1, 1, 1])])
        .weight("w2", &[4])
        .weight("w3", &[4])
        .weight("mean", &[4])
        .positive("var", &[4])
        .node(
            "BatchNormalization",
            &["a", "w2", "w3", "mean", "var"],
            &["b"],
            &[Attr::Float("epsilon", 1e-3)],
        )
        .node("Sigmoid", &["b"], &["s"], &[])
        .node("Mul", &["b", "s"], &["c"], &[])
        .weight("w4", &[4, 4, 1, 1])
        .node("Conv", &["c", "w4"], &["d"], &[])
        .weight("w5", &[4])
        .weight("w6", &[4])
        .node(
            "BatchNormalization",
            &["d", "w5", "w6", "mean", "var"],
            &["e"],
            &[],
        )
        .node("Add", &["e", "d"], &["y"], &[])
        .check();
    // Over a batch of feature vectors `[N, C]`.
    Case::new(&[5, 3])
        .learning_statistics()
        .weight("w1", &[3, 3])
        .node("MatMul", &["x", "w1"], &["a"], &[])
        .weight("w2", &[3])
        .weight("w3", &[3])
        .weight("mean", &[3])
        .positive("var", &[3])
        .node(
            "BatchNormalization",
            &["a", "w2", "w3", "mean", "var"],
            &["y"],
            &[],
        )
        .check();
}

#[test]
fn elementwise_operators_and_activations() {
    let mut case = Case::new(&[2, 3, 4]);
    case.weight("w1", &[3, 4])
        .node("Mul", &["x", "w1"], &["a"], &[]);
    // SiLU as exports write it: x * sigmoid(x).
    case.node("Sigmoid", &["a"], &["s"], &[])
        .node("Mul", &["a", "s"], &["silu"], &[]);
    case.node("Relu", &["silu"], &["r"], &[]);
    case.node("LeakyRelu", &["a"], &["l"], &[Attr::Float("alpha", 0.1)]);
    case.node("HardSwish", &["a"], &["hs"], &[]);
    case.node("HardSigmoid", &["a"], &["hg"], &[]);
    case.node("Tanh", &["a"], &["t"], &[]);
    case.node("Exp", &["t"], &["e"], &[]);
    case.node("Log", &["e"], &["lg"], &[]);
    case.node("Abs", &["a"], &["ab"], &[]);
    case.node("Neg", &["ab"], &["ng"], &[]);
    case.positive("w2", &[4])
        .node("Div", &["l", "w2"], &["d"], &[]);
    case.node("Sqrt", &["e"], &["sq"], &[]);
    case.node("Reciprocal", &["e"], &["rc"], &[]);
    case.builder.weight(
        "two",
        &Tensor {
            dims: vec![1],
            data: vec![2.0],
        },
    );
    case.node("Pow", &["t", "two"], &["p"], &[]);
    case.node("Sub", &["r", "ng"], &["s1"], &[]);
    case.node("Add", &["s1", "hs"], &["s2"], &[]);
    case.node("Add", &["s2", "hg"], &["s3"], &[]);
    case.node("Add", &["s3", "lg"], &["s4"], &[]);
    case.node("Add", &["s4", "d"], &["s5"], &[]);
    case.node("Add", &["s5", "sq"], &["s6"], &[]);
    case.node("Add", &["s6", "rc"], &["s7"], &[]);
    case.node("Add", &["s7", "p"], &["y"], &[]);
    case.check();
}

#[test]
fn clip_softmax_and_log_softmax() {
    let mut case = Case::new(&[3, 5]);
    case.weight("w1", &[5])
        .node("Mul", &["x", "w1"], &["a"], &[]);
    case.weight("lo", &[]).weight("hi", &[]);
    case.node("Clip", &["a", "lo", "hi"], &["c"], &[]);
    case.node("Softmax", &["a"], &["s"], &[Attr::Int("axis", 1)]);
    case.node("LogSoftmax", &["a"], &["l"], &[Attr::Int("axis", 0)]);
    case.node("Add", &["c", "s"], &["cs"], &[]);
    case.node("Add", &["cs", "l"], &["y"], &[]);
    case.check();
}

/// Checks `pool` (an op and its attributes) applied after a 1x1 convolution.
fn check_pool(op: &str, attrs: &[Attr]) {
    let mut case = Case::new(&[2, 2, 8, 8]);
    case.weight("w1", &[2, 2, 1, 1])
        .node("Conv", &["x", "w1"], &["a"], &[]);
    case.node(op, &["a"], &["y"], attrs);
    case.check();
}

#[test]
fn max_pools_of_every_form() {
    // SPPF: a 5x5 max pool with stride 1 and padding 2.
    check_pool(
        "MaxPool",
        &[ints("kernel_shape", &[5, 5]), ints("pads", &[2, 2, 2, 2])],
    );
    check_pool(
        "MaxPool",
        &[ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
    );
    check_pool(
        "MaxPool",
        &[
            ints("kernel_shape", &[3, 3]),
            ints("strides", &[2, 2]),
            ints("pads", &[1, 1, 1, 1]),
        ],
    );
    check_pool("GlobalMaxPool", &[]);
}

#[test]
fn average_pools_of_every_form() {
    check_pool(
        "AveragePool",
        &[ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
    );
    check_pool(
        "AveragePool",
        &[
            ints("kernel_shape", &[3, 3]),
            ints("pads", &[1, 1, 1, 1]),
            Attr::Int("count_include_pad", 1),
        ],
    );
    check_pool(
        "AveragePool",
        &[ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
    );
    check_pool(
        "AveragePool",
        &[ints("kernel_shape", &[3, 2]), ints("strides", &[1, 2])],
    );
    check_pool("GlobalAveragePool", &[]);
}

#[test]
fn sppf_reads_each_pool_twice() {
    let mut case = Case::new(&[1, 2, 6, 6]);
    case.weight("w1", &[2, 2, 1, 1])
        .node("Conv", &["x", "w1"], &["a"], &[]);
    let sppf = [ints("kernel_shape", &[5, 5]), ints("pads", &[2, 2, 2, 2])];
    case.node("MaxPool", &["a"], &["m1"], &sppf);
    case.node("MaxPool", &["m1"], &["m2"], &sppf);
    case.node("MaxPool", &["m2"], &["m3"], &sppf);
    case.node(
        "Concat",
        &["a", "m1", "m2", "m3"],
        &["y"],
        &[Attr::Int("axis", 1)],
    );
    case.check();
}

#[test]
fn nearest_resize_read_by_two_nodes() {
    // A YOLO neck: the upsampled map feeds a concat and an add; both gradients must sum.
    let mut case = Case::new(&[1, 2, 3, 4]);
    case.weight("w1", &[2, 2, 1, 1])
        .node("Conv", &["x", "w1"], &["a"], &[]);
    case.builder.weight(
        "roi",
        &Tensor {
            dims: vec![0],
            data: vec![],
        },
    );
    case.builder.weight(
        "scales",
        &Tensor {
            dims: vec![4],
            data: vec![1.0, 1.0, 2.0, 2.0],
        },
    );
    case.node("Resize", &["a", "roi", "scales"], &["up"], &[]);
    case.weight("w2", &[1, 2, 6, 8])
        .node("Mul", &["up", "w2"], &["m"], &[]);
    case.node("Concat", &["up", "m"], &["c"], &[Attr::Int("axis", 1)]);
    case.node("Add", &["up", "m"], &["s"], &[]);
    case.node("Concat", &["c", "s"], &["y"], &[Attr::Int("axis", 1)]);
    case.check();
}

#[test]
fn shape_arithmetic_and_layout_operators() {
    // DFL as Ultralytics writes it: reshape to [b, 4, 16, anchors], transpose, softmax.
    let mut case = Case::new(&[2, 8, 3]);
    case.weight("w1", &[8, 1])
        .node("Mul", &["x", "w1"], &["a"], &[]);
    case.node("Shape", &["a"], &["shape"], &[]);
    case.builder.ints("zero", &[1], &[0]);
    case.builder.ints("tail", &[2], &[2, 4]);
    case.node("Gather", &["shape", "zero"], &["batch"], &[]);
    case.node(
        "Concat",
        &["batch", "tail", "last"],
        &["target"],
        &[Attr::Int("axis", 0)],
    );
    case.builder.ints("last", &[1], &[3]);
    case.node("Reshape", &["a", "target"], &["r"], &[]);
    case.node("Transpose", &["r"], &["t"], &[ints("perm", &[0, 3, 1, 2])]);
    case.node("Softmax", &["t"], &["s"], &[Attr::Int("axis", 1)]);
    case.builder.ints("axes", &[1], &[1]);
    case.node("Unsqueeze", &["s", "axes"], &["u"], &[]);
    case.node("Squeeze", &["u", "axes"], &["q"], &[]);
    case.builder.ints("split", &[2], &[1, 1]);
    case.node(
        "Split",
        &["q", "split"],
        &["h1", "h2"],
        &[Attr::Int("axis", 2)],
    );
    case.node("Sub", &["h1", "h2"], &["d"], &[]);
    case.builder.ints("starts", &[1], &[1]);
    case.builder.ints("ends", &[1], &[3]);
    case.builder.ints("slice_axes", &[1], &[1]);
    case.node(
        "Slice",
        &["d", "starts", "ends", "slice_axes"],
        &["sl"],
        &[],
    );
    case.builder.ints("pick", &[2], &[2, 0]);
    case.node("Gather", &["sl", "pick"], &["gt"], &[Attr::Int("axis", 3)]);
    case.node("Flatten", &["gt"], &["f"], &[Attr::Int("axis", 1)]);
    case.node("Identity", &["f"], &["i"], &[]);
    case.node("Dropout", &["i"], &["dr"], &[]);
    case.builder.ints("mean_axes", &[1], &[1]);
    case.node(
        "ReduceMean",
        &["a"],
        &["rm"],
        &[ints("axes", &[2]), Attr::Int("keepdims", 0)],
    );
    case.node("ReduceSum", &["rm", "mean_axes"], &["rs"], &[]);
    case.node("Unsqueeze", &["rs", "mean_axes"], &["rs2"], &[]);
    case.node("Mul", &["dr", "rs2"], &["y"], &[]);
    case.check();
}

/// A small CNN classifier: Conv-BN-ReLU, pool, Gemm head (and a trailing Softmax).
fn classifier(classes: usize) -> crate::media::Model {
    let mut r = Random(7);
    let mut b = ModelBuilder::new("classifier");
    b.input("image", &[None, Some(3), Some(8), Some(8)]);
    b.weight("conv.w", &r.tensor(&[4, 3, 3, 3]));
    b.weight("conv.b", &r.tensor(&[4]));
    b.weight(
        "bn.scale",
        &Tensor {
            dims: vec![4],
            data: vec![1.0; 4],
        },
    );
    b.weight("bn.shift", &Tensor::zeros(vec![4]));
    b.weight("bn.mean", &Tensor::zeros(vec![4]));
    b.weight(
        "bn.var",
        &Tensor {
            dims: vec![4],
            data: vec![1.0; 4],
        },
    );
    b.weight("fc.w", &r.tensor(&[classes, 4]));
    b.weight("fc.b", &Tensor::zeros(vec![classes]));
    b.node(
        "Conv",
        &["image", "conv.w", "conv.b"],
        &["c"],
        &[ints("pads", &[1, 1, 1, 1])],
    );
    b.node(
        "BatchNormalization",
        &["c", "bn.scale", "bn.shift", "bn.mean", "bn.var"],
        &["n"],
        &[],
    );
    b.node("Relu", &["n"], &["r"], &[]);
    b.node("GlobalAveragePool", &["r"], &["g"], &[]);
    b.node("Flatten", &["g"], &["f"], &[]);
    b.node(
        "Gemm",
        &["f", "fc.w", "fc.b"],
        &["logits"],
        &[Attr::Int("transB", 1)],
    );
    b.node(
        "Softmax",
        &["logits"],
        &["probabilities"],
        &[Attr::Int("axis", 1)],
    );
    b.output("probabilities", &[None, Some(classes)]);
    b.build().expect("a valid model")
}

/// Images whose class is the channel that is brightest.
fn batch(r: &mut Random, n: usize) -> (Tensor, Tensor) {
    let mut images = r.tensor(&[n, 3, 8, 8]);
    let mut classes = Vec::new();
    for i in 0..n {
        let class = i % 3;
        for v in &mut images.data[(i * 3 + class) * 64..][..64] {
            *v += 1.5;
        }
        classes.push(class as f32);
    }
    (
        images,
        Tensor {
            dims: vec![n],
            data: classes,
        },
    )
}

fn train(model: &crate::media::Model, options: Options, steps: usize) -> (Session, Vec<f64>) {
    let mut session = Session::open(model, options).expect("opens");
    let mut r = Random(11);
    let mut losses = Vec::new();
    for _ in 0..steps {
        let (images, classes) = batch(&mut r, 12);
        session
            .forward(&[("image".into(), images)], &["logits".into()])
            .expect("forward");
        losses.push(
            session
                .backward_loss("logits", Loss::CrossEntropy, &classes)
                .expect("backward"),
        );
        session.step(None).expect("step");
    }
    (session, losses)
}

#[test]
fn the_loss_goes_down_on_a_classifier_with_either_optimizer() {
    let model = classifier(3);
    for optimizer in [Optimizer::adamw(), Optimizer::sgd(0.9)] {
        let options = Options {
            optimizer,
            learning_rate: 0.05,
            weight_decay: 1e-4,
            ..Options::default()
        };
        let (session, losses) = train(&model, options, 40);
        let first: f64 = losses[..5].iter().sum::<f64>() / 5.0;
        let last: f64 = losses[35..].iter().sum::<f64>() / 5.0;
        assert!(
            last < 0.5 * first,
            "{optimizer:?}: the loss went from {first:.3} to {last:.3}"
        );
        assert_eq!(session.steps(), 40);
    }
}

#[test]
fn a_pass_past_its_deadline_stops_at_the_next_node_and_the_next_pass_runs() {
    let mut session = Session::open(&classifier(3), Options::default()).expect("opens");
    let (images, classes) = batch(&mut Random(5), 6);
    let feed = || [("image".to_string(), images.clone())];
    let logits = ["logits".to_string()];
    session.set_deadline(Some(std::time::Instant::now()));
    let err = session.forward(&feed(), &logits).expect_err("stopped");
    assert!(
        err.message
            .contains("stopped before it: the call's deadline passed")
            && err.message.starts_with("node `"),
        "{err}"
    );
    // A forward that ran before the deadline leaves a backward that stops too.
    session.set_deadline(None);
    session.forward(&feed(), &logits).expect("no deadline");
    session.set_deadline(Some(std::time::Instant::now()));
    let err = session
        .backward_loss("logits", Loss::CrossEntropy, &classes)
        .expect_err("stopped");
    assert!(err.message.contains("deadline passed"), "{err}");
    // A later deadline lets the next call through.
    session.set_deadline(Some(
        std::time::Instant::now() + std::time::Duration::from_secs(60),
    ));
    session
        .forward(&feed(), &logits)
        .expect("within its deadline");
    session
        .backward_loss("logits", Loss::CrossEntropy, &classes)
        .expect("within its deadline");
    session.step(None).expect("step");
}

#[test]
fn every_loss_has_the_gradient_of_its_value() {
    let mut r = Random(3);
    let logits = r.tensor(&[4, 3]);
    let classes = Tensor {
        dims: vec![4],
        data: vec![0.0, 2.0, 1.0, 2.0],
    };
    let mut binary = r.tensor(&[4, 3]);
    binary
        .data
        .iter_mut()
        .for_each(|v| *v = if *v > 0.0 { 1.0 } else { 0.0 });
    let mut real = r.tensor(&[4, 3]);
    real.data.iter_mut().for_each(|v| *v *= 3.0);
    for (loss, target) in [
        (Loss::CrossEntropy, &classes),
        (Loss::BceWithLogits, &binary),
        (Loss::Mse, &real),
        (Loss::L1, &real),
        (Loss::SmoothL1, &real),
    ] {
        let x = Dense::from_vec(
            logits.data.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            (4, 3),
            &Device::Cpu,
        )
        .unwrap();
        let var = candle_core::Var::from_tensor(&x).unwrap();
        let value = loss
            .compute(var.as_tensor(), &target.dims, &target.data)
            .unwrap();
        let grads = value.backward().unwrap();
        let analytic = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for i in 0..12 {
            let at = |delta: f64| {
                let mut data = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
                data[i] += delta;
                let t = Dense::from_vec(data, (4, 3), &Device::Cpu).unwrap();
                loss.compute(&t, &target.dims, &target.data)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
            let error =
                (analytic[i] - numeric).abs() / analytic[i].abs().max(numeric.abs()).max(1e-3);
            assert!(
                error < 1e-5,
                "{loss:?}[{i}]: backward {} vs {numeric}",
                analytic[i]
            );
        }
    }
}

#[test]
fn frozen_weights_are_byte_identical_after_training() {
    let model = classifier(3);
    let options = Options {
        trainable: Trainable::Head,
        freeze: vec!["fc.b".into()],
        learning_rate: 0.05,
        ..Options::default()
    };
    let (session, _) = train(&model, options, 5);
    assert_eq!(session.trainable(), ["fc.w"]);
    let trained = session.export().expect("exports");
    let before = &model.proto().graph.as_ref().unwrap().initializer;
    let after = &trained.proto().graph.as_ref().unwrap().initializer;
    for init in before {
        let out = after.iter().find(|t| t.name == init.name).expect("kept");
        if init.name == "fc.w" {
            assert_ne!(out, init, "the trained weight moved");
        } else {
            assert_eq!(out, init, "`{}` changed", init.name);
        }
    }
}

#[test]
fn the_exported_model_runs_as_the_engine_computed_it() {
    let model = classifier(3);
    let options = Options {
        learning_rate: 0.05,
        ..Options::default()
    };
    let (mut session, _) = train(&model, options, 5);
    let (images, _) = batch(&mut Random(5), 4);
    assert_backends_agree(&mut session, "image", "probabilities", &images);
}

/// The per-channel mean and unbiased variance of `t` (`[N, C, H, W]`).
fn channel_statistics(t: &Tensor) -> (Vec<f32>, Vec<f32>) {
    let (n, c) = (t.dims[0], t.dims[1]);
    let plane: usize = t.dims[2..].iter().product();
    let values = |k: usize| {
        (0..n).flat_map(move |i| {
            t.data[(i * c + k) * plane..][..plane]
                .iter()
                .map(|&v| v as f64)
        })
    };
    let count = (n * plane) as f64;
    (0..c)
        .map(|k| {
            let mean = values(k).sum::<f64>() / count;
            let var = values(k).map(|v| (v - mean).powi(2)).sum::<f64>() / (count - 1.0);
            (mean as f32, var as f32)
        })
        .unzip()
}

/// The initializer `name` of `model` as floats.
fn initializer(model: &Model, name: &str) -> Vec<f32> {
    let graph = model.proto().graph.as_ref().unwrap();
    let init = graph.initializer.iter().find(|t| t.name == name).unwrap();
    crate::train::value::from_proto(init, DType::F32)
        .unwrap()
        .float()
        .unwrap()
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .unwrap()
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    let near = a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-4 * x.abs().max(y.abs()).max(1.0));
    assert!(near, "{what}: {a:?} against {b:?}");
}

#[test]
fn learnt_statistics_follow_the_batches_and_are_exported() {
    let model = classifier(3);
    let options = Options {
        learning_rate: 0.05,
        ..Options::default()
    };
    let mut session = Session::open(&model, options.clone()).unwrap();
    let learn = |momentum| Statistics::Learn { momentum };
    // Momentum 0: the running statistics become the batch's.
    assert_eq!(session.set_statistics(learn(Some(0.0))).unwrap(), 1);
    let (images, classes) = batch(&mut Random(3), 6);
    let outputs = session
        .forward(
            &[("image".into(), images.clone())],
            &["c".into(), "logits".into()],
        )
        .unwrap();
    let (mean, var) = channel_statistics(&outputs[0].1);
    let exported = session.export().unwrap();
    assert_close(&initializer(&exported, "bn.mean"), &mean, "running mean");
    assert_close(&initializer(&exported, "bn.var"), &var, "running variance");
    // The node's own momentum (ONNX's default 0.9, the node having none).
    session.set_statistics(learn(None)).unwrap();
    let (images, _) = batch(&mut Random(4), 6);
    let outputs = session
        .forward(&[("image".into(), images)], &["c".into(), "logits".into()])
        .unwrap();
    let (batch_mean, _) = channel_statistics(&outputs[0].1);
    let expected: Vec<f32> = mean
        .iter()
        .zip(&batch_mean)
        .map(|(old, new)| 0.9 * old + 0.1 * new)
        .collect();
    let exported = session.export().unwrap();
    assert_close(
        &initializer(&exported, "bn.mean"),
        &expected,
        "momentum 0.9",
    );
    // Training with them, then the inference form: ONNX Runtime and tract compute what
    // the engine does with the statistics it learnt.
    session
        .forward(&[("image".into(), images_of(7))], &["logits".into()])
        .unwrap();
    session
        .backward_loss("logits", Loss::CrossEntropy, &classes)
        .unwrap();
    session.step(None).unwrap();
    assert_eq!(session.set_statistics(Statistics::Frozen).unwrap(), 0);
    assert_backends_agree(&mut session, "image", "probabilities", &images_of(8));
    // A normalisation whose scale and shift are frozen keeps its statistics, byte for
    // byte; a momentum outside [0, 1) is refused.
    let frozen = Options {
        freeze: vec!["bn".into()],
        ..options
    };
    let mut session = Session::open(&model, frozen).unwrap();
    assert_eq!(session.set_statistics(learn(None)).unwrap(), 0);
    session
        .forward(&[("image".into(), images_of(9))], &["logits".into()])
        .unwrap();
    let exported = session.export().unwrap();
    assert_eq!(initializer(&exported, "bn.mean"), [0.0; 4]);
    let err = session.set_statistics(learn(Some(1.5))).unwrap_err();
    assert!(err.message.contains("[0, 1)"), "{err}");
}

fn images_of(seed: u64) -> Tensor {
    batch(&mut Random(seed), 6).0
}

#[test]
fn an_unsupported_operator_is_refused_with_its_node() {
    let mut b = ModelBuilder::new("odd");
    b.input("x", &[Some(1), Some(4)]);
    b.node("Einsum", &["x"], &["y"], &[]);
    b.output("y", &[]);
    let err = Session::open(&b.build().unwrap(), Options::default())
        .err()
        .expect("refused");
    assert!(
        err.message.contains("node `Einsum_0` is a `Einsum`"),
        "{err}"
    );
    assert!(
        err.message.contains("Conv"),
        "lists what is supported: {err}"
    );
}

#[test]
fn a_shared_weight_is_untied_and_constants_train() {
    let mut b = ModelBuilder::new("shared");
    b.input("x", &[Some(2), Some(3)]);
    b.weight(
        "w",
        &Tensor {
            dims: vec![3, 3],
            data: vec![0.1; 9],
        },
    );
    b.node("MatMul", &["x", "w"], &["a"], &[]);
    b.node("MatMul", &["a", "w"], &["y"], &[]);
    b.output("y", &[]);
    let session = Session::open(&b.build().unwrap(), Options::default()).unwrap();
    assert_eq!(session.trainable(), ["w", "w.2"]);
}

#[test]
fn a_non_finite_loss_changes_nothing() {
    let model = classifier(3);
    let mut session = Session::open(&model, Options::default()).unwrap();
    let mut r = Random(1);
    let (images, _) = batch(&mut r, 3);
    session
        .forward(&[("image".into(), images)], &["logits".into()])
        .unwrap();
    let target = Tensor {
        dims: vec![3, 3],
        data: vec![f32::NAN; 9],
    };
    let err = session
        .backward_loss("logits", Loss::Mse, &target)
        .unwrap_err();
    assert!(err.message.contains("the loss is NaN"), "{err}");
    assert!(session.step(None).is_err(), "nothing was accumulated");
    assert_eq!(session.export().unwrap().proto(), model.proto());
}

#[test]
fn the_memory_cap_refuses_a_large_batch_with_advice() {
    let model = classifier(3);
    let options = Options {
        memory_cap: Some(64 << 10),
        ..Options::default()
    };
    let mut session = Session::open(&model, options).unwrap();
    let mut r = Random(2);
    let (small, _) = batch(&mut r, 1);
    session
        .forward(&[("image".into(), small)], &["logits".into()])
        .expect("one image fits");
    let (large, _) = batch(&mut r, 64);
    let err = session
        .forward(&[("image".into(), large)], &["logits".into()])
        .unwrap_err();
    assert!(err.message.contains("lower `batch_size`"), "{err}");
}

#[test]
fn bad_calls_say_what_to_do() {
    let model = classifier(3);
    let mut session = Session::open(&model, Options::default()).unwrap();
    let classes = Tensor {
        dims: vec![2],
        data: vec![0.0, 1.0],
    };
    let err = session
        .backward_loss("logits", Loss::CrossEntropy, &classes)
        .unwrap_err();
    assert!(err.message.contains("run `forward`"), "{err}");
    let err = session.forward(&[], &["logits".into()]).unwrap_err();
    assert!(err.message.contains("input `image` is missing"), "{err}");
    let mut r = Random(4);
    let (images, _) = batch(&mut r, 2);
    let err = session
        .forward(&[("image".into(), images.clone())], &["nope".into()])
        .unwrap_err();
    assert!(err.message.contains("no value named `nope`"), "{err}");
    session
        .forward(&[("image".into(), images)], &["logits".into()])
        .unwrap();
    let bad = Tensor {
        dims: vec![2],
        data: vec![0.0, 7.0],
    };
    let err = session
        .backward_loss("logits", Loss::CrossEntropy, &bad)
        .unwrap_err();
    assert!(err.message.contains("not a class index below 3"), "{err}");
    let err = Session::open(
        &model,
        Options {
            trainable: Trainable::Prefixes(vec!["zz".into()]),
            ..Options::default()
        },
    )
    .err()
    .unwrap();
    assert!(err.message.contains("is named by"), "{err}");
    assert!(super::super::graph::matches_prefix(
        "model.1.conv.weight",
        "model.1"
    ));
    assert!(!super::super::graph::matches_prefix(
        "model.10.conv.weight",
        "model.1"
    ));
    assert!(super::super::graph::matches_prefix("fc.b", "fc.b"));
}

/// The engine's forward against the active ONNX backend's and tract's on the same
/// exported model: the operators mean what ONNX says they mean.
fn assert_backends_agree(session: &mut Session, input: &str, output: &str, batch: &Tensor) {
    let [(_, engine)] = session
        .forward(&[(input.into(), batch.clone())], &[output.into()])
        .unwrap()
        .try_into()
        .unwrap();
    let bytes = session.export().unwrap().to_bytes();
    let reloaded = crate::media::Model::from_bytes("exported", &bytes).unwrap();
    let mut backend = reloaded
        .session(&Default::default())
        .expect("the active backend loads it");
    let outputs = backend.run(&[(input, batch)]).expect("runs");
    let close = |a: &[f32], b: &[f32]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-4 * x.abs().max(y.abs()).max(1e-2))
    };
    let worst = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    assert!(
        close(&outputs[0].1.data, &engine.data),
        "backend vs engine: worst difference {}",
        worst(&outputs[0].1.data, &engine.data)
    );
    use tract_onnx::prelude::*;
    let plan = tract_onnx::onnx()
        .model_for_read(&mut bytes.as_slice())
        .unwrap()
        .with_input_fact(0, f32::fact(batch.dims.clone()).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let tensor = tract_onnx::prelude::Tensor::from_shape(&batch.dims, &batch.data).unwrap();
    let out = plan.run(tvec!(tensor.into())).unwrap();
    let tract_out: Vec<f32> = out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect();
    assert!(
        close(&tract_out, &engine.data),
        "tract vs engine: worst difference {}",
        worst(&tract_out, &engine.data)
    );
}

#[test]
fn a_trained_yolov8_shaped_detector_exports_what_the_engine_computes() {
    // Conv-BN-SiLU, C2f (Split, Add, Concat), SPPF (padded MaxPool), nearest Resize, the
    // DFL head (Reshape, Transpose, Softmax, a fixed Conv, anchor arithmetic), Sigmoid.
    let model = crate::media::zoo::yolov8n(3, 64).unwrap();
    let session = trained_detector(&model, &["head.dfl"], [2, 7, 84]);
    assert!(
        !session
            .trainable()
            .iter()
            .any(|w| w.starts_with("head.dfl")),
        "frozen"
    );
}

#[test]
fn a_trained_yolov5_shaped_detector_exports_what_the_engine_computes() {
    // A 6x6 stem, C3 blocks, the anchor-based head in five dimensions (Reshape,
    // Transpose, Sigmoid, Split, Pow, broadcast Mul and Add with the grids).
    let model = crate::media::zoo::yolov5n(3, 64).unwrap();
    trained_detector(&model, &[], [2, 252, 8]);
}

/// Trains `model` a few steps towards zeros on random images (its output of `dims`)
/// with `frozen` weights; asserts the loss falls and that ONNX Runtime and tract compute
/// what the engine does.
fn trained_detector(model: &Model, frozen: &[&str], dims: [usize; 3]) -> Session {
    let options = Options {
        freeze: frozen.iter().map(|f| f.to_string()).collect(),
        learning_rate: 1e-3,
        ..Options::default()
    };
    let mut session = Session::open(model, options).unwrap();
    let images = Random(9).tensor(&[2, 3, 64, 64]);
    let mut loss = || {
        let [(_, out)] = session
            .forward(&[("images".into(), images.clone())], &["output0".into()])
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(out.dims, dims);
        let loss = session
            .backward_loss("output0", Loss::Mse, &Tensor::zeros(out.dims.clone()))
            .unwrap();
        session.step(None).unwrap();
        loss
    };
    let before = loss();
    let after = (0..4).map(|_| loss()).last().unwrap();
    assert!(after < before, "the loss falls: {before} -> {after}");
    assert_backends_agree(&mut session, "images", "output0", &images);
    session
}

#[test]
fn weights_in_constant_nodes_train_like_initializers() {
    // A PaddlePaddle head: MatMul + Add, both operands held in Constant nodes.
    let mut b = ModelBuilder::new("paddle");
    b.input("x", &[None, Some(4)]);
    let mut r = Random(6);
    b.weight("fc_0.w_0", &r.tensor(&[4, 3]));
    b.weight("fc_0.b_0", &r.tensor(&[3]));
    b.node("MatMul", &["x", "fc_0.w_0"], &["m"], &[]);
    b.node("Add", &["m", "fc_0.b_0"], &["logits"], &[]);
    b.output("logits", &[None, Some(3)]);
    let mut proto = b.build().unwrap().proto().clone();
    let graph = proto.graph.as_mut().unwrap();
    let constants: Vec<_> = graph.initializer.drain(..).collect();
    for (i, tensor) in constants.into_iter().enumerate() {
        let name = tensor.name.clone();
        graph.node.insert(
            i,
            tract_onnx::pb::NodeProto {
                name: format!("const_{i}"),
                op_type: "Constant".into(),
                output: vec![name],
                attribute: vec![tract_onnx::pb::AttributeProto {
                    name: "value".into(),
                    r#type: tract_onnx::pb::attribute_proto::AttributeType::Tensor as i32,
                    t: Some(tensor),
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
    }
    let model = crate::media::Model::from_proto("paddle", proto).unwrap();
    let mut session = Session::open(
        &model,
        Options {
            learning_rate: 0.1,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(session.trainable(), ["fc_0.w_0", "fc_0.b_0"]);
    let x = r.tensor(&[6, 4]);
    let classes = Tensor {
        dims: vec![6],
        data: vec![0.0, 1.0, 2.0, 0.0, 1.0, 2.0],
    };
    let mut losses = Vec::new();
    for _ in 0..20 {
        session
            .forward(&[("x".into(), x.clone())], &["logits".into()])
            .unwrap();
        losses.push(
            session
                .backward_loss("logits", Loss::CrossEntropy, &classes)
                .unwrap(),
        );
        session.step(None).unwrap();
    }
    assert!(losses[19] < losses[0], "{losses:?}");
    assert_backends_agree(&mut session, "x", "logits", &x);
}

#[test]
fn a_kernel_wider_than_its_input_reads_padding_only() {
    // A 5x5 kernel with padding 2 on a map one pixel wide (MobileNet at small inputs).
    Case::new(&[1, 2, 5, 1])
        .weight("w1", &[3, 2, 5, 5])
        .node("Conv", &["x", "w1"], &["y"], &[ints("pads", &[2, 2, 2, 2])])
        .check();
}

#[test]
fn what_trains_by_name_head_and_freeze() {
    let model = classifier(3);
    let open = |trainable: Trainable, freeze: &[&str]| {
        let freeze = freeze.iter().map(|f| f.to_string()).collect();
        Session::open(
            &model,
            Options {
                trainable,
                freeze,
                ..Options::default()
            },
        )
        .unwrap()
        .trainable()
    };
    assert_eq!(
        open(Trainable::Prefixes(vec!["bn".into()]), &[]),
        ["bn.scale", "bn.shift"],
        "statistics never train"
    );
    assert_eq!(
        open(Trainable::Head, &["fc"]),
        ["bn.scale", "bn.shift"],
        "the last layer with something unfrozen"
    );
    assert_eq!(open(Trainable::All, &["conv", "bn"]), ["fc.w", "fc.b"]);
}

#[test]
fn forward_returns_constants_and_refuses_what_it_cannot_compute() {
    let model = classifier(3);
    let mut session = Session::open(&model, Options::default()).unwrap();
    let (images, _) = batch(&mut Random(8), 2);
    let out = session
        .forward(
            &[("image".into(), images.clone())],
            &["bn.mean".into(), "logits".into()],
        )
        .unwrap();
    assert_eq!(out[0].1.data, [0.0; 4]);
    let mut b = ModelBuilder::new("two-inputs");
    b.input("a", &[Some(2)]).input("b", &[Some(2)]);
    b.node("Add", &["a", "b"], &["y"], &[]);
    b.output("y", &[]);
    let mut session = Session::open(
        &b.build().unwrap(),
        Options {
            trainable: Trainable::All,
            ..Options::default()
        },
    );
    assert!(
        session.as_mut().is_err(),
        "nothing to train is refused at open"
    );
}
