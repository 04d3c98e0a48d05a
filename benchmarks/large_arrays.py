"""Stages 3-5 on an image-embedding array larger than memory: peak resident memory per stage.

Writes (or reuses) a synthetic N x 512 float32 train embedding file of --gib GiB (10 planted
classes, unnormalised, as an encoder gives), its labels, and a small hand vocabulary (1,000 nouns:
one near each class direction, the rest random), where stages 3-5 read them (backbone `hand`,
dataset `large`, as tests/conftest.write_planted lays them out). The test split is the train file
itself, hard-linked (no second copy on disk), unless --test-gib gives it its own, smaller file.
Then runs, each in a fresh process, with the paper's settings otherwise:

    filter_nouns.py --k 100          (train split)
    retrieve_text.py                 (train and test splits: writes N x 512 counterparts for each)
    concat_kmeans.py --num-clusters 10   (test split: [image, counterpart], N x 1024)

and prints a table: wall time, peak resident memory (ru_maxrss of the stage's process, from
wait4), and the size of what the stage reads. Exits 1 when a stage's peak is above --max-rss-gib.

ru_maxrss is the high-water mark of the process's resident set, file-backed pages (RssFile)
included: a file mapped once and read through counts in full. --control runs such a reader (one
np.load(mmap_mode="r") map of the train file summed chunk by chunk) to show it: its peak is the
file's size, or the machine's memory when the file is larger (not a stage; not held to the limit).

Disk: the train file, plus the test file with --test-gib, plus the two counterpart files
retrieve_text.py writes (as large as the train and test files): 3 x --gib without --test-gib.

    python benchmarks/large_arrays.py [--gib 32] [--test-gib G] [--data-dir DIR] [--max-rss-gib 8] [--control]
"""
import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.rows import GIB, npy_header  # noqa: E402

DIM, CLASSES, NOUNS, SEED = 512, 10, 1000, 0
WRITE_ROWS = 65536  # rows generated and written at a time: 128 MiB
DATASET, BACKBONE = "large", "hand"


def class_directions():
    return np.random.default_rng(SEED).standard_normal((CLASSES, DIM)).astype(np.float32)


def write_npy(path, shape, dtype, chunks):
    """A .npy file written a chunk at a time through a temp name: never whole in memory."""
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(npy_header(shape, dtype))
        for chunk in chunks:
            f.write(np.ascontiguousarray(chunk, dtype=dtype).data)
    os.replace(tmp, path)


def write_split(folder, split, rows, seed):
    """Embeddings (class direction + unit noise per coordinate) and labels, WRITE_ROWS at a time."""
    directions = class_directions()
    starts = range(0, rows, WRITE_ROWS)

    def labels_of(i):
        return np.random.default_rng([seed, i]).integers(0, CLASSES, min(WRITE_ROWS, rows - starts[i]))

    def embeddings():
        for i in range(len(starts)):
            labels = labels_of(i)
            noise = np.random.default_rng([seed, i, 1]).standard_normal((labels.size, DIM), dtype=np.float32)
            noise += directions[labels]
            yield noise

    write_npy(os.path.join(folder, f"labels_{split}.npy"), (rows,), np.int64, (labels_of(i) for i in range(len(starts))))
    write_npy(os.path.join(folder, f"image_embedding_{split}.npy"), (rows, DIM), np.float32, embeddings())


def write_vocabulary(folder):
    rng = np.random.default_rng(SEED + 1)
    vectors = np.concatenate([class_directions() + 0.3 * rng.standard_normal((CLASSES, DIM)),
                              rng.standard_normal((NOUNS - CLASSES, DIM))]).astype(np.float32)
    np.save(os.path.join(folder, "noun_embedding.npy"), vectors)
    with open(os.path.join(folder, "nouns.csv"), "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([["word"]] + [[f"class{c}"] for c in range(CLASSES)]
                                                     + [[f"noun{i}"] for i in range(NOUNS - CLASSES)])


def spec_of(train_rows, test_rows):
    return {"train_rows": train_rows, "test_rows": test_rows, "dim": DIM, "classes": CLASSES, "nouns": NOUNS, "seed": SEED, "format": 1}


def written(data, spec):
    """True when a previous run wrote these very inputs in `data` (its spec is written last)."""
    path = os.path.join(data, "large_arrays.json")
    return os.path.exists(path) and json.load(open(path)) == spec


def prepare(data, train_rows, test_rows):
    """Write the inputs unless a previous run left the same ones; return (folder, reused)."""
    folder, vocab = os.path.join(data, DATASET, BACKBONE), os.path.join(data, "nouns", BACKBONE)
    spec = spec_of(train_rows, test_rows)
    if written(data, spec):
        return folder, True
    spec_path = os.path.join(data, "large_arrays.json")
    if os.path.exists(spec_path):
        os.remove(spec_path)
    for path in (os.path.join(data, DATASET), vocab):  # this benchmark's own folders only
        shutil.rmtree(path, ignore_errors=True)
    os.makedirs(folder)
    os.makedirs(vocab)
    write_vocabulary(vocab)
    write_split(folder, "train", train_rows, SEED)
    if test_rows == train_rows:  # the same file under the test split's names: no second copy
        for name in ("image_embedding", "labels"):
            os.link(os.path.join(folder, f"{name}_train.npy"), os.path.join(folder, f"{name}_test.npy"))
    else:
        write_split(folder, "test", test_rows, SEED + 1)
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    return folder, False


def run_measured(argv, log_path):
    """Run argv in a fresh process; return (exit code, wall seconds, peak RSS in bytes) from wait4."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, time.perf_counter() - start, usage.ru_maxrss * 1024  # Linux: kilobytes


CONTROL = """
import sys, numpy as np
x = np.load(sys.argv[1], mmap_mode="r")  # one map of the whole file, read through
total = 0.0
for start in range(0, len(x), 65536):
    total += float(x[start:start + 65536].sum(dtype=np.float64))
print(total)
"""


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=32, help="size of the train embedding file, GiB")
    parser.add_argument("--test-gib", type=float, default=None, help="a separate test file of this size (default: the train file, hard-linked)")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "tac-large-arrays"),
                        help="a folder of its own: the inputs are written there, and reused by the next run with the same sizes")
    parser.add_argument("--max-rss-gib", type=float, default=8, help="exit 1 when a stage's peak resident memory is above this")
    parser.add_argument("--k", type=int, default=100, help="semantic centers of filter_nouns.py")
    parser.add_argument("--num-clusters", type=int, default=10, help="K of concat_kmeans.py")
    parser.add_argument("--in-memory-gib", type=float, default=None, help="passed to filter_nouns.py and concat_kmeans.py (default: theirs)")
    parser.add_argument("--chunk-rows", type=int, default=None, help="passed to filter_nouns.py and concat_kmeans.py (default: theirs)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "auto", "cuda"])
    parser.add_argument("--control", action="store_true", help="also measure a process that reads the train file through one memory map")
    parser.add_argument("--remove", action="store_true", help="delete --data-dir at the end")
    return parser


def main():
    args = build_parser().parse_args()

    row_bytes = DIM * 4
    train_rows = int(args.gib * GIB) // row_bytes
    test_rows = train_rows if args.test_gib is None else int(args.test_gib * GIB) // row_bytes
    os.makedirs(args.data_dir, exist_ok=True)
    inputs = 0 if written(args.data_dir, spec_of(train_rows, test_rows)) else train_rows * row_bytes + (0 if test_rows == train_rows else test_rows * row_bytes)
    outputs = (train_rows + test_rows) * row_bytes
    run_folder = os.path.join(args.data_dir, DATASET, BACKBONE, "runs", "bench")
    if os.path.isdir(run_folder):
        shutil.rmtree(run_folder)
    free = shutil.disk_usage(args.data_dir).free
    if inputs + outputs > free:
        sys.exit(f"needs {(inputs + outputs) / GIB:.1f} GiB of disk in {args.data_dir} ({inputs / GIB:.1f} inputs, "
                 f"{outputs / GIB:.1f} counterparts) but {free / GIB:.1f} GiB are free: pass --data-dir elsewhere or a smaller --test-gib")

    start = time.perf_counter()
    folder, reused = prepare(args.data_dir, train_rows, test_rows)
    print(f"inputs {'reused' if reused else f'written in {time.perf_counter() - start:.0f} s'}: {folder}", flush=True)
    train_gib, test_gib = train_rows * row_bytes / GIB, test_rows * row_bytes / GIB
    print(f"train: {train_rows:,} x {DIM} float32 = {train_gib:.2f} GiB; test: {test_rows:,} x {DIM} = {test_gib:.2f} GiB"
          f"{' (the train file, hard-linked)' if test_rows == train_rows else ''}; {NOUNS} nouns; {os.cpu_count()} CPU cores, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)

    common = ["--data-dir", args.data_dir, "--dataset", DATASET, "--backbone", BACKBONE, "--run", "bench", "--device", args.device]
    tuning = [*(["--in-memory-gib", args.in_memory_gib] if args.in_memory_gib is not None else []),
              *(["--chunk-rows", args.chunk_rows] if args.chunk_rows is not None else [])]
    stages = [("filter_nouns.py", ["--k", args.k, *tuning], f"train {train_gib:.2f}", "kept_nouns.npy"),
              ("retrieve_text.py", [], f"train + test {train_gib + test_gib:.2f} (writes as much)", None),
              ("concat_kmeans.py", ["--num-clusters", args.num_clusters, *tuning], f"test + counterparts {2 * test_gib:.2f}",
               "concat_kmeans_preds.npy")]
    rows, failed = [], []
    for script, extra, reads, output in stages:
        log = os.path.join(args.data_dir, f"{script[:-3]}.log")
        code, seconds, peak = run_measured([sys.executable, os.path.join(ROOT, script), *common, *map(str, extra)], log)
        last = open(log).read().strip().splitlines()[-1:] or [""]
        if code != 0:
            sys.exit(f"{script} failed (exit {code}); its log: {log}\n{last[0]}")
        plan = ""
        if output:
            p = json.load(open(os.path.join(run_folder, output + ".meta.json")))["kmeans_plan"]
            plan = f"{p['rows']}, trains on {p['training_points']:,} rows (sample: {p['sample']})"
        rows.append((script, seconds, peak, reads, plan))
        print(f"{script}: {seconds:.0f} s, peak {peak / GIB:.2f} GiB | {last[0][:160]}", flush=True)
        if peak > args.max_rss_gib * GIB:
            failed.append(script)
    if args.control:
        log = os.path.join(args.data_dir, "control.log")
        code, seconds, peak = run_measured([sys.executable, "-c", CONTROL, os.path.join(folder, "image_embedding_train.npy")], log)
        rows.append(("control: one mmap read through", seconds, peak, f"train {train_gib:.2f}", "not a stage"))

    print(f"\nstages 3-5 on {train_rows:,} x {DIM} float32 train embeddings ({train_gib:.2f} GiB) and {test_rows:,} test "
          f"({test_gib:.2f} GiB), peak limit {args.max_rss_gib} GiB\n")
    print("| stage | wall s | peak RSS (GiB) | reads (GiB) | k-means |")
    print("|---|---|---|---|---|")
    for script, seconds, peak, reads, plan in rows:
        print(f"| {script} | {seconds:.0f} | {peak / GIB:.2f} | {reads} | {plan} |")
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(f"\nlargest peak of any child process (RUSAGE_CHILDREN): {children / GIB:.2f} GiB")
    if args.remove:
        shutil.rmtree(args.data_dir, ignore_errors=True)
    if failed:
        sys.exit(f"peak resident memory above {args.max_rss_gib} GiB: {', '.join(failed)}")


if __name__ == "__main__":
    main()
