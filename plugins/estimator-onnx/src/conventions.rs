//! How a model is read and run: from its `metadata_props`, overridden by the job's
//! parameters (Sedna's names where Sedna has one).

use std::collections::BTreeMap;

use sedna_plugin_sdk::Params;

/// What the model's main output holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// Class logits, turned into probabilities with a softmax.
    Softmax,
    /// Independent class logits (multi-label), each through a sigmoid.
    Sigmoid,
    /// Class probabilities as they are.
    Probabilities,
    /// The project's grid head: `[1, 5 + C, H, W]` (see `decode::grid`).
    Grid,
    /// YOLOv5-style `[1, boxes, 5 + C]`.
    YoloV5,
    /// YOLOv8-style `[1, 4 + C, boxes]`.
    YoloV8,
}

impl Head {
    pub fn is_detection(self) -> bool {
        matches!(self, Head::Grid | Head::YoloV5 | Head::YoloV8)
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "softmax" => Head::Softmax,
            "sigmoid" => Head::Sigmoid,
            "probabilities" => Head::Probabilities,
            "grid" => Head::Grid,
            "yolov5" => Head::YoloV5,
            "yolov8" => Head::YoloV8,
            _ => return None,
        })
    }
}

/// A model input or output as the host describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Port {
    pub name: String,
    pub dims: Vec<Option<u32>>,
}

/// Everything the estimator needs to know about a model and the job's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Conventions {
    pub head: Head,
    pub class_names: Vec<String>,
    pub input: String,
    pub output: String,
    pub width: u32,
    pub height: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub nhwc: bool,
    pub letterbox: bool,
    pub obj_threshold: f32,
    pub nms_threshold: f32,
    /// The value the trainable head reads (for fine-tuning), and the head's weight and
    /// bias initializers.
    pub features: Option<String>,
    pub trainable: Vec<String>,
    pub epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f32,
    pub seed: u64,
}

/// The metadata keys (`sedna.<key>`) and parameters this estimator reads.
pub const KEYS: &[&str] = &[
    "task",
    "head",
    "class_names",
    "input",
    "output",
    "input_shape",
    "mean",
    "std",
    "layout",
    "letterbox",
    "features",
    "trainable",
];

impl Conventions {
    /// Reads the conventions; a parameter wins over the model's metadata.
    pub fn resolve(
        metadata: &BTreeMap<String, String>,
        params: &Params,
        inputs: &[Port],
        outputs: &[Port],
    ) -> Result<Self, String> {
        let setting = |key: &str| -> Option<String> {
            params
                .get(key)
                .map(str::to_string)
                .or_else(|| {
                    metadata
                        .get(&format!("sedna.{key}"))
                        .map(|v| v.trim().to_string())
                })
                .filter(|v| !v.is_empty())
        };
        let missing = |key: &str, what: &str| {
            format!(
                "the model does not say {what}: add `sedna.{key}` to its metadata_props or the job parameter `{key}`"
            )
        };

        let task = setting("task")
            .ok_or_else(|| missing("task", "its task (classification or detection)"))?;
        let default_head = match task.as_str() {
            "classification" => "softmax",
            "detection" => "grid",
            other => {
                return Err(format!(
                    "task `{other}` is not known: use `classification` or `detection`"
                ));
            }
        };
        let head_name = setting("head").unwrap_or_else(|| default_head.to_string());
        let head = Head::parse(&head_name).ok_or_else(|| {
            format!("head `{head_name}` is not known: use softmax, sigmoid, probabilities, grid, yolov5 or yolov8")
        })?;
        if head.is_detection() != (task == "detection") {
            return Err(format!("head `{head_name}` does not fit task `{task}`"));
        }

        let class_names: Vec<String> = setting("class_names")
            .ok_or_else(|| missing("class_names", "its class names"))?
            .split(',')
            .map(|c| c.trim().to_string())
            .collect();
        if class_names.iter().any(String::is_empty) {
            return Err(
                "`class_names` has an empty name: write them comma-separated, e.g. person,helmet"
                    .into(),
            );
        }

        let input = port(setting("input"), inputs, "input")?;
        let output = port(setting("output"), outputs, "output")?;
        let declared = &inputs
            .iter()
            .find(|p| p.name == input)
            .expect("found above")
            .dims;
        let layout = setting("layout");
        let nhwc = match layout.as_deref() {
            Some("nchw") => false,
            Some("nhwc") => true,
            Some(other) => return Err(format!("layout `{other}` is not known: use nchw or nhwc")),
            None => declared.len() == 4 && declared[3] == Some(3) && declared[1] != Some(3),
        };
        let (height, width) = match setting("input_shape") {
            Some(shape) => parse_shape(&shape)?,
            None => {
                let (h, w) = if nhwc { (1, 2) } else { (2, 3) };
                match (
                    declared.get(h).copied().flatten(),
                    declared.get(w).copied().flatten(),
                ) {
                    (Some(h), Some(w)) => (h, w),
                    _ => return Err(missing("input_shape", "its input size (height,width)")),
                }
            }
        };

        let (h_at, w_at) = if nhwc { (1, 2) } else { (2, 3) };
        let fixed = |at: usize| declared.get(at).copied().flatten();
        if fixed(h_at).is_some_and(|h| h != height) || fixed(w_at).is_some_and(|w| w != width) {
            return Err(format!(
                "`input_shape` {height},{width} does not fit the model's input `{input}` {}: use its size or leave `input_shape` out",
                shape(declared)
            ));
        }

        let channels = |key: &str, default: f32| -> Result<[f32; 3], String> {
            let Some(text) = setting(key) else {
                return Ok([default; 3]);
            };
            let values: Vec<f32> = text
                .split(',')
                .map(|v| v.trim().parse::<f32>())
                .collect::<Result<_, _>>()
                .map_err(|_| format!("`{key}` is {text:?}: expected three numbers r,g,b"))?;
            values
                .try_into()
                .map_err(|_| format!("`{key}` is {text:?}: expected three numbers r,g,b"))
        };
        let letterbox = match setting("letterbox").as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => return Err(format!("`letterbox` is {other:?}: expected true or false")),
        };

        Ok(Conventions {
            head,
            class_names,
            input,
            output,
            width,
            height,
            mean: channels("mean", 0.0)?,
            std: channels("std", 1.0)?,
            nhwc,
            letterbox,
            obj_threshold: params.unit("obj_threshold", 0.3)? as f32,
            nms_threshold: params.unit("nms_threshold", 0.45)? as f32,
            features: setting("features"),
            trainable: setting("trainable")
                .map(|t| t.split(',').map(|n| n.trim().to_string()).collect())
                .unwrap_or_default(),
            epochs: params.integer("epochs", 10, 1, 10_000)? as u32,
            batch_size: params.integer("batch_size", 16, 1, 65_536)? as u32,
            learning_rate: params.number("learning_rate", 0.01, 1e-9, 10.0)? as f32,
            seed: params.integer("seed", 0, 0, u64::MAX)?,
        })
    }

    /// The class index of a label written as a name or an index.
    pub fn class_index(&self, label: &str) -> Result<usize, String> {
        let label = label.trim();
        self.class_names
            .iter()
            .position(|c| c == label)
            .or_else(|| {
                label
                    .parse::<usize>()
                    .ok()
                    .filter(|i| *i < self.class_names.len())
            })
            .ok_or_else(|| {
                format!(
                    "label {label:?} is not one of the classes ({}) nor an index below {}",
                    self.class_names.join(", "),
                    self.class_names.len()
                )
            })
    }
}

/// The named port, or the only one; several and none named is an error.
fn port(named: Option<String>, ports: &[Port], what: &str) -> Result<String, String> {
    let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
    match named {
        Some(name) if names.contains(&name.as_str()) => Ok(name),
        Some(name) => Err(format!(
            "the model has no {what} `{name}` (its {what}s: {})",
            names.join(", ")
        )),
        None => names
            .first()
            .map(|n| n.to_string())
            .ok_or_else(|| format!("the model has no {what}")),
    }
}

fn shape(dims: &[Option<u32>]) -> String {
    let dims: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("?".into(), |d| d.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}

/// Sedna's `input_shape`: `height,width`.
fn parse_shape(text: &str) -> Result<(u32, u32), String> {
    let parts: Vec<Option<u32>> = text.split(',').map(|v| v.trim().parse().ok()).collect();
    match parts.as_slice() {
        [Some(h), Some(w)] if *h > 0 && *w > 0 => Ok((*h, *w)),
        _ => Err(format!(
            "`input_shape` is {text:?}: expected height,width, e.g. 352,640"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sedna_plugin_sdk::hem::Param;

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("sedna.{k}"), v.to_string()))
            .collect()
    }

    fn ports(name: &str, dims: &[Option<u32>]) -> Vec<Port> {
        vec![Port {
            name: name.into(),
            dims: dims.to_vec(),
        }]
    }

    fn resolve(metadata: &[(&str, &str)], params: &[(&str, &str)]) -> Result<Conventions, String> {
        let params: Vec<Param> = params
            .iter()
            .map(|(k, v)| Param {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect();
        Conventions::resolve(
            &meta(metadata),
            &Params::new(&params),
            &ports("images", &[Some(1), Some(3), Some(352), Some(640)]),
            &ports("output", &[Some(1), Some(9), Some(22), Some(40)]),
        )
    }

    const DETECTOR: &[(&str, &str)] = &[
        ("task", "detection"),
        ("class_names", "person, helmet,helmet-on,helmet-off"),
    ];

    #[test]
    fn metadata_gives_the_conventions_and_the_input_shape_comes_from_the_model() {
        let c = resolve(DETECTOR, &[]).unwrap();
        assert_eq!(c.head, Head::Grid);
        assert_eq!(
            c.class_names,
            ["person", "helmet", "helmet-on", "helmet-off"]
        );
        assert_eq!((c.input.as_str(), c.output.as_str()), ("images", "output"));
        assert_eq!(
            (c.height, c.width, c.nhwc, c.letterbox),
            (352, 640, false, false)
        );
        assert_eq!(
            (c.obj_threshold, c.nms_threshold, c.epochs),
            (0.3, 0.45, 10)
        );
    }

    #[test]
    fn parameters_override_the_metadata_with_sednas_names() {
        let c = resolve(
            &[
                ("task", "detection"),
                ("class_names", "a,b"),
                ("head", "yolov8"),
            ],
            &[
                ("class_names", "x,y,z"),
                ("input_shape", "352,640"),
                ("obj_threshold", "0.5"),
                ("epochs", "3"),
            ],
        )
        .unwrap();
        assert_eq!(c.class_names, ["x", "y", "z"]);
        assert_eq!(
            (c.height, c.width, c.obj_threshold, c.epochs, c.head),
            (352, 640, 0.5, 3, Head::YoloV8)
        );
    }

    #[test]
    fn what_is_missing_or_wrong_is_named_with_the_fix() {
        let e = resolve(&[("class_names", "a")], &[]).unwrap_err();
        assert!(
            e.contains("add `sedna.task`") && e.contains("parameter `task`"),
            "{e}"
        );
        let e = resolve(&[("task", "detection")], &[]).unwrap_err();
        assert!(e.contains("class_names"), "{e}");
        let e = resolve(DETECTOR, &[("input_shape", "640")]).unwrap_err();
        assert!(e.contains("height,width"), "{e}");
        let e = resolve(DETECTOR, &[("input_shape", "320,320")]).unwrap_err();
        assert!(
            e.contains("does not fit the model's input `images` [1, 3, 352, 640]"),
            "{e}"
        );
        let e = resolve(DETECTOR, &[("head", "softmax")]).unwrap_err();
        assert!(e.contains("does not fit task `detection`"), "{e}");
        let e = resolve(DETECTOR, &[("output", "boxes")]).unwrap_err();
        assert!(e.contains("no output `boxes` (its outputs: output)"), "{e}");
        let e = resolve(DETECTOR, &[("nms_threshold", "2")]).unwrap_err();
        assert!(e.contains("nms_threshold"), "{e}");
        let e = resolve(DETECTOR, &[("mean", "0.5,0.5")]).unwrap_err();
        assert!(e.contains("three numbers"), "{e}");
    }

    #[test]
    fn labels_are_names_or_indices() {
        let c = resolve(DETECTOR, &[]).unwrap();
        assert_eq!(c.class_index("helmet-on"), Ok(2));
        assert_eq!(c.class_index("3"), Ok(3));
        assert!(
            c.class_index("4")
                .unwrap_err()
                .contains("not one of the classes")
        );
    }
}
