"""Dataset plumbing that needs no download: folders of images, CIFAR-20's superclasses, transforms."""
import numpy as np
import pytest
from PIL import Image

from utils.datasets import build_transform, load_split
from utils.errors import StageError


def write_images(folder, count, color):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (20, 30), color).save(folder / f"{i}.png")


def test_class_subfolders_become_sorted_labels_and_a_flat_folder_unlabelled(tmp_path):
    write_images(tmp_path / "labelled" / "b_dog", 2, "red")
    write_images(tmp_path / "labelled" / "a_cat", 3, "blue")
    write_images(tmp_path / "flat", 4, "green")
    labelled = load_split(f"folder:{tmp_path / 'labelled'}", "train", None)
    assert labelled.classes == ["a_cat", "b_dog"] and list(labelled.labels) == [0, 0, 0, 1, 1]
    flat = load_split(f"folder:{tmp_path / 'flat'}", "test", None)
    assert list(flat.labels) == [-1] * 4


def test_a_corrupt_image_names_the_file(tmp_path):
    write_images(tmp_path / "photos", 1, "red")
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not an image")
    dataset = load_split(f"folder:{tmp_path / 'photos'}", "train", None)
    with pytest.raises(StageError, match=r"cannot read image .*broken.jpg"):
        [dataset[i] for i in range(len(dataset))]


def test_empty_folder_and_unknown_dataset_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StageError, match="no images"):
        load_split(f"folder:{tmp_path / 'empty'}", "train", None)
    with pytest.raises(StageError, match="unknown dataset 'cifar11'"):
        load_split("cifar11", "train", None)


# CIFAR-100's 20 superclasses and their 5 classes each, as the dataset's authors list them.
CIFAR100_SUPERCLASSES = {
    "aquatic mammals": "beaver dolphin otter seal whale",
    "fish": "aquarium_fish flatfish ray shark trout",
    "flowers": "orchid poppy rose sunflower tulip",
    "food containers": "bottle bowl can cup plate",
    "fruit and vegetables": "apple mushroom orange pear sweet_pepper",
    "household electrical devices": "clock keyboard lamp telephone television",
    "household furniture": "bed chair couch table wardrobe",
    "insects": "bee beetle butterfly caterpillar cockroach",
    "large carnivores": "bear leopard lion tiger wolf",
    "large man-made outdoor things": "bridge castle house road skyscraper",
    "large natural outdoor scenes": "cloud forest mountain plain sea",
    "large omnivores and herbivores": "camel cattle chimpanzee elephant kangaroo",
    "medium-sized mammals": "fox porcupine possum raccoon skunk",
    "non-insect invertebrates": "crab lobster snail spider worm",
    "people": "baby boy girl man woman",
    "reptiles": "crocodile dinosaur lizard snake turtle",
    "small mammals": "hamster mouse rabbit shrew squirrel",
    "trees": "maple_tree oak_tree palm_tree pine_tree willow_tree",
    "vehicles 1": "bicycle bus motorcycle pickup_truck train",
    "vehicles 2": "lawn_mower rocket streetcar tank tractor",
}


def test_cifar20_labels_and_names_each_image_by_its_superclass(tmp_path, monkeypatch):
    """CIFAR-100 in torchvision's layout (its fine labels and alphabetical class names; one image per
    class, in shuffled order): `cifar20` labels every image with its class's superclass and names
    that label as the superclass, in both splits."""
    import pickle

    import torchvision.datasets.cifar

    from utils.datasets import class_names

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)  # no md5 of the real files
    superclass_of = {fine: coarse for coarse, fines in CIFAR100_SUPERCLASSES.items() for fine in fines.split()}
    fine_names = sorted(superclass_of)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": fine_names, "coarse_label_names": sorted(CIFAR100_SUPERCLASSES)}, f)
    order = np.random.default_rng(0).permutation(100)
    for split in ("train", "test"):
        with open(folder / split, "wb") as f:
            pickle.dump({"data": np.zeros((100, 3072), np.uint8), "fine_labels": order.tolist()}, f)
        dataset = load_split("cifar20", split, str(tmp_path))
        names = class_names("cifar20", dataset)
        assert len(dataset) == 100 and len(names) == 20
        for i, fine in enumerate(order):
            label = dataset[i][1]
            assert dataset.targets[i] == label
            assert names[label] == superclass_of[fine_names[fine]], fine_names[fine]


def test_transform_resizes_imagenet_family_to_256_over_224_of_the_crop():
    class Backbone:
        input_resolution, mean, std = 224, (0.5,) * 3, (0.5,) * 3

    sizes = {name: build_transform(name, Backbone()).transforms[0].size for name in ("cifar10", "imagenet10")}
    assert sizes == {"cifar10": 224, "imagenet10": 256}
    image = Image.new("L", (28, 28), 128)  # grey in, RGB out
    assert build_transform("fashion-mnist", Backbone())(image).shape == (3, 224, 224)
