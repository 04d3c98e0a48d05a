"""The authors' settings and this project's defaults: numbers only, no code (every module may read them)."""

# Semantic centers k of filter_nouns.py, as the authors ran each dataset. Eq. 2, k = max(N/300, 3K),
# gives all of them except STL-10 (30 by the formula; the authors used 17).
PAPER_NUM_CENTERS = {
    "cifar10": 167, "cifar20": 167, "stl10": 17, "imagenet10": 43,
    "imagenet-dogs": 65, "dtd": 141, "ucf101": 303, "imagenet": 4271,
}

# The authors' head-training settings: the defaults, and those for the two large datasets.
HEAD_DEFAULTS = {"batch_size": 512, "epochs": 20, "tau": 0.5}
LARGE_DATASET_HEAD = {"batch_size": 8192, "epochs": 100, "tau": 5.0}
LARGE_DATASETS = ("ucf101", "imagenet")

# faiss's default k-means seed. The authors never set one, so every k-means of theirs (stage 3's
# semantic centers, stage 5's clusters) is this one draw, and their five runs share it.
AUTHORS_KMEANS_SEED = 1234
SEED_MAX = 2**31 - 1

RUNTIMES = ("auto", "torch", "onnxruntime")
# k-means holds the matrix it clusters (N x D float32) in memory up to this size, and faiss draws
# its own training subsample, as the authors ran it; above it, the rows stay on disk
# (utils.clustering.spherical_kmeans). Every paper dataset is below: ImageNet's 1.28M x 512
# train images are 2.4 GiB, its 50,000 x 1024 [image, counterpart] test rows 0.2 GiB.
IN_MEMORY_GIB = 4.0
AUTO_RANGE = [2, 20]  # the K that --num-clusters auto tries by default
# How --num-clusters auto scores each K (utils/num_clusters.py says what each one is). The default is
# the one that did best in benchmarks/num_clusters.py (docs/num-clusters.md says how it was chosen).
K_CRITERIA = ("stability", "silhouette", "davies-bouldin", "calinski-harabasz", "density", "stability-density",
              "text-stability", "text-silhouette", "text-davies-bouldin", "text-calinski-harabasz")
DEFAULT_K_CRITERION = "stability-density"
GAMMA = 5  # nouns kept per semantic center (the paper's gamma)
