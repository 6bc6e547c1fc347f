// IBT hard-example mining, Sedna's `IBT` algorithm, as a C plugin for the world
// `hard-example-miner` of sedna:plugin@0.3.0 (wit/plugin.wit).
//
// A frame is hard when the share of its boxes whose score is at most `threshold_box` is
// at least `1 - threshold_img`. A frame with no boxes is not hard; neither is one with a
// score outside [0, 1] (Sedna's rule; the plugin logs it once). Classification scores are
// never hard. The rule and its parameters are those of the built-in `hem-ibt`
// (plugins/hem-ibt), and both must agree on tests/vectors/ibt.json.
//
// `hard_example_miner.h` is generated at build time by `wit-bindgen c` (see build.sh).
// Ownership, as wit-bindgen's C bindings define it: an exported function owns its
// arguments (and frees them); what it returns through a pointer is freed by the
// bindings after the host has copied it.

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "hard_example_miner.h"

typedef hard_example_miner_string_t string_t;

// The two thresholds, each in [0, 1]. Kept in double, as Sedna's Python floats are, so
// that decisions on the boundary (1 box of 10 with threshold_img 0.9) agree.
static double threshold_img = 0.5;
static double threshold_box = 0.5;
static bool warned_score = false;

// ---- parameters ---------------------------------------------------------------------

static bool is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static bool is_digit(unsigned char c) {
    return c >= '0' && c <= '9';
}

static bool key_is(const string_t *key, const char *name) {
    size_t n = strlen(name);
    return key->len == n && memcmp(key->ptr, name, n) == 0;
}

// Whether s[0..n) is a decimal number: [+-] (digits [. digits] | . digits) [(e|E) [+-] digits].
// strtod alone would also take hexadecimal, "inf", "nan" and leading blanks.
static bool is_decimal(const char *s, size_t n) {
    size_t i = 0, digits = 0;
    if (i < n && (s[i] == '+' || s[i] == '-')) i++;
    while (i < n && is_digit((unsigned char)s[i])) i++, digits++;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && is_digit((unsigned char)s[i])) i++, digits++;
    }
    if (digits == 0) return false;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t exp_digits = 0;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        while (i < n && is_digit((unsigned char)s[i])) i++, exp_digits++;
        if (exp_digits == 0) return false;
    }
    return i == n;
}

// Writes `value` to `out` quoted, with quotes, backslashes and control bytes escaped as
// Rust's `{:?}` does (the built-in plugin's messages); at most 6 bytes per input byte, + 3.
static size_t quote(char *out, const char *value, size_t n) {
    size_t o = 0;
    out[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c == '\t' || c == '\n' || c == '\r' || c == '\0') {
            out[o++] = '\\';
            out[o++] = c == '\t' ? 't' : c == '\n' ? 'n' : c == '\r' ? 'r' : '0';
        } else if (c < 0x20 || c == 0x7f) {
            static const char hex[] = "0123456789abcdef";
            memcpy(out + o, "\\u{", 3);
            o += 3;
            if (c >= 0x10) out[o++] = hex[c >> 4];
            out[o++] = hex[c & 0xf];
            out[o++] = '}';
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    return o;
}

// Reads parameter `name` (the last one wins; surrounding blanks are ignored) into *out.
// A missing key leaves *out as it is. On a bad value, sets *err and returns false.
static bool read_unit(const exports_sedna_plugin_mining_list_param_t *params, const char *name,
                      double *out, string_t *err) {
    const string_t *found = NULL;
    for (size_t i = params->len; i > 0; i--) {
        if (key_is(&params->ptr[i - 1].key, name)) {
            found = &params->ptr[i - 1].value;
            break;
        }
    }
    if (found == NULL) return true;

    const char *s = (const char *)found->ptr;
    size_t n = found->len;
    while (n > 0 && is_space((unsigned char)s[0])) s++, n--;
    while (n > 0 && is_space((unsigned char)s[n - 1])) n--;

    if (is_decimal(s, n)) {
        char *copy = malloc(n + 1);
        if (copy == NULL) abort();
        memcpy(copy, s, n);
        copy[n] = '\0';
        char *end = NULL;
        double v = strtod(copy, &end);
        bool whole = end == copy + n;
        free(copy);
        if (whole && v >= 0.0 && v <= 1.0) {
            *out = v;
            return true;
        }
    }

    // parameter `NAME` is "VALUE": expected a number in [0, 1]
    static const char expected[] = ": expected a number in [0, 1]";
    static const char before[] = "parameter `", after[] = "` is ";
    size_t name_len = strlen(name);
    char *message = malloc(strlen(before) + name_len + strlen(after) + 6 * n + 2 + sizeof expected);
    if (message == NULL) abort();
    size_t o = 0;
    memcpy(message + o, before, strlen(before));
    o += strlen(before);
    memcpy(message + o, name, name_len);
    o += name_len;
    memcpy(message + o, after, strlen(after));
    o += strlen(after);
    o += quote(message + o, s, n);
    memcpy(message + o, expected, sizeof expected);
    hard_example_miner_string_dup(err, message);
    free(message);
    return false;
}

bool exports_sedna_plugin_mining_init(exports_sedna_plugin_mining_list_param_t *params,
                                      string_t *err) {
    double img = 0.5, box = 0.5;
    bool ok = read_unit(params, "threshold_img", &img, err) &&
              read_unit(params, "threshold_box", &box, err);
    exports_sedna_plugin_mining_list_param_free(params);
    if (!ok) return false;
    threshold_img = img;
    threshold_box = box;
    return true;
}

// ---- decisions ----------------------------------------------------------------------

static void warn_score_once(void) {
    if (warned_score) return;
    warned_score = true;
    string_t message;
    hard_example_miner_string_set(
        &message, "a box score is outside [0, 1]: such frames are not hard examples");
    sedna_plugin_log_log(SEDNA_PLUGIN_LOG_LEVEL_WARN, &message);
}

static bool decide(const exports_sedna_plugin_mining_prediction_t *prediction) {
    if (prediction->tag != SEDNA_PLUGIN_TYPES_PREDICTION_DETECTIONS) return false;
    // Boxes come as Sedna's rows [x1, y1, x2, y2, score, label] end to end; IBT needs
    // only the scores.
    const hard_example_miner_list_f32_t *rows = &prediction->val.detections.rows;
    size_t boxes = rows->len / 6;
    if (boxes == 0) return false;
    size_t uncertain = 0;
    for (size_t i = 0; i < boxes; i++) {
        float score = rows->ptr[i * 6 + 4];
        if (!(score >= 0.0f && score <= 1.0f)) {  // NaN is outside too
            warn_score_once();
            return false;
        }
        // At the scores' own precision: a score written as 0.3 equals a threshold
        // written as 0.3.
        if (score <= (float)threshold_box) uncertain++;
    }
    return (double)uncertain / (double)boxes >= 1.0 - threshold_img;
}

bool exports_sedna_plugin_mining_is_hard_example(
    exports_sedna_plugin_mining_prediction_t *prediction) {
    bool hard = decide(prediction);
    exports_sedna_plugin_mining_prediction_free(prediction);
    return hard;
}

void exports_sedna_plugin_mining_is_hard_example_batch(
    exports_sedna_plugin_mining_list_prediction_t *predictions,
    hard_example_miner_list_bool_t *ret) {
    size_t n = predictions->len;
    ret->len = n;
    ret->ptr = NULL;
    if (n > 0) {
        ret->ptr = malloc(n * sizeof(bool));
        if (ret->ptr == NULL) abort();
        for (size_t i = 0; i < n; i++) ret->ptr[i] = decide(&predictions->ptr[i]);
    }
    exports_sedna_plugin_mining_list_prediction_free(predictions);
}
