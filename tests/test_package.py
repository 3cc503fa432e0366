"""The package format (seqnet_runtime.package): read back what is written, refuse what is not
one, each problem in one line."""

import json

import pytest

from seqnet_runtime import load, package
from seqnet_runtime.errors import SeqNetError
from seqnet_runtime.package import FORMAT_VERSION, Graph, Manifest, Preprocess


def manifest():
    spec = {"inputs": [{"name": "images", "dtype": "float32", "shape": ["batch", 3, "h", "w"]}],
            "outputs": []}  # fmt: skip
    return Manifest(
        source={"checkpoint": "epoch_0.pth", "sha256": "0" * 64},
        preprocess=Preprocess(800, 1333, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], 32),
        thresholds=dict.fromkeys(package.THRESHOLDS, 0.5),
        detections_per_image=300,
        embedding_dim=256,
        batch_size=1,
        opset=18,
        graphs={"fp32": {g: Graph(file=f"{g}.onnx", **spec) for g in package.GRAPHS}},
    )


def test_written_manifest_reads_back(tmp_path):
    package.write(tmp_path, manifest())
    back = package.read(tmp_path)
    assert back.to_dict() == manifest().to_dict() | {"created_utc": back.created_utc}
    assert back.graphs["fp32"]["detect"].input_names == ["images"]
    assert back.key("fp32", back.thresholds) != back.key("fp16", back.thresholds)
    assert package.is_package(tmp_path)


def _broken(tmp_path, edit):
    data = manifest().to_dict()
    edit(data)
    (tmp_path / package.MANIFEST).write_text(json.dumps(data))
    with pytest.raises(SeqNetError) as e:
        package.read(tmp_path)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_another_format_version_is_refused_in_one_line(tmp_path):
    message = _broken(tmp_path, lambda d: d.update(format_version=FORMAT_VERSION + 1))
    assert f"format version {FORMAT_VERSION + 1} is not supported" in message
    assert "export the checkpoint again" in message


@pytest.mark.parametrize(
    "edit, expect",
    [
        (lambda d: d.pop("thresholds"), "malformed manifest: no field 'thresholds'"),
        (lambda d: d.update(embedding_dim="256"), "malformed manifest: expected an integer"),
        (lambda d: d["graphs"]["fp32"].pop("embed"), "malformed manifest: flavour fp32"),
        (lambda d: d.update(graphs={}), "it lists no graphs"),
        (lambda d: d["preprocess"].update(extra=1), "malformed manifest"),
        (lambda d: d.update(format="other"), "not a SeqNet model package manifest"),
    ],
)
def test_a_malformed_manifest_is_one_line(tmp_path, edit, expect):
    assert expect in _broken(tmp_path, edit)


def test_not_a_package(tmp_path):
    (tmp_path / package.MANIFEST).write_text("{not json")
    with pytest.raises(SeqNetError, match="unreadable"):
        package.read(tmp_path)
    with pytest.raises(SeqNetError, match="not a model package"):
        package.read(tmp_path / "nothing")
    with pytest.raises(SeqNetError, match="is a file"):
        package.read(tmp_path / package.MANIFEST)


def test_missing_graph_file_and_flavour(tmp_path):
    package.write(tmp_path, manifest())
    with pytest.raises(SeqNetError, match="no fp16 graphs in this package"):
        load(tmp_path, "onnxruntime", precision="fp16")
    with pytest.raises(SeqNetError, match="detect.onnx is listed but missing"):
        load(tmp_path, "onnxruntime")


def test_the_size_rule_is_torchvisions_float64():
    rule = manifest().preprocess
    assert rule.resized_size(480, 640) == (800, 1066)
    assert rule.resized_size(201, 268) == (800, 1066)
    assert rule.resized_size(1080, 1920) == (749, 1333)
