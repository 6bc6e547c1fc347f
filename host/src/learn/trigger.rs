//! Sedna's train and deploy triggers: conditions on metrics, a daily time window and a
//! check period; plus conditions written as `trigger-condition` plugins. All must hold
//! (AND) for the trigger to fire.
//!
//! Unlike Sedna: `checkPeriodSeconds` is honoured; a metric that has several values (one
//! per class) used without an index is an error, not a silent 0; a missing metric makes
//! the condition false and says why.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::plugin::{Metric, Plugin, TriggerCondition};
use crate::spec::{ClockTime, Condition, MAX_TRIGGER_CONDITIONS, Timer};

/// Whether a trigger fired, and why (or why not), for the job's status and log.
#[derive(Debug, PartialEq)]
pub struct Decision {
    pub fire: bool,
    pub reasons: Vec<String>,
}

/// Conditions, an optional time window and plugin conditions: all must hold.
pub struct Trigger {
    pub timer: Option<Timer>,
    pub conditions: Vec<Condition>,
    pub plugins: Arc<PluginConditions>,
}

/// A trigger's plugin conditions, replaced whole when a plugin is bound to the trigger
/// while the job runs (`PUT /v1/jobs/{job}/slots/train-trigger`).
#[derive(Default)]
pub struct PluginConditions(ArcSwap<Vec<Plugin<TriggerCondition>>>);

impl PluginConditions {
    pub fn new(plugins: Vec<Plugin<TriggerCondition>>) -> Arc<Self> {
        Arc::new(PluginConditions(ArcSwap::from_pointee(plugins)))
    }

    pub fn load(&self) -> Arc<Vec<Plugin<TriggerCondition>>> {
        self.0.load_full()
    }

    pub fn replace(&self, plugins: Vec<Plugin<TriggerCondition>>) {
        self.0.store(Arc::new(plugins));
    }

    /// Puts back plugins held before (from [`PluginConditions::load`]).
    pub fn set(&self, plugins: Arc<Vec<Plugin<TriggerCondition>>>) {
        self.0.store(plugins);
    }
}

impl Trigger {
    /// Checks what can be checked before the job runs: a bounded list of conditions, and
    /// no per-class metric (`per_class`) used without an index.
    pub fn validate(&self, per_class: &[&str]) -> Result<(), String> {
        if self.conditions.len() + self.plugins.load().len() > MAX_TRIGGER_CONDITIONS {
            return Err(format!(
                "a trigger holds at most {MAX_TRIGGER_CONDITIONS} conditions"
            ));
        }
        for c in &self.conditions {
            if c.metric.index.is_none() && per_class.contains(&c.metric.name.as_str()) {
                return Err(format!(
                    "the metric `{0}` has one value per class: name one as `{0}[index]` (Sedna silently compared 0)",
                    c.metric.name
                ));
            }
        }
        Ok(())
    }

    /// Evaluates everything (so that the status says every reason) at local time `now`.
    pub fn evaluate(&self, stats: &[Metric], now: ClockTime) -> Decision {
        let mut fire = true;
        let mut reasons = Vec::new();
        if let Some(timer) = &self.timer {
            let inside = timer.contains(now);
            fire &= inside;
            reasons.push(format!(
                "time {now} within {} to {} is {inside}",
                timer.start, timer.end
            ));
        }
        for condition in &self.conditions {
            let (holds, why) = condition
                .evaluate(|name| values_of(stats, name))
                .unwrap_or_else(|why| (false, why));
            fire &= holds;
            reasons.push(why);
        }
        for plugin in self.plugins.load().iter() {
            let (holds, why) = match plugin.evaluate(stats) {
                Ok(Ok(holds)) => (holds, format!("plugin `{}` is {holds}", plugin.name())),
                Ok(Err(why)) => (
                    false,
                    format!("plugin `{}` cannot decide: {why}", plugin.name()),
                ),
                Err(e) => (false, e.to_string()),
            };
            fire &= holds;
            reasons.push(why);
        }
        Decision { fire, reasons }
    }
}

/// The values of the metric `name` in `stats`.
fn values_of<'a>(stats: &'a [Metric], name: &str) -> Option<&'a [f64]> {
    stats
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.values.as_slice())
}

/// When a trigger is next due: every `period`, measured on a clock the caller passes in
/// (tests inject one; the job passes `Instant::now()`).
pub struct CheckSchedule {
    period: Duration,
    next: Option<Instant>,
}

impl CheckSchedule {
    pub fn new(period: Duration) -> Self {
        CheckSchedule { period, next: None }
    }

    /// `true` (and the next check is scheduled) when a check is due at `now`.
    pub fn due(&mut self, now: Instant) -> bool {
        match self.next {
            Some(next) if now < next => false,
            _ => {
                self.next = Some(now + self.period);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{MetricRef, Operator};

    fn metric(name: &str, values: &[f64]) -> Metric {
        Metric {
            name: name.into(),
            values: values.to_vec(),
        }
    }

    fn condition(metric: &str, operator: &str, threshold: f64) -> Condition {
        Condition {
            operator: operator.parse().unwrap(),
            threshold,
            metric: metric.parse().unwrap(),
        }
    }

    fn at(s: &str) -> ClockTime {
        s.parse().unwrap()
    }

    #[test]
    fn every_operator_by_symbol_and_name() {
        let cases = [
            ((">", "gt"), [false, false, true]),
            ((">=", "ge"), [false, true, true]),
            (("==", "eq"), [false, true, false]),
            (("!=", "ne"), [true, false, true]),
            (("<=", "le"), [true, true, false]),
            (("<", "lt"), [true, false, false]),
        ];
        for ((symbol, name), expected) in cases {
            for op in [symbol, name] {
                let op: Operator = op.parse().unwrap();
                // Below, equal within 1e-6, above the threshold 500.
                let got = [499.0, 500.0 + 1e-7, 501.0].map(|v| op.holds(v, 500.0));
                assert_eq!(got, expected, "{symbol}/{name}");
            }
        }
        assert_eq!("=".parse::<Operator>().unwrap(), Operator::Eq);
        let err = "=>".parse::<Operator>().unwrap_err();
        assert!(
            err.contains("unknown operator \"=>\"") && err.contains("gt ge eq"),
            "{err}"
        );
    }

    #[test]
    fn metrics_by_name_and_index() {
        let stats = [
            metric("num_of_samples", &[612.0]),
            metric("precision_delta", &[0.05, 0.2, 0.15]),
        ];
        let (holds, why) = condition("num_of_samples", ">", 500.0)
            .evaluate(|n| values_of(&stats, n))
            .unwrap();
        assert!(holds);
        assert_eq!(why, "num_of_samples 612 > 500 is true");
        assert!(
            condition("precision_delta[1]", ">", 0.1)
                .evaluate(|n| values_of(&stats, n))
                .unwrap()
                .0
        );
        assert!(
            !condition("precision_delta[0]", ">", 0.1)
                .evaluate(|n| values_of(&stats, n))
                .unwrap()
                .0
        );
        let err = condition("precision_delta", ">", 0.1)
            .evaluate(|n| values_of(&stats, n))
            .unwrap_err();
        assert!(
            err.contains("3 values") && err.contains("precision_delta[index]"),
            "{err}"
        );
        let err = condition("precision_delta[3]", ">", 0.1)
            .evaluate(|n| values_of(&stats, n))
            .unwrap_err();
        assert!(err.contains("`precision_delta[3]` does not exist"), "{err}");
        let err = condition("recall", ">", 0.1)
            .evaluate(|n| values_of(&stats, n))
            .unwrap_err();
        assert!(err.contains("`recall` is not available"), "{err}");
        for bad in ["", "a[", "a[x]", "a b", "[1]"] {
            assert!(bad.parse::<MetricRef>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_missing_metric_makes_the_trigger_false_and_says_why() {
        let trigger = Trigger {
            timer: None,
            conditions: vec![condition("num_of_samples", ">", 500.0)],
            plugins: Default::default(),
        };
        let decision = trigger.evaluate(&[], at("12:00"));
        assert!(!decision.fire);
        assert!(
            decision.reasons[0].contains("num_of_samples"),
            "{:?}",
            decision.reasons
        );
    }

    #[test]
    fn timers_are_inclusive_and_wrap_past_midnight() {
        let day = Timer {
            start: at("02:00"),
            end: at("20:00"),
        };
        assert!(
            day.contains(at("02:00")) && day.contains(at("20:00")) && day.contains(at("12:30"))
        );
        assert!(!day.contains(at("01:59")) && !day.contains(at("20:01")));
        let night = Timer {
            start: at("22:00"),
            end: at("06:00"),
        };
        assert!(
            night.contains(at("23:59"))
                && night.contains(at("00:00"))
                && night.contains(at("06:00"))
        );
        assert!(
            !night.contains(at("12:00"))
                && !night.contains(at("21:59"))
                && !night.contains(at("06:01"))
        );
        for bad in ["24:00", "12:60", "2:00", "noon", "12-00"] {
            let err = bad.parse::<ClockTime>().unwrap_err();
            assert!(err.contains("HH:MM"), "{err}");
        }
    }

    #[test]
    fn all_conditions_and_the_timer_must_hold() {
        let trigger = Trigger {
            timer: Some(Timer {
                start: at("02:00"),
                end: at("20:00"),
            }),
            conditions: vec![
                condition("num_of_samples", ">", 500.0),
                condition("map", ">=", 0.5),
            ],
            plugins: Default::default(),
        };
        let stats = [metric("num_of_samples", &[501.0]), metric("map", &[0.5])];
        assert!(trigger.evaluate(&stats, at("10:00")).fire);
        let outside = trigger.evaluate(&stats, at("21:00"));
        assert!(!outside.fire);
        assert_eq!(
            outside.reasons[0],
            "time 21:00 within 02:00 to 20:00 is false"
        );
        let low = [metric("num_of_samples", &[501.0]), metric("map", &[0.4])];
        assert!(!trigger.evaluate(&low, at("10:00")).fire);
    }

    #[test]
    fn per_class_metrics_need_an_index_when_the_job_loads() {
        let trigger = Trigger {
            timer: None,
            conditions: vec![condition("precision_delta", ">", 0.1)],
            plugins: Default::default(),
        };
        let err = trigger
            .validate(&["precision_delta", "recall"])
            .unwrap_err();
        assert!(err.contains("precision_delta[index]"), "{err}");
        let indexed = Trigger {
            conditions: vec![condition("precision_delta[0]", ">", 0.1)],
            ..trigger
        };
        indexed.validate(&["precision_delta"]).unwrap();
        let many = Trigger {
            conditions: vec![condition("a", ">", 0.0); MAX_TRIGGER_CONDITIONS + 1],
            ..indexed
        };
        assert!(many.validate(&[]).is_err());
    }

    #[test]
    fn checks_run_once_per_period() {
        let start = Instant::now();
        let mut schedule = CheckSchedule::new(Duration::from_secs(60));
        assert!(schedule.due(start), "the first check is due at once");
        assert!(!schedule.due(start + Duration::from_secs(59)));
        assert!(schedule.due(start + Duration::from_secs(60)));
        assert!(!schedule.due(start + Duration::from_secs(61)));
        // A late check reschedules from when it ran.
        assert!(schedule.due(start + Duration::from_secs(300)));
        assert!(!schedule.due(start + Duration::from_secs(359)));
        assert!(schedule.due(start + Duration::from_secs(360)));
    }

    #[test]
    fn conditions_deserialize_as_sedna_writes_them() {
        let c: Condition = serde_json::from_str(
            r#"{"operator": "ge", "threshold": 0.1, "metric": "precision_delta[2]"}"#,
        )
        .unwrap();
        assert_eq!(c, condition("precision_delta[2]", ">=", 0.1));
        let t: Timer = serde_json::from_str(r#"{"start": "22:00", "end": "06:00"}"#).unwrap();
        assert!(t.contains(at("23:00")));
        let err = serde_json::from_str::<Condition>(
            r#"{"operator": "~", "threshold": 1, "metric": "m"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown operator"), "{err}");
    }
}
