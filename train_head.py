"""Stage 6: train the image and text cluster heads by cross-modal mutual distillation.

Neighbours: the top --neighbors of every train image among the train images, and of every text
counterpart among the counterparts (inner product of normalised rows, itself excluded). Loss:
Dis(P, Q_n) + Dis(Q, P_n) + Con(P, Q) - alpha (H(P) + H(Q)). After every epoch the image head's
argmax on the test images is scored. Writes head.pt, head_preds.npy and head_metrics.json.
"""
import torch
from tqdm import tqdm

from utils import tac
from utils.cli import add_num_clusters, base_parser
from utils.config import HEAD_DEFAULTS, LARGE_DATASET_HEAD, LARGE_DATASETS
from utils.errors import add_number, parse_args, run_main
from utils.losses import ALL_TERMS
from utils.metrics import evaluate, format_metrics
from utils.num_clusters import resolve_num_clusters
from utils.rows import l2_normalize
from utils.stage import start_stage
from utils.tac import HeadConfig

NEIGHBORS = 50  # the authors' neighbours per sample, where the train split has more samples


# The stage's contract: the files it reads and writes (WRITES: name -> (folder, file name pattern);
# utils/paths.py), and the arguments that cannot change what it writes (same_result).
READS = ("image_embedding", "labels", "retrieved_text")
WRITES = {
    "head": ("run", "{prefix}.pt"),
    "head_preds": ("run", "{prefix}_preds.npy"),
    "head_metrics": ("run", "{prefix}_metrics.json"),
}


def same_result(args):
    return ()


def build_parser():
    parser = base_parser(__doc__, runs=True)
    add_num_clusters(parser)
    add_number(parser, "--epochs", int, None, low=1, help="20; 100 for ucf101 and imagenet, as the authors")
    add_number(parser, "--batch-size", int, None, low=1, help="512; 8192 for ucf101 and imagenet")
    add_number(parser, "--lr", float, 1e-3, low=0, low_open=True)
    add_number(parser, "--tau", float, None, low=0, low_open=True, help="cluster-contrastive temperature: 0.5; 5.0 for ucf101 and imagenet")
    add_number(parser, "--alpha", float, 5.0, low=0, help="weight of the entropy term")
    add_number(parser, "--neighbors", int, None, low=1,
               help=f"neighbours sampled from, per modality: {NEIGHBORS}, or one fewer than the train samples where there are no more")
    parser.add_argument("--approximate-knn", action="store_true", help="HNSW neighbours instead of exact search (ImageNet-1K scale on a CPU)")
    parser.add_argument("--variant", choices=["tac", "dxmc"], default="tac",
                        help="dxmc: add an instance head per modality and their contrastive loss, drop the consistency term (DXMC)")
    parser.add_argument("--loss-terms", nargs="+", choices=list(ALL_TERMS), default=None,
                        help="TAC loss terms to use (Table V ablations); default: dis con entropy (tac), dis entropy (dxmc)")
    parser.add_argument("--instance-on", choices=["embedding", "trunk"], default="embedding",
                        help="DXMC's instance heads read the frozen embeddings (as described; no effect on the clusters) "
                             "or the cluster heads' hidden layer (trunk: the instance term then shapes the clusters)")
    add_number(parser, "--instance-tau", float, None, low=0, low_open=True, help="DXMC's instance temperature: 0.05; 0.5 for ucf101 and imagenet")
    parser.add_argument("--out-prefix", default=None, help="output names <prefix>.pt, <prefix>_preds.npy, <prefix>_metrics.json "
                        "(default: head, dxmc_head, or with the loss terms appended when they differ from the variant's)")
    return parser


def head_prefix(args):
    """Output prefix: head, dxmc_head (dxmc_trunk_head), with the loss terms when they differ; and the terms."""
    dxmc = args.variant == "dxmc"
    default_terms = ("dis", "entropy") if dxmc else ALL_TERMS
    terms = tuple(t for t in ALL_TERMS if t in (args.loss_terms or default_terms))
    base = ("dxmc_trunk_head" if args.instance_on == "trunk" else "dxmc_head") if dxmc else "head"
    return args.out_prefix or base + ("" if terms == default_terms else "_" + "+".join(terms)), terms


def outputs(layout, args):
    return [layout.path(name, prefix=head_prefix(args)[0]) for name in ("head", "head_preds", "head_metrics")]


def head_config(args):
    """The training settings: the authors' for this dataset where an argument is not given (the
    sidecar keeps the arguments as given)."""
    large = args.dataset in LARGE_DATASETS
    defaults = LARGE_DATASET_HEAD if large else HEAD_DEFAULTS
    given = {name: getattr(args, name) for name in ("epochs", "batch_size", "tau")}
    instance_tau = (args.instance_tau or (0.5 if large else 0.05)) if args.variant == "dxmc" else None
    return HeadConfig(**{n: defaults[n] if v is None else v for n, v in given.items()}, lr=args.lr, alpha=args.alpha,
                      seed=args.seed, terms=head_prefix(args)[1], instance_tau=instance_tau, instance_on=args.instance_on)


def num_neighbors(args, num_train):
    """--neighbors, else NEIGHBORS; a small folder of photos samples from all its other images."""
    if args.neighbors is not None:
        return args.neighbors
    if num_train - 1 < NEIGHBORS:
        print(f"note: only {num_train} train samples; using {max(1, num_train - 1)} neighbours instead of {NEIGHBORS}")
    return max(1, min(NEIGHBORS, num_train - 1))


def train(images, texts, test_images, test_labels, k, config, neighbors, args, device):
    """tac.train_heads on the normalised rows, with a progress bar and the test metrics after every
    epoch; returns the heads, the log and the test predictions."""
    x, t = l2_normalize(images), l2_normalize(texts)
    print(f"finding {neighbors} neighbours of {len(x)} train samples per modality")
    x_nb, t_nb = (tac.neighbors(rows, neighbors, device, args.approximate_knn) for rows in (x, t))
    test_x = torch.from_numpy(l2_normalize(test_images)).to(device)
    steps = len(x) // min(config.batch_size, len(x))
    with tqdm(total=steps * config.epochs, desc=f"training heads (K={k}, {config.epochs} epochs)", unit="step") as bar:
        def after_epoch(image_head, epoch):
            metrics = evaluate(test_labels, tac.predict(image_head, test_x))
            if metrics is not None:
                bar.set_postfix(epoch=epoch, acc=f"{metrics['acc']:.1f}", nmi=f"{metrics['nmi']:.1f}")
            return {"test": metrics}

        heads, log = tac.train_heads(torch.from_numpy(x).to(device), torch.from_numpy(t).to(device), x_nb, t_nb, k, config,
                                     device, after_epoch=after_epoch, after_step=lambda: bar.update(1))
    return heads, log, tac.predict(heads["image_head"], test_x)


def main():
    args = parse_args(build_parser())
    run, device = start_stage(__file__, args, same_result)
    images = run.load_embedding(run.path("image_embedding", split="train"))
    texts = run.load_embedding(run.path("retrieved_text", split="train"), rows=("image_embedding_train.npy", len(images)))
    test_images = run.load_embedding(run.path("image_embedding", split="test"))
    test_labels = run.load_labels(run.path("labels", split="test"), len(test_images), required=args.num_clusters is None)
    k = resolve_num_clusters(args, test_labels, run, device)
    config = head_config(args)
    if config.batch_size > len(images):
        print(f"note: --batch-size {config.batch_size} exceeds the {len(images)} train samples; using one batch of {len(images)}")
    neighbors = num_neighbors(args, len(images))

    heads, log, preds = train(images, texts, test_images, test_labels, k, config, neighbors, args, device)

    metrics = evaluate(test_labels, preds)
    prefix = head_prefix(args)[0]
    record = {"num_clusters": k, "width": images.shape[1], "epochs": config.epochs, "batch_size": config.batch_size,
              "lr": config.lr, "tau": config.tau, "alpha": config.alpha, "neighbors": neighbors, "variant": args.variant,
              "loss_terms": list(config.terms), "instance_tau": config.instance_tau,
              "instance_on": args.instance_on if args.variant == "dxmc" else None}
    run.save_torch(run.path("head", prefix=prefix), {**{name: h.state_dict() for name, h in heads.items()}, "config": record}, record)
    run.save_array(run.path("head_preds", prefix=prefix), preds, record)
    run.save_json(run.path("head_metrics", prefix=prefix),
                  {"method": prefix, "split": "test", "seed": args.seed, **record, "metrics": metrics, "epochs_log": log}, record)
    print(f"{args.variant.upper()} heads ({prefix}) on {len(preds)} test images, K = {k}: {format_metrics(metrics)} -> {run.layout.run}")


if __name__ == "__main__":
    run_main(main)
