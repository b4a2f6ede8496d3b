"""NeuMF started from pretrained GMF and MLP checkpoints (``model.pretrained_gmf`` / ``model.pretrained_mlp``, the
NCF paper's pre-training): what ``build_model`` loads, and one clear ConfigError per bad setting."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from musicrec.checkpoint import Checkpointer
from musicrec.config import ConfigError
from musicrec.models import build_model

MANIFEST = {"vocab_sizes": {"user": 6, "song": 9}}
SIZES = {"factors": 4, "mlp_layers": [8, 4]}


def _saved(tmp_path, name: str, variant: str, manifest=MANIFEST, **sizes) -> tuple[str, torch.nn.Module]:
    """A trained-looking ``variant`` model (random weights) saved as jobs/train.py saves best.pt; its path and it."""
    torch.manual_seed(len(name))
    model = build_model("ncf", manifest, {**SIZES, **sizes, "variant": variant})
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    checkpointer = Checkpointer(tmp_path / name)
    checkpointer.save_best(model.state_dict(), 3, 0.5, "ncf", dataclasses.asdict(model.config), "fp")
    return str(checkpointer.best_path), model


@pytest.mark.unit
def test_neumf_starts_from_the_pretrained_towers(tmp_path):
    gmf_path, gmf = _saved(tmp_path, "gmf", "gmf")
    mlp_path, mlp = _saved(tmp_path, "mlp", "mlp")
    model = build_model("ncf", MANIFEST, {**SIZES, "pretrained_gmf": gmf_path, "pretrained_mlp": mlp_path,
                                          "pretrain_alpha": 0.25})
    torch.testing.assert_close(model.gmf_item.weight, gmf.gmf_item.weight)
    torch.testing.assert_close(model.mlp_user.weight, mlp.mlp_user.weight)
    torch.testing.assert_close(model.mlp[0].weight, mlp.mlp[0].weight)
    batch = {"user_idx": torch.tensor([2, 3, 5]), "song_idx": torch.tensor([2, 8, 4])}
    expected = 0.25 * gmf(batch) + 0.75 * mlp(batch)  # the predict layer mixes the towers' logits
    torch.testing.assert_close(model(batch), expected)
    assert model.config.pretrain_alpha == 0.25 and model.config.variant == "neumf"


@pytest.mark.unit
def test_pretrained_settings_each_one_clear_error(tmp_path):
    gmf_path, _ = _saved(tmp_path, "gmf", "gmf")
    mlp_path, _ = _saved(tmp_path, "mlp", "mlp")
    wide_path, _ = _saved(tmp_path, "wide", "gmf", factors=6)
    other_data_path, _ = _saved(tmp_path, "other", "mlp", manifest={"vocab_sizes": {"user": 6, "song": 20}})
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    both = {"pretrained_gmf": gmf_path, "pretrained_mlp": mlp_path}
    for settings, message in [
        ({"pretrained_gmf": gmf_path}, "set both"),
        ({**both, "variant": "gmf"}, "model.variant = 'gmf': pretrained towers need variant neumf"),
        ({**both, "pretrained_gmf": mlp_path}, "model.pretrained_gmf = .*is a variant=mlp model, not gmf"),
        ({**both, "pretrained_gmf": wide_path}, r"model.pretrained_gmf = .*has model.factors = 6, this model 4"),
        ({**both, "pretrained_mlp": other_data_path}, "model.pretrained_mlp = .*trained on other data"),
        ({**both, "pretrained_mlp": str(tmp_path / "missing.pt")}, "model.pretrained_mlp = .*no checkpoint at"),
        ({**both, "pretrained_mlp": str(tmp_path / "junk.pt")}, "model.pretrained_mlp = .*not a readable"),
        ({**both, "pretrain_alpha": 1.5}, "model.pretrain_alpha = 1.5: must be in"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build_model("ncf", MANIFEST, {**SIZES, **settings})
