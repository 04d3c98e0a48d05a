"""Baseline: zero-shot classification with the class names (the paper's "CLIP (zero-shot)", an upper
reference that needs the class names TAC does without).

Each class name goes into the same 7 templates as the nouns (mean of the raw features); every test
image takes the class of highest cosine. Writes class_name_embedding.npy (also the text space of
`retrieve_text.py --text-space classnames`), zero_shot_preds.npy and zero_shot_metrics.json.
"""

import numpy as np

from utils.backbones import encoder_record, load_backbone
from utils.cli import add_runtime_arg, base_parser
from utils.errors import StageError, parse_args, run_main
from utils.metrics import evaluate, format_metrics
from utils.rows import l2_normalize
from utils.stage import start_stage
from utils.text_space import TEMPLATES, encode_vocabulary, read_csv_column


# The stage's contract: the files it reads and writes (WRITES: name -> (folder, file name pattern);
# utils/paths.py), and the arguments that cannot change what it writes (same_result).
READS = ("image_embedding", "labels", "class_names")
WRITES = {
    "class_name_embedding": ("run", "class_name_embedding.npy"),
    "zero_shot_preds": ("run", "zero_shot_preds.npy"),
    "zero_shot_metrics": ("run", "zero_shot_metrics.json"),
}


def same_result(args):
    return ("seed", "runtime")


def build_parser():
    parser = base_parser(__doc__, runs=True)
    parser.add_argument("--templates", nargs="+", default=list(TEMPLATES), help="prompt templates with {} for the class name")
    add_runtime_arg(parser)
    return parser


def outputs(layout, args):
    return [layout.path(name) for name in ("class_name_embedding", "zero_shot_preds", "zero_shot_metrics")]


def main():
    args = parse_args(build_parser())
    run, device = start_stage(__file__, args, same_result)
    images = run.load_embedding(run.path("image_embedding", split="test"))
    labels = run.load_labels(run.path("labels", split="test"), len(images))
    names_path = run.path("class_names")
    run.check_input(names_path, "image_embedding.py (the dataset must name its classes: class subfolders or a known dataset)")
    names = read_csv_column(names_path, "name")
    if labels.max() >= len(names):
        raise StageError(f"labels go up to {labels.max()} but class_names.csv has {len(names)} names: re-run image_embedding.py")
    backbone = load_backbone(args.backbone, device, cache_dir=run.layout.backbones, runtime=args.runtime)
    classes, _ = encode_vocabulary(backbone, names, args.templates)
    run.record["encoder"] = encoder_record(backbone, device, "text", 256)  # encode_vocabulary's batch
    preds = (l2_normalize(images) @ l2_normalize(classes).T).argmax(1).astype(np.int64)
    metrics = evaluate(labels, preds)
    run.save_array(run.path("class_name_embedding"), classes, {"templates": args.templates})
    run.save_array(run.path("zero_shot_preds"), preds)
    run.save_json(run.path("zero_shot_metrics"), {"method": "zero_shot", "split": "test", "metrics": metrics})
    print(f"zero-shot with {len(names)} class names on {len(preds)} test images: {format_metrics(metrics)} -> {run.layout.run}")


if __name__ == "__main__":
    run_main(main)
