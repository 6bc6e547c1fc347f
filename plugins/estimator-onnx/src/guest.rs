//! The component glue: the `estimation` exports over the host's `inference` interface.

use std::cell::RefCell;
use std::collections::BTreeMap;

use sedna_plugin_sdk::Params;
use sedna_plugin_sdk::estimator::inference::{
    self as host, Dataset, Frame, Graph, GraphExecutionContext, NamedTensor, Placement, Preprocess,
    Tensor, TensorType,
};
use sedna_plugin_sdk::estimator::{Detections, Guest, Level, Metric, Param, Prediction, log};

use crate::conventions::{Conventions, Head, Port};
use crate::decode::{self, Candidate};
use crate::metrics::{self, Truth};
use crate::train::{self, GridSample, Schedule};

/// The job parameter naming the model to load at `init` (Sedna's `MODEL_URL`).
const MODEL_URL: &str = "model_url";

/// An output's dimensions and values.
type Output = (Vec<u32>, Vec<f32>);

struct Loaded {
    conventions: Conventions,
    graph: Graph,
    context: GraphExecutionContext,
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
            graph,
            context,
        })
    }

    /// The same conventions over another graph (after training or `set-weights`).
    fn with_graph(&self, graph: Graph) -> Result<Self, String> {
        let context = graph.init_execution_context(&[]).map_err(describe)?;
        Ok(Loaded {
            conventions: self.conventions.clone(),
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

    /// Runs `context` on the frame; returns the outputs named `wanted`, in that order.
    fn run(
        &self,
        context: &GraphExecutionContext,
        frame: &Frame,
        wanted: &[&str],
    ) -> Result<Vec<Output>, String> {
        let input = frame.to_tensor(&self.preprocess()).map_err(describe)?;
        let outputs = context
            .compute(vec![NamedTensor {
                name: self.conventions.input.clone(),
                tensor: input,
            }])
            .map_err(describe)?;
        wanted
            .iter()
            .map(|name| {
                let output = outputs
                    .iter()
                    .find(|o| o.name == *name)
                    .ok_or_else(|| format!("the model returned no output `{name}`"))?;
                Ok((output.tensor.dimensions(), floats(&output.tensor)))
            })
            .collect()
    }

    fn predict(&self, frame: &Frame) -> Result<Prediction, String> {
        let c = &self.conventions;
        let [(dims, values)] = self
            .run(&self.context, frame, &[&c.output])?
            .try_into()
            .expect("one output asked for");
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

    /// The trainable head's weight and bias as a row-major `[outputs, features]` head,
    /// and how to write it back in the model's own shapes.
    fn head(&self) -> Result<(train::Head, Vec<u32>, bool), String> {
        let c = &self.conventions;
        let [weight_name, bias_name] = c.trainable.as_slice() else {
            return Err(
                "this model does not say which layer to fine-tune: set `sedna.trainable` to its head's weight,bias initializers and `sedna.features` to the value the head reads"
                    .into(),
            );
        };
        let weights = self
            .graph
            .weights(&[weight_name.clone(), bias_name.clone()])
            .map_err(describe)?;
        let dims = weights[0].tensor.dimensions();
        let (weight, bias) = (floats(&weights[0].tensor), floats(&weights[1].tensor));
        let outputs = bias.len();
        let (features, transposed) = match dims.as_slice() {
            [o, f, 1, 1] if *o as usize == outputs => (*f as usize, false),
            [o, f] if *o as usize == outputs => (*f as usize, false),
            [f, o] if *o as usize == outputs => (*f as usize, true),
            _ => {
                return Err(format!(
                    "`{weight_name}` is {dims:?}: a trainable head is a Gemm [outputs, features] or a 1x1 Conv [outputs, features, 1, 1] with {outputs} outputs"
                ));
            }
        };
        let weight = if transposed {
            transpose(&weight, features, outputs)
        } else {
            weight
        };
        let head = train::Head {
            outputs,
            features,
            weight,
            bias,
        };
        Ok((head, dims, transposed))
    }

    fn train(&self, data: &Dataset) -> Result<(Loaded, Vec<f64>, u32), String> {
        let c = &self.conventions;
        let Some(features) = c.features.as_deref() else {
            return Err("this model does not say which value its head reads: set `sedna.features` (and `sedna.trainable`)".into());
        };
        let (mut head, dims, transposed) = self.head()?;
        let context = self
            .graph
            .init_execution_context(&[features.to_string()])
            .map_err(describe)?;
        let schedule = Schedule {
            epochs: c.epochs,
            batch_size: c.batch_size,
            learning_rate: c.learning_rate,
            seed: c.seed,
        };
        let mut skipped = 0;
        let losses = if c.head == Head::Grid {
            let mut samples = Vec::new();
            for i in 0..data.len() {
                match self.grid_sample(&context, data, i, features) {
                    Ok(sample) => samples.push(sample),
                    Err(why) => skipped += skip("train", i, why, skipped),
                }
            }
            train::grid_detector(
                &mut head,
                &samples,
                c.class_names.len(),
                (c.width, c.height),
                &schedule,
            )?
        } else if c.head == Head::Softmax {
            let mut samples = Vec::new();
            for i in 0..data.len() {
                let sample = data.frame(i).map_err(describe).and_then(|frame| {
                    let [(_, values)] = self
                        .run(&context, &frame, &[features])?
                        .try_into()
                        .expect("one output asked for");
                    match data.label(i).map_err(describe)? {
                        host::Label::Class(class) => Ok((values, c.class_index(&class)?)),
                        host::Label::Boxes(_) => Err("a box label for a classifier".to_string()),
                    }
                });
                match sample {
                    Ok(sample) => samples.push(sample),
                    Err(why) => skipped += skip("train", i, why, skipped),
                }
            }
            train::softmax_classifier(&mut head, &samples, &schedule)?
        } else {
            return Err(format!(
                "fine-tuning supports the grid and softmax heads, not {:?}",
                c.head
            ));
        };
        let weight = if transposed {
            transpose(&head.weight, head.outputs, head.features)
        } else {
            head.weight
        };
        let updated = vec![
            NamedTensor {
                name: c.trainable[0].clone(),
                tensor: tensor(&dims, &weight),
            },
            NamedTensor {
                name: c.trainable[1].clone(),
                tensor: tensor(&[head.outputs as u32], &head.bias),
            },
        ];
        let graph = self.graph.with_weights(updated).map_err(describe)?;
        Ok((self.with_graph(graph)?, losses, skipped))
    }

    fn grid_sample(
        &self,
        context: &GraphExecutionContext,
        data: &Dataset,
        index: u32,
        features: &str,
    ) -> Result<GridSample, String> {
        let frame = data.frame(index).map_err(describe)?;
        let [(dims, values)] = self
            .run(context, &frame, &[features])?
            .try_into()
            .expect("one output asked for");
        let [1, _, rows, cols] = dims.as_slice() else {
            return Err(format!(
                "features `{features}` are {dims:?}, not [1, F, H, W]"
            ));
        };
        let host::Label::Boxes(truth) = data.label(index).map_err(describe)? else {
            return Err("a class label for a detector".into());
        };
        let placement = frame.placement(&self.preprocess());
        let boxes = boxes(&truth)
            .into_iter()
            .map(|([x1, y1, x2, y2], class)| {
                let to_input = |x: f32, y: f32| {
                    (
                        x * placement.scale_x + placement.pad_x,
                        y * placement.scale_y + placement.pad_y,
                    )
                };
                let ((x1, y1), (x2, y2)) = (to_input(x1, y1), to_input(x2, y2));
                ([x1, y1, x2, y2], class)
            })
            .collect();
        Ok(GridSample {
            features: values,
            rows: *rows as usize,
            cols: *cols as usize,
            boxes,
        })
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

fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| values[r * cols + c]))
        .collect()
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
