//! Helpers on the contract's `detections`: Sedna's rows `[x1, y1, x2, y2, score, label]`
//! laid end to end in one list.

use super::bindings::types::Detections;

// bindgen's `additional_derives` would apply to every type, and variants cannot derive it.
#[allow(clippy::derivable_impls)]
impl Default for Detections {
    fn default() -> Self {
        Detections { rows: Vec::new() }
    }
}

/// Values in one of Sedna's rows `[x1, y1, x2, y2, score, label]`, as `detections` lays
/// them out (the guests' SDK mirrors these helpers on its own bindings).
pub const ROW: usize = 6;

impl Detections {
    /// Appends one box: corners `[x1, y1, x2, y2]`, score and class index.
    pub fn push(&mut self, corners: [f32; 4], score: f32, label: u32) {
        self.rows.extend_from_slice(&corners);
        self.rows.extend([score, label as f32]);
    }

    /// From Sedna's rows `([x1, y1, x2, y2], score, label)`.
    pub fn from_rows(rows: impl IntoIterator<Item = ([f32; 4], f32, u32)>) -> Self {
        let mut detections = Detections::default();
        for (corners, score, label) in rows {
            detections.push(corners, score, label);
        }
        detections
    }

    pub fn len(&self) -> usize {
        self.rows.len() / ROW
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The boxes as Sedna's rows. A trailing partial row is left out; a label that is
    /// not a whole number is cut to one (a negative one to 0).
    pub fn rows(&self) -> impl Iterator<Item = ([f32; 4], f32, u32)> + '_ {
        self.rows
            .chunks_exact(ROW)
            .map(|r| ([r[0], r[1], r[2], r[3]], r[4], r[5] as u32))
    }
}
