"""modgap's zero-shot top-1 and retrieval recall@1/5 against CLIP_benchmark's
own evaluation functions (its ``zero_shot_classifier`` and
``run_classification``, and ``zeroshot_retrieval.evaluate``) on the same
model and images. Its ``zeroshot_classification.evaluate`` is not called:
under numpy 2 its ``accuracy`` helper fails (``float()`` of an array).

Runs where the optional extra ``modgap[benchmarks]`` is installed (CI
installs it)."""
import numpy as np
import pytest
import torch
from PIL import Image

import modgap
from modgap import data, metrics

cb_cls = pytest.importorskip("clip_benchmark.metrics.zeroshot_classification")
cb_ret = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")


@pytest.fixture(scope="module")
def clip():
    return modgap.load_model("modgap-tiny", device="cpu")


class Pictures(torch.utils.data.Dataset):
    """What CLIP_benchmark's loaders hand over: a preprocessed image and its
    target (a label, or a list of captions)."""

    def __init__(self, images, targets, preprocess):
        self.images, self.targets, self.preprocess = images, targets, preprocess

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.preprocess(Image.fromarray(self.images[i])), self.targets[i]


def test_zero_shot_top1_equals_clip_benchmarks(clip):
    ds = data.load("shapes", n=300, seed=5, domain="night")
    cb_templates = [t.replace("{}", "{c}") for t in ds.templates]  # CLIP_benchmark's form
    classifier = cb_cls.zero_shot_classifier(clip.model, clip.tokenizer, list(ds.classnames), cb_templates, "cpu",
                                             amp=False)
    loader = torch.utils.data.DataLoader(Pictures(ds.images, ds.labels.tolist(), clip.preprocess), batch_size=64)
    logits, target = cb_cls.run_classification(clip.model, classifier, loader, "cpu", amp=False)
    img, cls = clip.encode_images(ds), clip.class_embeddings(ds.classnames, ds.templates)
    ours = metrics.zero_shot_accuracy(img, cls, ds.labels)
    assert 0.3 < ours < 1.0  # the night domain: neither chance nor perfect, so the comparison has teeth
    # the same class for every image, so the same top-1
    np.testing.assert_array_equal(metrics.zero_shot_predict(img, cls), logits.argmax(1).numpy())
    assert ours == pytest.approx(float((logits.argmax(1) == target).float().mean()), abs=1e-6)


def test_retrieval_recall_at_1_and_5_equals_clip_benchmarks_with_unique_captions(clip):
    pairs = data.load("shapes-pairs", n=120, seed=6, domain="sketch")
    # CLIP_benchmark breaks score ties by position and modgap against the query: with
    # unique captions there are no ties, and the two conventions agree
    captions = [[f"{c} (picture {i}, caption {j})" for j, c in enumerate(caps[:2])]
                for i, caps in enumerate(pairs.captions)]
    loader = torch.utils.data.DataLoader(Pictures(pairs.images, captions, clip.preprocess), batch_size=32,
                                         collate_fn=lambda b: (torch.stack([x for x, _ in b]), [t for _, t in b]))
    theirs = cb_ret.evaluate(clip.model, loader, clip.tokenizer, "cpu", amp=False, recall_k_list=[1, 5])
    flat = [c for caps in captions for c in caps]
    owner = np.repeat(np.arange(len(captions)), [len(c) for c in captions])
    ours = metrics.retrieval_recall(clip.encode_images(pairs.images), clip.encode_texts(flat), k=(1, 5),
                                    text_to_image=owner)
    for k in (1, 5):
        assert ours[f"i2t_R@{k}"] == pytest.approx(theirs[f"text_retrieval_recall@{k}"], abs=1e-6)
        assert ours[f"t2i_R@{k}"] == pytest.approx(theirs[f"image_retrieval_recall@{k}"], abs=1e-6)
    assert 0.0 < ours["t2i_R@1"] < ours["t2i_R@5"] < 1.0
