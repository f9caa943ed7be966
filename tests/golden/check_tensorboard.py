"""Reads tlmoe's TensorBoard event files back with TensorBoard's own reader and compares them with
the run's other records (tests/hf/test_tensorboard.cpp).

  check_tensorboard.py train RUN_DIR REFERENCE_METRICS_JSONL
      RUN_DIR/tensorboard, as TensorBoard's EventAccumulator loads it (orphaned events of a killed
      run purged), must hold every value of the reference run's metrics.jsonl: the same steps, the
      values as float32; route heatmaps as PNG images of the stated size at every evaluation.
  check_tensorboard.py adapt OUT_DIR
      one TensorBoard run per grid point: loss and lr at every step, the dev scores of
      progress.jsonl's dev_curve, the test score.
Exit 0 when everything matches; else the differences, exit 1.
"""
import json
import math
import os
import struct
import sys

import numpy as np
from tensorboard.backend.event_processing import event_accumulator as ea

problems = []


def load(path):
    acc = ea.EventAccumulator(path, size_guidance={ea.SCALARS: 0, ea.IMAGES: 0}, purge_orphaned_data=True)
    acc.Reload()
    return acc


def series(acc, tag):
    if tag not in acc.Tags()["scalars"]:
        problems.append(f"{acc.path}: no scalar {tag}")
        return {}
    out = {}
    for e in acc.Scalars(tag):
        if e.step in out:
            problems.append(f"{acc.path}: {tag} twice at step {e.step}")
        out[e.step] = e.value
    return out


def same(tag, got, want, exact=True):
    """got {step: float32 value}, want {step: value}."""
    if sorted(got) != sorted(want):
        problems.append(f"{tag}: steps {sorted(got)} != {sorted(want)}")
        return
    if not exact:
        return
    for s, v in want.items():
        if np.float32(v) != np.float32(got[s]):
            problems.append(f"{tag} at step {s}: {got[s]!r} != {np.float32(v)!r}")


def expected_train(lines):
    """tag -> ({step: value}, exact) from metrics.jsonl lines, by docs/tensorboard.md's table."""
    want = {}

    def put(tag, step, v, exact=True):
        if isinstance(v, (int, float)) and math.isfinite(v):
            want.setdefault(tag, ({}, exact))[0][step] = v

    for j in lines:
        s = j["step"]
        if "loss" in j:
            put("train/loss", s, j["loss"])
            put("train/grad_norm", s, j["grad_norm"])
            put("train/lr_multiplier", s, j["lr_multiplier"])
            put("train/tau", s, j["tau"])
            put("train/tokens_per_s", s, j["tokens_per_s"], exact=False)  # a timing
            for g, v in j["lr"].items():
                put(f"train/lr/{g}", s, v)
            for i, v in enumerate(j.get("route_entropy", [])):
                put(f"routes/entropy/{layer_name(i, len(j['route_entropy']))}", s, v)
        if "dev_loss" in j:
            put("dev/loss", s, j["dev_loss"])
            put("dev/score", s, j.get("dev_score"))
            put("dev/top_answer_share", s, j.get("dev_top_share"))
            put("dev/collapsed_tasks", s, len(j.get("collapsed_tasks", [])))
            for t, v in j.get("dev_task_scores", {}).items():
                put(f"dev_task_score/{t}", s, v)
            for t, v in j.get("dev_task_losses", {}).items():
                put(f"dev_task_loss/{t}", s, v)
    return want


ENCODER_LAYERS = None


def layer_name(i, n):
    e = ENCODER_LAYERS
    return f"enc{i + 1}" if i < e else f"dec{i - e + 1}"


def png_size(data):
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def check_train(run_dir, reference):
    global ENCODER_LAYERS
    lines = [json.loads(l) for l in open(reference) if l.strip()]
    cfg = open(os.path.join(run_dir, "config.resolved.yaml")).read()
    ENCODER_LAYERS = int(cfg.split("encoder_layers:")[1].split()[0])
    acc = load(os.path.join(run_dir, "tensorboard"))
    want = expected_train(lines)
    for tag, (w, exact) in sorted(want.items()):
        same(tag, series(acc, tag), w, exact)
    extra = set(acc.Tags()["scalars"]) - set(want) - {"system/peak_memory_mib", "dev/score_seconds"}
    if extra:
        problems.append(f"unexpected scalars {sorted(extra)}")
    dev_steps = sorted(j["step"] for j in lines if "dev_loss" in j)
    images = acc.Images("routes/heatmap") if "routes/heatmap" in acc.Tags()["images"] else []
    if sorted(i.step for i in images) != dev_steps:
        problems.append(f"heatmap steps {[i.step for i in images]} != evaluations {dev_steps}")
    for im in images:
        if png_size(im.encoded_image_string) != (im.width, im.height):
            problems.append(f"heatmap at step {im.step}: PNG size {png_size(im.encoded_image_string)} != {(im.width, im.height)}")
    print(f"train: {len(want)} scalar tags, {sum(len(w) for w, _ in want.values())} values, {len(images)} images")


def check_adapt(out_dir):
    points = [json.loads(l) for l in open(os.path.join(out_dir, "progress.jsonl")) if l.strip()]
    steps = json.load(open(os.path.join(out_dir, "sweep.json")))["steps"]
    for p in points:
        d = os.path.join(out_dir, "tensorboard", p["task"], f"split{p['seed']}_lr{p['lr']:g}_bs{p['batch_size']}")
        acc = load(d)
        loss = series(acc, "adapt/loss")
        same("adapt/loss", loss, {s: 0 for s in range(1, steps + 1)}, exact=False)
        if any(not (v > 0) for v in loss.values()):
            problems.append(f"{d}: a non-positive loss")
        same("adapt/lr", series(acc, "adapt/lr"), {s: 0 for s in range(1, steps + 1)}, exact=False)
        same("adapt/dev_score", series(acc, "adapt/dev_score"), {c["step"]: c["dev"] for c in p["dev_curve"]})
        same("adapt/test_score", series(acc, "adapt/test_score"), {p["best_step"]: p["test"]})
    print(f"adapt: {len(points)} grid points")


if __name__ == "__main__":
    if sys.argv[1] == "train":
        check_train(sys.argv[2], sys.argv[3])
    else:
        check_adapt(sys.argv[2])
    for p in problems:
        print(p)
    sys.exit(1 if problems else 0)
