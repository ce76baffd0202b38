"""``rd``: students that reconstruct a frozen teacher's multi-scale features (reverse distillation).

Reverse distillation (Deng & Li, CVPR 2022): a frozen teacher encoder :math:`T` gives features
:math:`t_k` at three scales; a trainable one-class bottleneck squeezes them into one small
embedding, and a student DECODER rebuilds every :math:`t_k` from it (:math:`s_k`). Trained on
normals only, the students learn to rebuild normal features; where an input departs from normal
the rebuilt features disagree with the teacher's. The anomaly map is the per-position discrepancy

.. math::
    A(x) = \\frac1{|S|} \\sum_{s \\in S} \\sum_k \\mathrm{up}\\big(1 - \\cos(t_k(x), s_k(x))\\big)

(cosine over channels, bilinear upsampling to the image, averaged over the students :math:`S`).

Students (``students``), PDD-style diversity (two students that err differently average out):

- ``reverse``: one-class bottleneck + decoder (the reverse-distillation student);
- ``forward``: an encoder of the teacher's shape from its own random start that predicts the
  teacher's features from the image (STPM-style); it fails differently from ``reverse``.

The teacher: nothing pretrained can be downloaded, so it is either read from a teacher file
(``teacher``: a file of :func:`anatomix.anomaly.teacher.save_teacher`) or pretrained on the fit
normals themselves (:func:`anatomix.anomaly.teacher.pretrain_teacher`, ``teacher_epochs``) in
:meth:`ReverseDistillation.prepare_fit`, before the students are trained. Its weights are part
of the model's state dict, so a detector file is complete without the teacher file.

Shapes: input ``(B, 1, S, S)`` in [0, 1], S divisible by 32; :meth:`anomaly_map` ``(B, 1, S, S)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from anatomix.anomaly.models.base import AnomalyModel
from anatomix.anomaly.teacher import BasicBlock, FeatureEncoder, up_stage
from anatomix.errors import UsageError

STUDENTS = ("reverse", "forward")


def down(cin: int, cout: int) -> nn.Sequential:
    """3x3 stride-2 conv + BN + ReLU (halves the side)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ReverseStudent(nn.Module):
    """One-class bottleneck over the teacher's three feature maps, then a decoder that rebuilds them.

    Args:
        channels: the teacher's widths ``(stem, C1, C2, C3)``.

    Shapes:
        input: the teacher's ``[(B, C1, S/4), (B, C2, S/8), (B, C3, S/16)]``; the bottleneck is
        ``(B, C3, S/32, S/32)``; output the rebuilt features, same shapes as the input.
    """

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        _, c1, c2, c3 = channels
        self.align = nn.ModuleList([nn.Sequential(down(c1, c2), down(c2, c3)), down(c2, c3), nn.Identity()])
        self.fuse = BasicBlock(3 * c3, c3, 2)
        self.ups = nn.ModuleList([up_stage(c3, c3), up_stage(c3, c2), up_stage(c2, c1)])

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        h = self.fuse(torch.cat([a(f) for a, f in zip(self.align, feats)], 1))
        out = []
        for up in self.ups:
            h = up(h)
            out.append(h)
        return out[::-1]


class ForwardStudent(nn.Module):
    """An encoder of the teacher's shape (own weights) whose stages predict the teacher's features
    from the image; a 1x1 conv per stage maps its features onto the teacher's.

    Shapes:
        input: the image ``(B, 1, S, S)``; output as :class:`ReverseStudent`.
    """

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        self.encoder = FeatureEncoder(channels)
        self.heads = nn.ModuleList(nn.Conv2d(c, c, 1) for c in channels[1:])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [h(f) for h, f in zip(self.heads, self.encoder(x))]


def discrepancy(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` over channels of two feature maps ``(B, C, h, w)`` -> ``(B, 1, h, w)``."""
    return 1 - F.cosine_similarity(t, s, dim=1, eps=1e-6)[:, None]


class ReverseDistillation(AnomalyModel):
    """Frozen teacher + one or more students; see the module docstring.

    Args:
        image_size: side S (divisible by 32).
        channels: the teacher's widths ``(stem, C1, C2, C3)`` (a teacher file must match).
        students: student kinds, each of :data:`STUDENTS` (one student per entry).
        teacher: teacher file to start from (read by :meth:`prepare_fit` only; kept in the config
            as provenance), or None to pretrain one on the fit normals.
        teacher_epochs: epochs of that pretraining when ``teacher`` is None.
    """

    method = "rd"
    native_residual = "auto"
    reconstructs = False

    def __init__(self, image_size: int = 128, channels: Sequence[int] = (24, 48, 96, 192),
                 students: Sequence[str] = ("reverse",), teacher: str | None = None,
                 teacher_epochs: int = 30) -> None:
        super().__init__(image_size)
        channels = [int(c) for c in channels]
        students = [str(s) for s in students]
        if image_size % 32:
            raise UsageError(f"rd: image_size {image_size} is not divisible by 32")
        if not students or any(s not in STUDENTS for s in students):
            raise UsageError(f"rd: students must be a non-empty list of {STUDENTS}, got {students}")
        self.config.update(channels=channels, students=students, teacher=teacher, teacher_epochs=int(teacher_epochs))
        self.teacher = FeatureEncoder(channels).eval()
        self.teacher.requires_grad_(False)
        self.students = nn.ModuleList(ReverseStudent(channels) if s == "reverse" else ForwardStudent(channels)
                                      for s in students)

    def train(self, mode: bool = True):
        """Students follow ``mode``; the teacher stays frozen in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def prepare_fit(self, images, checkpoint=None, progress: bool = True, log=None, device: str = "cpu") -> dict:
        """Give the model its teacher before the students are trained (called by the fit).

        Args:
            images: ``(N, S, S)`` the NORMAL images the students will be fitted on.
            checkpoint: where a pretraining checkpoint goes (``teacher`` None only).

        Returns:
            Facts for the detector's ``meta``: ``teacher`` (its source), ``teacher_meta`` and
            ``teacher_fit_seconds`` (pretraining time spent here; 0 for a teacher file).
        """
        from anatomix.anomaly.teacher import load_teacher, pretrain_teacher

        if self.config["teacher"]:
            enc, meta = load_teacher(self.config["teacher"])
            if enc.channels != self.config["channels"]:
                raise UsageError(f"rd: teacher {self.config['teacher']} has widths {enc.channels}, "
                                 f"the model {self.config['channels']}")
            source, seconds = str(self.config["teacher"]), 0.0
        else:
            enc, hist = pretrain_teacher(images, self.image_size, self.config["channels"],
                                         epochs=self.config["teacher_epochs"], checkpoint=checkpoint,
                                         progress=progress, log=log, device=device)
            seconds = float(sum(h["seconds"] for h in hist))
            meta = {"epochs": self.config["teacher_epochs"], "n": len(images), "train_seconds": seconds}
            source = "pretrained on the fit normals"
        self.teacher.load_state_dict(enc.state_dict())
        return {"teacher": source, "teacher_meta": meta, "teacher_fit_seconds": seconds}

    def _pairs(self, x: torch.Tensor) -> list[tuple[list[torch.Tensor], list[torch.Tensor]]]:
        """(teacher features, student features) per student."""
        with torch.no_grad():
            t = self.teacher(x)
        return [(t, st(t) if isinstance(st, ReverseStudent) else st(x)) for st in self.students]

    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean over positions of ``1 - cos``, summed over scales, averaged over students."""
        losses = [sum(discrepancy(a, b).mean() for a, b in zip(t, s)) for t, s in self._pairs(x)]
        loss = sum(losses) / len(losses)
        return loss, {f"loss_{k}": float(v.detach()) for k, v in zip(self.config["students"], losses)}

    def native_map(self, x: torch.Tensor) -> torch.Tensor:
        """The feature-discrepancy map ``(B, 1, S, S)`` (module docstring)."""
        size = x.shape[-2:]
        maps = [sum(F.interpolate(discrepancy(a, b), size=size, mode="bilinear", align_corners=False)
                    for a, b in zip(t, s)) for t, s in self._pairs(x)]
        return sum(maps) / len(maps)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        raise UsageError("rd rebuilds features, not images: use the residual 'auto'")
