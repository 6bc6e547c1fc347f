// IBT hard-example mining for Sedna, in JavaScript.
//
// Built with componentize-js into a WebAssembly component of the world
// `sedna:plugin/hard-example-miner@0.3.0` (wit/plugin.wit). It makes the same decisions as
// the built-in `IBT` (plugins/hem-ibt): a frame is hard when the share of its boxes whose
// score is at most `threshold_box` is at least `1 - threshold_img`. A frame with no boxes
// is not hard, nor is one with a score outside [0, 1] (logged once), nor a classification.
//
// How componentize-js maps the WIT types to JavaScript:
//   - a `record` is a plain object with camelCase fields (`rows`);
//   - a `list<f32>` is a Float32Array;
//   - a `variant` is `{ tag, val }` with the case name as the tag (`'detections'`);
//   - an `enum` is its case name as a string (`'warn'`);
//   - `result<_, string>`: returning normally is `ok`, throwing a string is `err(string)`;
//   - the exported interface `mining` is an exported object of that name whose methods are
//     the interface's functions in camelCase; the import `sedna:plugin/log` is an ES import.

import { log } from 'sedna:plugin/log@0.3.0';

const DEFAULT_THRESHOLD = 0.5;

// A decimal number as Rust's `f64::from_str` reads it: an optional sign, digits with an
// optional fraction (or a bare fraction), an optional exponent. No hex, no `_`, no empty
// string, which `Number()` would accept as 0.
const NUMBER = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;

// Both thresholds are doubles, as Sedna's Python floats (and the Rust built-in's f64) are,
// so decisions on the boundary (1 box of 10 with `threshold_img` 0.9) agree.
let thresholdImg = DEFAULT_THRESHOLD;
let thresholdBox = DEFAULT_THRESHOLD;
let warnedScore = false;

// The value of `key` (the last one wins), or `undefined` when the key is missing.
function lastValue(params, key) {
  let value;
  for (const param of params) {
    if (param.key === key) {
      value = param.value;
    }
  }
  return value;
}

// A number in [0, 1], or `fallback` when the key is missing. Throws the `err` message
// otherwise: it names the key, the value and the accepted range.
function unit(params, key, fallback) {
  const raw = lastValue(params, key);
  if (raw === undefined) {
    return fallback;
  }
  const value = raw.trim();
  const number = NUMBER.test(value) ? Number(value) : NaN;
  if (!(number >= 0 && number <= 1)) {
    throw `parameter \`${key}\` is ${JSON.stringify(value)}: expected a number in [0, 1]`;
  }
  return number;
}

// Values in one of Sedna's rows [x1, y1, x2, y2, score, label], as `detections` lays
// them out end to end.
const ROW = 6;

// The decision for one frame's rows, or `undefined` when a score is outside [0, 1].
function isHard(rows) {
  const boxes = Math.floor(rows.length / ROW);
  if (boxes === 0) {
    return false;
  }
  let uncertain = 0;
  for (let i = 0; i < boxes; i++) {
    const score = rows[i * ROW + 4];
    if (!(score >= 0 && score <= 1)) {
      return undefined;
    }
    // At the scores' own precision (f32): a score written as 0.3 equals a threshold
    // written as 0.3.
    if (Math.fround(score) <= Math.fround(thresholdBox)) {
      uncertain += 1;
    }
  }
  return uncertain / boxes >= 1 - thresholdImg;
}

function isHardExample(prediction) {
  if (prediction.tag !== 'detections') {
    // `class-scores`: IBT is defined on boxes only.
    return false;
  }
  // Boxes come as Sedna's rows end to end (`rows`); IBT needs only the scores.
  const hard = isHard(prediction.val.rows);
  if (hard === undefined) {
    if (!warnedScore) {
      warnedScore = true;
      log('warn', 'a box score is outside [0, 1]: such frames are not hard examples');
    }
    return false;
  }
  return hard;
}

export const mining = {
  // `result<_, string>`: a thrown string is the `err`; nothing changes on error.
  init(params) {
    const img = unit(params, 'threshold_img', DEFAULT_THRESHOLD);
    const box = unit(params, 'threshold_box', DEFAULT_THRESHOLD);
    thresholdImg = img;
    thresholdBox = box;
  },

  isHardExample,

  isHardExampleBatch(predictions) {
    return predictions.map(isHardExample);
  },
};
