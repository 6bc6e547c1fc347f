"""What a Sedna user runs today, per frame: Pillow decodes, numpy pre-processes,
onnxruntime runs the model, numpy decodes the YOLOv8 head, a Python loop does NMS, Sedna's
IBT rule decides, and a hard example is written (the frame file copied, a half-size
JPEG preview with the boxes, a JSON line). The same steps, thresholds and model (the
helmet example's YOLOv8-style detector, letterboxed) as the Rust worker.

Prints one JSON object: per-round milliseconds per frame, peak RSS, and every frame's
decision and boxes (for the agreement check)."""

import argparse
import json
import os
import resource
import shutil
import sys
import time

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageDraw


def letterbox(x, width, height):
    """The frame (H, W, 3 floats) scaled to fit width x height and padded with grey 114,
    centred, as the Rust host pre-processes (bilinear with half-pixel centres: a halving
    is the mean of each 2x2 square). Returns the input and the scale and padding."""
    h, w = x.shape[0], x.shape[1]
    scale = min(width / w, height / h)
    if scale == 0.5 and h % 2 == 0 and w % 2 == 0:
        small = x.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
    else:
        raise SystemExit(f"this loop letterboxes by halving only ({w}x{h} into {width}x{height})")
    sh, sw = small.shape[0], small.shape[1]
    pad_y, pad_x = (height - sh) // 2, (width - sw) // 2
    out = np.full((height, width, 3), 114.0 / 255.0, dtype=np.float32)
    out[pad_y : pad_y + sh, pad_x : pad_x + sw] = small
    return out, scale, pad_x, pad_y


def decode_yolov8(out, classes, threshold):
    """The YOLOv8 head [1, 4 + C, boxes]: centre, size (input pixels), class scores."""
    rows = out[0]
    scores = rows[4 : 4 + classes]
    best = scores.argmax(axis=0)
    top = scores[best, np.arange(scores.shape[1])]
    keep = np.nonzero(top >= threshold)[0]
    found = []
    for i in keep:
        cx, cy, w, h = (float(v) for v in rows[0:4, i])
        found.append(([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], float(top[i]), int(best[i])))
    return found


def iou(a, b):
    w = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    h = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = w * h
    area = lambda r: max(r[2] - r[0], 0.0) * max(r[3] - r[1], 0.0)
    union = area(a) + area(b) - inter
    return 0.0 if union <= 0 else inter / union


def nms(candidates, threshold):
    kept = []
    for c in sorted(candidates, key=lambda c: -c[1]):
        if not any(k[2] == c[2] and iou(k[0], c[0]) > threshold for k in kept):
            kept.append(c)
    return kept


class IBTFilter:
    """Sedna's image-box-threshold rule (lib/sedna/algorithms/hard_example_mining)."""

    def __init__(self, threshold_img=0.5, threshold_box=0.5):
        self.threshold_img = threshold_img
        self.threshold_box = threshold_box

    def __call__(self, infer_result=None):
        if not infer_result:
            return False
        uncertain = [s for s in infer_result if float(s) <= self.threshold_box]
        return len(uncertain) / len(infer_result) >= 1 - self.threshold_img


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--frames", required=True, help="a file listing the frames, one path a line")
    parser.add_argument("--out", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--obj-threshold", type=float, default=0.25)
    parser.add_argument("--nms-threshold", type=float, default=0.45)
    parser.add_argument("--threshold-img", type=float, default=0.5)
    parser.add_argument("--threshold-box", type=float, default=0.3)
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    classes = meta["names"].count(":")
    model_input = session.get_inputs()[0]
    height, width = model_input.shape[2], model_input.shape[3]
    output = session.get_outputs()[0].name
    ibt = IBTFilter(args.threshold_img, args.threshold_box)
    frames = [line.strip() for line in open(args.frames) if line.strip()]
    os.makedirs(args.out, exist_ok=True)

    def one_frame(path, keep):
        image = Image.open(path).convert("RGB")
        x = np.asarray(image, dtype=np.float32) * (1.0 / 255.0)
        x, scale, pad_x, pad_y = letterbox(x, width, height)
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
        out = session.run([output], {model_input.name: x})[0]
        boxes = nms(decode_yolov8(out, classes, args.obj_threshold), args.nms_threshold)
        # Corners in the frame's pixels, clipped to it, as the Rust estimator gives them.
        frame_w, frame_h = image.size
        boxes = [([min(max((v - pad) / scale, 0.0), bound)
                   for v, pad, bound in zip(corners, (pad_x, pad_y) * 2, (frame_w, frame_h) * 2)], score, label)
                 for corners, score, label in boxes]
        hard = ibt([score for _, score, _ in boxes])
        if hard and keep:
            # What the Rust worker keeps: the frame file's own bytes, a half-size JPEG
            # preview with the boxes drawn, a JSON line.
            name = os.path.splitext(os.path.basename(path))[0]
            shutil.copyfile(path, os.path.join(args.out, os.path.basename(path)))
            preview = image.reduce(2)
            draw = ImageDraw.Draw(preview)
            for corners, _, _ in boxes:
                draw.rectangle([v / 2 for v in corners], outline=(255, 32, 32))
            preview.save(os.path.join(args.out, name + ".preview.jpg"))
            with open(os.path.join(args.out, "index.jsonl"), "a") as index:
                index.write(json.dumps({"image": os.path.basename(path), "boxes": [b[0] for b in boxes],
                                        "scores": [b[1] for b in boxes], "labels": [b[2] for b in boxes]}) + "\n")
        return hard, boxes

    for path in frames[:3]:  # warm up, as the Rust side does
        one_frame(path, keep=False)
    rounds = []
    decisions = []
    for r in range(args.rounds):
        started = time.perf_counter()
        for path in frames:
            hard, boxes = one_frame(path, keep=True)
            if r == 0:
                decisions.append({
                    "frame": os.path.splitext(os.path.basename(path))[0],
                    "hard": hard,
                    "boxes": [[float(v) for v in b[0]] for b in boxes],
                    "scores": [b[1] for b in boxes],
                    "labels": [b[2] for b in boxes],
                })
        rounds.append((time.perf_counter() - started) * 1e3 / len(frames))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    json.dump({"ms_per_frame": rounds, "peak_rss_kib": peak_kib, "decisions": decisions,
               "versions": {"python": sys.version.split()[0], "onnxruntime": ort.__version__,
                            "numpy": np.__version__, "pillow": Image.__version__}}, sys.stdout)


if __name__ == "__main__":
    main()
