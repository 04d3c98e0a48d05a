"""Dataset plumbing that needs no download: folders of images, CIFAR-20's superclasses, transforms."""
import numpy as np
import pytest
from PIL import Image

from utils.datasets import CIFAR100_COARSE, build_transform, load_split
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


def test_cifar20_superclasses_of_known_fine_classes():
    # fine (alphabetical): apple, bee, bicycle, bowl, whale(95) -> fruit_and_vegetables(4), insects(7),
    # vehicles_1(18), food_containers(3), aquatic_mammals(0)
    assert [CIFAR100_COARSE[i] for i in (0, 6, 8, 10, 95)] == [4, 7, 18, 3, 0]
    assert np.bincount(CIFAR100_COARSE).tolist() == [5] * 20


def test_transform_resizes_imagenet_family_to_256_over_224_of_the_crop():
    class Backbone:
        input_resolution, mean, std = 224, (0.5,) * 3, (0.5,) * 3

    sizes = {name: build_transform(name, Backbone()).transforms[0].size for name in ("cifar10", "imagenet10")}
    assert sizes == {"cifar10": 224, "imagenet10": 256}
    image = Image.new("L", (28, 28), 128)  # grey in, RGB out
    assert build_transform("fashion-mnist", Backbone())(image).shape == (3, 224, 224)
