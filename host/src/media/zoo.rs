//! Models the project writes itself with the operator sets of real exports: a YOLOv8-style
//! detector of any size (Conv-BN-SiLU, C2f, SPPF, an upsample-and-concat neck, a DFL head
//! decoding boxes as Ultralytics' exports do), YOLOv8n's sizes among them, a YOLOv5n-shaped
//! detector (C3 blocks, an anchor-based head), and a small CNN classifier. Weights are seeded pseudo-random (uniform kernels, identity
//! normalisations): the shapes and the work are real, the knowledge is what training puts
//! there. The training engine's benchmarks and tests use them, and the helmet example
//! trains its detector from one.

use super::builder::{Attr, ModelBuilder};
use super::{InferError, Model, Tensor};

/// Writes a graph block by block, naming values and weights in order, each under the
/// part of the model it belongs to (`backbone.`, `neck.`, `head.`: prefixes that
/// `trainable` and `freeze` can name).
struct Net {
    b: ModelBuilder,
    count: usize,
    seed: u64,
    part: &'static str,
    /// Kernels are uniform in `±sqrt(gain / fan_in)`.
    gain: f32,
}

impl Net {
    fn new(name: &str, seed: u64, gain: f32) -> Self {
        Net {
            b: ModelBuilder::new(name),
            count: 0,
            seed,
            part: "",
            gain,
        }
    }

    fn name(&mut self, what: &str) -> String {
        self.count += 1;
        format!("{}{what}.{}", self.part, self.count)
    }

    /// Uniform in `[-scale, scale)`.
    fn random(&mut self, dims: &[usize], scale: f32) -> Tensor {
        let len = dims.iter().product();
        let data = (0..len)
            .map(|_| {
                self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = self.seed;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                ((z >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale
            })
            .collect();
        Tensor {
            dims: dims.to_vec(),
            data,
        }
    }

    fn constant(&mut self, what: &str, tensor: &Tensor) -> String {
        let name = self.name(what);
        self.b.weight(&name, tensor);
        name
    }

    fn node(&mut self, op: &str, inputs: &[&str], attrs: &[Attr]) -> String {
        let out = self.name(&op.to_lowercase());
        self.b.node(op, inputs, &[&out], attrs);
        out
    }

    /// Conv (no bias) + BatchNormalization + SiLU, as Ultralytics' `Conv` block, padded to
    /// keep the size (at stride 1).
    fn conv(&mut self, x: &str, c_in: usize, c_out: usize, k: usize, stride: usize) -> String {
        self.conv_padded(x, (c_in, c_out), k, stride, k / 2)
    }

    fn conv_padded(
        &mut self,
        x: &str,
        (c_in, c_out): (usize, usize),
        k: usize,
        stride: usize,
        pad: usize,
    ) -> String {
        let scale = (self.gain / (c_in * k * k) as f32).sqrt();
        let w = self.random(&[c_out, c_in, k, k], scale);
        let w = self.constant("conv.weight", &w);
        let pad = pad as i64;
        let y = self.node(
            "Conv",
            &[x, &w],
            &[
                Attr::Ints("kernel_shape", vec![k as i64, k as i64]),
                Attr::Ints("strides", vec![stride as i64, stride as i64]),
                Attr::Ints("pads", vec![pad; 4]),
            ],
        );
        let ones = Tensor {
            dims: vec![c_out],
            data: vec![1.0; c_out],
        };
        let scale = self.constant("bn.weight", &ones);
        let shift = self.constant("bn.bias", &Tensor::zeros(vec![c_out]));
        let mean = self.constant("bn.running_mean", &Tensor::zeros(vec![c_out]));
        let var = self.constant("bn.running_var", &ones);
        let n = self.node(
            "BatchNormalization",
            &[&y, &scale, &shift, &mean, &var],
            &[Attr::Float("epsilon", 1e-3)],
        );
        let s = self.node("Sigmoid", &[&n], &[]);
        self.node("Mul", &[&n, &s], &[])
    }

    /// A plain 1x1 Conv with bias (a head's last layer).
    fn conv_bias(&mut self, x: &str, c_in: usize, c_out: usize, bias: f32) -> String {
        self.conv_biases(x, c_in, &vec![bias; c_out])
    }

    /// A plain 1x1 Conv with a bias of its own per output channel.
    fn conv_biases(&mut self, x: &str, c_in: usize, biases: &[f32]) -> String {
        let c_out = biases.len();
        let w = self.random(&[c_out, c_in, 1, 1], (1.0 / c_in as f32).sqrt());
        let w = self.constant("conv.weight", &w);
        let b = Tensor {
            dims: vec![c_out],
            data: biases.to_vec(),
        };
        let b = self.constant("conv.bias", &b);
        self.node("Conv", &[x, &w, &b], &[])
    }

    fn floats(&mut self, what: &str, dims: &[usize], data: Vec<f32>) -> String {
        self.constant(
            what,
            &Tensor {
                dims: dims.to_vec(),
                data,
            },
        )
    }

    fn ints(&mut self, what: &str, values: &[i64]) -> String {
        let name = self.name(what);
        self.b.ints(&name, &[values.len()], values);
        name
    }

    fn split(&mut self, x: &str, sizes: &[i64], axis: i64) -> Vec<String> {
        let split = self.ints("split", sizes);
        let outs: Vec<String> = sizes.iter().map(|_| self.name("split")).collect();
        let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
        self.b
            .node("Split", &[x, &split], &refs, &[Attr::Int("axis", axis)]);
        outs
    }

    fn concat(&mut self, parts: &[&str], axis: i64) -> String {
        self.node("Concat", parts, &[Attr::Int("axis", axis)])
    }

    /// C2f: a 1x1 conv split in two, `n` bottlenecks on the second half, all concatenated.
    fn c2f(&mut self, x: &str, c_in: usize, c_out: usize, n: usize, shortcut: bool) -> String {
        let c = c_out / 2;
        let y = self.conv(x, c_in, 2 * c, 1, 1);
        let halves = self.split(&y, &[c as i64, c as i64], 1);
        let mut parts = halves.clone();
        let mut last = halves[1].clone();
        for _ in 0..n {
            let a = self.conv(&last, c, c, 3, 1);
            let b = self.conv(&a, c, c, 3, 1);
            last = if shortcut {
                self.node("Add", &[&last, &b], &[])
            } else {
                b
            };
            parts.push(last.clone());
        }
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let cat = self.concat(&refs, 1);
        self.conv(&cat, (2 + n) * c, c_out, 1, 1)
    }

    /// C3 (YOLOv5's block): two 1x1 convs of half the channels, `n` bottlenecks (1x1 then
    /// 3x3) on the first, both concatenated and mixed by a 1x1 conv.
    fn c3(&mut self, x: &str, c_in: usize, c_out: usize, n: usize, shortcut: bool) -> String {
        let c = c_out / 2;
        let mut a = self.conv(x, c_in, c, 1, 1);
        let b = self.conv(x, c_in, c, 1, 1);
        for _ in 0..n {
            let y = self.conv(&a, c, c, 1, 1);
            let y = self.conv(&y, c, c, 3, 1);
            a = if shortcut {
                self.node("Add", &[&a, &y], &[])
            } else {
                y
            };
        }
        let cat = self.concat(&[&a, &b], 1);
        self.conv(&cat, 2 * c, c_out, 1, 1)
    }

    /// SPPF: three 5x5 max pools in a row (stride 1, padding 2), concatenated.
    fn sppf(&mut self, x: &str, c_in: usize, c_out: usize) -> String {
        let c = c_in / 2;
        let y = self.conv(x, c_in, c, 1, 1);
        let pool = [
            Attr::Ints("kernel_shape", vec![5, 5]),
            Attr::Ints("pads", vec![2; 4]),
        ];
        let m1 = self.node("MaxPool", &[&y], &pool);
        let m2 = self.node("MaxPool", &[&m1], &pool);
        let m3 = self.node("MaxPool", &[&m2], &pool);
        let cat = self.concat(&[&y, &m1, &m2, &m3], 1);
        self.conv(&cat, 4 * c, c_out, 1, 1)
    }

    fn upsample(&mut self, x: &str) -> String {
        let roi = self.constant("roi", &Tensor::zeros(vec![0]));
        let scales = Tensor {
            dims: vec![4],
            data: vec![1.0, 1.0, 2.0, 2.0],
        };
        let scales = self.constant("scales", &scales);
        self.node("Resize", &[x, &roi, &scales], &[])
    }
}

/// The sizes of a YOLOv8-style detector.
#[derive(Clone, Debug, PartialEq)]
pub struct Yolo {
    pub name: String,
    /// Class names, in output order.
    pub classes: Vec<String>,
    /// Input height and width in pixels, multiples of 32.
    pub height: usize,
    pub width: usize,
    /// Channels of the five backbone stages (strides 2 to 32).
    pub channels: [usize; 5],
    /// Bottlenecks in the backbone's four C2f blocks.
    pub depth: [usize; 4],
    /// Bottlenecks in each of the neck's four C2f blocks.
    pub neck_depth: usize,
    /// Channels of the head's box branch and class branch.
    pub head: (usize, usize),
    /// Seeds the weights.
    pub seed: u64,
    /// Kernels are uniform in `±sqrt(kernel_gain / fan_in)`: 6 is He's initialisation,
    /// which keeps the activations' scale through the layers (to train from random
    /// weights); 2, a third of its variance, keeps a random network's outputs small.
    pub kernel_gain: f32,
}

impl Yolo {
    /// YOLOv8n's sizes (Ultralytics' `yolov8n.yaml`) for `classes` classes of input `size`
    /// x `size`, classes named `class0`, `class1`, ...
    pub fn v8n(classes: usize, size: usize) -> Self {
        Yolo {
            name: "yolov8n-shaped".into(),
            classes: (0..classes).map(|i| format!("class{i}")).collect(),
            height: size,
            width: size,
            channels: [16, 32, 64, 128, 256],
            depth: [1, 2, 2, 1],
            neck_depth: 1,
            head: (64, 64.max(classes.min(100))),
            seed: 0x5EED,
            kernel_gain: 2.0,
        }
    }
}

/// A YOLOv8n-shaped detector for `classes` classes on `size` x `size` RGB images
/// (`size` a multiple of 32): [`yolo`] of [`Yolo::v8n`].
pub fn yolov8n(classes: usize, size: usize) -> Result<Model, InferError> {
    yolo(&Yolo::v8n(classes, size))
}

/// A YOLOv8-style detector of `spec`'s sizes: input `images` `[N, 3, height, width]`,
/// output `output0` `[N, 4 + classes, anchors]` (centre, size in input pixels, then class
/// scores), the layout and metadata (`task`, `names`, `imgsz`, `stride`) of Ultralytics'
/// detection exports.
pub fn yolo(spec: &Yolo) -> Result<Model, InferError> {
    let (height, width, classes) = (spec.height, spec.width, spec.classes.len());
    check_size(&spec.name, height, width)?;
    let [c1, c2, c3, c4, c5] = spec.channels;
    let [d2, d3, d4, d5] = spec.depth;
    let n = spec.neck_depth;
    let mut net = Net::new(&spec.name, spec.seed, spec.kernel_gain);
    net.b
        .input("images", &[None, Some(3), Some(height), Some(width)]);
    net.part = "backbone.";
    let x = net.conv("images", 3, c1, 3, 2);
    let x = net.conv(&x, c1, c2, 3, 2);
    let x = net.c2f(&x, c2, c2, d2, true);
    let x = net.conv(&x, c2, c3, 3, 2);
    let p3 = net.c2f(&x, c3, c3, d3, true);
    let x = net.conv(&p3, c3, c4, 3, 2);
    let p4 = net.c2f(&x, c4, c4, d4, true);
    let x = net.conv(&p4, c4, c5, 3, 2);
    let x = net.c2f(&x, c5, c5, d5, true);
    let p5 = net.sppf(&x, c5, c5);
    net.part = "neck.";
    let up = net.upsample(&p5);
    let cat = net.concat(&[&up, &p4], 1);
    let n4 = net.c2f(&cat, c5 + c4, c4, n, false);
    let up = net.upsample(&n4);
    let cat = net.concat(&[&up, &p3], 1);
    let o3 = net.c2f(&cat, c4 + c3, c3, n, false);
    let down = net.conv(&o3, c3, c3, 3, 2);
    let cat = net.concat(&[&down, &n4], 1);
    let o4 = net.c2f(&cat, c3 + c4, c4, n, false);
    let down = net.conv(&o4, c4, c4, 3, 2);
    let cat = net.concat(&[&down, &p5], 1);
    let o5 = net.c2f(&cat, c4 + c5, c5, n, false);

    net.part = "head.";
    const REG: usize = 16;
    let (cb, cc) = spec.head;
    let mut levels = Vec::new();
    let mut anchors = Vec::new();
    let mut strides = Vec::new();
    for (feature, channels, stride) in [(&o3, c3, 8), (&o4, c4, 16), (&o5, c5, 32)] {
        let b = net.conv(feature, channels, cb, 3, 1);
        let b = net.conv(&b, cb, cb, 3, 1);
        let b = net.conv_bias(&b, cb, 4 * REG, 1.0);
        let c = net.conv(feature, channels, cc, 3, 1);
        let c = net.conv(&c, cc, cc, 3, 1);
        // Ultralytics' prior: about five objects of each class in a level's cells.
        let cells = (height / stride * (width / stride)) as f32;
        let prior = (5.0 / classes.max(1) as f32 / cells).ln();
        let c = net.conv_bias(&c, cc, classes, prior);
        let level = net.concat(&[&b, &c], 1);
        let shape = net.ints("shape", &[0, (4 * REG + classes) as i64, -1]);
        levels.push(net.node("Reshape", &[&level, &shape], &[]));
        for row in 0..height / stride {
            for col in 0..width / stride {
                anchors.push((col as f32 + 0.5, row as f32 + 0.5));
                strides.push(stride as f32);
            }
        }
    }
    let refs: Vec<&str> = levels.iter().map(String::as_str).collect();
    let all = net.concat(&refs, 2);
    let count = anchors.len();
    let parts = net.split(&all, &[(4 * REG) as i64, classes as i64], 1);
    // DFL: a softmax over 16 bins per side, their expectation by a fixed 1x1 conv.
    let shape = net.ints("shape", &[0, 4, REG as i64, count as i64]);
    let dist = net.node("Reshape", &[&parts[0], &shape], &[]);
    let dist = net.node(
        "Transpose",
        &[&dist],
        &[Attr::Ints("perm", vec![0, 2, 1, 3])],
    );
    let dist = net.node("Softmax", &[&dist], &[Attr::Int("axis", 1)]);
    let bins = Tensor {
        dims: vec![1, REG, 1, 1],
        data: (0..REG).map(|i| i as f32).collect(),
    };
    let bins = net.constant("dfl.conv.weight", &bins);
    let dist = net.node("Conv", &[&dist, &bins], &[]);
    let shape = net.ints("shape", &[0, 4, count as i64]);
    let dist = net.node("Reshape", &[&dist, &shape], &[]);
    let sides = net.split(&dist, &[2, 2], 1);
    let points = Tensor {
        dims: vec![1, 2, count],
        data: anchors
            .iter()
            .map(|a| a.0)
            .chain(anchors.iter().map(|a| a.1))
            .collect(),
    };
    let points = net.constant("anchors", &points);
    let top_left = net.node("Sub", &[&points, &sides[0]], &[]);
    let bottom_right = net.node("Add", &[&points, &sides[1]], &[]);
    let sum = net.node("Add", &[&top_left, &bottom_right], &[]);
    let half = net.constant(
        "half",
        &Tensor {
            dims: vec![1],
            data: vec![0.5],
        },
    );
    let centre = net.node("Mul", &[&sum, &half], &[]);
    let wh = net.node("Sub", &[&bottom_right, &top_left], &[]);
    let boxes = net.concat(&[&centre, &wh], 1);
    let strides = Tensor {
        dims: vec![1, 1, count],
        data: strides,
    };
    let strides = net.constant("strides", &strides);
    let boxes = net.node("Mul", &[&boxes, &strides], &[]);
    let scores = net.node("Sigmoid", &[&parts[1]], &[]);
    net.b.node(
        "Concat",
        &[&boxes, &scores],
        &["output0"],
        &[Attr::Int("axis", 1)],
    );
    net.b
        .output("output0", &[None, Some(4 + classes), Some(count)])
        .metadata("task", "detect")
        .metadata("stride", "32")
        .metadata("imgsz", &format!("[{height}, {width}]"))
        .metadata("names", &names(&spec.classes));
    net.b.build()
}

/// Detectors see in steps of 32 pixels.
fn check_size(name: &str, height: usize, width: usize) -> Result<(), InferError> {
    if !height.is_multiple_of(32) || !width.is_multiple_of(32) || height == 0 || width == 0 {
        return Err(InferError::new(
            super::ErrorKind::InvalidArgument,
            name,
            format!("an input of {height}x{width}: both sides must be multiples of 32"),
        ));
    }
    Ok(())
}

/// Ultralytics' `names`: the Python literal of a dict from class index to name.
fn names(classes: &[String]) -> String {
    let entries: Vec<String> = classes
        .iter()
        .enumerate()
        .map(|(i, name)| format!("{i}: '{name}'"))
        .collect();
    format!("{{{}}}", entries.join(", "))
}

/// YOLOv5's default anchors: width and height in input pixels, three per level of stride
/// 8, 16 and 32.
pub const YOLOV5_ANCHORS: [[[f32; 2]; 3]; 3] = [
    [[10.0, 13.0], [16.0, 30.0], [33.0, 23.0]],
    [[30.0, 61.0], [62.0, 45.0], [59.0, 119.0]],
    [[116.0, 90.0], [156.0, 198.0], [373.0, 326.0]],
];

/// A YOLOv5n-shaped detector (Ultralytics' classic, anchor-based `yolov5n.yaml`: a 6x6
/// stem, C3 blocks, SPPF, a PANet neck, the Detect head with [`YOLOV5_ANCHORS`]) for
/// `classes` classes on `size` x `size` RGB images. Input `images` `[N, 3, size, size]`,
/// output `output0` `[N, 3 x cells, 5 + classes]` decoded as the classic exports decode
/// it: per level, anchor and cell, the centre `(2σ - 0.5 + cell) x stride`, the size
/// `(2σ)² x anchor`, then the objectness and class scores after their sigmoid. Metadata
/// as those exports write it: `stride` and `names`, no `task`.
pub fn yolov5n(classes: usize, size: usize) -> Result<Model, InferError> {
    let name = "yolov5n-shaped";
    check_size(name, size, size)?;
    let mut net = Net::new(name, 0x5EED, 2.0);
    net.b
        .input("images", &[None, Some(3), Some(size), Some(size)]);
    let [c1, c2, c3, c4, c5] = [16, 32, 64, 128, 256];
    net.part = "backbone.";
    let x = net.conv_padded("images", (3, c1), 6, 2, 2);
    let x = net.conv(&x, c1, c2, 3, 2);
    let x = net.c3(&x, c2, c2, 1, true);
    let x = net.conv(&x, c2, c3, 3, 2);
    let p3 = net.c3(&x, c3, c3, 2, true);
    let x = net.conv(&p3, c3, c4, 3, 2);
    let p4 = net.c3(&x, c4, c4, 3, true);
    let x = net.conv(&p4, c4, c5, 3, 2);
    let x = net.c3(&x, c5, c5, 1, true);
    let x = net.sppf(&x, c5, c5);
    net.part = "neck.";
    let h5 = net.conv(&x, c5, c4, 1, 1);
    let up = net.upsample(&h5);
    let cat = net.concat(&[&up, &p4], 1);
    let x = net.c3(&cat, 2 * c4, c4, 1, false);
    let h4 = net.conv(&x, c4, c3, 1, 1);
    let up = net.upsample(&h4);
    let cat = net.concat(&[&up, &p3], 1);
    let o3 = net.c3(&cat, 2 * c3, c3, 1, false);
    let down = net.conv(&o3, c3, c3, 3, 2);
    let cat = net.concat(&[&down, &h4], 1);
    let o4 = net.c3(&cat, 2 * c3, c4, 1, false);
    let down = net.conv(&o4, c4, c4, 3, 2);
    let cat = net.concat(&[&down, &h5], 1);
    let o5 = net.c3(&cat, 2 * c4, c5, 1, false);

    net.part = "head.";
    let outputs = 5 + classes;
    let mut levels = Vec::new();
    let mut count = 0;
    for ((feature, channels), (stride, anchors)) in [(&o3, c3), (&o4, c4), (&o5, c5)]
        .into_iter()
        .zip([8usize, 16, 32].into_iter().zip(YOLOV5_ANCHORS))
    {
        let (rows, cols, na) = (size / stride, size / stride, anchors.len());
        // YOLOv5's priors: about 8 objects in a 640 image, classes at 0.6 / classes.
        let object = (8.0 / ((640 / stride) as f32).powi(2)).ln();
        let class = (0.6 / (classes as f32 - 0.99)).ln();
        let biases: Vec<f32> = (0..na * outputs)
            .map(|k| match k % outputs {
                4 => object,
                c if c > 4 => class,
                _ => 0.0,
            })
            .collect();
        let x = net.conv_biases(feature, channels, &biases);
        let shape = [0, na as i64, outputs as i64, rows as i64, cols as i64];
        let shape = net.ints("shape", &shape);
        let x = net.node("Reshape", &[&x, &shape], &[]);
        let perm = Attr::Ints("perm", vec![0, 1, 3, 4, 2]);
        let x = net.node("Transpose", &[&x], &[perm]);
        let x = net.node("Sigmoid", &[&x], &[]);
        let parts = net.split(&x, &[2, 2, (classes + 1) as i64], 4);
        let two = net.floats("two", &[1], vec![2.0]);
        let grid: Vec<f32> = (0..rows * cols)
            .flat_map(|k| [(k % cols) as f32 - 0.5, (k / cols) as f32 - 0.5])
            .collect();
        let grid = net.floats("grid", &[1, 1, rows, cols, 2], grid);
        let step = net.floats("stride", &[1], vec![stride as f32]);
        let xy = net.node("Mul", &[&parts[0], &two], &[]);
        let xy = net.node("Add", &[&xy, &grid], &[]);
        let xy = net.node("Mul", &[&xy, &step], &[]);
        let sizes: Vec<f32> = anchors.iter().flatten().copied().collect();
        let anchor_grid = net.floats("anchor_grid", &[1, na, 1, 1, 2], sizes);
        let wh = net.node("Mul", &[&parts[1], &two], &[]);
        let wh = net.node("Pow", &[&wh, &two], &[]);
        let wh = net.node("Mul", &[&wh, &anchor_grid], &[]);
        let y = net.concat(&[&xy, &wh, &parts[2]], 4);
        let shape = net.ints("shape", &[0, (na * rows * cols) as i64, outputs as i64]);
        levels.push(net.node("Reshape", &[&y, &shape], &[]));
        count += na * rows * cols;
    }
    let refs: Vec<&str> = levels.iter().map(String::as_str).collect();
    net.b
        .node("Concat", &refs, &["output0"], &[Attr::Int("axis", 1)]);
    let classes: Vec<String> = (0..classes).map(|i| format!("class{i}")).collect();
    net.b
        .output("output0", &[None, Some(count), Some(outputs)])
        .metadata("stride", "32")
        .metadata("names", &names(&classes));
    net.b.build()
}

/// A small CNN classifier: four Conv-BN-SiLU blocks (two of stride 2), global average
/// pooling and a Gemm head; input `image` `[N, 3, size, size]`, output `logits`.
pub fn cnn_classifier(classes: usize, size: usize) -> Result<Model, InferError> {
    let mut net = Net::new("cnn-classifier", 0x5EED, 2.0);
    net.b
        .input("image", &[None, Some(3), Some(size), Some(size)]);
    let x = net.conv("image", 3, 16, 3, 2);
    let x = net.conv(&x, 16, 32, 3, 1);
    let x = net.conv(&x, 32, 64, 3, 2);
    let x = net.conv(&x, 64, 64, 3, 1);
    let pooled = net.node("GlobalAveragePool", &[&x], &[]);
    let flat = net.node("Flatten", &[&pooled], &[Attr::Int("axis", 1)]);
    let w = net.random(&[classes, 64], 0.125);
    let w = net.constant("fc.weight", &w);
    let b = net.constant("fc.bias", &Tensor::zeros(vec![classes]));
    net.b.node(
        "Gemm",
        &[&flat, &w, &b],
        &["logits"],
        &[Attr::Int("transB", 1)],
    );
    net.b
        .output("logits", &[None, Some(classes)])
        .metadata("sedna.task", "classification")
        .metadata("sedna.head", "softmax")
        .metadata(
            "sedna.class_names",
            &(0..classes)
                .map(|i| format!("class{i}"))
                .collect::<Vec<_>>()
                .join(","),
        );
    net.b.build()
}
