"""The paper's FCN (§2.3, Fig. 2): VGG16 stages 1-4, a 3x3 side layer of K maps after each stage,
all upsampled to the input size, concatenated, and a 1x1 convolution to 2 classes.

``features`` is laid out exactly as torchvision's ``vgg16().features[:23]`` (conv1_1 ... conv4_3 and
their ReLUs, max-pools at 4, 9 and 16), so an ImageNet state dict (``features.N.weight/bias``) loads
into it unchanged. Nothing here touches the network: ImageNet weights are read from a file.
Inference (no autograd) computes the same function with the side layers folded into the fusion
(:meth:`VGGFCN.forward`).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .. import __version__
from ..errors import ConfigError, InputError

log = logging.getLogger(__name__)

# (in, out) channels of VGG16's convolutions in stages 1-4; "M" is a 2x2 max-pool.
_VGG16_STAGES_1_TO_4 = [
    (3, 64),
    (64, 64),
    "M",
    (64, 128),
    (128, 128),
    "M",
    (128, 256),
    (256, 256),
    (256, 256),
    "M",
    (256, 512),
    (512, 512),
    (512, 512),
]
#: indices in ``features`` after which a stage ends (the ReLU of conv1_2, conv2_2, conv3_3, conv4_3)
STAGE_ENDS = (3, 8, 15, 22)
STAGE_CHANNELS = (64, 128, 256, 512)
TORCHVISION_VGG16_FILE = "vgg16-397923af.pth"
TORCHVISION_VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"


class VGGFCN(nn.Module):
    def __init__(self, side_maps: int = 16, n_classes: int = 2):
        super().__init__()
        layers = []
        for item in _VGG16_STAGES_1_TO_4:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(item[0], item[1], 3, padding=1), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.side = nn.ModuleList(nn.Conv2d(c, side_maps, 3, padding=1) for c in STAGE_CHANNELS)
        self.fuse = nn.Conv2d(4 * side_maps, n_classes, 1)
        self.side_maps = side_maps
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, 2, H, W) of a centred colour batch (N, 3, H, W) of any H, W.

        Without autograd (inference) the side layers are folded into the 1x1 fusion: no nonlinearity
        separates a side layer, its bilinear upsampling and the fusion, so each stage's contribution
        to the logits is one 3x3 convolution to 2 maps (fusion weights x side weights), upsampled and
        summed. Same function, less work: no 16-map side layers, upsamplings or concatenation at full
        resolution. With autograd the network runs as the paper draws it.
        """
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % 8, (-width) % 8  # three 2x poolings need sizes divisible by 8
        if pad_h or pad_w:
            # replicate the last row/column (air at a slice's border) rather than adding a band of
            # zeros, which in centred units is a mid-grey stripe the network never saw in training
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        size = (height + pad_h, width + pad_w)
        folded = None if torch.is_grad_enabled() else self._folded_sides()
        outputs = []
        side_index = 0
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == STAGE_ENDS[side_index]:
                if folded is None:
                    out = self.side[side_index](x)
                else:
                    # 2 maps: upsample and sum them in fp32 (under bf16 autocast too), it costs nothing
                    out = F.conv2d(x, *folded[side_index], padding=1).float()
                if out.shape[-2:] != size:
                    out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
                outputs.append(out)
                side_index += 1
        if folded is None:
            logits = self.fuse(torch.cat(outputs, 1))
        else:
            logits = outputs[0]
            for out in outputs[1:]:
                logits = logits + out
        return logits[..., :height, :width]

    def _folded_sides(self):
        """Per stage, (weight, bias) of fusion o side layer: a 3x3 convolution to the 2 classes."""
        maps = self.side_maps
        fuse = self.fuse.weight[:, :, 0, 0]
        folded = []
        # in fp32 even under autocast: the products are then rounded once, by the convolution
        device_type = self.fuse.weight.device.type
        with torch.autocast(device_type, enabled=False) if device_type in ("cpu", "cuda") else nullcontext():
            for k, side in enumerate(self.side):
                part = fuse[:, k * maps : (k + 1) * maps]
                weight = torch.einsum("ok,kchw->ochw", part, side.weight)
                bias = part @ side.bias
                if k == 0:
                    bias = bias + self.fuse.bias
                folded.append((weight, bias))
        return folded


class FCNEnsemble(nn.Module):
    """Several FCNs trained alike from other seeds (``train.overrides.members``), as one network.

    Its output is the log of the members' mean WMH probability, so everything that takes a softmax of
    a network's output (inference, calibration, validation Dice) gets the ensemble's mean probability,
    the averaging ``model.checkpoint: [a.pt, b.pt]`` does for separate files.
    """

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.side_maps = self.members[0].side_maps

    @property
    def n_members(self) -> int:
        return len(self.members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.stack([torch.softmax(m(x).float(), 1) for m in self.members]).mean(0)
        return torch.log(mean.clamp_min(torch.finfo(torch.float32).tiny))


def load_vgg16_features(model: VGGFCN, state_dict: dict) -> int:
    """Copy the ImageNet VGG16 convolutions (torchvision names) into ``model``; returns tensors loaded."""
    own = model.state_dict()
    wanted = {k: v for k, v in state_dict.items() if k.startswith("features.") and k in own}
    if len(wanted) != 20:  # 10 convolutions x (weight, bias)
        raise ConfigError(
            "model.pretrained",
            f"not a torchvision VGG16 state dict: found {len(wanted)} of the 20 tensors of conv1_1..conv4_3",
        )
    for key, value in wanted.items():
        if own[key].shape != value.shape:
            raise ConfigError(
                "model.pretrained", f"{key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}"
            )
    model.load_state_dict(wanted, strict=False)
    return len(wanted)


def torchvision_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_VGG16_FILE


def build_model(side_maps: int = 16, pretrained: str = "none", allow_download: bool = False) -> VGGFCN:
    """A new FCN: He-initialised, or with ImageNet VGG16 convolutions from a torchvision state dict.

    ``pretrained``: "none"; "torchvision" (the file torchvision itself would use, in the torch hub
    cache; downloaded only with ``allow_download``); or the path of such a state dict.
    """
    model = VGGFCN(side_maps)
    if pretrained in (None, "", "none"):
        return model
    if pretrained == "torchvision":
        path = torchvision_weights_path()
        if not path.is_file():
            if not allow_download:
                raise ConfigError(
                    "model.pretrained",
                    f"ImageNet VGG16 weights not found at {path}: download "
                    f"{TORCHVISION_VGG16_URL} there (or set TORCH_HOME), or set "
                    f"model.pretrained to the file's path, or to 'none'",
                )
            torch.hub.load_state_dict_from_url(TORCHVISION_VGG16_URL, progress=False)
    else:
        path = Path(pretrained)
        if not path.is_file():
            raise ConfigError("model.pretrained", f"{path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad file
        raise InputError(path, f"not a readable torch state dict ({exc})") from None
    if not isinstance(state, dict):
        raise InputError(path, f"not a torchvision VGG16 state dict (a {type(state).__name__})")
    try:
        count = load_vgg16_features(model, state)
    except ConfigError as exc:
        raise InputError(path, str(exc).split(": ", 1)[-1]) from None
    log.info("loaded %d ImageNet VGG16 tensors from %s", count, path)
    return model


def save_model(path, model: VGGFCN | FCNEnsemble, meta: dict) -> Path:
    """Write the weights and what is needed to use them (channels, side maps, members, config) atomically."""
    from ..io import atomic_output

    members = getattr(model, "n_members", 1)
    meta = dict(meta, side_maps=model.side_maps, wmhflow_version=__version__)
    if members > 1:  # load_model builds an FCNEnsemble of that many networks
        meta["members"] = members
    with atomic_output(path) as tmp:
        torch.save({"state_dict": model.state_dict(), "meta": meta}, tmp)
    return Path(path)


def load_model(path, map_location="cpu"):
    """(model in eval mode, meta) from a file written by :func:`save_model`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "model file does not exist")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
        meta = blob["meta"]
        side_maps, members = int(meta.get("side_maps", 16)), int(meta.get("members", 1))
        model = VGGFCN(side_maps) if members == 1 else FCNEnsemble([VGGFCN(side_maps) for _ in range(members)])
        model.load_state_dict(blob["state_dict"])
    except Exception as exc:  # a truncated or foreign file can fail in many ways
        raise InputError(path, f"not a wmhflow model file ({type(exc).__name__}: {exc})") from None
    model.eval()
    return model, meta
