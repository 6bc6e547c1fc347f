//! Predictions as JSON, one per line: Sedna's list of boxes `[[x1, y1, x2, y2, score,
//! label], ...]` (the label may be left out), `{"boxes": [...]}`, or
//! `{"class_scores": [p1, p2, ...]}` for a classification.

use serde_json::{Value, json};

use super::bindings::types::{Detections, Prediction};

const SHAPE: &str = "expected a list of boxes [x1, y1, x2, y2, score, label], {\"boxes\": [...]} or {\"class_scores\": [...]}";

/// Parses one prediction; the error says what was expected.
pub fn parse_prediction(text: &str) -> Result<Prediction, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON ({e}); {SHAPE}"))?;
    prediction_from_json(&value)
}

/// A prediction from JSON already parsed (a field of a larger document).
pub fn prediction_from_json(value: &Value) -> Result<Prediction, String> {
    match value {
        Value::Array(boxes) => detections(boxes),
        Value::Object(map) => match (map.get("boxes"), map.get("class_scores")) {
            (Some(Value::Array(boxes)), None) => detections(boxes),
            (None, Some(Value::Array(scores))) => scores
                .iter()
                .enumerate()
                .map(|(i, s)| number(s).ok_or_else(|| format!("class score {i} is not a number")))
                .collect::<Result<_, _>>()
                .map(Prediction::ClassScores),
            _ => Err(SHAPE.to_string()),
        },
        _ => Err(SHAPE.to_string()),
    }
}

fn detections(rows: &[Value]) -> Result<Prediction, String> {
    let mut detections = Detections::default();
    for (i, row) in rows.iter().enumerate() {
        let (corners, score, label) = row_of(row).ok_or_else(|| {
            format!("box {i} is not [x1, y1, x2, y2, score, label] with a whole label")
        })?;
        detections.push(corners, score, label);
    }
    Ok(Prediction::Detections(detections))
}

fn row_of(value: &Value) -> Option<([f32; 4], f32, u32)> {
    let fields = value.as_array()?;
    if !(5..=6).contains(&fields.len()) {
        return None;
    }
    let n = |i: usize| number(&fields[i]);
    let label = match fields.get(5) {
        Some(label) => u32::try_from(label.as_u64()?).ok()?,
        None => 0,
    };
    Some(([n(0)?, n(1)?, n(2)?, n(3)?], n(4)?, label))
}

fn number(value: &Value) -> Option<f32> {
    value.as_f64().map(|v| v as f32)
}

/// The JSON form `parse_prediction` reads back.
pub fn prediction_to_json(prediction: &Prediction) -> Value {
    match prediction {
        Prediction::Detections(detections) => Value::Array(
            detections
                .rows()
                .map(|([x1, y1, x2, y2], score, label)| json!([x1, y1, x2, y2, score, label]))
                .collect(),
        ),
        Prediction::ClassScores(scores) => json!({ "class_scores": scores }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_kinds() {
        for text in [
            "[[1.0,2.0,3.0,4.0,0.5,2],[0.0,0.0,1.0,1.0,0.25,0]]",
            "{\"class_scores\":[0.25,0.75]}",
            "[]",
        ] {
            let prediction = parse_prediction(text).unwrap();
            assert_eq!(prediction_to_json(&prediction).to_string(), text);
        }
        let no_label = parse_prediction("{\"boxes\": [[1, 2, 3, 4, 0.5]]}").unwrap();
        assert_eq!(
            prediction_to_json(&no_label).to_string(),
            "[[1.0,2.0,3.0,4.0,0.5,0]]"
        );
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        for (text, says) in [
            ("[[1,2,3]]", "box 0"),
            ("[[1,2,3,4,0.5,-1]]", "box 0"),
            ("[[1,2,3,4,0.5,1.5]]", "whole label"),
            ("{\"class_scores\": [0.5, \"x\"]}", "class score 1"),
            ("{\"other\": 1}", "expected a list of boxes"),
            ("not json", "not JSON"),
            ("42", "expected"),
        ] {
            let err = parse_prediction(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
