"""Loaders for a user's own images: class folders, caption files, COCO JSON,
and what they do with unreadable or missing files."""
import csv
import json
import warnings

import numpy as np
import pytest
from conftest import write_corrupt, write_png
from PIL import Image, UnidentifiedImageError

from modgap.data import ImageSet, PairSet, from_captions, from_coco, from_folder, read_image


def one_warning(fn, *args, **kwargs):
    """Call fn and return (result, the messages of every warning it gave)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [str(w.message) for w in caught]


def write_csv(path, rows, header=("image", "caption"), delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def captioned(tmp_path):
    """Three PNGs under tmp_path/img."""
    (tmp_path / "img").mkdir()
    return [write_png(tmp_path / "img" / f"{i}.png", seed=i) for i in range(3)]


# -- from_folder --------------------------------------------------------------

def test_from_folder_reads_classes_and_labels(class_folder):
    s = from_folder(class_folder)
    assert isinstance(s, ImageSet)
    assert s.classnames == ["circle", "square"]
    assert s.labels.tolist() == [0, 0, 0, 1, 1]
    assert [p.parent.name for p in s.images] == ["circle"] * 3 + ["square"] * 2
    assert s.name == "classes" and s.source == str(class_folder)
    assert s.templates == ["a photo of a {}."]


def test_from_folder_with_given_classnames_and_templates(class_folder):
    s = from_folder(class_folder, classnames=["square", "circle", "star"], templates=["a {} shape"], name="mine")
    assert s.classnames == ["square", "circle", "star"]
    assert s.labels.tolist() == [1, 1, 1, 0, 0]
    assert s.templates == ["a {} shape"] and s.name == "mine"


def test_from_folder_ignores_other_files(class_folder):
    (class_folder / "circle" / "notes.txt").write_text("not an image")
    (class_folder / "README.md").write_text("top-level file")
    assert len(from_folder(class_folder)) == 5


def test_from_folder_skips_unreadable_images_in_one_warning(class_folder):
    bad1 = write_corrupt(class_folder / "circle" / "broken.png")
    bad2 = write_corrupt(class_folder / "square" / "broken.jpg")
    s, msgs = one_warning(from_folder, class_folder)
    assert len(msgs) == 1
    assert "skipped 2 of 7" in msgs[0] and str(bad1) in msgs[0] and str(bad2) in msgs[0]
    assert len(s) == 5 and bad1 not in s.images and bad2 not in s.images
    assert s.labels.tolist() == [0, 0, 0, 1, 1]
    assert all(p.parent.name == s.classnames[y] for p, y in zip(s.images, s.labels))


def test_from_folder_names_at_most_ten_bad_files(tmp_path):
    (tmp_path / "a").mkdir()
    write_png(tmp_path / "a" / "good.png", seed=0)
    for i in range(12):
        write_corrupt(tmp_path / "a" / f"bad{i:02d}.png")
    s, msgs = one_warning(from_folder, tmp_path)
    assert len(s) == 1 and len(msgs) == 1
    assert "skipped 12 of 13" in msgs[0] and "and 2 more" in msgs[0]


def test_from_folder_errors(tmp_path, class_folder):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        from_folder(tmp_path / "absent")
    (tmp_path / "flat").mkdir()
    write_png(tmp_path / "flat" / "x.png", seed=0)
    with pytest.raises(ValueError, match="no sub-folders"):
        from_folder(tmp_path / "flat")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="no image files"):
        from_folder(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"sub-folders \['square'\] .* are not in classnames"):
        from_folder(class_folder, classnames=["circle"])


def test_from_folder_where_nothing_is_readable_is_an_empty_set_error(tmp_path):
    (tmp_path / "a").mkdir()
    write_corrupt(tmp_path / "a" / "x.png")
    with (pytest.warns(UserWarning, match="skipped 1 of 1"),
          pytest.raises(ValueError, match=f"is empty .read from {tmp_path}")):
        from_folder(tmp_path)


def test_from_folder_set_embeds(clip, class_folder):
    write_corrupt(class_folder / "square" / "broken.png")
    with pytest.warns(UserWarning):
        s = from_folder(class_folder)
    emb = clip.encode_images(s)
    assert emb.shape == (5, clip.embed_dim)


# -- from_captions ------------------------------------------------------------

def test_from_captions_csv(tmp_path, captioned):
    f = write_csv(tmp_path / "caps.csv", [
        ("img/0.png", "a red thing"), ("img/1.png", "a blue thing"), ("img/0.png", "something red"),
        (str(captioned[2]), "an absolute path"),
    ])
    p = from_captions(f)
    assert isinstance(p, PairSet) and len(p) == 3
    assert p.images == captioned
    assert p.captions == [["a red thing", "something red"], ["a blue thing"], ["an absolute path"]]
    assert p.name == "caps" and p.source == str(f)


def test_from_captions_tsv_with_other_columns_and_image_root(tmp_path, captioned):
    f = write_csv(tmp_path / "elsewhere.tsv", [("0.png", "zero", "x"), ("1.png", "one", "y")],
                  header=("file", "text", "extra"), delimiter="\t")
    p = from_captions(f, image_root=tmp_path / "img", image_column="file", caption_column="text")
    assert p.images == captioned[:2] and p.first_captions() == ["zero", "one"]


def test_from_captions_jsonl_and_json(tmp_path, captioned):
    recs = [{"image": "img/1.png", "caption": "one"}, {"image": "img/2.png", "caption": "two"}]
    (tmp_path / "caps.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n\n")
    (tmp_path / "caps.json").write_text(json.dumps(recs, indent=2))
    for name in ("caps.jsonl", "caps.json"):
        p = from_captions(tmp_path / name)
        assert p.images == captioned[1:] and p.first_captions() == ["one", "two"]


def test_caption_file_pointing_at_missing_images_names_the_file(tmp_path, captioned):
    f = write_csv(tmp_path / "caps.csv", [("img/0.png", "ok"), ("img/missing.png", "gone")])
    with pytest.raises(FileNotFoundError) as info:
        from_captions(f)
    msg = str(info.value)
    assert str(f) in msg and "1 image(s) that do not exist" in msg and "missing.png" in msg
    assert "image_root=" in msg


def test_from_captions_skips_unreadable_images_in_one_warning(tmp_path, captioned):
    bad = write_corrupt(tmp_path / "img" / "bad.png")
    f = write_csv(tmp_path / "caps.csv", [
        ("img/0.png", "zero"), ("img/bad.png", "broken"), ("img/1.png", "one"), ("img/bad.png", "again"),
    ])
    p, msgs = one_warning(from_captions, f)
    assert len(msgs) == 1
    assert "skipped 1 of 3" in msgs[0] and str(bad) in msgs[0] and str(f) in msgs[0]
    assert p.images == captioned[:2] and p.captions == [["zero"], ["one"]]


@pytest.mark.parametrize("content,suffix,match", [
    ("image,caption\nimg/0.png,\n", ".csv", "row 1 needs both an image path and a caption"),
    ("picture,caption\nimg/0.png,x\n", ".csv", "no column 'image'"),
    ("image,caption\n", ".csv", "holds no image-caption rows"),
    ('{"image": "img/0.png", "caption": "x"}\n{oops\n', ".jsonl", "line 2 is not valid JSON"),
    ('["img/0.png", "x"]\n', ".jsonl", "line 1 is not a JSON object"),
    ('{"images": [], "annotations": []}', ".json", "from_coco"),
    ("img/0.png x\n", ".txt", "must end in"),
])
def test_from_captions_bad_files(tmp_path, captioned, content, suffix, match):
    f = tmp_path / f"caps{suffix}"
    f.write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        from_captions(f)
    assert str(f) in str(info.value)


def test_from_captions_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="caption file .*nope.csv does not exist"):
        from_captions(tmp_path / "nope.csv")


# -- from_coco ----------------------------------------------------------------

def coco(images, annotations):
    return {"info": {}, "images": images, "annotations": annotations}


def test_from_coco(tmp_path, captioned):
    f = tmp_path / "captions_val.json"
    f.write_text(json.dumps(coco(
        [{"id": 7, "file_name": "0.png"}, {"id": 9, "file_name": "2.png"}],
        [{"id": 1, "image_id": 9, "caption": "two"}, {"id": 2, "image_id": 7, "caption": "zero"},
         {"id": 3, "image_id": 9, "caption": "also two"}],
    )))
    p = from_coco(f, image_root=tmp_path / "img")
    assert p.images == [captioned[2], captioned[0]]
    assert p.captions == [["two", "also two"], ["zero"]]
    assert p.name == "captions_val"


@pytest.mark.parametrize("data,match", [
    ({"images": []}, "lacks the COCO keys"),
    ([1, 2], "lacks the COCO keys"),
    (coco([{"id": 1, "file_name": "0.png"}], [{"id": 5, "image_id": 2, "caption": "x"}]),
     "annotation 5 names unknown image_id 2"),
    (coco([{"id": 1}], []), r"images\[0\] needs an 'id' and a 'file_name'"),
    (coco([{"id": 1, "file_name": "0.png"}], [{"image_id": 1}]), r"annotations\[0\] needs"),
])
def test_from_coco_errors(tmp_path, captioned, data, match):
    f = tmp_path / "coco.json"
    f.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match) as info:
        from_coco(f, image_root=tmp_path / "img")
    assert str(f) in str(info.value)


def test_from_coco_missing_image_names_the_json(tmp_path, captioned):
    f = tmp_path / "coco.json"
    f.write_text(json.dumps(coco([{"id": 1, "file_name": "absent.png"}], [{"image_id": 1, "caption": "x"}])))
    with pytest.raises(FileNotFoundError, match=f"{f} points at 1 image"):
        from_coco(f, image_root=tmp_path / "img")


def test_from_coco_not_json(tmp_path):
    f = tmp_path / "coco.json"
    f.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        from_coco(f, image_root=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        from_coco(tmp_path / "absent.json", image_root=tmp_path)


# -- read_image -----------------------------------------------------------------

def test_read_image_gives_rgb(tmp_path):
    Image.fromarray(np.full((5, 7), 200, np.uint8)).save(tmp_path / "grey.png")
    Image.fromarray(np.zeros((5, 7, 4), np.uint8)).save(tmp_path / "alpha.png")
    for name in ("grey.png", "alpha.png"):
        im = read_image(tmp_path / name)
        assert im.mode == "RGB" and im.size == (7, 5)
    assert np.asarray(read_image(tmp_path / "grey.png")).max() == 200
    with pytest.raises(UnidentifiedImageError):
        read_image(write_corrupt(tmp_path / "bad.png"))
