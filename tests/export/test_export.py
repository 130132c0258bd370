"""Export: NanoDet-Plus PyTorch model → ONNX → IR, parity with PyTorch, checkpoint loading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="the export extra is not installed: pip install 'edgepipe[export]'"
)
pytest.importorskip("nncf", reason="the export extra is not installed: pip install 'edgepipe[export]'")

import openvino as ov  # noqa: E402

from edgepipe.cli import main  # noqa: E402
from edgepipe.errors import ConfigError, ModelError  # noqa: E402
from edgepipe.export import ARCHS, COCO_LABELS, ExportRequest, ExportResult, convert, export  # noqa: E402
from edgepipe.export.checkpoint import load_strict, load_weights, read_state_dict  # noqa: E402
from edgepipe.export.convert import count_matches, preprocess, read_images  # noqa: E402
from edgepipe.export.model import NanoDetPlus, folded_conv_parameters, randomize  # noqa: E402
from edgepipe.modelcard import read_card  # noqa: E402

pytestmark = pytest.mark.slow  # torch: never in the fast lane

M = ARCHS["nanodet-plus-m"]
F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def _request(out_dir: Path, samples: Path, **changes: Any) -> ExportRequest:
    values: dict[str, Any] = {
        "checkpoint": None, "arch": "nanodet-plus-m", "size": 320, "out_dir": out_dir,
        "verify_dir": samples, "labels": COCO_LABELS, "name": "rand",
    }  # fmt: skip
    values.update(changes)
    return ExportRequest(**values)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, shared_models: Path) -> tuple[ExportResult, Path]:
    """A randomly initialised NanoDet-Plus-m at 320, exported once for this module."""
    out = tmp_path_factory.mktemp("export")
    return export(_request(out, shared_models / "samples")), out


@pytest.fixture
def model() -> NanoDetPlus:
    m = NanoDetPlus(M)
    randomize(m, seed=1)
    return m.eval()


# ---------------------------------------------------------------- architecture
def test_parameter_count_matches_the_official_deploy_model(model: NanoDetPlus) -> None:
    # PROVENANCE.md: 1,186,346 conv parameters after BN folding; 1.198 M with BN unfused.
    assert folded_conv_parameters(model) == 1_186_346
    assert sum(p.numel() for p in model.parameters()) == 1_197_924


@pytest.mark.parametrize(
    ("arch", "num_classes", "size", "shape"),
    [("nanodet-plus-m", 80, 320, (1, 2125, 112)), ("nanodet-plus-m-1.5x", 80, 416, (1, 3598, 112)),
     ("nanodet-plus-m", 2, 320, (1, 2125, 34))],
)  # fmt: skip
def test_output_has_the_official_layout(
    arch: str, num_classes: int, size: int, shape: tuple[int, ...]
) -> None:
    m = NanoDetPlus(ARCHS[arch], num_classes).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, size, size))
    assert tuple(out.shape) == shape
    scores = out[..., :num_classes]
    assert float(scores.min()) >= 0.0 and float(scores.max()) <= 1.0  # sigmoid applied


@pytest.mark.integration
def test_official_weights_reproduce_the_official_onnx(shared_models: Path) -> None:
    """The strongest check of the architecture: real weights, same outputs as the official export."""
    onnx_path = shared_models / "nanodet-plus-m_320.onnx"
    m = NanoDetPlus(M).eval()
    assert load_weights(m, onnx_path) == "onnx initializers (BN folded)"
    compiled = ov.Core().compile_model(onnx_path, "CPU", F32)
    for image in read_images(shared_models / "samples", "samples")[:3]:
        x = preprocess(image, 320)
        with torch.no_grad():
            ours = m(torch.from_numpy(x)).numpy()
        assert np.abs(ours - compiled(x)[0]).max() < 1e-4


def test_onnx_weights_of_another_arch_are_refused(shared_models: Path) -> None:
    with pytest.raises(ModelError, match=r"check --arch"):
        load_weights(NanoDetPlus(ARCHS["nanodet-plus-m-1.5x"]), shared_models / "nanodet-plus-m_320.onnx")


# ---------------------------------------------------------------- export and parity
def test_ir_matches_pytorch_on_real_images(exported: tuple[ExportResult, Path]) -> None:
    result, _ = exported
    assert result.onnx.raw_max < 1e-3
    assert result.fp16.raw_max < 1e-2
    assert result.int8_recall is None


def test_export_writes_the_expected_files_and_nothing_else(exported: tuple[ExportResult, Path]) -> None:
    result, out = exported
    names = ["rand.json", "rand.names", "rand.onnx", "rand_fp16.bin", "rand_fp16.json", "rand_fp16.xml"]
    assert sorted(p.name for p in out.iterdir()) == names  # the temporary folder is gone
    assert [p.name for p in result.files] == names
    assert (out / "rand.names").read_text(encoding="utf-8").splitlines() == list(COCO_LABELS)


def test_ir_has_official_io_and_carries_its_card(exported: tuple[ExportResult, Path]) -> None:
    _, out = exported
    ir = ov.Core().read_model(out / "rand_fp16.xml")
    assert [i.get_any_name() for i in ir.inputs] == ["data"]
    assert list(ir.input(0).get_shape()) == [1, 3, 320, 320]
    assert [o.get_any_name() for o in ir.outputs] == ["output"]
    assert list(ir.output(0).get_shape()) == [1, 2125, 112]
    card = read_card(out / "rand_fp16.json")
    assert (card.arch, card.input_size, card.precision, card.labels) == (
        "nanodet-plus-m",
        320,
        "fp16",
        COCO_LABELS,
    )
    assert card.source == {"checkpoint": "random-init", "seed": "0"}
    assert json.loads(ir.get_rt_info(["model_info", "card"]).astype(str)) == json.loads(card.to_json())
    assert ir.get_rt_info(["model_info", "strides"]).astype(str) == "8 16 32 64"
    assert read_card(out / "rand.json").precision == "fp32"


def test_failed_parity_check_leaves_nothing_behind(
    tmp_path: Path, shared_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(convert, "FP16_SCORE_TOLERANCE", 0.0)  # any FP16 model now "differs"
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ModelError, match=r"FP16 IR differs from the PyTorch model: .* Nothing was written"):
        export(_request(tmp_path, shared_models / "samples"))
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.integration
@pytest.mark.slow
def test_int8_export_keeps_the_fp16_detections(tmp_path: Path, shared_models: Path) -> None:
    samples = shared_models / "samples"
    request = _request(tmp_path, samples, checkpoint=shared_models / "nanodet-plus-m_320.onnx", name="real",
                       int8=True, calib_dir=samples)  # fmt: skip
    result = export(request)
    found, total = result.int8_matched
    assert total >= 30  # 6 sample images with several objects each at score > 0.4
    assert result.int8_recall == found / total >= convert.INT8_MIN_RECALL
    assert read_card(tmp_path / "real_int8.json").precision == "int8"
    assert result.fp16.score_max < 1e-2


def test_count_matches_is_one_to_one_and_class_aware() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    b = np.array([[0, 0, 10, 11], [20, 20, 30, 30], [50, 50, 60, 60]], np.float32)
    assert count_matches(a, np.array([0, 0, 1], np.int32), b, np.array([0, 1, 1], np.int32)) == 2
    assert count_matches(a, np.array([0, 0, 1], np.int32), b, np.array([1, 0, 0], np.int32)) == 0
    assert count_matches(a, np.array([0, 0, 1], np.int32), b[:0], np.zeros(0, np.int32)) == 0


# ---------------------------------------------------------------- checkpoints
def _same_weights(a: NanoDetPlus, b: NanoDetPlus) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


@pytest.fixture
def ema() -> NanoDetPlus:
    m = NanoDetPlus(M)
    randomize(m, seed=2)
    return m


@pytest.mark.parametrize("form", ["bare", "pth", "ckpt"])
def test_state_dict_round_trips_strictly(
    form: str, model: NanoDetPlus, ema: NanoDetPlus, tmp_path: Path
) -> None:
    state = model.state_dict()
    saved: dict[str, Any]
    if form == "bare":
        saved = state
    elif form == "pth":  # NanoDet's .pth: EMA weights plus the AGM, and the Integral buffer
        saved = {"state_dict": {**state, "aux_head.gfl_cls.weight": torch.zeros(80, 192, 3, 3),
                                "head.distribution_project.project": torch.linspace(0, 7, 8)}}  # fmt: skip
    else:  # Lightning: the EMA copy (avg_model.) is preferred over the trained one (model.)
        trained = {f"model.{k}": v for k, v in ema.state_dict().items()}
        saved = {"state_dict": {**trained, **{f"avg_model.{k}": v for k, v in state.items()}}, "epoch": 299}
    path = tmp_path / f"weights.{form}"
    torch.save(saved, path)
    loaded = NanoDetPlus(M).eval()
    assert (
        load_weights(loaded, path) == {"bare": "state_dict", "pth": "state_dict", "ckpt": "avg_model"}[form]
    )
    assert _same_weights(loaded, model)
    x = torch.randn(1, 3, 320, 320)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


class TrainingConfig(dict):  # type: ignore[type-arg]
    """Stands for NanoDet's config object that a Lightning checkpoint pickles."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name)
        self.name = name


def test_lightning_checkpoint_with_pickled_objects_loads_without_running_them(
    model: NanoDetPlus, tmp_path: Path
) -> None:
    path = tmp_path / "nanodet.ckpt"
    state = {f"avg_model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"cfg": TrainingConfig("m")}}, path)
    loaded = NanoDetPlus(M)
    assert load_weights(loaded, path) == "avg_model"
    assert _same_weights(loaded, model)


def test_missing_and_extra_keys_are_named(model: NanoDetPlus) -> None:
    state = dict(model.state_dict())
    del state["head.gfl_cls.3.bias"]
    state["fpn.extra_lvl_in_conv.1.depthwise.weight"] = torch.zeros(96, 1, 5, 5)
    with pytest.raises(ModelError) as error:
        load_strict(NanoDetPlus(M), state, "best.ckpt")
    assert str(error.value) == (
        "best.ckpt: checkpoint does not fit NanoDetPlus (1 missing, 1 unexpected keys): "
        "missing head.gfl_cls.3.bias; unexpected fpn.extra_lvl_in_conv.1.depthwise.weight. "
        "Check --arch and the number of labels"
    )


def test_checkpoint_of_another_width_names_the_shapes(model: NanoDetPlus) -> None:
    with pytest.raises(ModelError) as error:
        load_strict(NanoDetPlus(ARCHS["nanodet-plus-m-1.5x"]), model.state_dict(), "m.pth")
    message = str(error.value)
    assert message.startswith(
        "m.pth: 524 tensors have the wrong shape (checkpoint vs model): "
        "backbone.stage2.0.branch1.2.weight (58, 24, 1, 1) vs (88, 24, 1, 1), "
    )
    assert message.endswith(" and 516 more. Check --arch and the number of labels")


def test_project_buffer_of_another_reg_max_is_refused(model: NanoDetPlus) -> None:
    state = {**model.state_dict(), "head.project": torch.linspace(0, 16, 17)}
    with pytest.raises(ModelError, match=r"head\.project is not 0\.\.7: the checkpoint has another reg_max"):
        load_strict(NanoDetPlus(M), state, "x.pth")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated zip"])
def test_corrupt_checkpoint_gives_a_clear_error(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "broken.ckpt"
    path.write_bytes(content)
    with pytest.raises(
        ModelError, match=r"broken\.ckpt: cannot read the checkpoint .*damaged or not a PyTorch"
    ):
        read_state_dict(path)


def test_truncated_real_checkpoint_gives_a_clear_error(model: NanoDetPlus, tmp_path: Path) -> None:
    path = tmp_path / "cut.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelError, match=r"cut\.pth: cannot read the checkpoint"):
        read_state_dict(path)


def test_checkpoint_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(ModelError, match=r"list\.pth: not a NanoDet checkpoint"):
        read_state_dict(path)


def test_missing_checkpoint_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"nope\.ckpt does not exist"):
        read_state_dict(tmp_path / "nope.ckpt")


# ---------------------------------------------------------------- CLI
@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--random-init", "--int8"], 2, "--int8 needs calibration images: pass --calib IMAGES_DIR"),
        (["--checkpoint", "missing.pth"], 1, "checkpoint missing.pth does not exist: check --checkpoint"),
    ],
)
def test_cli_errors_are_one_line(
    extra: list[str], code: int, message: str, tmp_path: Path, shared_models: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    args = ["export", "--arch", "nanodet-plus-m", "--size", "320", "--out", "out",
            "--verify-images", str(shared_models / "samples"), *extra]  # fmt: skip
    assert main(args) == code
    assert capsys.readouterr().err == f"edgepipe: error: {message}\n"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cli_verify_images_must_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["export", "--random-init", "--arch", "nanodet-plus-m", "--size", "320", "--out", str(tmp_path),
            "--verify-images", str(tmp_path / "none")]  # fmt: skip
    assert main(args) == 2
    assert "--verify-images" in capsys.readouterr().err


def test_empty_labels_are_refused(tmp_path: Path, shared_models: Path) -> None:
    with pytest.raises(ConfigError, match="no labels"):
        export(_request(tmp_path, shared_models / "samples", labels=()))
