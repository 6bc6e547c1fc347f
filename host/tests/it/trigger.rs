//! A trigger ANDs Sedna's built-in condition with conditions written as plugins.

use crate::support::*;
use sedna::learn::trigger::{PluginConditions, Trigger};
use sedna::spec::Condition;

#[test]
fn builtin_and_plugin_conditions_must_all_hold() {
    let ratio = hard_example_ratio("4", "0.5");
    let samples: Condition =
        serde_json::from_str(r#"{"operator": ">", "threshold": 500, "metric": "num_of_samples"}"#)
            .unwrap();
    let trigger = Trigger {
        timer: None,
        conditions: vec![samples],
        plugins: PluginConditions::new(vec![ratio]),
    };
    let noon = "12:00".parse().unwrap();
    let bursty = metric("hard_examples", &[0.0, 1.0, 1.0, 1.0, 0.0]);
    let calm = metric("hard_examples", &[1.0, 0.0, 0.0, 1.0, 0.0]);

    let fired = trigger.evaluate(&[metric("num_of_samples", &[600.0]), bursty.clone()], noon);
    assert!(fired.fire, "{:?}", fired.reasons);

    let calm = trigger.evaluate(&[metric("num_of_samples", &[600.0]), calm], noon);
    assert!(!calm.fire);
    assert!(
        calm.reasons
            .iter()
            .any(|r| r.contains("HardExampleRatio") && r.contains("false")),
        "{:?}",
        calm.reasons
    );

    let few = trigger.evaluate(&[metric("num_of_samples", &[100.0]), bursty], noon);
    assert!(!few.fire);
    assert!(
        few.reasons
            .contains(&"num_of_samples 100 > 500 is false".to_string()),
        "{:?}",
        few.reasons
    );

    // The plugin cannot decide without its metric: false, and the status says why.
    let unknown = trigger.evaluate(&[metric("num_of_samples", &[600.0])], noon);
    assert!(!unknown.fire);
    assert!(
        unknown
            .reasons
            .iter()
            .any(|r| r.contains("cannot decide") && r.contains("hard_examples")),
        "{:?}",
        unknown.reasons
    );
}
