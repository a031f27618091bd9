"""The digest in Python equals the Rust CLI's (`commentary dataset hash`) on the same content:
arrays, the MNIST fixture through torchvision, CIFAR-10/100, a generated RGB image folder,
a Hugging Face dataset and `.npz`; and the documented test vectors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import commentary
from commentary.errors import DatasetError
from conftest import FIXTURE, FIXTURE_DIGEST, mnist_torchvision_root, run_cli, rust_digest

#: docs/dataset-digest.md's worked example.
WORKED_DIGEST = "sha256:7adbb878d5aed5215c80fb77ef30cf5015be7325902ea7e2f180581789213061"


def worked_example() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    train = np.array([[0, 0, 0, 0], [255] * 4, [1, 2, 3, 4]], dtype=np.uint8).reshape(3, 2, 2)
    test = np.array([[9, 8, 7, 6]], dtype=np.uint8).reshape(1, 2, 2)
    return {"train": (train, np.array([0, 1, 1])), "test": (test, np.array([1]))}


def test_the_documented_worked_example() -> None:
    assert commentary.dataset_digest(worked_example(), classes=["0", "1"]) == WORKED_DIGEST
    # Without names the classes are the decimal ids, as for IDX.
    assert commentary.dataset_digest(worked_example()) == WORKED_DIGEST
    assert commentary.dataset_digest(worked_example(), classes=["a", "b"]) != WORKED_DIGEST


def test_the_fixture_as_arrays_equals_the_rust_digest(mnist) -> None:
    assert rust_digest(FIXTURE) == FIXTURE_DIGEST
    assert commentary.dataset_digest(mnist.splits()) == FIXTURE_DIGEST
    # [N, H, W, 1] is the same content as [N, H, W]; any example order gives one digest.
    images, labels = mnist.train_images, mnist.train_labels
    flipped = np.arange(len(labels))[::-1]
    splits = {"train": (images[flipped, ..., None], labels[flipped]),
              "test": (mnist.test_images, mnist.test_labels)}
    assert commentary.dataset_digest(splits) == FIXTURE_DIGEST


def test_torchvision_mnist_over_the_fixture_files(tmp_path: Path) -> None:
    from torchvision.datasets import MNIST

    root = mnist_torchvision_root(tmp_path)
    data = {"train": MNIST(root, train=True, download=False),
            "test": MNIST(root, train=False, download=False)}
    # torchvision names MNIST's classes "0 - zero"; the registry's IDX classes are "0".."9".
    assert data["train"].classes[0] == "0 - zero"
    assert commentary.digest_of(data) == FIXTURE_DIGEST


def cifar_arrays(rng: np.random.Generator, n: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, classes, n)


def write_cifar(tmp: Path, fine: bool) -> tuple[Path, Path, list[str]]:
    """The same random examples as torchvision's pickled batches and as the binary batches the
    Rust decoder reads."""
    rng = np.random.default_rng(7)
    classes = 100 if fine else 10
    names = [f"class-{i}" for i in range(classes)]
    py = tmp / ("cifar-100-python" if fine else "cifar-10-batches-py")
    binary = tmp / "binary"
    py.mkdir()
    binary.mkdir()
    label_key = "fine_labels" if fine else "labels"
    # torchvision reads five CIFAR-10 training batches.
    batches = {"train": [cifar_arrays(rng, 14, classes) for _ in range(5)],
               "test": [cifar_arrays(rng, 25, classes)]}

    def pickle_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
        chw = images.transpose(0, 3, 1, 2).reshape(len(images), 3 * 32 * 32)
        with open(path, "wb") as f:
            pickle.dump({"data": chw, label_key: labels.tolist()}, f)

    def binary_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
        chw = images.transpose(0, 3, 1, 2).reshape(len(images), 3 * 32 * 32)
        head = [labels // 5, labels] if fine else [labels]  # CIFAR-100: coarse, then fine
        path.write_bytes(np.column_stack([*head, chw]).astype(np.uint8).tobytes())

    if fine:
        pickle_batch(py / "train", *map(np.concatenate, zip(*batches["train"])))
        pickle_batch(py / "test", *batches["test"][0])
        with open(py / "meta", "wb") as f:
            pickle.dump({"fine_label_names": names}, f)
        binary_batch(binary / "train.bin", *map(np.concatenate, zip(*batches["train"])))
        binary_batch(binary / "test.bin", *batches["test"][0])
        (binary / "fine_label_names.txt").write_text("\n".join(names) + "\n")
    else:
        for i, batch in enumerate(batches["train"], start=1):
            pickle_batch(py / f"data_batch_{i}", *batch)
            binary_batch(binary / f"data_batch_{i}.bin", *batch)
        pickle_batch(py / "test_batch", *batches["test"][0])
        binary_batch(binary / "test_batch.bin", *batches["test"][0])
        with open(py / "batches.meta", "wb") as f:
            pickle.dump({"label_names": names}, f)
        (binary / "batches.meta.txt").write_text("\n".join(names) + "\n")
    return tmp, binary, names


@pytest.mark.parametrize("fine", [False, True], ids=["cifar10", "cifar100"])
def test_torchvision_cifar_equals_the_rust_digest_of_the_binary_batches(tmp_path, fine) -> None:
    from torchvision.datasets import CIFAR10, CIFAR100

    root, binary, names = write_cifar(tmp_path, fine)
    base = CIFAR100 if fine else CIFAR10

    class Local(base):  # type: ignore[misc, valid-type]
        # torchvision checks the md5 of the real CIFAR files; these are generated ones, so
        # their entries carry no md5 (which torchvision reads as "exists").
        train_list = [[name, None] for name, _ in base.train_list]
        test_list = [[name, None] for name, _ in base.test_list]
        meta = {**base.meta, "md5": None}

    Local.__module__ = base.__module__
    data = {"train": Local(str(root), train=True, download=False),
            "test": Local(str(root), train=False, download=False)}
    assert data["train"].classes == names
    assert commentary.digest_of(data) == rust_digest(binary)


def write_image_folder(root: Path, fmt: str) -> None:
    """An RGB image folder whose class names sort differently as numbers and as strings."""
    rng = np.random.default_rng(3)
    for split, count in (("train", 6), ("test", 3)):
        for class_name in ("2", "10", "1"):
            folder = root / split / class_name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.{fmt}")


def test_torchvision_image_folder_equals_the_rust_digest(tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    write_image_folder(tmp_path / "data", "png")
    data = {s: ImageFolder(str(tmp_path / "data" / s)) for s in ("train", "test")}
    # torchvision sorts class folders as strings; the registry's labels order them as numbers.
    assert data["train"].classes == ["1", "10", "2"]
    dataset = commentary.as_dataset(data)
    assert dataset.classes == ["1", "2", "10"]
    assert dataset.digest == rust_digest(tmp_path / "data")


def test_image_folders_read_only_what_the_registry_reads(tmp_path: Path) -> None:
    """torchvision also takes hidden class folders (.ipynb_checkpoints), other extensions and
    nested folders; the registry's decoder does not, so neither does the digest."""
    from torchvision.datasets import ImageFolder

    write_image_folder(tmp_path / "data", "png")
    expected = rust_digest(tmp_path / "data")
    pixels = np.zeros((12, 10, 3), np.uint8)
    (tmp_path / "data/train/.ipynb_checkpoints").mkdir()
    Image.fromarray(pixels).save(tmp_path / "data/train/.ipynb_checkpoints/0.png")
    Image.fromarray(pixels).save(tmp_path / "data/train/1/extra.bmp")
    (tmp_path / "data/train/2/nested").mkdir()
    Image.fromarray(pixels).save(tmp_path / "data/train/2/nested/deep.png")
    assert rust_digest(tmp_path / "data") == expected
    data = {s: ImageFolder(str(tmp_path / "data" / s)) for s in ("train", "test")}
    with pytest.warns(UserWarning, match="files skipped"):
        assert commentary.digest_of(data) == expected


def test_jpeg_folders_digest_by_their_decoder(tmp_path: Path) -> None:
    """JPEG is the documented exception: Pillow and the Rust `image` crate decode the same
    file to slightly different pixels, so the digests differ; arrays decoded once (and pushed
    as .npz) keep one digest."""
    from torchvision.datasets import ImageFolder

    write_image_folder(tmp_path / "data", "jpg")
    data = {s: ImageFolder(str(tmp_path / "data" / s)) for s in ("train", "test")}
    dataset = commentary.as_dataset(data)
    assert dataset.digest != rust_digest(tmp_path / "data")
    commentary.write_npz(dataset, tmp_path / "decoded.npz")
    assert rust_digest(tmp_path / "decoded.npz") == dataset.digest


def hf_dataset(mnist):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image as HfImage

    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    features = Features({"image": HfImage(), "label": ClassLabel(names=names)})

    def split(images: np.ndarray, labels: np.ndarray) -> Dataset:
        pictures = [Image.fromarray(image) for image in images]
        return Dataset.from_dict({"image": pictures, "label": labels.tolist()}, features=features)

    data = DatasetDict({"train": split(mnist.train_images[::27], mnist.train_labels[::27]),
                        "test": split(mnist.test_images[::20], mnist.test_labels[::20])})
    return data, names


def test_a_hugging_face_dataset_dict(mnist, tmp_path: Path) -> None:
    data, names = hf_dataset(mnist)
    expected = commentary.dataset_digest(
        {"train": (mnist.train_images[::27], mnist.train_labels[::27]),
         "test": (mnist.test_images[::20], mnist.test_labels[::20])},
        classes=names,
    )
    assert commentary.digest_of(data) == expected
    commentary.write_npz(commentary.as_dataset(data), tmp_path / "hf.npz")
    assert rust_digest(tmp_path / "hf.npz") == expected


def test_npz_in_every_accepted_form_equals_the_rust_digest(mnist, tmp_path: Path) -> None:
    # Every 16th example: the fixture's files hold the digits one after the other.
    arrays = {"train_images": mnist.train_images[::16, ..., None],
              "train_labels": mnist.train_labels[::16].astype(np.int64),
              "test_images": mnist.test_images[::10],
              "test_labels": mnist.test_labels[::10].astype(np.uint16)}
    expected = commentary.dataset_digest(
        {"train": (mnist.train_images[::16], mnist.train_labels[::16]),
         "test": (mnist.test_images[::10], mnist.test_labels[::10])})
    # No classes array: decimal ids; uncompressed savez; labels in any integer dtype.
    np.savez(tmp_path / "plain.npz", **arrays)
    assert rust_digest(tmp_path / "plain.npz") == expected
    assert commentary.digest_of(tmp_path / "plain.npz") == expected
    # Byte-string class names are the same names.
    names = [str(i) for i in range(10)]
    np.savez_compressed(tmp_path / "named.npz", **arrays, classes=np.array(names, dtype="S"))
    assert rust_digest(tmp_path / "named.npz") == expected
    # The same content in another container has the same digest.
    assert rust_digest(FIXTURE) == commentary.dataset_digest(mnist.splits())
    inspect = run_cli("dataset", "inspect", str(tmp_path / "named.npz"), "--json").stdout
    assert '"npz"' in inspect


def test_bad_npz_files_are_refused_with_the_problem_named(mnist, tmp_path: Path) -> None:
    images = mnist.train_images[:10]
    labels = np.arange(10)
    cases = {
        "floats.npz": ({"train_images": images / 255.0, "train_labels": labels},
                       "expected uint8"),
        "count.npz": ({"train_images": images, "train_labels": labels[:9]},
                      "holds 10 images but"),
        "unpaired.npz": ({"train_images": images}, "no labels array"),
        "negative.npz": ({"train_images": images, "train_labels": -np.ones(10, dtype=np.int32)},
                         "negative"),
        "range.npz": ({"train_images": images, "train_labels": labels,
                       "classes": np.array(["a", "b"])}, "out of range"),
        "stray.npz": ({"train_images": images, "train_labels": labels,
                       "weights": np.ones(3)}, "not part of a NumPy dataset"),
    }
    for name, (arrays, problem) in cases.items():
        np.savez(tmp_path / name, **arrays)
        result = run_cli("dataset", "hash", str(tmp_path / name), check=False)
        assert result.returncode != 0, name
        assert problem in result.stderr, (name, result.stderr)


def test_canonical_order_sorts_by_record_hash(mnist) -> None:
    import hashlib
    import struct

    order = commentary.canonical_order(mnist.train_images, mnist.train_labels)
    assert sorted(order.tolist()) == list(range(len(mnist.train_labels)))
    hashes = [hashlib.sha256(struct.pack("<I", int(mnist.train_labels[i]))
                             + mnist.train_images[i].tobytes()).digest() for i in order]
    assert hashes == sorted(hashes)


def test_bad_arrays_name_the_problem() -> None:
    with pytest.raises(DatasetError, match="dtype float32"):
        commentary.dataset_digest({"train": (np.zeros((2, 4, 4), np.float32), [0, 1])})
    with pytest.raises(DatasetError, match="out of range"):
        commentary.dataset_digest({"train": (np.zeros((2, 4, 4), np.uint8), [0, 5])},
                                  classes=["a", "b"])
    with pytest.raises(DatasetError, match="C 1 or 3"):
        commentary.dataset_digest({"train": (np.zeros((2, 4, 4, 4), np.uint8), [0, 1])})
    with pytest.raises(DatasetError, match="2 images but labels"):
        commentary.dataset_digest({"train": (np.zeros((2, 4, 4), np.uint8), [0, 1, 1])})


def test_mixed_image_sizes_are_refused(tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    write_image_folder(tmp_path / "data", "png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "data/train/1/odd.png")
    with pytest.raises(DatasetError, match="every image of a split must have one size"):
        commentary.digest_of({"train": ImageFolder(str(tmp_path / "data" / "train"))})
