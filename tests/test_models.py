"""The paper's models: shapes, sizes against the papers, init, normalisation inside, errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from augmix.models import (
    MODELS,
    CifarResNeXt,
    DenseNetBC,
    Normalize,
    TorchvisionResNet,
    WideResNet,
    build_model,
    count_parameters,
)
from augmix.models.densenet import DenseBottleneckLayer


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def cifar_options(name: str) -> dict:
    return {"cifar_stem": True} if name.startswith("resnet") else {}


_built: dict[str, nn.Module] = {}


def built(name: str) -> nn.Module:
    """One seeded 10-class instance per name for the whole module (construction is the slow part)."""
    if name not in _built:
        torch.manual_seed(0)
        _built[name] = build_model(name, 10, **cifar_options(name))
    return _built[name]


def images(batch: int = 2, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_on_cifar_sized_batch(name):
    model = built(name).eval()
    with torch.no_grad():
        logits = model(images())
    assert logits.shape == (2, 10)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnets_with_imagenet_stem_take_larger_images(name):
    torch.manual_seed(0)
    model = build_model(name, 7).eval()
    with torch.no_grad():
        assert model(images(size=64)).shape == (2, 7)
    assert model.conv1.kernel_size == (7, 7) and isinstance(model.maxpool, nn.MaxPool2d)
    cifar = built(name)
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, nn.Identity)


@pytest.mark.parametrize("name", ["wrn16_2", "allconv", "densenet_bc_100", "resnext29_32x4d"])
def test_cifar_models_take_48_pixel_images(name):
    with torch.no_grad():
        assert built(name).eval()(images(size=48)).shape == (2, 10)


@pytest.mark.parametrize(
    ("name", "millions"),
    [("wrn40_2", 2.2), ("densenet_bc_100", 0.8), ("resnext29_32x4d", 6.8), ("allconv", 1.4)],
)
def test_parameter_counts_match_the_papers(name, millions):
    count = count_parameters(built(name))
    assert abs(count / 1e6 - millions) / millions < 0.05, f"{name}: {count} parameters"


def test_resnets_have_torchvision_parameter_counts():
    # torchvision documents 11,689,512 and 25,557,032 parameters for the 1000-class models.
    assert count_parameters(build_model("resnet18", 1000)) == 11_689_512
    assert count_parameters(build_model("resnet50", 1000)) == 25_557_032


def test_architectures_are_the_named_ones():
    wrn = built("wrn40_2")
    assert sum(1 for m in wrn.modules() if type(m).__name__ == "WideBasicBlock") == 18
    assert wrn.fc.in_features == 128

    densenet = built("densenet_bc_100")
    assert isinstance(densenet, DenseNetBC)
    assert sum(1 for m in densenet.modules() if isinstance(m, DenseBottleneckLayer)) == 48
    assert densenet.stem.out_channels == 24 and densenet.fc.in_features == 342  # BC-100, k=12

    resnext = built("resnext29_32x4d")
    assert isinstance(resnext, CifarResNeXt)
    grouped = [m for m in resnext.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(grouped) == 9 and {m.in_channels for m in grouped} == {128, 256, 512}
    assert {m.groups for m in grouped} == {4}  # the reference's resnext29(): cardinality 4, base width 32
    strict_convention = CifarResNeXt(29, cardinality=32, base_width=4)
    assert count_parameters(strict_convention) == pytest.approx(4.8e6, rel=0.01)
    assert resnext.fc.in_features == 1024

    allconv = built("allconv")
    assert [m.out_channels for m in allconv.modules() if isinstance(m, nn.Conv2d)] == [96] * 3 + [192] * 6


def test_generic_names_parse_depth_and_width():
    small = build_model("wrn16_1", 5)
    assert isinstance(small, WideResNet) and small.fc.in_features == 64 and small.fc.out_features == 5
    assert build_model("WRN10_1", 3).fc.out_features == 3
    assert build_model("densenet_bc_40", 10, growth_rate=8).stem.out_channels == 16
    assert isinstance(build_model("resnet34", 10), TorchvisionResNet)


def test_he_normal_convs_unit_batchnorm_and_zero_biases():
    model = built("wrn40_2")
    conv = model.stage3[0].conv2
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.03)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any()
    assert not model.fc.bias.any()
    resnext_fc = built("resnext29_32x4d").fc  # He-normal classifier, as the reference ResNeXt
    assert resnext_fc.weight.std().item() == pytest.approx(math.sqrt(2.0 / 1024), rel=0.05)


def test_normalisation_is_inside_the_model_and_saved():
    normalize = Normalize((0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    out = normalize(torch.ones(1, 3, 2, 2))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([1.0, 3.0, 0.5]))

    torch.manual_seed(0)
    default = WideResNet(10, 1).eval()
    plain = WideResNet(10, 1, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)).eval()
    weights = {k: v for k, v in default.state_dict().items() if not k.startswith("normalize.")}
    plain.load_state_dict(weights, strict=False)
    x = images()
    with torch.no_grad():
        assert torch.allclose(default(x), plain((x - 0.5) / 0.5), atol=1e-5)
        assert not torch.allclose(default(x), plain(x), atol=1e-3)
    assert {"normalize.mean", "normalize.std"} <= set(default.state_dict())
    assert torch.allclose(built("resnet18").normalize.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))


def test_models_refuse_uint8_and_one_channel_input_and_normalize_zero_std():
    model = built("wrn10_1").eval()
    with pytest.raises(ValueError, match="uint8"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(1, 1, 32, 32\)"):
        model(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="std"):
        Normalize((0.5, 0.5, 0.5), (0.5, 0.0, 0.5))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: build_model("vgg16", 10), r"'vgg16'.*wrn40_2"),
        (lambda: build_model("resnet19", 10), r"'resnet19'.*resnet18"),
        (lambda: build_model("wrn41_2", 10), r"depth 41"),
        (lambda: build_model("densenet_bc_99", 10), r"depth 99"),
        (lambda: build_model("wrn40_0", 10), r"widen_factor 0"),
        (lambda: build_model("wrn40_2", 0), r"num_classes 0"),
        (lambda: build_model("wrn40_2", 2.5), r"num_classes 2.5"),
        (lambda: build_model("wrn40_2", 10, dropout=1.5), r"dropout 1.5"),
        (lambda: build_model("wrn40_2", 10, drop_rate=0.3), r"drop_rate.*allowed: dropout, mean, std"),
        (lambda: build_model("wrn40_2", 10, depth=28), r"depth.*not allowed"),
        (lambda: build_model("resnet18", 10, dropout=0.1), r"dropout.*cifar_stem"),
    ],
)
def test_build_model_rejects_bad_input_with_one_line(call, message):
    with pytest.raises(ValueError, match=message) as error:
        call()
    assert "\n" not in str(error.value)


def test_models_tuple_has_unique_names_including_the_papers():
    assert len(set(MODELS)) == len(MODELS)
    assert {"wrn40_2", "allconv", "densenet_bc_100", "resnext29_32x4d", "resnet18", "resnet50"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_backward_gives_finite_gradients_to_every_parameter(name):
    model = built(name).train()
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(images()), torch.tensor([1, 7]))
    loss.backward()
    assert torch.isfinite(loss)
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name
    model.zero_grad(set_to_none=True)


def test_batchnorm_makes_train_and_eval_differ_and_eval_is_repeatable():
    torch.manual_seed(0)
    model = build_model("wrn10_1", 10)
    x = images(batch=4)
    running_before = model.bn.running_mean.clone()
    with torch.no_grad():
        train_out = model.train()(x)
        assert not torch.equal(model.bn.running_mean, running_before)
        model.eval()
        eval_out = model(x)
        assert not torch.allclose(train_out, eval_out, atol=1e-4)
        assert torch.equal(eval_out, model(x))


def test_dropout_is_active_only_in_training():
    torch.manual_seed(0)
    model = build_model("wrn10_1", 10, dropout=0.5)
    x = images(batch=4)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name", ["wrn16_2", "allconv", "resnext29_32x4d"])
def test_same_seed_builds_the_same_model(name):
    torch.manual_seed(123)
    first = build_model(name, 10)
    torch.manual_seed(123)
    second = build_model(name, 10)
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), key
    torch.manual_seed(124)
    third = build_model(name, 10)
    assert not torch.equal(next(iter(first.parameters())), next(iter(third.parameters())))
    with torch.no_grad():
        assert torch.equal(first.eval()(images()), second.eval()(images()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("name", ["wrn16_2", "densenet_bc_100", "resnet18"])
def test_models_run_on_cuda_and_agree_with_cpu(name):
    model = built(name).eval()
    x = images()
    with torch.no_grad():
        expected = model(x)
        cuda_model = model.to("cuda")
        try:
            previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
            got = cuda_model(x.cuda())
            buffer_device = cuda_model.normalize.mean.device.type  # before .to("cpu") moves it back
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous
            model.to("cpu")
    assert got.device.type == "cuda"
    assert buffer_device == "cuda"
    assert torch.allclose(got.cpu(), expected, atol=1e-3, rtol=1e-3)
