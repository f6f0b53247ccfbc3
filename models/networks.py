"""The four networks: classifier teacher/student (2D) and motion teacher/student (1D).

Every network is built from a plain JSON-safe ``config`` dict that fixes every channel count,
and returns that dict (read back from its layers) from :meth:`config`. A network whose
channels were removed by structured pruning therefore rebuilds exactly from its model card:
``build(arch, config)`` followed by loading the pruned weights.

Shapes
------
Classifier: input (N, 1, n_time, n_depth) float32, a standardised window of the display
image (slow time on axis 2, depth on axis 3); output (N, n_classes) logits.
Motion: input (N, 4, n_samples) float32, the channels of :func:`mmode.models.data.motion_inputs`
of two IQ segments (an earlier line's, a later line's) around one depth; output (N, 1) the
axial displacement between the two lines (the per-pair nets: in wavelengths ``c / f0``; the
keyframe nets: the correction of :mod:`mmode.models.motion_data`), positive away from the
probe. With ``antisymmetric`` the output is odd under swapping the two lines
(:func:`reversed_pair`), as the displacement is: the keyframe nets are built so.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmode.errors import ModelError, describe


# -- building blocks -----------------------------------------------------------------------
class SqueezeExcite(nn.Module):
    """Channel attention: global average pool -> 1x1 reduce -> ReLU -> 1x1 expand -> sigmoid."""

    def __init__(self, channels: int, hidden: int, dims: int = 2) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        self.dims = dims
        self.reduce = conv(channels, hidden, 1)
        self.expand = conv(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axes = (2, 3) if self.dims == 2 else (2,)
        s = x.mean(dim=axes, keepdim=True)
        s = torch.sigmoid(self.expand(torch.relu(self.reduce(s))))
        return x * s


class InvertedResidual(nn.Module):
    """MobileNetV2-style block with squeeze-excitation (depthwise-separable convolutions).

    ``se_hidden`` 0 leaves the squeeze-excitation out.

    1x1 expand (c_in -> c_hidden) -> depthwise k x k (stride) -> SE -> 1x1 project
    (c_hidden -> c_out); identity shortcut when stride is 1 and c_in == c_out.
    """

    def __init__(self, c_in: int, c_hidden: int, c_out: int, stride: int, se_hidden: int, dims: int = 2) -> None:
        super().__init__()
        conv, bn = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv1d, nn.BatchNorm1d)
        k = 3 if dims == 2 else 5
        self.stride = stride
        self.expand = nn.Sequential(conv(c_in, c_hidden, 1, bias=False), bn(c_hidden), nn.ReLU6())
        self.depthwise = nn.Sequential(
            conv(c_hidden, c_hidden, k, stride=stride, padding=k // 2, groups=c_hidden, bias=False),
            bn(c_hidden),
            nn.ReLU6(),
        )
        self.se = SqueezeExcite(c_hidden, se_hidden, dims) if se_hidden > 0 else nn.Identity()
        self.project = nn.Sequential(conv(c_hidden, c_out, 1, bias=False), bn(c_out))

    @property
    def use_shortcut(self) -> bool:
        return self.stride == 1 and self.expand[0].in_channels == self.project[0].out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.use_shortcut else y

    def config(self) -> list[int]:
        """[c_hidden, c_out, stride, se_hidden] as the layers stand now."""
        return [
            self.expand[0].out_channels,
            self.project[0].out_channels,
            self.stride,
            self.se.reduce.out_channels if isinstance(self.se, SqueezeExcite) else 0,
        ]


def _inverted_residuals(c_in: int, blocks: list[list[int]], dims: int) -> tuple[nn.Sequential, int]:
    """Stack of :class:`InvertedResidual` from ``[c_hidden, c_out, stride, se_hidden]`` rows;
    returns the stack and its output channels."""
    body = []
    for c_hidden, c_out, stride, se_hidden in blocks:
        body.append(InvertedResidual(c_in, c_hidden, c_out, stride, se_hidden, dims=dims))
        c_in = c_out
    return nn.Sequential(*body), c_in


class TemporalContrast(nn.Module):
    """Fixed (parameter-free) input stage of the classifiers: (N, 1, T, D) -> (N, 2, T, D).

    Channel 0 is the window itself, channel 1 the magnitude of its change from one time
    column to the next (``|x[t] - x[t-1]|``, 0 in the first column): a static barcode
    pattern gives 0, a sliding lung's decorrelating speckle and moving walls give large
    values. A network can learn this difference, but with a few thousand training windows it
    generalises better when it is given.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        diff = torch.abs(x[:, :, 1:] - x[:, :, :-1])
        return torch.cat([x, torch.cat([torch.zeros_like(x[:, :, :1]), diff], dim=2)], dim=1)


def _conv_bn_relu(conv: type, bn: type, c_in: int, c_out: int, k: int, stride: int | tuple[int, int] = 1) -> nn.Sequential:
    return nn.Sequential(conv(c_in, c_out, k, stride=stride, padding=k // 2, bias=False), bn(c_out), nn.ReLU())


# -- classifier ----------------------------------------------------------------------------
def statistics_pool(f: torch.Tensor) -> torch.Tensor:
    """Length-agnostic pooling of classifier features (N, C, T, D) -> (N, 2C): the mean of
    every channel over time and depth, then the standard deviation over time of its depth
    mean (how much it changes along the window: beat-to-beat intervals, sliding that comes
    and goes; 0 for a single time row)."""
    over_time = f.mean(dim=3)
    return torch.cat([over_time.mean(dim=2), over_time.std(dim=2, correction=0)], dim=1)


class ClassifierTeacher(nn.Module):
    """Conventional VGG-style CNN after :class:`TemporalContrast`: per stage two 3x3
    conv-BN-ReLU then 2x2 max-pool; :func:`statistics_pool`; linear.

    config: {"stages": [[c1, c2], ...], "n_classes": int, "dropout": float}
    """

    arch = "classifier_teacher"

    def __init__(self, stages: list[list[int]], n_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 2
        self.contrast = TemporalContrast()
        for c1, c2 in stages:
            layers += [
                _conv_bn_relu(nn.Conv2d, nn.BatchNorm2d, c_in, c1, 3),
                _conv_bn_relu(nn.Conv2d, nn.BatchNorm2d, c1, c2, 3),
                nn.MaxPool2d(2),
            ]
            c_in = c2
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(statistics_pool(self.features(self.contrast(x)))))

    def config(self) -> dict[str, Any]:
        convs = [m for m in self.features.modules() if isinstance(m, nn.Conv2d)]
        stages = [[convs[i].out_channels, convs[i + 1].out_channels] for i in range(0, len(convs), 2)]
        return {"stages": stages, "n_classes": self.head.out_features, "dropout": self.dropout.p}


class ClassifierStudent(nn.Module):
    """Compact classifier after :class:`TemporalContrast`: 3x3 stem (stride 2 in depth only,
    so short windows keep their time resolution), inverted-residual + SE blocks,
    :func:`statistics_pool`, linear.

    config: {"stem": c, "blocks": [[c_hidden, c_out, stride, se_hidden], ...],
    "n_classes": int, "dropout": float}
    """

    arch = "classifier_student"

    def __init__(self, stem: int, blocks: list[list[int]], n_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.contrast = TemporalContrast()
        self.stem = _conv_bn_relu(nn.Conv2d, nn.BatchNorm2d, 2, stem, 3, stride=(1, 2))
        self.blocks, c_in = _inverted_residuals(stem, blocks, dims=2)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(statistics_pool(self.blocks(self.stem(self.contrast(x))))))

    def config(self) -> dict[str, Any]:
        return {
            "stem": self.stem[0].out_channels,
            "blocks": [b.config() for b in self.blocks],
            "n_classes": self.head.out_features,
            "dropout": self.dropout.p,
        }


# -- motion --------------------------------------------------------------------------------
def reversed_pair(x: torch.Tensor) -> torch.Tensor:
    """Motion inputs (N, 4, n) of the same pairs with the two lines swapped: the product
    ``conj(a) b`` becomes its conjugate (imaginary part negated) and the two magnitudes trade
    places (:func:`mmode.models.data.motion_inputs`'s channel order)."""
    return torch.cat([x[:, 0:1], -x[:, 1:2], x[:, 3:4], x[:, 2:3]], dim=1)


class _MotionNet(nn.Module):
    """A motion regressor ``body`` (``_body``), optionally made odd under time reversal:
    ``(body(x) - body(reversed_pair(x))) / 2``. The displacement from line b to line a is
    minus that from a to b, so the estimate of a pair without motion is exactly 0 and an
    even part of the body's error (a bias that a trace would integrate) cancels; it costs a
    second pass of the body (twice the MACs). Subclasses define ``_body`` and set
    ``antisymmetric``."""

    antisymmetric: bool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.antisymmetric:
            return self._body(x)
        n = x.shape[0]
        y = self._body(torch.cat([x, reversed_pair(x)]))
        return (y[:n] - y[n:]) / 2


class MotionTeacher(_MotionNet):
    """Conventional 1D CNN regressor: conv-BN-ReLU stack (k=7/5/5/3, two stride-2), GAP, MLP.

    config: {"channels": [c1, c2, c3, c4], "hidden": int, "antisymmetric": bool (default False)}
    """

    arch = "motion_teacher"

    def __init__(self, channels: list[int], hidden: int, antisymmetric: bool = False) -> None:
        super().__init__()
        self.antisymmetric = bool(antisymmetric)
        kernels, strides = (7, 5, 5, 3), (1, 2, 1, 2)
        layers = []
        c_in = 4
        for c, k, s in zip(channels, kernels, strides):
            layers.append(_conv_bn_relu(nn.Conv1d, nn.BatchNorm1d, c_in, c, k, stride=s))
            c_in = c
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, hidden)
        self.head = nn.Linear(hidden, 1)

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x).mean(dim=2)
        return self.head(torch.relu(self.fc(f)))

    def config(self) -> dict[str, Any]:
        return {"channels": [seq[0].out_channels for seq in self.features], "hidden": self.fc.out_features,
                "antisymmetric": self.antisymmetric}


class MotionStudent(_MotionNet):
    """Compact 1D regressor: k=7 stem, 1D inverted-residual + SE blocks, GAP, linear.

    config: {"stem": c, "blocks": [[c_hidden, c_out, stride, se_hidden], ...], "antisymmetric": bool (default False)}
    """

    arch = "motion_student"

    def __init__(self, stem: int, blocks: list[list[int]], antisymmetric: bool = False) -> None:
        super().__init__()
        self.antisymmetric = bool(antisymmetric)
        self.stem = _conv_bn_relu(nn.Conv1d, nn.BatchNorm1d, 4, stem, 7)
        self.blocks, c_in = _inverted_residuals(stem, blocks, dims=1)
        self.head = nn.Linear(c_in, 1)

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=2))

    def config(self) -> dict[str, Any]:
        return {"stem": self.stem[0].out_channels, "blocks": [b.config() for b in self.blocks],
                "antisymmetric": self.antisymmetric}


ARCHS: dict[str, type[nn.Module]] = {
    cls.arch: cls for cls in (ClassifierTeacher, ClassifierStudent, MotionTeacher, MotionStudent)
}

#: Default configurations of the networks trained by ``mmode train``.
DEFAULT_CONFIGS: dict[str, dict[str, Any]] = {
    "classifier_teacher": {"stages": [[16, 16], [32, 32], [64, 64], [128, 128]], "dropout": 0.2},
    "classifier_student": {
        "stem": 24,
        "blocks": [[48, 24, 2, 8], [72, 32, 2, 8], [96, 48, 2, 12], [144, 64, 2, 16]],
        "dropout": 0.1,
    },
    "motion_teacher": {"channels": [32, 64, 64, 128], "hidden": 64},
    "motion_student": {"stem": 16, "blocks": [[32, 16, 2, 0], [48, 24, 2, 0]]},
}


def build(arch: str, config: dict[str, Any]) -> nn.Module:
    """Network ``arch`` (a key of :data:`ARCHS`) built from ``config``; ModelError if invalid."""
    if arch not in ARCHS:
        raise ModelError(describe("model card", f"arch one of {sorted(ARCHS)}", repr(arch)))
    try:
        return ARCHS[arch](**config)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ModelError(describe(f"{arch} config", "a valid configuration", f"{config!r} ({exc})")) from None


def count_params(model: nn.Module) -> int:
    """Number of parameters (all, trainable or not)."""
    return int(sum(p.numel() for p in model.parameters()))
