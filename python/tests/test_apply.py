"""The PyTorch port against the trainer itself: each kind's helper recomputes the insight
tensors the trainer stored in a real artifact (to 1e-5), and `mix()` reproduces the Rust
blend golden file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

import commentary
from commentary.errors import ArtifactError

GOLDEN = Path(__file__).parent / "golden" / "blend.safetensors"
TOLERANCE = 1e-5


def canonical_images(mnist) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The train split in canonical order (images NCHW in [0, 1], labels), and the order."""
    order = commentary.canonical_order(mnist.train_images, mnist.train_labels)
    images = mnist.train_images[order][:, None].astype(np.float32) / 255.0
    return images, mnist.train_labels[order].astype(np.int64), order


@pytest.fixture(scope="module")
def downloaded(server, learned, tmp_path_factory) -> dict[str, Path]:
    registry = commentary.Registry(server.url, cache_dir=tmp_path_factory.mktemp("cache"),
                                   progress=False)
    return {key: registry.download(cid) for key, cid in learned.items()}


@pytest.mark.parametrize("key", ["teacher-cbr", "teacher-mlp"])
def test_the_teacher_reproduces_the_stored_weights(downloaded, mnist, key) -> None:
    teacher = commentary.load(downloaded[key])
    assert isinstance(teacher, commentary.ExampleWeighting)
    insights = teacher.artifact.insights()
    images, labels, _ = canonical_images(mnist)
    sample = insights["indices"]
    assert (labels[sample] == insights["labels"]).all()
    x = torch.from_numpy(images[sample])
    y = torch.from_numpy(labels[sample])
    assert insights["weights"].shape == (5, len(sample))
    for point, progress in enumerate(insights["progress"]):
        weights = teacher.weights(x, float(progress), labels=y).numpy()
        np.testing.assert_allclose(weights, insights["weights"][point], atol=TOLERANCE, rtol=0)
    # The weights move with progress and with the label: the check is not of a constant.
    assert np.ptp(insights["weights"]) > 1e-4
    # The time input follows the artifact's rule, clamped to 1.
    assert teacher.progress(5, 10) == 0.5 and teacher.progress(20, 10) == 1.0
    with pytest.raises(ArtifactError, match="labels="):
        teacher.weights(x, 0.5)


def test_stored_weights_map_onto_the_users_order(downloaded, mnist) -> None:
    teacher = commentary.load(downloaded["teacher-cbr"])
    table = teacher.artifact.tensors["insight.example_weights"]
    teacher.align(mnist.train_images, mnist.train_labels)
    _, _, order = canonical_images(mnist)
    users = np.array([0, 17, 4242, len(order) - 1])
    canonical = np.argsort(order)[users]
    np.testing.assert_array_equal(teacher.stored_weights(users).numpy(), table[canonical])


def test_a_weight_table_follows_the_users_order(downloaded, mnist) -> None:
    table = commentary.load(downloaded["table"])
    assert isinstance(table, commentary.TabularWeights)
    with pytest.raises(ArtifactError, match="align"):
        table.weights([0])
    # Shuffle the user's split: the weights follow the examples, not the positions.
    rng = np.random.default_rng(0)
    shuffle = rng.permutation(len(mnist.train_labels))
    table.align(mnist.train_images[shuffle], mnist.train_labels[shuffle])
    _, _, order = canonical_images(mnist)
    canonical_of_user = np.argsort(order)
    users = np.arange(0, len(shuffle), 997)
    expected = table.artifact.tensors["insight.example_weights"][canonical_of_user[shuffle[users]]]
    np.testing.assert_allclose(table.weights(users).numpy(), expected, atol=TOLERANCE, rtol=0)
    with pytest.raises(ArtifactError, match="learned on"):
        table.align(mnist.train_images[:10], mnist.train_labels[:10])


def test_mix_equals_the_trainers_blend_golden_file() -> None:
    golden = load_file(str(GOLDEN))
    blending = commentary.LabelBlending.__new__(commentary.LabelBlending)
    blending.logits = torch.from_numpy(golden["logits"])
    x = torch.from_numpy(golden["images"])
    y = torch.from_numpy(golden["labels"])
    perm = torch.from_numpy(golden["pairs"])
    mixed, y_a, y_b, lam = blending.mix(x, y, perm)
    np.testing.assert_allclose(mixed.numpy(), golden["mixed"], atol=1e-6, rtol=0)
    classes = golden["logits"].shape[0]
    soft = lam[:, None] * torch.nn.functional.one_hot(y_a, classes) + (
        1 - lam[:, None]) * torch.nn.functional.one_hot(y_b, classes)
    np.testing.assert_allclose(soft.numpy(), golden["targets"], atol=1e-6, rtol=0)
    # The loss is the soft-target cross-entropy the trainer trains on.
    logits = torch.randn(len(y), classes)
    expected = -(torch.from_numpy(golden["targets"]) * logits.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(commentary.mix_loss(logits, y_a, y_b, lam), expected)


def test_a_learned_blend_matrix_and_its_collate_fn(downloaded) -> None:
    blending = commentary.load(downloaded["blend"])
    assert isinstance(blending, commentary.LabelBlending)
    np.testing.assert_allclose(blending.proportions.numpy(),
                               blending.artifact.tensors["insight.blend"], atol=TOLERANCE)
    collate = blending.collate(generator=torch.Generator().manual_seed(0))
    batch = [(torch.full((1, 28, 28), float(i)), i % 10) for i in range(8)]
    x, y_a, y_b, lam = collate(batch)
    assert x.shape == (8, 1, 28, 28) and ((lam > 0.5) & (lam < 1)).all()
    # Image i is filled with i and labelled i: each mixed image is lam of its own value and
    # 1 - lam of its partner's, whose label says which it is.
    torch.testing.assert_close(x[:, 0, 0, 0], lam * y_a.float() + (1 - lam) * y_b.float())
    assert (y_a == torch.arange(8)).all() and sorted(y_b.tolist()) == list(range(8))


def test_masks_reproduce_the_stored_masks(downloaded, mnist) -> None:
    masks = commentary.load(downloaded["mask-cbr"])
    assert isinstance(masks, commentary.AttentionMask)
    insights = masks.artifact.insights()
    images, _, _ = canonical_images(mnist)
    # The stored images are the canonical examples at insight.indices.
    np.testing.assert_allclose(images[insights["indices"]], insights["images"], atol=1e-7)
    x = torch.from_numpy(insights["images"])
    np.testing.assert_allclose(masks.mask(x).numpy(), insights["masks"], atol=TOLERANCE, rtol=0)
    assert np.ptp(insights["masks"]) > 1e-4
    applied = masks.masked(x)
    torch.testing.assert_close(applied, x * torch.from_numpy(insights["masks"])[:, None],
                               atol=TOLERANCE, rtol=0)
    assert masks.masked(x[0]).shape == x[0].shape


def damaged_copy(source: Path, target: Path, change) -> Path:
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    change(target, manifest)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def test_bad_artifacts_are_refused_with_the_problem_named(downloaded, tmp_path) -> None:
    source = downloaded["teacher-mlp"]

    def swap_tensor(target: Path, manifest: dict) -> None:
        tensors = load_file(str(target / "tensors.safetensors"))
        tensors["commentary.layers.0.bias"] = np.zeros(3, np.float32)
        save_file(tensors, str(target / "tensors.safetensors"))
        manifest["tensors_sha256"] = commentary.artifact.sha256_file(target / "tensors.safetensors")

    def unknown_net(target: Path, manifest: dict) -> None:
        manifest["architecture"]["commentary"]["net"] = {"type": "resnet"}

    def unknown_spec(target: Path, manifest: dict) -> None:
        manifest["architecture"]["commentary"] = {"type": "curriculum-graph"}

    for name, change, problem in [
        ("shape", swap_tensor, "layers.0.bias is float32 \\[3\\]"),
        ("net", unknown_net, "network spec .* is not one this client knows"),
        ("spec", unknown_spec, "commentary spec .* is not one this client knows"),
        ("sha", lambda t, m: m.update(tensors_sha256="sha256:" + "0" * 64), "sha256 is"),
        ("version", lambda t, m: m.update(format_version=9), "format_version 9"),
    ]:
        with pytest.raises(ArtifactError, match=problem):
            commentary.load(damaged_copy(source, tmp_path / name, change))
