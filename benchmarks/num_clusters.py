"""How well `--num-clusters auto` finds K, criterion by criterion, on data whose K is known.

Data: planted blobs with K = 3, 5, 10 and 20 and imbalanced mixtures (K = 5, 8 and 12, sizes
falling geometrically to a tenth), the offline default (Fashion-MNIST through lite0-minilm, 10,000
train and 10,000 test images, as command 1 of the README makes them), seeded subsets of its classes
(4 and 7 classes drawn with seeds 0-6; 5, 6 and 8 with seed 4), imbalanced draws of 5-7 of its
classes with sizes falling by 0.5-0.7 a class, and every paper dataset whose embeddings and
vocabulary are under --data-dir. For each: the true K, how many groups of its classes the features
separate (from the labels: 2-means on each pair of classes; the fewest groups that keep apart every
pair it separates), the K of every criterion
(utils/num_clusters.py, `--auto-range 2 20`, estimated through the function the stages call, its
cache removed first) with its wall time, and TAC without training (stages 3-5 run as their scripts,
with their defaults, `--num-clusters K`) at that K: ACC/NMI/ARI on the test split (on the offline
default and the 4- and 7-class subsets of seed 0). Then the time of each criterion on the train
embeddings of 50,000 Fashion-MNIST images (--large), or 50,000 planted rows of the same width when
they are absent.

Each case is in a group: `chose` (the balanced planted blobs and the offline default), `tie-break`
(used to choose between criteria and settings after `chose`) and `held out` (not used to choose;
the imbalanced draws of seeds 30-39 were drawn only after the last choice). What each choice was
and what it gave: docs/num-clusters.md.

    python3 benchmarks/num_clusters.py [--data-dir ./data] [--out data/benchmarks/num_clusters]
                                       [--criteria stability silhouette ...] [--cases blobs-3 ...]

Every file goes under --out, the embeddings there as hand-placed files (links to --data-dir's
where they exist), so a second run reuses stages 3-5 and re-times only the criteria. Stage output
goes to --out/log.txt.
"""
import argparse
import contextlib
import csv
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import concat_kmeans  # noqa: E402
import filter_nouns  # noqa: E402
import retrieve_text  # noqa: E402
from run_pipeline import run_stage  # noqa: E402
from utils.config import AUTO_RANGE, DEFAULT_K_CRITERION, K_CRITERIA, PAPER_NUM_CENTERS  # noqa: E402
from utils.num_clusters import SAMPLE, choose, features, resolve_num_clusters, sample_rows  # noqa: E402
from utils.provenance import StageRun  # noqa: E402

# Further Fashion-MNIST class subsets (number of classes, seed of the draw): seeds 1-3 break the
# tie of the `chose` cases, seeds 4-6 are held out.
TIE_BREAK_DRAWS = [(count, seed) for count in (4, 7) for seed in (1, 2, 3)]
HELD_OUT_DRAWS = [(count, seed) for count in (4, 7) for seed in (4, 5, 6)] + [(count, 4) for count in (5, 6, 8)]
# Imbalanced collections: class sizes falling by a constant ratio. Planted blobs for K =
# 5, 8 and 12 (one draw each to choose the rule on, one held out) and Fashion-MNIST draws of 5-7
# classes with ratios 0.5-0.7 (imbalanced_draw). The density count was first chosen on seeds 0-4
# and held out on seeds 10-19; its group selection was then chosen on seeds 0-4 and 10-19 and held
# out on seeds 20-29, which showed that joining confused classes transitively undercounts the
# groups the features separate (fewest_groups). Seeds 30-39, held out, were drawn and run only
# after that last change, with the rule unchanged.
IMBALANCED_BLOBS = [(5, 105, "tie-break"), (8, 108, "tie-break"), (12, 112, "tie-break"),
                    (5, 205, "held out"), (8, 208, "held out"), (12, 212, "held out")]
IMBALANCED_TUNING_SEEDS = [*range(0, 5), *range(10, 30)]
IMBALANCED_HELD_OUT_SEEDS = range(30, 40)
WELL_SEPARATED = (0, 1, 5, 7, 8, 9)  # T-shirt/top, Trouser, Sandal, Sneaker, Bag, Ankle boot
IMBALANCED_RATIO_SIX = 0.6
SEPARATED = 0.5  # two classes count as separated when 2-means on their rows agrees with them this well (ARI)
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
LARGE_ROWS = 50000


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def blobs(sizes, seed, dim=128, std=0.15, test_share=0.4, nouns_per_class=3, distractors=300):
    """Gaussian blobs around random unit directions (scikit-learn's make_blobs), unnormalised as
    an encoder's rows; a vocabulary with nouns near every class direction and random distractors."""
    from sklearn.datasets import make_blobs

    rng = np.random.default_rng(seed)
    centers = unit(rng.standard_normal((len(sizes), dim)))
    splits = {}
    for split, share, offset in (("train", 1.0, 0), ("test", test_share, 1)):
        counts = [max(2, int(round(share * s))) for s in sizes]
        x, y = make_blobs(n_samples=counts, centers=centers, cluster_std=std, random_state=seed * 10 + offset)
        splits[split] = (3 * x.astype(np.float32), y.astype(np.int64))
    near = np.repeat(centers, nouns_per_class, axis=0) + 0.05 * rng.standard_normal((len(sizes) * nouns_per_class, dim))
    nouns = np.vstack([near, rng.standard_normal((distractors, dim))]).astype(np.float32)
    words = [f"class{c}_{i}" for c in range(len(sizes)) for i in range(nouns_per_class)] + [f"distractor{j}" for j in range(distractors)]
    return splits, words, nouns


def place(path, array=None, source=None):
    """A hand-placed input: `array` saved, or `source` linked (copied across file systems); kept as is when there."""
    if os.path.exists(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if source is None:
        np.save(path, array)
        return
    try:
        os.link(source, path)
    except OSError:
        import shutil

        shutil.copyfile(source, path)


def write_words(path, words):
    if not os.path.exists(path):
        with open(path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f, lineterminator="\n").writerows([["word"]] + [[w] for w in words])


class Case:
    """`group`: "chose", "tie-break" or "held out" (what each is for: the module's docstring);
    `tac`: whether TAC is run at each criterion's K
    (not on the further subsets, to keep the benchmark's time down)."""

    def __init__(self, name, backbone, true_k, note, group="held out", tac=True, imbalanced=False, class_names=None):
        self.name, self.backbone, self.true_k, self.note, self.group, self.tac = name, backbone, true_k, note, group, tac
        self.imbalanced, self.class_names = imbalanced, class_names  # class_names: of labels 0, 1, ... (None: the numbers)


def blob_cases(out):
    specs = [(f"blobs-{k}", [5000 // k] * k, k, "chose") for k in (3, 5, 10, 20)]
    sizes = [int(round(1500 * 0.1 ** (i / 7))) for i in range(8)]
    specs.append(("blobs-imbalanced", sizes, 100, "tie-break"))
    specs += [(f"blobs-imbalanced-{k}-seed{seed}", [int(round(1500 * 0.1 ** (i / (k - 1)))) for i in range(k)], seed, group)
              for k, seed, group in IMBALANCED_BLOBS]
    cases = []
    for name, per_class, seed, group in specs:
        splits, words, nouns = blobs(per_class, seed)
        folder, vocab = os.path.join(out, name, name), os.path.join(out, "nouns", name)
        for split, (x, y) in splits.items():
            place(os.path.join(folder, f"image_embedding_{split}.npy"), x)
            place(os.path.join(folder, f"labels_{split}.npy"), y)
        place(os.path.join(vocab, "noun_embedding.npy"), nouns)
        write_words(os.path.join(vocab, "nouns.csv"), words)
        shape = "class sizes " + "-".join(map(str, per_class)) if len(set(per_class)) > 1 else f"{per_class[0]} per class"
        cases.append(Case(name, name, len(per_class), f"128-d, {shape}", group, tac="seed" not in name, imbalanced=len(set(per_class)) > 1))
    return cases


def fashion_cases(data_dir, out):
    source, vocab = os.path.join(data_dir, "fashion-mnist", "lite0-minilm"), os.path.join(data_dir, "nouns", "lite0-minilm")
    needed = [os.path.join(source, f"{kind}_{split}.npy") for kind in ("image_embedding", "labels") for split in ("train", "test")]
    needed += [os.path.join(vocab, name) for name in ("noun_embedding.npy", "nouns.csv")]
    if not all(os.path.exists(p) for p in needed):
        print("skipping Fashion-MNIST: make its embeddings first with  python3 run_pipeline.py --dataset fashion-mnist "
              "--backbone lite0-minilm --train-subset 10000 --nouns data/ImageNet21kNouns.csv --templates \"a photo of a {}.\"")
        return []
    for name in ("noun_embedding.npy", "nouns.csv"):
        place(os.path.join(out, "nouns", "lite0-minilm", name), source=os.path.join(vocab, name))
    labels = {split: np.load(os.path.join(source, f"labels_{split}.npy")) for split in ("train", "test")}
    cases = []
    for name, classes, shares, group in fashion_draws():
        folder = os.path.join(out, name, "lite0-minilm")
        kept = {}
        for split in ("train", "test"):
            if classes is None:
                for kind in ("image_embedding", "labels"):
                    place(os.path.join(folder, f"{kind}_{split}.npy"), source=os.path.join(source, f"{kind}_{split}.npy"))
                kept[split] = np.arange(len(labels[split]))
                continue
            kept[split] = rows = subset_rows(labels[split], classes, shares)
            x = np.load(os.path.join(source, f"image_embedding_{split}.npy"), mmap_mode="r")[rows]
            place(os.path.join(folder, f"image_embedding_{split}.npy"), np.ascontiguousarray(x))
            place(os.path.join(folder, f"labels_{split}.npy"), np.searchsorted(classes, labels[split][rows]).astype(np.int64))
        if classes is None:
            note = "offline default"
        elif shares is None:
            note = "classes " + ", ".join(FASHION_CLASSES[c] for c in classes)
        else:  # the classes named in order of size, with their train rows
            sizes = np.bincount(np.searchsorted(classes, labels["train"][kept["train"]]), minlength=len(classes))
            note = "classes " + ", ".join(f"{FASHION_CLASSES[classes[i]]} ({sizes[i]})" for i in np.argsort(-sizes, kind="stable"))
        imbalanced = shares is not None
        cases.append(Case(name, "lite0-minilm", 10 if classes is None else len(classes), f"{len(kept['train'])} train, {note}",
                          group, tac=name in ("fashion-mnist", "fashion-mnist-4", "fashion-mnist-7"), imbalanced=imbalanced,
                          class_names=[FASHION_CLASSES[c] for c in (range(10) if classes is None else classes)]))
    return cases


def fashion_draws():
    """(name, classes in ascending order or None for all rows, each class's share of its rows or None, group)."""
    draws = [("fashion-mnist", None, None, "chose")]
    draws += [(f"fashion-mnist-{count}" + (f"-seed{seed}" if seed else ""), count, seed, "tie-break")
              for count, seed in [(4, 0), (7, 0)] + TIE_BREAK_DRAWS]
    draws += [(f"fashion-mnist-{count}-seed{seed}", count, seed, "held out") for count, seed in HELD_OUT_DRAWS]
    out = [(name, np.sort(np.random.default_rng(seed).choice(10, count, replace=False)), None, group) for name, count, seed, group in draws[1:]]
    out = draws[:1] + out
    # six classes the features tell apart, balanced and with sizes falling by 0.6 a class (largest 13x the smallest)
    six = np.array(WELL_SEPARATED)
    out += [("fashion-mnist-6sep", six, None, "tie-break"),
            ("fashion-mnist-6sep-falling", six, IMBALANCED_RATIO_SIX ** np.arange(6.0), "tie-break")]
    for seeds, group in ((IMBALANCED_TUNING_SEEDS, "tie-break"), (IMBALANCED_HELD_OUT_SEEDS, "held out")):
        for seed in seeds:
            count, ratio, order = imbalanced_draw(seed)
            classes = np.sort(order)
            shares = ratio ** np.array([list(order).index(c) for c in classes], dtype=float)
            out.append((f"fashion-mnist-{count}-falling{ratio:g}-seed{seed}", classes, shares, group))
    return out


def imbalanced_draw(seed):
    """A draw of imbalanced classes: how many (5-7), the ratio of one class's size to the next
    larger one's (0.5-0.7), and the classes from largest to smallest."""
    rng = np.random.default_rng(1000 + seed)
    count = int(rng.integers(5, 8))
    ratio = float(rng.choice([0.5, 0.6, 0.7]))
    return count, ratio, rng.choice(10, count, replace=False)


def subset_rows(labels, classes, shares=None):
    """The rows of `classes`: all of them, or of each class the first share of a seeded permutation of its rows."""
    if shares is None:
        return np.flatnonzero(np.isin(labels, classes))
    rng = np.random.default_rng(0)
    rows = [rng.permutation(np.flatnonzero(labels == c))[:max(2, int(round(share * (labels == c).sum())))]
            for c, share in zip(classes, shares)]
    return np.sort(np.concatenate(rows))


def paper_cases(data_dir, out):
    """Paper datasets whose stage 1-2 outputs are under data_dir, for any backbone."""
    cases = []
    for dataset in PAPER_NUM_CENTERS:
        root = os.path.join(data_dir, dataset)
        for backbone in sorted(os.listdir(root)) if os.path.isdir(root) else []:
            source, vocab = os.path.join(root, backbone), os.path.join(data_dir, "nouns", backbone)
            files = [os.path.join(source, f"{kind}_{split}.npy") for kind in ("image_embedding", "labels") for split in ("train", "test")]
            if not all(os.path.exists(p) for p in files + [os.path.join(vocab, "noun_embedding.npy")]):
                continue
            for path in files:
                place(os.path.join(out, dataset, backbone, os.path.basename(path)), source=path)
            for name in ("noun_embedding.npy", "nouns.csv"):
                place(os.path.join(out, "nouns", backbone, name), source=os.path.join(vocab, name))
            labels = np.load(files[2])
            cases.append(Case(dataset, backbone, int(np.unique(labels[labels >= 0]).size), f"{len(labels)} train, {backbone}"))
    return cases


def separated_classes(out, case):
    """What the features can tell apart, from the labels: 2-means on the rows of every pair of
    classes, on the view the criteria score (the same sample), and its ARI with the pair's labels.
    On an imbalanced case the larger class of a pair is cut to the smaller's size (a seeded sample),
    so that the test asks whether the features tell the two apart, not how many rows each has.
    Returns the number of groups the features separate (fewest_groups), the number left when
    every pair below SEPARATED is joined transitively (a lower bound, for comparison), and those pairs."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score
    from threadpoolctl import threadpool_limits

    folder = os.path.join(out, case.name, case.backbone)
    images = np.load(os.path.join(folder, "image_embedding_train.npy"), mmap_mode="r")
    picked = sample_rows(len(images))
    labels = np.load(os.path.join(folder, "labels_train.npy"))[picked]
    classes = [int(c) for c in np.unique(labels)]
    joined = []
    with threadpool_limits(1):
        z = features("stability", np.asarray(images[picked]))  # the image view
        for i, a in enumerate(classes):
            for b in classes[i + 1:]:
                rows = np.flatnonzero(np.isin(labels, (a, b)))
                if case.imbalanced:
                    rows = balanced(rows, labels[rows])
                split = KMeans(2, n_init=3, random_state=0).fit_predict(z[rows])
                agreement = adjusted_rand_score(labels[rows], split)
                if agreement < SEPARATED:
                    joined.append((a, b, round(float(agreement), 2)))
    pairs = [(a, b) for a, b, _ in joined]
    return fewest_groups(classes, pairs), transitive_groups(classes, pairs), joined


def fewest_groups(classes, confused, budget=1_000_000):
    """The fewest groups of `classes` that keep apart every pair the features separate: a group
    holds only classes confused pairwise (a minimum clique cover of the `confused` pairs, found
    exactly by branch and bound; past `budget` steps, as on hundreds of much-confused classes, the
    best cover found so far, an upper bound, with a warning). Joining confused pairs transitively
    would put a T-shirt and a coat in one group because a shirt is confused with each, though the
    features separate them."""
    together = {c: set() for c in classes}
    for a, b in confused:
        together[a].add(b)
        together[b].add(a)
    order = sorted((c for c in classes if together[c]), key=lambda c: -len(together[c]))
    best, steps = len(order), 0

    def assign(i, groups):
        nonlocal best, steps
        steps += 1
        if len(groups) >= best or steps > budget:
            return
        if i == len(order):
            best = len(groups)
            return
        c = order[i]
        for group in groups:
            if group <= together[c]:
                group.add(c)
                assign(i + 1, groups)
                group.remove(c)
        assign(i + 1, groups + [{c}])

    assign(0, [])
    if steps > budget:
        print(f"  the search for the fewest groups stopped after {budget:,} steps: the count is an upper bound", flush=True)
    return best + sum(1 for c in classes if not together[c])


def transitive_groups(classes, confused):
    """The groups left when every confused pair is joined, and joins chain (connected components)."""
    group = {c: c for c in classes}

    def root(c):
        while group[c] != c:
            c = group[c]
        return c

    for a, b in confused:
        group[root(a)] = root(b)
    return len({root(c) for c in classes})


def balanced(rows, labels):
    """`rows` with each label cut to the rarest label's count (a seeded sample), in order."""
    count = np.bincount(labels)[np.unique(labels)].min()
    rng = np.random.default_rng(0)
    return np.sort(np.concatenate([rng.choice(rows[labels == c], count, replace=False) for c in np.unique(labels)]))


def estimate(out, case, criterion, log):
    """The K `--num-clusters auto --k-criterion criterion` gives, and its wall time (cache removed first)."""
    low, high = AUTO_RANGE
    folder = os.path.join(out, case.name, case.backbone, "num_clusters_auto")
    for ext in ("json", "png"):
        for path in (os.path.join(folder, f"{criterion}_k{low}-{high}.{ext}"), os.path.join(folder, f"{criterion}_k{low}-{high}.{ext}.meta.json")):
            if os.path.exists(path):
                os.remove(path)
    args = argparse.Namespace(data_dir=out, dataset=case.name, backbone=case.backbone, num_clusters="auto",
                              auto_range=[low, high], k_criterion=criterion)
    run = StageRun(__file__, args, out, dataset=case.name, backbone=case.backbone)
    start = time.perf_counter()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        k = resolve_num_clusters(args, None, run, device="cpu")
    return k, time.perf_counter() - start, run.record["num_clusters_auto"]


def stability_alone(record):
    """Stability's own K, read off the stability curve that stability-density computed (no second run)."""
    scores = {int(k): v for k, v in record["scores"].items()}
    errors = {int(k): v for k, v in record["standard_errors"].items()}
    k, runners_up = choose("stability", scores, errors)
    return {"k": k, "seconds": None, "runners_up": runners_up}


def tac(out, case, k, log):
    """TAC without training at K: stages 3-5 (their scripts, defaults) in run K<k>; ACC/NMI/ARI."""
    common = ["--data-dir", out, "--dataset", case.name, "--backbone", case.backbone, "--device", "cpu", "--run", f"K{k}"]
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        run_stage(filter_nouns, common + ["--num-clusters", k])
        run_stage(retrieve_text, common)
        outputs = run_stage(concat_kmeans, common + ["--num-clusters", k])
    with open(outputs[1]) as f:
        return json.load(f)["metrics"]


def large_case(args, out):
    """The train embeddings of --large (50,000 Fashion-MNIST images) placed by hand, else planted rows of that size."""
    folder = os.path.join(out, "large", "lite0-minilm")
    path = os.path.join(folder, "image_embedding_train.npy")
    if os.path.exists(args.large) and np.load(args.large, mmap_mode="r").shape[0] >= LARGE_ROWS:
        place(path, source=args.large)
        what = f"the train embeddings of {np.load(path, mmap_mode='r').shape[0]:,} Fashion-MNIST images ({args.large})"
    else:
        rng = np.random.default_rng(0)
        centers = rng.standard_normal((10, 1280))
        place(path, (centers[rng.integers(0, 10, LARGE_ROWS)] + 2 * rng.standard_normal((LARGE_ROWS, 1280))).astype(np.float32))
        what = f"{LARGE_ROWS:,} planted 1280-d rows ({args.large} is absent)"
    for name in ("noun_embedding.npy", "nouns.csv"):
        source = os.path.join(args.data_dir, "nouns", "lite0-minilm", name)
        if os.path.exists(source):
            place(os.path.join(out, "nouns", "lite0-minilm", name), source=source)
    return Case("large", "lite0-minilm", None, what)


def cell(metrics):
    return f"{metrics['acc']:.1f} / {metrics['nmi']:.1f} / {metrics['ari']:.1f}"


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"), help="where the pipeline's embeddings are")
    parser.add_argument("--out", default=os.path.join(ROOT, "data", "benchmarks", "num_clusters"))
    parser.add_argument("--criteria", nargs="+", default=list(K_CRITERIA), choices=K_CRITERIA)
    parser.add_argument("--cases", nargs="+", default=None, help="only these cases (default: all)")
    parser.add_argument("--large", default=os.path.join(ROOT, "data", "fm50k", "fashion-mnist", "lite0-minilm", "image_embedding_train.npy"),
                        help="train embeddings of 50,000 images for the time row (python3 image_embedding.py --data-dir data/fm50k "
                             "--dataset fashion-mnist --backbone lite0-minilm --train-subset 50000 makes them)")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--no-tac", action="store_true", help="no TAC runs at each criterion's K (the K alone)")
    return parser


def main():
    args = build_parser().parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    cases = blob_cases(out) + fashion_cases(args.data_dir, out) + paper_cases(args.data_dir, out)
    cases = [c for c in cases if args.cases is None or c.name in args.cases]
    results = []
    with open(os.path.join(out, "log.txt"), "a") as log:
        for case in cases:
            print(f"{case.name} (K = {case.true_k}; {case.note})", flush=True)
            tac_at = {}
            row = {"case": case.name, "true_k": case.true_k, "note": case.note, "group": case.group, "criteria": {},
                   "class_names": case.class_names}
            row["separated"], row["joined_transitively"], row["not_separated"] = separated_classes(out, case)
            print(f"  the features separate {row['separated']} groups of classes ({row['joined_transitively']} joined "
                  f"transitively); pairs 2-means does not separate "
                  f"(ARI < {SEPARATED}): {row['not_separated'] or 'none'}", flush=True)
            for criterion in args.criteria:
                k, seconds, record = estimate(out, case, criterion, log)
                row["criteria"][criterion] = {"k": k, "seconds": round(seconds, 1), "runners_up": record["runners_up"]}
                print(f"  {criterion:24s} K = {k:2d} in {seconds:5.1f} s (runners-up {record['runners_up']})", flush=True)
                if criterion == "stability-density" and "stability" not in args.criteria:
                    row["criteria"]["stability"] = stability_alone(record)
            if case.tac and not args.no_tac:
                for k in sorted({case.true_k} | {c["k"] for c in row["criteria"].values()}):
                    tac_at[k] = tac(out, case, k, log)
                row["tac"] = {str(k): m for k, m in tac_at.items()}
                print(f"  TAC without training (ACC / NMI / ARI) at the true K {case.true_k}: {cell(tac_at[case.true_k])}", flush=True)
            results.append(row)
        timing = []
        if not args.skip_large:
            case = large_case(args, out)
            print(f"time on {case.note}, --auto-range 2 20, a seeded sample of {SAMPLE:,}", flush=True)
            for criterion in args.criteria:
                if criterion.startswith("text-") and not os.path.exists(os.path.join(out, "nouns", "lite0-minilm", "noun_embedding.npy")):
                    continue
                k, seconds, _ = estimate(out, case, criterion, log)
                timing.append({"criterion": criterion, "k": k, "seconds": round(seconds, 1)})
                print(f"  {criterion:24s} K = {k:2d} in {seconds:5.1f} s", flush=True)
    shown = args.criteria + (["stability"] if "stability-density" in args.criteria and "stability" not in args.criteria else [])
    text = report(results, timing, shown, case.note if timing else None)
    print("\n" + text)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"cases": results, "time_50k": timing, "sample": SAMPLE}, f, indent=1)


def report(results, timing, criteria, large_note):
    def name(row):
        return row["case"] + {"chose": " (chose)", "held out": " (held out)"}.get(row["group"], "")

    lines = []
    if results:  # none with --cases naming none (the time row alone)
        lines += ["| data | true K | groups the features separate (joined transitively) | " + " | ".join(criteria) + " |",
                  "|---|---|---|" + "---|" * len(criteria)]
        for row in results:
            marks = []
            for criterion in criteria:
                c = row["criteria"][criterion]
                hit = "**" if c["k"] == row["true_k"] else ""
                marks.append(f"{hit}{c['k']}{hit}" + (f" ({c['seconds']:.0f} s)" if c["seconds"] is not None else ""))
            lines.append(f"| {name(row)} | {row['true_k']} | {row['separated']} ({row['joined_transitively']}) | " + " | ".join(marks) + " |")
        lines += ["", "Pairs of classes that 2-means on the criteria's view does not separate (ARI with the pair's labels "
                  f"below {SEPARATED}):", ""]
        for row in results:
            if row["not_separated"]:
                words = [f"{pair_name(a, b, row['class_names'])} {ari:.2f}" for a, b, ari in row["not_separated"]]
                lines.append(f"- {row['case']}: " + ", ".join(words))
        lines += ["", "TAC without training at each criterion's K, ACC / NMI / ARI on the test split:", "",
                  "| data | at the true K | " + " | ".join(criteria) + " |", "|---|---|" + "---|" * len(criteria)]
        for row in results:
            if "tac" in row:
                tac_at = row["tac"]
                lines.append(f"| {row['case']} | {cell(tac_at[str(row['true_k'])])} | "
                             + " | ".join(cell(tac_at[str(row['criteria'][c]['k'])]) for c in criteria) + " |")
        groups = [g for g in ("chose", "tie-break", "held out") if any(r["group"] == g for r in results)]
        beyond = [r for r in results if r["group"] != "chose"]
        lines += ["", "Cases where the criterion's K is the true K, within 1 of it, and within 1 of the number of groups the "
                  "features separate; and |K - true K| over the cases beyond `chose`, mean and largest:", "",
                  "| criterion | " + " | ".join(f"{what}, {g}" for g in groups for what in ("exact", "within 1", "within 1 of separated"))
                  + " | mean miss | largest miss |", "|---|" + "---|" * (3 * len(groups) + 2)]
        for criterion in criteria:
            counts = []
            for g in groups:
                rows = [r for r in results if r["group"] == g]
                ks = [r["criteria"][criterion]["k"] for r in rows]
                counts += [f"{sum(k == r['true_k'] for k, r in zip(ks, rows))}/{len(rows)}",
                           f"{sum(abs(k - r['true_k']) <= 1 for k, r in zip(ks, rows))}/{len(rows)}",
                           f"{sum(abs(k - r['separated']) <= 1 for k, r in zip(ks, rows))}/{len(rows)}"]
            misses = [abs(r["criteria"][criterion]["k"] - r["true_k"]) for r in beyond] or [0]
            counts += [f"{sum(misses) / len(misses):.2f}", str(max(misses))]
            label = f"{criterion} (default)" if criterion == DEFAULT_K_CRITERION else criterion
            lines.append(f"| {label} | " + " | ".join(counts) + " |")
    if timing:
        lines += ["", f"Time of the estimate on {large_note}, --auto-range 2 20, a seeded sample of {SAMPLE:,}:", "",
                  "| criterion | K | seconds |", "|---|---|---|"]
        lines += [f"| {t['criterion']} | {t['k']} | {t['seconds']:.1f} |" for t in timing]
    return "\n".join(lines) + "\n"


def pair_name(a, b, names):
    """Two classes of a case by name (labels are indices into `names`), else by number."""
    return f"{a} + {b}" if names is None else f"{names[a]} + {names[b]}"


if __name__ == "__main__":
    main()
