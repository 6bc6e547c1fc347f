//! The component glue: the `estimation` exports over the host's `inference` interface.

use std::cell::RefCell;
use std::collections::BTreeMap;

use sedna_plugin_sdk::Params;
use sedna_plugin_sdk::estimator::inference::{
    self as host, Dataset, Frame, Graph, GraphExecutionContext, NamedTensor, Placement, Preprocess,
    Tensor, TensorType,
};
use sedna_plugin_sdk::estimator::training::{
    self, BatchStatistics, Loss, Optimizer, Options as TrainingOptions,
};
use sedna_plugin_sdk::estimator::{Detections, Guest, Level, Metric, Param, Prediction, log};

use crate::conventions::{Conventions, Head, Port};
use crate::decode::{self, Candidate};
use crate::metrics::{self, Truth};
use crate::train::{self, Settings};
use crate::yolo;

/// The job parameter naming the model to load at `init` (Sedna's `MODEL_URL`).
const MODEL_URL: &str = "model_url";

/// An output's dimensions and values.
type Output = (Vec<u32>, Vec<f32>);

struct Loaded {
    conventions: Conventions,
    params: Vec<Param>,
    graph: Graph,
    context: GraphExecutionContext,
}

/// What a training sample should produce.
enum Target {
    Class(usize),
    /// Boxes in the image's pixels.
    Boxes(Vec<([f32; 4], u32)>),
}

/// What the head's loss needs beside the output: a YOLOv8 head's box distributions (the
/// value its DFL reads, when the graph has one), a YOLOv5 head's anchors.
enum HeadExtra {
    Nothing,
    Distributions(String),
    Anchors(yolo::v5::Anchors),
}

/// A training sample: its index in the data set, its target, where the image lands in
/// the model input and, when only the model's own head trains, the features the head
/// reads (computed once).
struct TrainingSample {
    index: u32,
    target: Target,
    placement: Placement,
    features: Option<Tensor>,
}

impl TrainingSample {
    /// The sample's boxes in model-input pixels, after `motion` (an augmentation's) when
    /// given; none for a class label.
    fn input_boxes(&self, motion: Option<&host::Motion>, size: (f32, f32)) -> Vec<([f32; 4], u32)> {
        let Target::Boxes(boxes) = &self.target else {
            return Vec::new();
        };
        let boxes = match motion {
            Some(m) => train::moved(
                boxes,
                [m.scale_x, m.scale_y, m.shift_x, m.shift_y],
                size.0,
                size.1,
            ),
            None => boxes.clone(),
        };
        let p = &self.placement;
        boxes
            .into_iter()
            .map(|([x1, y1, x2, y2], class)| {
                let to_input = |x: f32, y: f32| (x * p.scale_x + p.pad_x, y * p.scale_y + p.pad_y);
                let ((x1, y1), (x2, y2)) = (to_input(x1, y1), to_input(x2, y2));
                ([x1, y1, x2, y2], class)
            })
            .collect()
    }
}

#[derive(Default)]
struct State {
    params: Vec<Param>,
    model: Option<Loaded>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::default();
}

fn describe(error: host::Error) -> String {
    error.data()
}

fn floats(tensor: &Tensor) -> Vec<f32> {
    tensor
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn tensor(dims: &[u32], values: &[f32]) -> Tensor {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Tensor::new(dims, TensorType::Fp32, &bytes)
}

fn ports(infos: Vec<host::ValueInfo>) -> Vec<Port> {
    infos
        .into_iter()
        .map(|i| Port {
            name: i.name,
            dims: i.dimensions,
        })
        .collect()
}

impl Loaded {
    fn new(graph: Graph, params: &[Param]) -> Result<Self, String> {
        let metadata: BTreeMap<String, String> = graph.metadata().into_iter().collect();
        let conventions = Conventions::resolve(
            &metadata,
            &Params::new(params),
            &ports(graph.inputs()),
            &ports(graph.outputs()),
        )?;
        let context = graph.init_execution_context(&[]).map_err(describe)?;
        Ok(Loaded {
            conventions,
            params: params.to_vec(),
            graph,
            context,
        })
    }

    /// The same conventions over another graph (after training or `set-weights`).
    fn with_graph(&self, graph: Graph) -> Result<Self, String> {
        let context = graph.init_execution_context(&[]).map_err(describe)?;
        Ok(Loaded {
            conventions: self.conventions.clone(),
            params: self.params.clone(),
            graph,
            context,
        })
    }

    fn preprocess(&self) -> Preprocess {
        let c = &self.conventions;
        Preprocess {
            width: c.width,
            height: c.height,
            letterbox: c.letterbox,
            mean: c.mean.to_vec(),
            std: c.std.to_vec(),
            layout: if c.nhwc {
                host::Layout::Nhwc
            } else {
                host::Layout::Nchw
            },
        }
    }

    /// Runs `context` on the frame; returns the output named `wanted`, kept on the host.
    fn compute(
        &self,
        context: &GraphExecutionContext,
        frame: &Frame,
        wanted: &str,
    ) -> Result<Tensor, String> {
        let input = frame.to_tensor(&self.preprocess()).map_err(describe)?;
        let outputs = context
            .compute(vec![NamedTensor {
                name: self.conventions.input.clone(),
                tensor: input,
            }])
            .map_err(describe)?;
        outputs
            .into_iter()
            .find(|o| o.name == wanted)
            .map(|o| o.tensor)
            .ok_or_else(|| format!("the model returned no output `{wanted}`"))
    }

    /// Runs `context` on the frame; returns the dimensions and values of output `wanted`.
    fn run(
        &self,
        context: &GraphExecutionContext,
        frame: &Frame,
        wanted: &str,
    ) -> Result<Output, String> {
        let output = self.compute(context, frame, wanted)?;
        Ok((output.dimensions(), floats(&output)))
    }

    fn predict(&self, frame: &Frame) -> Result<Prediction, String> {
        let c = &self.conventions;
        let (dims, values) = self.run(&self.context, frame, &c.output)?;
        let classes = c.class_names.len();
        let scores = |values: Vec<f32>| -> Result<Vec<f32>, String> {
            if values.len() != classes {
                return Err(format!(
                    "output `{}` holds {} values for {classes} classes",
                    c.output,
                    values.len()
                ));
            }
            Ok(values)
        };
        let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        let candidates = match c.head {
            Head::Softmax => {
                let mut probabilities = vec![0.0; values.len()];
                decode::softmax(&values, &mut probabilities);
                return Ok(Prediction::ClassScores(scores(probabilities)?));
            }
            Head::Sigmoid => {
                return Ok(Prediction::ClassScores(scores(
                    values.into_iter().map(decode::sigmoid).collect(),
                )?));
            }
            Head::Probabilities => return Ok(Prediction::ClassScores(scores(values)?)),
            Head::Grid => decode::grid(
                &values,
                &dims,
                classes,
                (c.width, c.height),
                c.obj_threshold,
            ),
            Head::YoloV5 => decode::yolov5(&values, &dims, classes, c.obj_threshold),
            Head::YoloV8 => decode::yolov8(&values, &dims, classes, c.obj_threshold),
        }
        .map_err(|e| format!("output `{}`: {e}", c.output))?;
        let placement = frame.placement(&self.preprocess());
        let (width, height) = (frame.width() as f32, frame.height() as f32);
        let mut detections = Detections::new();
        for candidate in decode::nms(candidates, c.nms_threshold) {
            let [x1, y1, x2, y2] = candidate.corners;
            let (x1, y1) = to_source(&placement, x1, y1, width, height);
            let (x2, y2) = to_source(&placement, x2, y2, width, height);
            detections.push([x1, y1, x2, y2], candidate.score, candidate.class);
        }
        Ok(Prediction::Detections(detections))
    }

    /// Metrics on a dataset; a sample whose image or label is unusable is skipped and
    /// counted (`skipped`), never fatal.
    fn evaluate(&self, data: &Dataset) -> Result<Vec<Metric>, String> {
        let c = &self.conventions;
        let classes = c.class_names.len();
        let mut skipped = 0u32;
        let mut images = Vec::new();
        let mut pairs = Vec::new();
        for i in 0..data.len() {
            let sample = data
                .frame(i)
                .map_err(describe)
                .and_then(|frame| Ok((self.predict(&frame)?, data.label(i).map_err(describe)?)));
            let outcome = sample.and_then(|(prediction, label)| match (prediction, label) {
                (Prediction::Detections(found), host::Label::Boxes(truth)) => {
                    images.push((candidates(&found), boxes(&truth)));
                    Ok(())
                }
                (Prediction::ClassScores(scores), host::Label::Class(class)) => {
                    let predicted = scores
                        .iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .map_or(0, |(i, _)| i);
                    pairs.push((predicted, c.class_index(&class)?));
                    Ok(())
                }
                _ => Err("the label's kind does not match the model's task".to_string()),
            });
            if let Err(why) = outcome {
                skipped += 1;
                if skipped <= 3 {
                    log(Level::Warn, &format!("evaluate: sample {i} skipped: {why}"));
                }
            }
        }
        let metric = |name: &str, values: Vec<f64>| Metric {
            name: name.to_string(),
            values,
        };
        let mut report = if c.head.is_detection() {
            let r = metrics::detection(&images, classes);
            vec![
                metric("precision", r.precision),
                metric("recall", r.recall),
                metric("f1_score", r.f1),
                metric("ap", r.ap),
                metric("map", vec![r.map]),
                metric("samples", vec![images.len() as f64]),
            ]
        } else {
            let r = metrics::classification(&pairs, classes);
            vec![
                metric("accuracy", vec![r.accuracy]),
                metric("precision", r.precision),
                metric("recall", r.recall),
                metric("f1_score", r.f1),
                metric("samples", vec![pairs.len() as f64]),
            ]
        };
        report.push(metric("skipped", vec![skipped as f64]));
        Ok(report)
    }

    /// The samples `train` can use, with their targets; the others are skipped and counted.
    fn training_samples(
        &self,
        data: &Dataset,
        features: Option<(&GraphExecutionContext, &str)>,
    ) -> (Vec<TrainingSample>, u32) {
        let c = &self.conventions;
        let mut samples = Vec::new();
        let mut skipped = 0;
        for index in 0..data.len() {
            let sample = data.frame(index).map_err(describe).and_then(|frame| {
                let target = match data.label(index).map_err(describe)? {
                    host::Label::Boxes(truth) if c.head.is_detection() => {
                        Target::Boxes(boxes(&truth))
                    }
                    host::Label::Class(class) if !c.head.is_detection() => {
                        Target::Class(c.class_index(&class)?)
                    }
                    _ => return Err("the label's kind does not match the model's task".to_string()),
                };
                let features = match features {
                    Some((context, name)) => Some(self.compute(context, &frame, name)?),
                    None => None,
                };
                Ok(TrainingSample {
                    index,
                    target,
                    placement: frame.placement(&self.preprocess()),
                    features,
                })
            });
            match sample {
                Ok(sample) => samples.push(sample),
                Err(why) => skipped += skip("train", index, why, skipped),
            }
        }
        (samples, skipped)
    }

    /// Trains the model on the host's engine: per epoch a seeded shuffle, then per batch a
    /// forward, the head's loss (on the host, or here as output gradients) and a step.
    fn train(&self, data: &Dataset) -> Result<(Loaded, Vec<f64>, u32), String> {
        let c = &self.conventions;
        let params = Params::new(&self.params);
        let settings = Settings::from_params(&params, &c.trainable)?;
        // Only the model's own head trains: its features come from the inference backend,
        // once, and the engine runs the head alone.
        let cached = c
            .features
            .as_deref()
            .filter(|_| !settings.trainable_by_job && !c.trainable.is_empty());
        let context = match cached {
            Some(name) => Some(
                self.graph
                    .init_execution_context(&[name.to_string()])
                    .map_err(describe)?,
            ),
            None => None,
        };
        let (samples, skipped) = self.training_samples(data, context.as_ref().zip(cached));
        if cached.is_some() && settings.augment.is_some() {
            log(
                Level::Warn,
                "augmentation is off: the head trains on features computed once (set `trainable` to train through them)",
            );
        }
        if samples.is_empty() {
            return Err(format!(
                "none of the {} training samples is usable (see the warnings above)",
                data.len()
            ));
        }
        let options = TrainingOptions {
            trainable: settings.trainable.clone(),
            freeze: settings.freeze.clone(),
            optimizer: match settings.optimizer {
                train::Optimizer::Sgd => Optimizer::Sgd,
                train::Optimizer::AdamW => Optimizer::Adamw,
            },
            learning_rate: settings.learning_rate,
            weight_decay: settings.weight_decay,
            momentum: settings.momentum,
            threads: settings.threads,
        };
        let mut session = training::open(&self.graph, &options).map_err(describe)?;
        // The DFL's bins are fixed in Ultralytics' models: they stay so here.
        let bins: Vec<String> = session
            .trainable()
            .into_iter()
            .filter(|w| w.contains("dfl.conv"))
            .collect();
        if c.head == Head::YoloV8 && !bins.is_empty() {
            let options = TrainingOptions {
                freeze: options.freeze.iter().cloned().chain(bins).collect(),
                ..options
            };
            session = training::open(&self.graph, &options).map_err(describe)?;
        }
        if let train::BatchNorm::Learn { momentum } = settings.batch_norm {
            let learning = session
                .set_batch_statistics(BatchStatistics::Learn(momentum))
                .map_err(describe)?;
            log(
                Level::Info,
                &format!("{learning} normalisations learn their statistics from the batches"),
            );
        }
        let fed = cached.unwrap_or(&c.input).to_string();
        let extra = match c.head {
            Head::YoloV8 => match yolo::v8::distributions(&self.graph.nodes()) {
                Some(name) => HeadExtra::Distributions(name),
                None => {
                    log(
                        Level::Warn,
                        "no DFL (a Softmax read by a Conv) in the graph: the boxes train without the distribution focal loss",
                    );
                    HeadExtra::Nothing
                }
            },
            Head::YoloV5 => HeadExtra::Anchors(yolo::v5::Anchors::parse(params.get("anchors"))?),
            _ => HeadExtra::Nothing,
        };
        let batch_size = settings.batch_size as usize;
        let per_epoch = samples.len().div_ceil(batch_size) as u64;
        let total = per_epoch * settings.epochs as u64;
        let mut order: Vec<u32> = (0..samples.len() as u32).collect();
        let mut random = settings.seed ^ 0x5EED_5EED;
        let mut step = 0;
        let mut losses = Vec::with_capacity(settings.epochs as usize);
        for epoch in 1..=settings.epochs {
            train::shuffle(&mut order, &mut random);
            let (mut sum, mut seen) = (0.0, 0);
            for chunk in order.chunks(batch_size) {
                let batch: Vec<&TrainingSample> =
                    chunk.iter().map(|&k| &samples[k as usize]).collect();
                let seed = settings.seed ^ ((epoch as u64) << 32) ^ step;
                let augment = settings.augment.map(|a| host::Augmentation {
                    flip: a.flip,
                    hue: a.hue,
                    saturation: a.saturation,
                    value: a.value,
                    scale: a.scale,
                    translate: a.translate,
                    seed,
                });
                let loss = self.train_batch(&session, data, &fed, &extra, &batch, augment)?;
                session
                    .step(settings.learning_rate_at(step, per_epoch, total))
                    .map_err(describe)?;
                step += 1;
                sum += loss * batch.len() as f64;
                seen += batch.len();
                session.report(epoch, settings.epochs, sum / seen as f64);
            }
            let mean = sum / samples.len() as f64;
            if !mean.is_finite() {
                return Err(format!(
                    "training diverged in epoch {epoch} (the loss is {mean}): lower `learning_rate` (now {})",
                    settings.learning_rate
                ));
            }
            log(
                Level::Info,
                &format!("epoch {epoch}/{}: loss {mean:.5}", settings.epochs),
            );
            losses.push(mean);
        }
        let graph = session.to_graph().map_err(describe)?;
        Ok((self.with_graph(graph)?, losses, skipped))
    }

    /// Forward and backward of one batch (each image changed by `augment` when given, with
    /// a seed of its own); returns its mean loss.
    fn train_batch(
        &self,
        session: &training::Session,
        data: &Dataset,
        fed: &str,
        extra: &HeadExtra,
        batch: &[&TrainingSample],
        augment: Option<host::Augmentation>,
    ) -> Result<f64, String> {
        let c = &self.conventions;
        let classes = c.class_names.len();
        let mut fresh = Vec::new();
        let mut boxes = Vec::with_capacity(batch.len());
        for (i, sample) in batch.iter().enumerate() {
            if sample.features.is_some() {
                boxes.push(sample.input_boxes(None, (0.0, 0.0)));
                continue;
            }
            let frame = data.frame(sample.index).map_err(describe)?;
            let size = (frame.width() as f32, frame.height() as f32);
            let (frame, motion) = match augment {
                Some(spec) => {
                    let seed = spec.seed ^ (i as u64).wrapping_mul(0x9E37_79B9);
                    let (changed, motion) = frame.augmented(host::Augmentation { seed, ..spec });
                    (changed, Some(motion))
                }
                None => (frame, None),
            };
            boxes.push(sample.input_boxes(motion.as_ref(), size));
            fresh.push(frame.to_tensor(&self.preprocess()).map_err(describe)?);
        }
        let parts: Vec<&Tensor> = match batch
            .iter()
            .map(|s| s.features.as_ref())
            .collect::<Option<Vec<_>>>()
        {
            Some(cached) => cached,
            None => fresh.iter().collect(),
        };
        let input = training::batch(&parts).map_err(describe)?;
        let distributions = match extra {
            HeadExtra::Distributions(name) => Some(name.as_str()),
            _ => None,
        };
        let wanted: Vec<String> = std::iter::once(c.output.clone())
            .chain(distributions.map(str::to_string))
            .collect();
        let outputs = session
            .forward(
                vec![NamedTensor {
                    name: fed.to_string(),
                    tensor: input,
                }],
                &wanted,
            )
            .map_err(describe)?;
        let output = &outputs[0].tensor;
        let classes_of = || -> Vec<usize> {
            batch
                .iter()
                .map(|s| match s.target {
                    Target::Class(class) => class,
                    Target::Boxes(_) => 0,
                })
                .collect()
        };
        let host_loss = |loss: Loss, target: Tensor| {
            session
                .backward_loss(&c.output, loss, &target)
                .map_err(describe)
        };
        let gradient = |(loss, gradient): train::LossAndGradient| -> Result<f64, String> {
            let tensor = tensor(&output.dimensions(), &gradient);
            session
                .backward(vec![NamedTensor {
                    name: c.output.clone(),
                    tensor,
                }])
                .map_err(describe)?;
            Ok(loss)
        };
        match c.head {
            Head::Softmax => {
                let targets: Vec<f32> = classes_of().into_iter().map(|k| k as f32).collect();
                host_loss(
                    Loss::CrossEntropy,
                    tensor(&[targets.len() as u32], &targets),
                )
            }
            Head::Sigmoid => {
                let values: usize = output.dimensions().iter().map(|&d| d as usize).product();
                if values != batch.len() * classes {
                    return Err(format!(
                        "output `{}` holds {values} values for {} samples of {classes} classes: check `class_names`",
                        c.output,
                        batch.len()
                    ));
                }
                let mut targets = vec![0.0; batch.len() * classes];
                for (i, k) in classes_of().into_iter().enumerate() {
                    targets[i * classes + k] = 1.0;
                }
                host_loss(Loss::BceWithLogits, tensor(&output.dimensions(), &targets))
            }
            Head::Probabilities => gradient(train::probabilities(
                &floats(output),
                classes,
                &classes_of(),
            )?),
            Head::Grid => gradient(train::grid(
                &floats(output),
                &output.dimensions(),
                classes,
                (c.width, c.height),
                &boxes,
            )?),
            Head::YoloV8 => {
                let logits = outputs
                    .get(1)
                    .map(|d| (floats(&d.tensor), d.tensor.dimensions()));
                let found = yolo::v8::loss(
                    &floats(output),
                    &output.dimensions(),
                    classes,
                    (c.width, c.height),
                    &boxes,
                    logits
                        .as_ref()
                        .map(|(l, dims)| yolo::v8::Distributions { logits: l, dims }),
                )?;
                let mut gradients = vec![NamedTensor {
                    name: c.output.clone(),
                    tensor: tensor(&output.dimensions(), &found.output),
                }];
                if let (Some(g), Some(name), Some((_, dims))) =
                    (found.distributions, distributions, &logits)
                {
                    gradients.push(NamedTensor {
                        name: name.to_string(),
                        tensor: tensor(dims, &g),
                    });
                }
                session.backward(gradients).map_err(describe)?;
                Ok(found.loss)
            }
            Head::YoloV5 => {
                let HeadExtra::Anchors(anchors) = extra else {
                    return Err("a yolov5 head trains with its anchors".into());
                };
                gradient(yolo::v5::loss(
                    &floats(output),
                    &output.dimensions(),
                    classes,
                    (c.width, c.height),
                    &boxes,
                    anchors,
                )?)
            }
        }
    }
}

/// Logs the first few skipped samples; returns 1 to count this one.
fn skip(call: &str, index: u32, why: String, skipped_so_far: u32) -> u32 {
    if skipped_so_far < 3 {
        log(
            Level::Warn,
            &format!("{call}: sample {index} skipped: {why}"),
        );
    }
    1
}

fn to_source(p: &Placement, x: f32, y: f32, width: f32, height: f32) -> (f32, f32) {
    (
        ((x - p.pad_x) / p.scale_x).clamp(0.0, width),
        ((y - p.pad_y) / p.scale_y).clamp(0.0, height),
    )
}

fn candidates(found: &Detections) -> Vec<Candidate> {
    found
        .rows()
        .map(|(corners, score, class)| Candidate {
            corners,
            score,
            class,
        })
        .collect()
}

fn boxes(truth: &Detections) -> Truth {
    truth
        .rows()
        .map(|(corners, _, class)| (corners, class))
        .collect()
}

fn with_model<T>(f: impl FnOnce(&Loaded) -> Result<T, String>) -> Result<T, String> {
    STATE.with(|state| match &state.borrow().model {
        Some(model) => f(model),
        None => Err(format!(
            "no model is loaded: call `load` or pass the `{MODEL_URL}` parameter"
        )),
    })
}

fn replace_model(model: Loaded) {
    STATE.with(|state| state.borrow_mut().model = Some(model));
}

pub struct Estimator;

impl Guest for Estimator {
    fn init(params: Vec<Param>) -> Result<(), String> {
        let url = Params::new(&params).get(MODEL_URL).map(str::to_string);
        STATE.with(|state| {
            *state.borrow_mut() = State {
                params,
                model: None,
            }
        });
        match url {
            Some(url) => Self::load(url),
            None => Ok(()),
        }
    }

    fn load(model_url: String) -> Result<(), String> {
        let graph = host::load_by_name(&model_url).map_err(describe)?;
        let params = STATE.with(|state| state.borrow().params.clone());
        let model = Loaded::new(graph, &params).map_err(|e| format!("{model_url}: {e}"))?;
        replace_model(model);
        Ok(())
    }

    fn save(model_path: String) -> Result<(), String> {
        with_model(|m| m.graph.save(&model_path).map_err(describe))
    }

    fn predict(frame: &Frame) -> Result<Prediction, String> {
        with_model(|m| m.predict(frame))
    }

    fn evaluate(data: &Dataset) -> Result<Vec<Metric>, String> {
        with_model(|m| m.evaluate(data))
    }

    fn train(train_data: &Dataset, valid_data: Option<&Dataset>) -> Result<Vec<Metric>, String> {
        let (trained, losses, skipped) = with_model(|m| m.train(train_data))?;
        let mut report = vec![
            Metric {
                name: "loss".into(),
                values: losses,
            },
            Metric {
                name: "samples".into(),
                values: vec![(train_data.len() - skipped) as f64],
            },
            Metric {
                name: "skipped".into(),
                values: vec![skipped as f64],
            },
        ];
        if let Some(valid) = valid_data {
            for metric in trained.evaluate(valid)? {
                report.push(Metric {
                    name: format!("valid_{}", metric.name),
                    values: metric.values,
                });
            }
        }
        replace_model(trained);
        Ok(report)
    }

    fn get_weights() -> Result<Vec<NamedTensor>, String> {
        with_model(|m| {
            let names = &m.conventions.trainable;
            if names.is_empty() {
                return Err("the model names no trainable weights (`sedna.trainable`)".into());
            }
            m.graph.weights(names).map_err(describe)
        })
    }

    fn set_weights(weights: Vec<NamedTensor>) -> Result<(), String> {
        let model = with_model(|m| m.with_graph(m.graph.with_weights(weights).map_err(describe)?))?;
        replace_model(model);
        Ok(())
    }
}

sedna_plugin_sdk::estimator::export_estimator!(Estimator);
