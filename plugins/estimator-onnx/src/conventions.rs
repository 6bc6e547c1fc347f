//! How a model is read and run: from its `metadata_props`, overridden by the job's
//! parameters (Sedna's names where Sedna has one). Where the `sedna.*` keys are absent,
//! an Ultralytics export's own keys (`task`, `names`, `imgsz`) are read as they are.

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

/// The metadata keys (`sedna.<key>`) and parameters this estimator reads. Ultralytics'
/// plain `task`, `names` and `imgsz` stand in for `task`, `class_names` and `input_shape`.
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
    /// Reads the conventions; a parameter wins over the model's metadata, and a `sedna.*`
    /// key wins over what an Ultralytics export says (see [`ultralytics_task`]).
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

        // An Ultralytics export's own `task`, read only when Sedna's is not given; its
        // defaults (head, letterbox, layout) apply only when the task is the same.
        let output = port(setting("output"), outputs, "output")?;
        let output_dims = &outputs
            .iter()
            .find(|p| p.name == output)
            .expect("found above")
            .dims;
        let exported = ultralytics_task(metadata, output_dims);
        let task = match setting("task") {
            Some(task) => task,
            None => exported
                .clone()?
                .ok_or_else(|| missing("task", "its task (classification or detection)"))?
                .to_string(),
        };
        let default_head = match task.as_str() {
            "classification" => "softmax",
            "detection" => "grid",
            other => {
                return Err(format!(
                    "task `{other}` is not known: use `classification` or `detection`"
                ));
            }
        };
        let ultralytics = exported.ok().flatten().filter(|t| *t == task);

        let class_names: Vec<String> = match (setting("class_names"), plain(metadata, "names")) {
            (Some(list), _) => {
                let names: Vec<String> = list.split(',').map(|c| c.trim().to_string()).collect();
                if names.iter().any(String::is_empty) {
                    return Err(
                        "`class_names` has an empty name: write them comma-separated, e.g. person,helmet"
                            .into(),
                    );
                }
                names
            }
            (None, Some(names)) => parse_names(names)?,
            (None, None) => return Err(missing("class_names", "its class names")),
        };

        let input = port(setting("input"), inputs, "input")?;
        let declared = &inputs
            .iter()
            .find(|p| p.name == input)
            .expect("found above")
            .dims;

        let head_name = setting("head").unwrap_or_else(|| {
            match ultralytics {
                Some("detection") => ultralytics_detector(output_dims, class_names.len()),
                // Ultralytics classifiers end in a Softmax: their output is probabilities.
                Some(_) => "probabilities",
                None => default_head,
            }
            .to_string()
        });
        let head = Head::parse(&head_name).ok_or_else(|| {
            format!("head `{head_name}` is not known: use softmax, sigmoid, probabilities, grid, yolov5 or yolov8")
        })?;
        if head.is_detection() != (task == "detection") {
            return Err(format!("head `{head_name}` does not fit task `{task}`"));
        }

        let layout = setting("layout");
        let nhwc = match layout.as_deref() {
            Some("nchw") => false,
            Some("nhwc") => true,
            Some(other) => return Err(format!("layout `{other}` is not known: use nchw or nhwc")),
            // Ultralytics exports are NCHW.
            None if ultralytics.is_some() => false,
            None => declared.len() == 4 && declared[3] == Some(3) && declared[1] != Some(3),
        };

        let (h_at, w_at) = if nhwc { (1, 2) } else { (2, 3) };
        let fixed = |at: usize| declared.get(at).copied().flatten();
        // Sedna's `input_shape`, else the input's static size, else (a dynamic export)
        // Ultralytics' `imgsz`.
        let (height, width, from_imgsz) = match setting("input_shape") {
            Some(shape) => {
                let (h, w) = parse_shape(&shape)?;
                (h, w, false)
            }
            None => match (fixed(h_at), fixed(w_at), plain(metadata, "imgsz")) {
                (Some(h), Some(w), _) => (h, w, false),
                (_, _, Some(imgsz)) => {
                    let (h, w) = parse_imgsz(imgsz)?;
                    (h, w, true)
                }
                _ => return Err(missing("input_shape", "its input size (height,width)")),
            },
        };
        if fixed(h_at).is_some_and(|h| h != height) || fixed(w_at).is_some_and(|w| w != width) {
            let (given, fix) = if from_imgsz {
                (
                    format!("the model's metadata `imgsz` [{height}, {width}]"),
                    "set the job parameter `input_shape` to its size",
                )
            } else {
                (
                    format!("`input_shape` {height},{width}"),
                    "use its size or leave `input_shape` out",
                )
            };
            return Err(format!(
                "{given} does not fit the model's input `{input}` {}: {fix}",
                shape(declared)
            ));
        }

        // The defaults, mean 0 and std 1, are also Ultralytics' (it only scales to [0, 1]).
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
            // Ultralytics detectors expect letterboxed input (grey 114, as the host pads).
            // Its classifiers resize the short side and crop the centre; a plain resize,
            // which the host offers, is close enough on near-square frames.
            None => ultralytics == Some("detection"),
            Some("false") | Some("0") => false,
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

/// A plain (not `sedna.`) metadata key, as an Ultralytics export writes them.
fn plain<'a>(metadata: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    metadata
        .get(key)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

/// The task an Ultralytics export names in its `task` key, as Sedna names it. Classic
/// YOLOv5 exports name none, only `stride` and `names`: with a three-dimensional output
/// (`output`, its declared dims) such a model is a detector. `None` otherwise.
fn ultralytics_task(
    metadata: &BTreeMap<String, String>,
    output: &[Option<u32>],
) -> Result<Option<&'static str>, String> {
    let classic = plain(metadata, "stride").is_some() && plain(metadata, "names").is_some();
    match plain(metadata, "task") {
        None if classic && output.len() == 3 => Ok(Some("detection")),
        None => Ok(None),
        Some("detect") => Ok(Some("detection")),
        Some("classify") => Ok(Some("classification")),
        Some(task @ ("segment" | "pose" | "obb")) => Err(format!(
            "the model is an Ultralytics `{task}` model: the supported tasks are `detect` and `classify`"
        )),
        Some(task) => Err(format!(
            "the model's metadata `task` is {task:?}, not a supported Ultralytics task (`detect` or `classify`): set `sedna.task` or the job parameter `task` to classification or detection"
        )),
    }
}

/// An Ultralytics detector's head: YOLOv8's `[1, 4 + C, boxes]`, which YOLOv8, YOLO11
/// and the anchor-free YOLOv5u export, unless the output's declared dims are YOLOv5's
/// `[1, boxes, 5 + C]` and not YOLOv8's. Dims a dynamic export leaves open say nothing;
/// the head checks the output it gets.
fn ultralytics_detector(dims: &[Option<u32>], classes: usize) -> &'static str {
    let is = |at: usize, n: usize| {
        dims.len() == 3 && dims[at].is_some_and(|d| usize::try_from(d).is_ok_and(|d| d == n))
    };
    if is(2, 5 + classes) && !is(1, 4 + classes) {
        "yolov5"
    } else {
        "yolov8"
    }
}

/// Ultralytics' `imgsz`: `[height, width]` (or one number for a square input).
fn parse_imgsz(text: &str) -> Result<(u32, u32), String> {
    let inner = text
        .trim()
        .trim_start_matches(['[', '('])
        .trim_end_matches([']', ')']);
    let parts: Vec<Option<u32>> = inner
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| v.parse().ok().filter(|&n| n > 0))
        .collect();
    match parts.as_slice() {
        [Some(side)] => Ok((*side, *side)),
        [Some(h), Some(w)] => Ok((*h, *w)),
        _ => Err(format!(
            "the model's metadata `imgsz` is {text:?}: expected [height, width], e.g. [640, 640] (or set `sedna.input_shape` or the job parameter `input_shape`)"
        )),
    }
}

/// The most classes `names` may number (a guard against an absurd index).
const MAX_CLASSES: usize = 65_536;

/// Ultralytics' `names`: the Python literal of a dict from class index to name,
/// `{0: 'person', 1: "o'clock"}`, or a list of names (older exports). The names come in
/// index order, whatever order the dict has; an index it skips is named by its number,
/// so that every name stays at its output channel.
fn parse_names(text: &str) -> Result<Vec<String>, String> {
    let fail = |why: String| {
        let shown: String = text.chars().take(80).collect();
        let more = if shown.len() < text.len() { "..." } else { "" };
        format!(
            "the model's metadata `names` is {shown:?}{more}: {why}; expected a dict of class index to name, e.g. {{0: 'person', 1: 'bicycle'}} (or set `sedna.class_names` or the job parameter `class_names`)"
        )
    };
    let mut read = Literal { text, at: 0 };
    let mut names: Vec<(usize, String)> = Vec::new();
    let close = if read.eat('{') {
        '}'
    } else if read.eat('[') {
        ']'
    } else {
        return Err(fail(read.expected("`{`")));
    };
    while !read.eat(close) {
        let index = if close == '}' {
            let index = read.index().map_err(&fail)?;
            read.expect(':').map_err(&fail)?;
            index
        } else {
            names.len()
        };
        names.push((index, read.string().map_err(&fail)?));
        if !read.eat(',') {
            read.expect(close).map_err(&fail)?;
            break;
        }
    }
    read.space();
    if read.at < text.len() {
        return Err(fail(read.expected("nothing more")));
    }

    names.sort_by_key(|(index, _)| *index);
    let Some(&(last, _)) = names.last() else {
        return Err(fail("it names no class".into()));
    };
    if last >= MAX_CLASSES {
        return Err(fail(format!(
            "class index {last} is beyond {MAX_CLASSES} classes"
        )));
    }
    let mut ordered = Vec::with_capacity(last + 1);
    for (index, name) in names {
        if index < ordered.len() {
            return Err(fail(format!("class {index} is named twice")));
        }
        ordered.extend((ordered.len()..index).map(|gap| gap.to_string()));
        let name = name.trim();
        if name.is_empty() {
            return Err(fail(format!("class {index} has an empty name")));
        }
        ordered.push(name.to_string());
    }
    Ok(ordered)
}

/// Reads a Python literal: integers and quoted strings with their escapes.
struct Literal<'a> {
    text: &'a str,
    at: usize,
}

impl Literal<'_> {
    fn space(&mut self) {
        let rest = &self.text[self.at..];
        self.at += rest.len() - rest.trim_start().len();
    }

    fn next(&mut self) -> Option<char> {
        let c = self.text[self.at..].chars().next()?;
        self.at += c.len_utf8();
        Some(c)
    }

    /// Skips white space, then takes `c` if it comes next.
    fn eat(&mut self, c: char) -> bool {
        self.space();
        let found = self.text[self.at..].starts_with(c);
        if found {
            self.at += c.len_utf8();
        }
        found
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.expected(&format!("`{c}`")))
        }
    }

    fn expected(&self, what: &str) -> String {
        let place = self.text[..self.at].chars().count() + 1;
        match self.text[self.at..].chars().next() {
            Some(found) => format!("expected {what} at character {place}, found {found:?}"),
            None => format!("expected {what} at character {place}, found the end"),
        }
    }

    /// A class index: decimal digits.
    fn index(&mut self) -> Result<usize, String> {
        self.space();
        let digits = self.text[self.at..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(self.text.len() - self.at);
        let index = self.text[self.at..self.at + digits]
            .parse()
            .map_err(|_| self.expected("a class index (0, 1, ...)"))?;
        self.at += digits;
        Ok(index)
    }

    /// A string in single or double quotes, with Python's escapes.
    fn string(&mut self) -> Result<String, String> {
        self.space();
        let quote = match self.text[self.at..].chars().next() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(self.expected("a quoted name")),
        };
        let start = self.at;
        self.at += 1;
        let unterminated = |read: &Self| {
            let place = read.text[..start].chars().count() + 1;
            format!("the name at character {place} has no closing {quote}")
        };
        let mut out = String::new();
        loop {
            match self.next().ok_or_else(|| unterminated(self))? {
                c if c == quote => return Ok(out),
                '\\' => {
                    let escape = self.at - 1;
                    let c = self.next().ok_or_else(|| unterminated(self))?;
                    let decoded = match c {
                        '\n' => continue,
                        '\\' | '\'' | '"' => c,
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        'a' => '\x07',
                        'b' => '\x08',
                        'f' => '\x0c',
                        'v' => '\x0b',
                        'x' | 'u' | 'U' => {
                            let len = match c {
                                'x' => 2,
                                'u' => 4,
                                _ => 8,
                            };
                            let digits = self.text.get(self.at..self.at + len);
                            let code = digits
                                .filter(|d| d.chars().all(|c| c.is_ascii_hexdigit()))
                                .and_then(|d| u32::from_str_radix(d, 16).ok())
                                .and_then(char::from_u32);
                            let Some(code) = code else {
                                self.at = escape;
                                return Err(
                                    self.expected(&format!("a \\{c} escape with {len} hex digits"))
                                );
                            };
                            self.at += len;
                            code
                        }
                        '0'..='7' => {
                            let mut code = c.to_digit(8).expect("an octal digit");
                            for _ in 0..2 {
                                match self.text[self.at..]
                                    .chars()
                                    .next()
                                    .and_then(|d| d.to_digit(8))
                                {
                                    Some(d) => {
                                        code = code * 8 + d;
                                        self.at += 1;
                                    }
                                    None => break,
                                }
                            }
                            char::from_u32(code).expect("at most 0o777")
                        }
                        // Python keeps an unknown escape as it is.
                        other => {
                            out.push('\\');
                            other
                        }
                    };
                    out.push(decoded);
                }
                c => out.push(c),
            }
        }
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

    /// Resolves plain metadata keys (an Ultralytics export's) against the given ports.
    fn exported(
        metadata: &[(&str, &str)],
        params: &[(&str, &str)],
        input: &[Option<u32>],
        output: &[Option<u32>],
    ) -> Result<Conventions, String> {
        let params: Vec<Param> = params
            .iter()
            .map(|(k, v)| Param {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect();
        Conventions::resolve(
            &metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            &Params::new(&params),
            &ports("images", input),
            &ports("output0", output),
        )
    }

    /// What `yolo export model=yolov8n.pt format=onnx dynamic=True` writes (three classes).
    const YOLOV8N: &[(&str, &str)] = &[
        (
            "description",
            "Ultralytics YOLOv8n model trained on coco.yaml",
        ),
        ("author", "Ultralytics"),
        ("date", "2024-05-02T10:11:12.131415"),
        ("version", "8.2.0"),
        (
            "license",
            "AGPL-3.0 License (https://ultralytics.com/license)",
        ),
        ("docs", "https://docs.ultralytics.com"),
        ("stride", "32"),
        ("task", "detect"),
        ("batch", "1"),
        ("imgsz", "[640, 640]"),
        ("names", "{0: 'person', 1: 'bicycle', 2: 'car'}"),
        (
            "args",
            "{'batch': 1, 'half': False, 'dynamic': True, 'nms': False}",
        ),
    ];
    const DYNAMIC: &[Option<u32>] = &[None, Some(3), None, None];

    fn with(
        base: &[(&'static str, &'static str)],
        key: &'static str,
        value: &'static str,
    ) -> Vec<(&'static str, &'static str)> {
        let mut pairs: Vec<_> = base.iter().filter(|(k, _)| *k != key).copied().collect();
        pairs.push((key, value));
        pairs
    }

    #[test]
    fn an_ultralytics_detector_needs_no_parameters() {
        let c = exported(YOLOV8N, &[], DYNAMIC, &[None, Some(7), None]).unwrap();
        assert_eq!(c.head, Head::YoloV8);
        assert_eq!(c.class_names, ["person", "bicycle", "car"]);
        assert_eq!((c.input.as_str(), c.output.as_str()), ("images", "output0"));
        assert_eq!(
            (c.height, c.width, c.nhwc, c.letterbox),
            (640, 640, false, true)
        );
        assert_eq!((c.mean, c.std), ([0.0; 3], [1.0; 3]));

        // A static export's own size wins; `imgsz` is [height, width].
        let c = exported(YOLOV8N, &[], &[Some(1), Some(3), Some(384), Some(640)], &[]).unwrap();
        assert_eq!((c.height, c.width), (384, 640));
        let c = exported(&with(YOLOV8N, "imgsz", "[384, 640]"), &[], DYNAMIC, &[]).unwrap();
        assert_eq!((c.height, c.width), (384, 640));
        let e = exported(
            YOLOV8N,
            &[],
            &[None, Some(3), Some(320), None],
            &[None, Some(7), None],
        )
        .unwrap_err();
        assert!(
            e.contains(
                "metadata `imgsz` [640, 640] does not fit the model's input `images` [?, 3, 320, ?]"
            ),
            "{e}"
        );

        // An output declared as YOLOv5's [1, boxes, 5 + C] is read as one.
        let c = exported(YOLOV8N, &[], DYNAMIC, &[Some(1), Some(25200), Some(8)]).unwrap();
        assert_eq!(c.head, Head::YoloV5);
        let c = exported(YOLOV8N, &[], DYNAMIC, &[Some(1), Some(7), Some(8400)]).unwrap();
        assert_eq!(c.head, Head::YoloV8);
    }

    #[test]
    fn a_classic_yolov5_export_is_read_as_a_yolov5_detector() {
        // YOLOv5's own export.py writes only `stride` and `names`.
        let classic = [("stride", "32"), ("names", "{0: 'person', 1: 'car'}")];
        let fixed = [Some(1), Some(3), Some(640), Some(640)];
        let c = exported(&classic, &[], &fixed, &[Some(1), Some(25200), Some(7)]).unwrap();
        assert_eq!((c.head, c.letterbox), (Head::YoloV5, true));
        assert_eq!((c.height, c.width), (640, 640));
        assert_eq!(c.class_names, ["person", "car"]);
        // Dynamic: the size is the job's to give.
        let e = exported(&classic, &[], DYNAMIC, &[None, None, Some(7)]).unwrap_err();
        assert!(e.contains("input_shape"), "{e}");
        // A classic classifier's output is [1, classes]: not taken for a detector.
        let e = exported(&classic, &[], &fixed, &[Some(1), Some(2)]).unwrap_err();
        assert!(e.contains("its task"), "{e}");
    }

    #[test]
    fn an_ultralytics_classifier_gives_probabilities_of_a_plain_resize() {
        let c = exported(
            &[
                ("author", "Ultralytics"),
                ("stride", "1"),
                ("task", "classify"),
                ("batch", "1"),
                ("imgsz", "[224, 224]"),
                (
                    "names",
                    "{0: 'tench', 1: 'goldfish', 2: 'great white shark'}",
                ),
            ],
            &[],
            DYNAMIC,
            &[None, Some(3)],
        )
        .unwrap();
        assert_eq!(c.head, Head::Probabilities);
        assert_eq!(c.class_names, ["tench", "goldfish", "great white shark"]);
        assert_eq!(
            (c.height, c.width, c.nhwc, c.letterbox),
            (224, 224, false, false)
        );
        assert_eq!((c.mean, c.std), ([0.0; 3], [1.0; 3]));
    }

    #[test]
    fn names_are_python_dicts_in_index_order() {
        let names = |text| parse_names(text).unwrap();
        assert_eq!(
            names(r#"{0: 'person', 1: "o'clock", 2: 'it\'s', 3: "say \"hi\"", 4: 'back\\slash'}"#),
            ["person", "o'clock", "it's", "say \"hi\"", "back\\slash"]
        );
        assert_eq!(
            names(r"{0: 'caf\xe9', 1: '\u00fcber', 2: 'traffic light', 3: 'tab\there'}"),
            ["café", "über", "traffic light", "tab\there"]
        );
        assert_eq!(names("{2: 'c', 0: 'a', 1: 'b'}"), ["a", "b", "c"]);
        assert_eq!(names("{ 1:'b',\n 0:'a', }"), ["a", "b"]);
        // A skipped index keeps its place, named by its number.
        assert_eq!(names("{0: 'a', 3: 'd'}"), ["a", "1", "2", "d"]);
        assert_eq!(names("['a', 'b']"), ["a", "b"]);
        assert_eq!(names("{0: 'straße', 1: '東京'}"), ["straße", "東京"]);
    }

    #[test]
    fn a_bad_names_value_is_refused_with_what_was_expected() {
        for (bad, why) in [
            ("person, bicycle", "expected `{` at character 1"),
            ("{0: person}", "expected a quoted name at character 5"),
            ("{0: 'person', 1: 'bicycle'", "expected `}` at character 27"),
            ("{0: 'person}", "has no closing '"),
            ("{'a': 'person'}", "expected a class index"),
            ("{-1: 'person'}", "expected a class index"),
            ("{0 'person'}", "expected `:`"),
            ("{0: 'a', 0: 'b'}", "class 0 is named twice"),
            ("{0: ' '}", "class 0 has an empty name"),
            ("{}", "names no class"),
            ("{0: 'a'} trailing", "expected nothing more"),
            ("{0: 'a\\x4'}", "\\x escape with 2 hex digits"),
            ("{4000000000: 'a'}", "beyond 65536 classes"),
        ] {
            let e = exported(
                &with(YOLOV8N, "names", bad),
                &[],
                DYNAMIC,
                &[None, Some(7), None],
            )
            .unwrap_err();
            assert!(
                e.contains("metadata `names`")
                    && e.contains(why)
                    && e.contains(
                        "expected a dict of class index to name, e.g. {0: 'person', 1: 'bicycle'}"
                    ),
                "{bad}: {e}"
            );
        }
        let e = exported(&with(YOLOV8N, "imgsz", "640x640"), &[], DYNAMIC, &[]).unwrap_err();
        assert!(
            e.contains("`imgsz` is \"640x640\": expected [height, width]"),
            "{e}"
        );
    }

    #[test]
    fn an_unsupported_ultralytics_task_says_which_are_supported() {
        for task in ["segment", "pose", "obb"] {
            let e = exported(&with(YOLOV8N, "task", task), &[], DYNAMIC, &[]).unwrap_err();
            assert!(
                e.contains(&format!("Ultralytics `{task}` model"))
                    && e.contains("supported tasks are `detect` and `classify`"),
                "{e}"
            );
        }
        let e = exported(&with(YOLOV8N, "task", "regress"), &[], DYNAMIC, &[]).unwrap_err();
        assert!(
            e.contains("\"regress\"") && e.contains("`detect` or `classify`"),
            "{e}"
        );
    }

    #[test]
    fn sedna_keys_and_parameters_win_over_ultralytics_keys() {
        let mut metadata = with(YOLOV8N, "names", "not a dict: never read");
        metadata.extend([
            ("sedna.class_names", "helmet,head"),
            ("sedna.letterbox", "false"),
            ("sedna.head", "yolov5"),
            ("sedna.input_shape", "320,320"),
        ]);
        let c = exported(&metadata, &[], DYNAMIC, &[]).unwrap();
        assert_eq!(c.class_names, ["helmet", "head"]);
        assert_eq!(
            (c.head, c.height, c.width, c.letterbox),
            (Head::YoloV5, 320, 320, false)
        );
        let c = exported(
            &metadata,
            &[("input_shape", "480,640"), ("letterbox", "true")],
            DYNAMIC,
            &[],
        )
        .unwrap();
        assert_eq!((c.height, c.width, c.letterbox), (480, 640, true));

        // Sedna's task wins over an unsupported one; Ultralytics' defaults then do not apply.
        let mut metadata = with(YOLOV8N, "task", "segment");
        metadata.extend([("sedna.task", "detection")]);
        let c = exported(&metadata, &[], DYNAMIC, &[]).unwrap();
        assert_eq!((c.head, c.letterbox), (Head::Grid, false));
        assert_eq!(c.class_names, ["person", "bicycle", "car"]);
        let c = exported(YOLOV8N, &[("task", "classification")], DYNAMIC, &[]).unwrap();
        assert_eq!((c.head, c.letterbox), (Head::Softmax, false));
    }
}
