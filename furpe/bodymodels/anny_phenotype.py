"""Anny's phenotype blend-shape coefficients in a handful of batched operations.

``anny.models.phenotype.phenotype_blendshape_weights`` interpolates each phenotype feature
between its anchors one feature at a time, then multiplies the variations each phenotype
blend shape combines. Here every variation's weight is one hat function of its feature's
value, computed for all of them at once; the product and the projection onto Anny's compact
basis follow as in Anny. Same values (checked against Anny in the tests), a tenth of the
operations: the fit's shape stage evaluates it every iteration.
"""
from __future__ import annotations

import torch


class PhenotypeCoefficients(torch.nn.Module):
    """Maps phenotype values (B, F) in ``anny_model.phenotype_labels`` order to the
    phenotype blend-shape coefficients (B, C) that Anny's ``_get_phenotype_blendshape_
    coefficients`` puts first."""

    def __init__(self, anny_model) -> None:
        super().__init__()
        from anny.models.phenotype import PHENOTYPE_VARIATIONS

        a = anny_model
        if a.extrapolate_phenotypes:
            raise ValueError("extrapolated phenotypes are not supported")
        labels = list(a.phenotype_labels)
        n = len(labels)
        rows: dict[str, list[float]] = {k: [] for k in (
            "column", "anchor", "left", "right", "first", "last", "is_first", "is_second", "fixed",
            "value")}

        def add(**row: float) -> None:
            for k, v in row.items():
                rows[k].append(v)

        for feature, variations in PHENOTYPE_VARIATIONS.items():
            if feature == "race":  # not exposed: equal shares
                for _ in variations:
                    add(column=n, anchor=0.0, left=-1.0, right=1.0, first=0.0, last=0.0,
                        is_first=0.0, is_second=0.0, fixed=1.0, value=1.0 / len(variations))
                continue
            anchors = [float(x) for x in a.anchors[feature]]
            assert len(anchors) == len(variations), feature
            for i, x in enumerate(anchors):
                add(column=labels.index(feature) if feature in labels else n, anchor=x,
                    # (an end anchor's missing neighbour: any other value, never used)
                    left=anchors[i - 1] if i > 0 else x - 1.0,
                    right=anchors[i + 1] if i + 1 < len(anchors) else x + 1.0,
                    first=anchors[0], last=anchors[-1], is_first=float(i == 0),
                    is_second=float(i == 1),
                    fixed=0.0, value=0.0)
        self.register_buffer("column", torch.tensor(rows.pop("column"), dtype=torch.long),
                             persistent=False)
        for name, v in rows.items():
            self.register_buffer(name, torch.tensor(v, dtype=torch.float32), persistent=False)
        self.register_buffer("mask", a.stacked_phenotype_blend_shapes_mask.float(),
                             persistent=False)
        proj = a.phenotype_blendshape_projection
        self.register_buffer("projection", None if proj is None else proj.float(),
                             persistent=False)

    def forward(self, pheno: torch.Tensor) -> torch.Tensor:
        # Unexposed features sit at 0.5 (Anny's default).
        x = torch.cat([pheno, pheno.new_full((pheno.shape[0], 1), 0.5)], 1)[:, self.column]
        # Clamped to the anchors' range like Anny (the gradient stops outside it); then, as
        # in Anny, the segment (left anchor, right anchor] holding the value gives its two
        # anchors weights 1 - alpha and alpha (the first segment also holds its left end).
        x = torch.where(x < self.first, self.first, x)
        x = torch.where(x > self.last, self.last, x)
        rising = (((x > self.left) | ((x == self.left) & (self.is_second > 0)))
                  & (x <= self.anchor) & (self.is_first == 0))
        falling = ((x > self.anchor) & (x <= self.right)) | ((x == self.anchor) & (self.is_first > 0))
        up = (x - self.left) / (self.anchor - self.left)
        down = (self.right - x) / (self.right - self.anchor)
        hat = torch.where(rising, up, torch.where(falling, down, torch.zeros_like(x)))
        w = torch.where(self.fixed > 0, self.value, hat)
        coeffs = torch.prod(w[:, None] * self.mask + (1 - self.mask), dim=-1)
        return coeffs if self.projection is None else coeffs @ self.projection
