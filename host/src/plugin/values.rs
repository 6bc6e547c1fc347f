//! The contract's small values as the rest of the host holds them: parameters from
//! Sedna's `{key, value}` entries, and metrics as a map by name.

use std::collections::BTreeMap;

use super::bindings::types::{Metric, Param};
use crate::spec::KeyValue;

/// Sedna's `{key, value}` entries as plugin parameters.
pub fn params(values: &[KeyValue]) -> Vec<Param> {
    values
        .iter()
        .map(|kv| Param {
            key: kv.key.clone(),
            value: kv.value.clone(),
        })
        .collect()
}

/// The parameter `key` (the last entry wins, as later `env` entries do).
pub fn setting<'a>(params: &'a [Param], key: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|p| p.key == key)
        .map(|p| p.value.as_str())
}

/// Metrics by name: how reports and the job's status write them.
pub type MetricMap = BTreeMap<String, Vec<f64>>;

pub fn metric_map(metrics: &[Metric]) -> MetricMap {
    metrics
        .iter()
        .map(|m| (m.name.clone(), m.values.clone()))
        .collect()
}

pub fn metrics_of(map: &MetricMap) -> Vec<Metric> {
    map.iter()
        .map(|(name, values)| Metric {
            name: name.clone(),
            values: values.clone(),
        })
        .collect()
}

/// `new - deployed` for every metric both have, element by element, as `<name>_delta`.
pub fn deltas(new: &[Metric], deployed: &[Metric]) -> Vec<Metric> {
    new.iter()
        .filter_map(|n| {
            let d = deployed.iter().find(|d| d.name == n.name)?;
            (n.values.len() == d.values.len()).then(|| Metric {
                name: format!("{}_delta", n.name),
                values: n.values.iter().zip(&d.values).map(|(a, b)| a - b).collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_round_trip_and_deltas_pair_metrics_by_name() {
        let new = vec![
            Metric {
                name: "ap".into(),
                values: vec![0.5, 0.75],
            },
            Metric {
                name: "loss".into(),
                values: vec![1.0],
            },
        ];
        assert_eq!(metrics_of(&metric_map(&new)), new);
        let deployed = vec![Metric {
            name: "ap".into(),
            values: vec![0.25, 0.5],
        }];
        assert_eq!(
            deltas(&new, &deployed),
            vec![Metric {
                name: "ap_delta".into(),
                values: vec![0.25, 0.25]
            }]
        );
    }
}
