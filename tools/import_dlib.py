"""Import dlib's CC0 face recognition ResNet into faceverify: safetensors weights plus a model card.

    python tools/import_dlib.py [--dat PATH] [--out models/]

The .dat file is read directly, following dlib's own serialisation code (dlib/serialize.h,
dlib/float_details.h, dlib/dnn/{core,tensor,layers,input,loss}.h); dlib is neither called nor compiled.
dlib writes a network outermost wrapper first and recurses into the subnetwork before writing each layer's
details, so the file holds the wrapper headers top-down, then the input layer, then the layer details
bottom-up (forward order). Nothing in the file names the wrapper types, so the reader walks the layer list of
the network type the file was written from (``ANET_TYPE``) and checks every layer's own tag against it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import math
import shlex
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from safetensors.torch import save
from torch import nn

from faceverify.errors import ModelError
from faceverify.modelcard import ModelCard
from faceverify.networks import build
from faceverify.networks.dlib_resnet import ChannelAffine, DlibResNet
from tools.common import REPO_ROOT

SOURCE_PACKAGE = "face-recognition-models"
SOURCE_FILE = "dlib_face_recognition_resnet_model_v1.dat"
MODEL_NAME = "dlib-resnet-v1"
ARCHITECTURE = "dlib_resnet_v1"
CHIP_SIZE = 150
CHIP_PADDING = 0.25
PIXEL_SCALE = 256.0  # dlib's input_rgb_image_sized::to_tensor computes (pixel - avg) / 256.0

# dlib's get_face_chip_details (dlib/image_transforms/interpolation.h): the 5-point mean shape, in a unit
# square, that the 5-point landmarks are mapped onto (parts 0,1: corners of the eye on the image right;
# parts 2,3: corners of the eye on the image left; part 4: the base of the nose) ...
MEAN_SHAPE_5 = [
    (0.8595674595992, 0.2134981538014),
    (0.6460604764104, 0.2289674387677),
    (0.1205750620789, 0.2137274526848),
    (0.3340850613712, 0.2290642403242),
    (0.4901123135679, 0.6277975316475),
]
# ... and, from the same function, the 68-point mean shape (points 17..67, same unit square), which gives the
# points the 5-point shape lacks: the nose tip (point 30) and the mouth corners (points 48 and 54).
MEAN_SHAPE_68_NOSE_TIP = (0.490127, 0.515625)
MEAN_SHAPE_68_MOUTH_LEFT = (0.254149, 0.780233)
MEAN_SHAPE_68_MOUTH_RIGHT = (0.726104, 0.780233)


class DlibFormatError(ModelError):
    """The .dat file is not the dlib network this importer expects (truncated, other layers, other shapes)."""


# ---------------------------------------------------------------------------------------------------------
# dlib's primitive serialisation


class DlibReader:
    """A streaming reader of dlib's serialised primitives; every short read or bad value raises DlibFormatError."""

    def __init__(self, stream: BinaryIO, name: str = "stream"):
        self._stream = stream
        self.name = name
        self.offset = 0

    def fail(self, reason: str) -> DlibFormatError:
        return DlibFormatError(f"{self.name}: {reason} (at byte {self.offset})")

    def take(self, n: int, what: str) -> bytes:
        data = self._stream.read(n)
        if len(data) != n:
            raise self.fail(f"file ends inside {what}: needed {n} bytes, found {len(data)}")
        self.offset += n
        return data

    def at_end(self) -> bool:
        return self._stream.read(1) == b""

    def integer(self, what: str, signed: bool = True, max_bytes: int = 8) -> int:
        """dlib's integer format: a control byte (0x80: negative, low 4 bits: byte count), then |value| LE."""
        return self._integer_after(self.take(1, what)[0], what, signed, max_bytes)

    def _integer_after(self, control: int, what: str, signed: bool, max_bytes: int) -> int:
        if signed:
            negative, size = bool(control & 0x80), control & 0x0F
        else:
            negative, size = False, control & 0x8F  # dlib keeps the sign bit so that it fails the size check
        if size > max_bytes:
            raise self.fail(f"{what}: integer of {size} bytes does not fit in {max_bytes}")
        value = int.from_bytes(self.take(size, what), "little") if size else 0
        return -value if negative else value

    def unsigned(self, what: str, max_bytes: int = 8) -> int:
        return self.integer(what, signed=False, max_bytes=max_bytes)

    def int32(self, what: str) -> int:
        return self.integer(what, max_bytes=4)

    def boolean(self, what: str) -> bool:
        ch = self.take(1, what)
        if ch not in (b"0", b"1"):
            raise self.fail(f"{what}: expected a bool ('0' or '1'), found {ch!r}")
        return ch == b"1"

    def string(self, what: str) -> str:
        size = self.unsigned(what)
        if size > 1024:
            raise self.fail(f"{what}: implausible string length {size}")
        raw = self.take(size, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"{what}: string is not ASCII: {raw[:40]!r}") from None

    def tag(self, expected: tuple[str, ...], what: str) -> str:
        """A layer's version string, which must be one of ``expected``."""
        found = self.string(what)
        if found not in expected:
            raise self.fail(f"{what}: expected {' or '.join(expected)}, found {found!r}")
        return found

    def real(self, what: str) -> float:
        """A float or double: dlib's float_details, an int64 mantissa then an int16 exponent."""
        control = self.take(1, what)[0]
        if control & 0x70:  # never set in an integer control byte; dlib's older ASCII floats set it
            raise self.fail(f"{what}: old ASCII float format is not supported")
        mantissa = self._integer_after(control, what, signed=True, max_bytes=8)
        exponent = self.integer(what, max_bytes=2)
        special = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
        if exponent in special:
            return special[exponent]
        return math.ldexp(mantissa, exponent)

    def version(self, accepted: tuple[int, ...], what: str) -> int:
        found = self.int32(what)
        if found not in accepted:
            raise self.fail(f"{what}: unsupported version {found} (supported: {accepted})")
        return found

    def tensor(self, what: str) -> np.ndarray:
        """A resizable_tensor (version 2): n, k, nr, nc, then raw little-endian float32 values."""
        self.version((2,), f"{what} (tensor)")
        shape = tuple(self.integer(f"{what} shape") for _ in range(4))
        if any(d < 0 for d in shape):
            raise self.fail(f"{what}: negative tensor dimension {shape}")
        count = int(np.prod(shape, dtype=np.int64))
        if count > 64_000_000:
            raise self.fail(f"{what}: implausible tensor size {shape}")
        data = np.frombuffer(self.take(4 * count, what), dtype="<f4")
        return data.astype(np.float32).reshape(shape)

    def alias_tensor(self, what: str) -> tuple[int, int, int, int]:
        """An alias_tensor: just the shape of a view into a layer's params tensor."""
        self.version((1,), f"{what} (alias_tensor)")
        shape = tuple(self.integer(f"{what} shape") for _ in range(4))
        if any(d < 0 for d in shape):
            raise self.fail(f"{what}: negative alias dimension {shape}")
        return shape  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------
# the network type: dlib's anet_type from examples/dnn_face_recognition_ex.cpp, in forward order


@dataclass(frozen=True)
class Spec:
    """One entry of the network type: a layer wrapped by add_layer, or a ``tag``/``skip`` wrapper.

    ``args``: con (filters, size, stride), max_pool/avg_pool (size, stride; size 0 = everything),
    fc (outputs,), tag/skip/add_prev (tag id); none for affine and relu.
    """

    kind: str
    args: tuple[int, ...] = ()

    @property
    def is_wrapper_only(self) -> bool:
        return self.kind in ("tag", "skip")


def _block(filters: int, stride: int) -> list[Spec]:
    # block = BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>> with BN = affine
    return [
        Spec("con", (filters, 3, stride)),
        Spec("affine"),
        Spec("relu"),
        Spec("con", (filters, 3, 1)),
        Spec("affine"),
    ]


def _ares(filters: int) -> list[Spec]:
    # relu<add_prev1<block<N,affine,1,tag1<SUBNET>>>>
    return [Spec("tag", (1,)), *_block(filters, 1), Spec("add_prev", (1,)), Spec("relu")]


def _ares_down(filters: int) -> list[Spec]:
    # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<SUBNET>>>>>>>
    return [
        Spec("tag", (1,)),
        *_block(filters, 2),
        Spec("tag", (2,)),
        Spec("skip", (1,)),
        Spec("avg_pool", (2, 2)),
        Spec("add_prev", (2,)),
        Spec("relu"),
    ]


ANET_TYPE: list[Spec] = [
    Spec("con", (32, 7, 2)),
    Spec("affine"),
    Spec("relu"),
    Spec("max_pool", (3, 2)),
    *(_ares(32) * 3),  # alevel4
    *_ares_down(64), *(_ares(64) * 3),  # alevel3
    *_ares_down(128), *(_ares(128) * 2),  # alevel2
    *_ares_down(256), *(_ares(256) * 2),  # alevel1
    *_ares_down(256),  # alevel0
    Spec("avg_pool", (0, 1)),  # avg_pool_everything = avg_pool_<0,0,1,1>
    Spec("fc", (128,)),
]


# ---------------------------------------------------------------------------------------------------------
# reading the network


@dataclass
class DlibLayer:
    """The parsed details of one computational layer."""

    spec: Spec
    version: str
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    cached_values: int = 0  # floats in the wrapper's saved x_grad/cached_output/params_grad tensors


@dataclass
class DlibNet:
    """Everything the importer uses from the file."""

    input_version: str
    mean_rgb: tuple[float, float, float]
    input_size: tuple[int, int]
    loss_version: str
    loss_params: dict[str, float]
    layers: list[DlibLayer]
    wrapper_versions: Counter = field(default_factory=Counter)
    size: int = 0


def _pad_for(size: int, stride: int) -> int:
    """dlib's default padding for con_, max_pool_ and avg_pool_."""
    return 0 if stride != 1 else size // 2


def _read_con(r: DlibReader, spec: Spec) -> DlibLayer:
    filters, size, stride = spec.args
    version = r.tag(("con_4", "con_5"), "con_ layer")
    params = r.tensor("con_ params")
    got = {
        "num_filters": r.integer("con_ num_filters"),
        "nr": r.integer("con_ nr"),
        "nc": r.integer("con_ nc"),
        "stride_y": r.int32("con_ stride_y"),
        "stride_x": r.int32("con_ stride_x"),
        "padding_y": r.int32("con_ padding_y"),
        "padding_x": r.int32("con_ padding_x"),
    }
    want = dict(num_filters=filters, nr=size, nc=size, stride_y=stride, stride_x=stride,
                padding_y=_pad_for(size, stride), padding_x=_pad_for(size, stride))
    if got != want:
        raise r.fail(f"con_ layer is {got}, the network type needs {want}")
    filt_shape = r.alias_tensor("con_ filters")
    bias_shape = r.alias_tensor("con_ biases")
    for what in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_learning_rate_multiplier",
                 "bias_weight_decay_multiplier"):
        r.real(f"con_ {what}")
    use_bias = r.boolean("con_ use_bias") if version == "con_5" else True
    if not use_bias or bias_shape != (1, filters, 1, 1):
        raise r.fail(f"con_ layer without the expected bias (use_bias={use_bias}, biases {bias_shape})")
    n_filt = int(np.prod(filt_shape))
    if filt_shape[0] != filters or filt_shape[2:] != (size, size) or params.size != n_filt + filters:
        raise r.fail(f"con_ params of {params.size} values do not hold filters {filt_shape} + {filters} biases")
    flat = params.reshape(-1)
    # params = filters (num_filters, k, nr, nc) row-major, then the biases (con_::setup, alias offsets).
    tensors = {"filters": flat[:n_filt].reshape(filt_shape), "biases": flat[n_filt:].copy()}
    return DlibLayer(spec, version, tensors)


def _read_affine(r: DlibReader, spec: Spec) -> DlibLayer:
    version = r.tag(("affine_", "affine_2"), "affine_ layer")
    params = r.tensor("affine_ params").reshape(-1)
    gamma = r.alias_tensor("affine_ gamma")
    beta = r.alias_tensor("affine_ beta")
    mode = r.int32("affine_ mode")
    if version == "affine_2" and r.boolean("affine_ is_disabled"):
        raise r.fail("affine_ layer is disabled (fused into its convolution); not supported")
    if mode != 0:  # CONV_MODE: one scale and shift per channel
        raise r.fail(f"affine_ layer in mode {mode}, expected CONV_MODE (0)")
    n = int(np.prod(gamma))
    if gamma != beta or gamma != (1, gamma[1], 1, 1) or params.size != 2 * n:
        raise r.fail(f"affine_ params of {params.size} values do not hold gamma {gamma} + beta {beta}")
    return DlibLayer(spec, version, {"gamma": params[:n].copy(), "beta": params[n:].copy()})


def _read_pool(r: DlibReader, spec: Spec) -> DlibLayer:
    size, stride = spec.args
    name = f"{spec.kind}_"
    version = r.tag((f"{spec.kind}_2",), f"{name} layer")
    got = (r.integer(f"{name} nr"), r.integer(f"{name} nc"), r.int32(f"{name} stride_y"),
           r.int32(f"{name} stride_x"), r.int32(f"{name} padding_y"), r.int32(f"{name} padding_x"))
    want = (size, size, stride, stride, _pad_for(size, stride), _pad_for(size, stride))
    if got != want:
        raise r.fail(f"{name} layer has (nr, nc, strides, paddings) {got}, the network type needs {want}")
    return DlibLayer(spec, version)


def _read_fc(r: DlibReader, spec: Spec) -> DlibLayer:
    (outputs,) = spec.args
    version = r.tag(("fc_2", "fc_3"), "fc_ layer")
    num_outputs = r.unsigned("fc_ num_outputs")
    num_inputs = r.unsigned("fc_ num_inputs")
    params = r.tensor("fc_ params")
    weights = r.alias_tensor("fc_ weights")
    r.alias_tensor("fc_ biases")
    bias_mode = r.int32("fc_ bias_mode")
    for what in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_learning_rate_multiplier",
                 "bias_weight_decay_multiplier"):
        r.real(f"fc_ {what}")
    if version == "fc_3":
        r.boolean("fc_ use_bias")
    if bias_mode != 1:  # FC_NO_BIAS
        raise r.fail(f"fc_ layer has bias mode {bias_mode}, the network type needs fc_no_bias (1)")
    # fc_::setup: params and weights are (num_inputs, num_outputs); forward computes input x weights.
    shape_ok = weights == (num_inputs, num_outputs, 1, 1) and params.size == num_inputs * num_outputs
    if num_outputs != outputs or not shape_ok:
        raise r.fail(f"fc_ layer {num_inputs}->{num_outputs} with params {params.shape} is not {outputs} outputs")
    return DlibLayer(spec, version, {"weights": params.reshape(num_inputs, num_outputs)})


def _read_simple(r: DlibReader, spec: Spec) -> DlibLayer:
    name = f"{spec.kind}_"
    return DlibLayer(spec, r.tag((name,), f"{name} layer"))


_DETAIL_READERS = {
    "con": _read_con,
    "affine": _read_affine,
    "max_pool": _read_pool,
    "avg_pool": _read_pool,
    "fc": _read_fc,
    "relu": _read_simple,
    "add_prev": _read_simple,
}


def _skip_tensor(r: DlibReader, what: str) -> int:
    return int(r.tensor(what).size)


def read_dlib_net(stream: BinaryIO, name: str = "stream", net_type: list[Spec] = ANET_TYPE) -> DlibNet:
    """Parse a serialised ``loss_metric<...net_type...>`` network; the stream must end right after it."""
    if not net_type or net_type[0].is_wrapper_only:
        raise ValueError("the network type must start with a computational layer")
    r = DlibReader(stream, name)
    wrappers: Counter = Counter()

    wrappers[f"add_loss_layer v{r.version((1,), 'add_loss_layer')}"] += 1
    loss_version = r.tag(("loss_metric_", "loss_metric_2"), "loss layer")
    loss_params = {"margin": 0.1, "dist_thresh": 0.75}  # loss_metric_ (version 1) hard-coded these
    if loss_version == "loss_metric_2":
        loss_params = {"margin": r.real("loss margin"), "dist_thresh": r.real("loss dist_thresh")}

    # Wrapper headers, outermost (last in forward order) first, down to the add_layer over the input layer,
    # whose add_layer specialisation has its own versions and trailer.
    add_layer_versions: dict[int, int] = {}
    for index in range(len(net_type) - 1, -1, -1):
        spec = net_type[index]
        if spec.is_wrapper_only:
            wrapper = f"add_{spec.kind}_layer"
            found = r.version((1,), f"{wrapper} of layer {index}")
        else:
            wrapper = "add_layer(input)" if index == 0 else "add_layer"
            found = r.version((2, 3) if index == 0 else (1, 2), f"{wrapper} of layer {index}")
            add_layer_versions[index] = found
        wrappers[f"{wrapper} v{found}"] += 1

    input_version = r.tag(("input_rgb_image_sized",), "input layer")
    mean_rgb = (r.real("input avg_red"), r.real("input avg_green"), r.real("input avg_blue"))
    input_size = (r.unsigned("input nr"), r.unsigned("input nc"))

    # Layer details, each followed by its add_layer's state, in forward order.
    layers: list[DlibLayer] = []
    for index, spec in enumerate(net_type):
        if spec.is_wrapper_only:
            continue
        layer = _DETAIL_READERS[spec.kind](r, spec)
        what = f"layer {index} ({spec.kind}) state"
        for flag in ("setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
            r.boolean(f"{what} {flag}")
        layer.cached_values += _skip_tensor(r, f"{what} x_grad") + _skip_tensor(r, f"{what} cached_output")
        if index == 0:
            layer.cached_values += _skip_tensor(r, f"{what} grad_final")
            if add_layer_versions[index] >= 3:
                r.unsigned(f"{what} sample_expansion_factor", max_bytes=4)
        elif add_layer_versions[index] >= 2:
            layer.cached_values += _skip_tensor(r, f"{what} params_grad")
        layers.append(layer)

    if not r.at_end():
        raise r.fail("unexpected bytes after the network")
    return DlibNet(input_version, mean_rgb, input_size, loss_version, loss_params, layers, wrappers, r.offset)


# ---------------------------------------------------------------------------------------------------------
# mapping onto faceverify's module


def to_state_dict(net: DlibNet, model: DlibResNet) -> dict[str, torch.Tensor]:
    """Assign the file's con/affine/fc tensors, in forward order, to the module's layers; check every shape."""
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, ChannelAffine, nn.Linear))]
    sources = [layer for layer in net.layers if layer.tensors]
    if len(targets) != len(sources):
        raise DlibFormatError(f"the file has {len(sources)} layers with weights, the module {len(targets)}")
    state: dict[str, torch.Tensor] = {}
    for (name, module), layer in zip(targets, sources):
        t = layer.tensors
        if isinstance(module, nn.Conv2d) and layer.spec.kind == "con":
            _, size, stride = layer.spec.args
            geometry = (module.kernel_size, module.stride, module.padding)
            want = ((size, size), (stride, stride), (_pad_for(size, stride),) * 2)
            if geometry != want:
                raise DlibFormatError(f"{name}: (kernel, stride, padding) {geometry}, dlib's layer has {want}")
            # dlib's filters are (num_filters, k, nr, nc), torch's Conv2d weight (out, in, kh, kw).
            state[f"{name}.weight"] = torch.from_numpy(t["filters"])
            state[f"{name}.bias"] = torch.from_numpy(t["biases"])
        elif isinstance(module, ChannelAffine) and layer.spec.kind == "affine":
            state[f"{name}.weight"] = torch.from_numpy(t["gamma"])
            state[f"{name}.bias"] = torch.from_numpy(t["beta"])
        elif isinstance(module, nn.Linear) and layer.spec.kind == "fc":
            # dlib computes input (N x num_inputs) times weights (num_inputs x num_outputs); torch x @ W.T.
            state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(t["weights"].T))
        else:
            raise DlibFormatError(f"{name}: a {type(module).__name__} cannot take dlib's {layer.spec.kind} layer")
    expected = {k: v.shape for k, v in model.state_dict().items()}
    got = {k: v.shape for k, v in state.items()}
    if expected != got:
        wrong = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
        raise DlibFormatError(f"shape mismatch for {wrong[:5]}: module {[expected.get(k) for k in wrong[:5]]}, "
                              f"file {[got.get(k) for k in wrong[:5]]}")
    return state


def chip_template(size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> list[list[float]]:
    """Where dlib's get_face_chip(size, padding) puts the mean face: eye centres, nose tip, mouth corners.

    Order as in MTCNN: eye on the image left, eye on the image right, nose tip, mouth corner on the image left,
    mouth corner on the image right. Pixel coordinates with pixel centres at integers, as dlib's chips use.
    """
    (rx0, ry0), (rx1, ry1), (lx0, ly0), (lx1, ly1), _ = MEAN_SHAPE_5
    unit = [
        ((lx0 + lx1) / 2, (ly0 + ly1) / 2),
        ((rx0 + rx1) / 2, (ry0 + ry1) / 2),
        MEAN_SHAPE_68_NOSE_TIP,
        MEAN_SHAPE_68_MOUTH_LEFT,
        MEAN_SHAPE_68_MOUTH_RIGHT,
    ]
    return [[round((padding + c) / (2 * padding + 1) * size, 4) for c in p] for p in unit]


def default_dat_path() -> Path:
    """The .dat in the installed face-recognition-models package (located without importing it)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package '{SOURCE_PACKAGE}' is not installed; pass --dat")
    return Path(spec.submodule_search_locations[0]) / "models" / SOURCE_FILE


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _package_version() -> str:
    try:
        return importlib.metadata.version(SOURCE_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def import_dlib(dat: Path, out: Path, command: str) -> tuple[ModelCard, DlibNet]:
    """Read ``dat``, write ``<out>/dlib-resnet-v1.safetensors`` and its card; return the card and the file."""
    with dat.open("rb") as f:
        net = read_dlib_net(f, str(dat))
    if net.input_size != (CHIP_SIZE, CHIP_SIZE):
        raise DlibFormatError(f"{dat}: input layer is {net.input_size}, expected {CHIP_SIZE}x{CHIP_SIZE}")
    (embedding_size,) = net.layers[-1].spec.args
    model = build(ARCHITECTURE, embedding_size)
    if not isinstance(model, DlibResNet):
        raise ModelError(f"architecture '{ARCHITECTURE}' is not the dlib ResNet")
    state = to_state_dict(net, model)
    model.load_state_dict(state, strict=True)

    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{MODEL_NAME}.safetensors"
    # save() + write_bytes rather than save_file, which creates the file mode 0600 regardless of the umask.
    weights.write_bytes(save({k: v.contiguous() for k, v in state.items()}, metadata={"format": "pt"}))
    card = ModelCard(
        name=MODEL_NAME,
        architecture=ARCHITECTURE,
        input_size=CHIP_SIZE,
        template=chip_template(),
        mean=[float(v) for v in net.mean_rgb],
        std=[PIXEL_SCALE] * 3,
        embedding_size=embedding_size,
        weights=weights.name,
        weights_sha256=_sha256(weights),
        thresholds={},
        provenance={
            "source_package": SOURCE_PACKAGE,
            "source_package_version": _package_version(),
            "source_file": dat.name,
            "source_sha256": _sha256(dat),
            "licence": "CC0-1.0 (dlib face recognition model, Davis King)",
            "reported_lfw_accuracy": 0.9938,
            "reported_lfw_note": "by dlib's author, averaging 100 jittered crops per face; 99.13% without "
            "jittering (examples/dnn_face_recognition_ex.cpp)",
            "dlib_loss": {"type": net.loss_version, **net.loss_params},
            "importer": command,
        },
        notes=(
            "dlib's metric-learning ResNet, imported layer for layer from dlib's own serialisation. The output is "
            "the raw fc_no_bias vector; dlib's own decision rule is Euclidean distance < 0.6 between raw "
            "descriptors. mean/std are dlib's input layer: (pixel - avg_rgb) / 256. The template is a "
            "placeholder: dlib's get_face_chip geometry (size 150, padding 0.25) with eye centres from the "
            "5-point mean shape's eye corners and nose tip / mouth corners from the 68-point mean shape of the "
            "same function (dlib's 5-point shape has neither); it is refitted to MTCNN landmarks by "
            "tools/fit_dlib_template.py."
        ),
    )
    card.validate(str(out / f"{MODEL_NAME}.json"))
    card.save(out / f"{MODEL_NAME}.json")
    return card, net


def describe(net: DlibNet) -> str:
    """A short account of what the file holds."""
    kinds = Counter(f"{layer.version}" for layer in net.layers)
    cached = sum(layer.cached_values for layer in net.layers)
    return "\n".join(
        [
            f"{net.size} bytes; {net.loss_version} {net.loss_params}; {net.input_version} "
            f"{net.input_size[0]}x{net.input_size[1]} avg_rgb={net.mean_rgb}",
            "layer details: " + ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())),
            "wrappers: " + ", ".join(f"{k} x{n}" for k, n in sorted(net.wrapper_versions.items())),
            f"saved activations/gradients: {cached} values",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dat", type=Path, help=f"dlib's {SOURCE_FILE} (default: from {SOURCE_PACKAGE})")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "models", help="output folder (default: models/)")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    try:
        dat = args.dat or default_dat_path()
        card, net = import_dlib(dat, args.out, shlex.join(["python", "tools/import_dlib.py", *argv]))
    except (ModelError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(describe(net))
    print(f"wrote {args.out / card.weights} ({card.model_id}) and {args.out / (card.name + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
