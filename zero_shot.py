"""Baseline: zero-shot classification with the class names (the paper's "CLIP (zero-shot)", an upper
reference that needs the class names TAC does without).

Each class name goes into the same 7 templates as the nouns (mean of the raw features); every test
image takes the class of highest cosine. Writes class_name_embedding.npy (also the text space of
`retrieve_text.py --text-space classnames`), zero_shot_preds.npy and zero_shot_metrics.json.
"""
import os

import numpy as np

from utils.backbones import load_backbone
from utils.clustering import l2_normalize
from utils.config import base_parser, start_stage
from utils.io import StageError, read_csv_column, run_main
from utils.metrics import evaluate, format_metrics
from utils.text_space import TEMPLATES, encode_vocabulary


def build_parser():
    parser = base_parser(__doc__)
    parser.add_argument("--templates", nargs="+", default=list(TEMPLATES), help="prompt templates with {} for the class name")
    return parser


def main():
    args = build_parser().parse_args()
    run, device = start_stage(__file__, args)
    folder = run.folder
    images = run.load_embedding(os.path.join(folder, "image_embedding_test.npy"), "image_embedding.py")
    labels = run.load_labels(os.path.join(folder, "labels_test.npy"), len(images))
    names_path = os.path.join(folder, "class_names.csv")
    run.check_input(names_path, "image_embedding.py (the dataset must name its classes: class subfolders or a known dataset)")
    names = read_csv_column(names_path, "name")
    if labels.max() >= len(names):
        raise StageError(f"labels go up to {labels.max()} but class_names.csv has {len(names)} names: re-run image_embedding.py")
    backbone = load_backbone(args.backbone, device, cache_dir=os.path.join(args.data_dir, "backbones"))
    classes, _ = encode_vocabulary(backbone, names, args.templates)
    preds = (l2_normalize(images) @ l2_normalize(classes).T).argmax(1).astype(np.int64)
    metrics = evaluate(labels, preds)
    run.save_array(os.path.join(folder, "class_name_embedding.npy"), classes, {"templates": args.templates})
    run.save_array(os.path.join(folder, "zero_shot_preds.npy"), preds)
    run.save_json(os.path.join(folder, "zero_shot_metrics.json"), {"method": "zero_shot", "split": "test", "metrics": metrics})
    print(f"zero-shot with {len(names)} class names on {len(preds)} test images: {format_metrics(metrics)} -> {folder}")


if __name__ == "__main__":
    run_main(main)
