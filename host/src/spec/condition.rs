//! Sedna's trigger values: conditions on metrics (`metric operator threshold`), operators,
//! metric references and daily time windows, as a job's YAML writes them.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Two values closer than this are equal.
const EPSILON: f64 = 1e-6;
/// Conditions one trigger may hold: a bounded list (Sedna's is unbounded).
pub const MAX_TRIGGER_CONDITIONS: usize = 16;
/// Plugin conditions a trigger may name beside its own condition.
pub const MAX_PLUGINS: usize = MAX_TRIGGER_CONDITIONS - 1;

/// Lets serde read these types from strings through their `FromStr`, keeping its errors,
/// and write them as their `Display`; in a CRD's schema they are strings matching
/// `$pattern`.
macro_rules! as_string {
    ($($t:ty => $pattern:literal),*) => {$(
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                s.parse()
            }
        }

        impl From<$t> for String {
            fn from(value: $t) -> String {
                value.to_string()
            }
        }

        impl JsonSchema for $t {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($t).into()
            }

            fn inline_schema() -> bool {
                true
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({"type": "string", "pattern": $pattern})
            }
        }
    )*};
}

as_string!(
    Operator => "^(>|>=|=|==|!=|<=|<|gt|ge|eq|ne|le|lt)$",
    MetricRef => "^[A-Za-z0-9_.-]+(\\[[0-9]+\\])?$",
    ClockTime => "^[0-2][0-9]:[0-5][0-9]$"
);

/// A comparison, written as a symbol or its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum Operator {
    Gt,
    Ge,
    Eq,
    Ne,
    Le,
    Lt,
}

impl Operator {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        let equal = (value - threshold).abs() <= EPSILON;
        match self {
            Operator::Gt => value > threshold && !equal,
            Operator::Ge => value > threshold || equal,
            Operator::Eq => equal,
            Operator::Ne => !equal,
            Operator::Le => value < threshold || equal,
            Operator::Lt => value < threshold && !equal,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Operator::Gt => ">",
            Operator::Ge => ">=",
            Operator::Eq => "==",
            Operator::Ne => "!=",
            Operator::Le => "<=",
            Operator::Lt => "<",
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

impl FromStr for Operator {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.trim() {
            ">" | "gt" => Operator::Gt,
            ">=" | "ge" => Operator::Ge,
            "=" | "==" | "eq" => Operator::Eq,
            "!=" | "ne" => Operator::Ne,
            "<=" | "le" => Operator::Le,
            "<" | "lt" => Operator::Lt,
            other => {
                return Err(format!(
                    "unknown operator {other:?}: use one of > >= = == != <= < or gt ge eq ne le lt"
                ));
            }
        })
    }
}

/// A metric by name, or one value of a per-class metric: `precision_delta[2]`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct MetricRef {
    pub name: String,
    pub index: Option<usize>,
}

impl FromStr for MetricRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || format!("metric {s:?} is not `name` or `name[index]`");
        let (name, index) = match s.strip_suffix(']').and_then(|s| s.split_once('[')) {
            Some((name, index)) => (
                name,
                Some(index.trim().parse::<usize>().map_err(|_| bad())?),
            ),
            None => (s, None),
        };
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            return Err(bad());
        }
        Ok(MetricRef {
            name: name.to_string(),
            index,
        })
    }
}

impl fmt::Display for MetricRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "{}[{i}]", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// `metric operator threshold`, as Sedna's `condition`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct Condition {
    pub operator: Operator,
    pub threshold: f64,
    pub metric: MetricRef,
}

impl Condition {
    /// `Ok((holds, why))`, or `Err(why)` when the metric cannot be read; `values` finds
    /// a metric's values by name.
    pub fn evaluate<'a>(
        &self,
        values: impl Fn(&str) -> Option<&'a [f64]>,
    ) -> Result<(bool, String), String> {
        let metric = &self.metric;
        let Some(found) = values(&metric.name) else {
            return Err(format!("the metric `{}` is not available yet", metric.name));
        };
        let value = match (metric.index, found) {
            (None, [value]) => *value,
            (None, values) => {
                return Err(format!(
                    "the metric `{}` has {} values (one per class): name one as `{}[index]`",
                    metric.name,
                    values.len(),
                    metric.name
                ));
            }
            (Some(i), values) => *values.get(i).ok_or_else(|| {
                format!(
                    "the metric `{}` has {} values, so `{metric}` does not exist",
                    metric.name,
                    values.len()
                )
            })?,
        };
        let holds = self.operator.holds(value, self.threshold);
        Ok((
            holds,
            format!(
                "{metric} {value} {} {} is {holds}",
                self.operator.symbol(),
                self.threshold
            ),
        ))
    }
}

/// A time of day, `HH:MM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClockTime {
    minutes: u16,
}

impl ClockTime {
    pub fn new(hour: u16, minute: u16) -> Option<Self> {
        (hour < 24 && minute < 60).then_some(ClockTime {
            minutes: hour * 60 + minute,
        })
    }

    /// The local time now.
    pub fn now() -> Self {
        use chrono::Timelike;
        let now = chrono::Local::now();
        ClockTime::new(now.hour() as u16, now.minute() as u16).expect("a valid time of day")
    }
}

impl FromStr for ClockTime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("time {s:?} is not HH:MM (00:00 to 23:59)");
        let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        ClockTime::new(h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?).ok_or_else(bad)
    }
}

impl fmt::Display for ClockTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.minutes / 60, self.minutes % 60)
    }
}

/// A daily window in local time, both ends included; it wraps past midnight when
/// `start` is after `end` (22:00 to 06:00).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct Timer {
    pub start: ClockTime,
    pub end: ClockTime,
}

impl Timer {
    pub fn contains(&self, now: ClockTime) -> bool {
        if self.start <= self.end {
            self.start <= now && now <= self.end
        } else {
            now >= self.start || now <= self.end
        }
    }
}
