"""``edge-derain import --from official``: checkpoints of the papers' public code onto our modules.

The fixtures ``tests/fixtures/official_keys_<model>.json`` list the state-dict names and shapes of the
official networks (written by ``tests/fixtures/make_official_keys.py`` from the fetched repositories).
Random tensors under those names go through the importer, and the imported module must reproduce
``tests/official_reference.py``, a functional forward written from the official names only.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from official_reference import efderain_forward, random_official_state, two_stage_forward

from edge_derain.checkpoint import load_model, read_sidecar
from edge_derain.cli import main
from edge_derain.convert.official import FAMILY, MAPPINGS, convert_official, match_official, unwrap_state_dict
from edge_derain.models import create_model

FIXTURES = Path(__file__).parent / "fixtures"
MODELS = ["efderain", "elf", "elf_lw", "danet", "danet_plus"]


def fixture(model: str) -> dict:
    return json.loads((FIXTURES / f"official_keys_{model}.json").read_text())


def official_state(model: str, seed: int = 0) -> dict[str, torch.Tensor]:
    return random_official_state(fixture(model)["keys"], seed)


@pytest.mark.parametrize("model", MODELS)
def test_mapping_covers_the_official_keys_one_to_one(model):
    facts = fixture(model)
    zeros = {k: torch.zeros(shape) for k, shape in facts["keys"].items()}
    conversion = match_official(model, zeros)
    assert conversion.ok, conversion.problem()
    pairs = list(MAPPINGS[FAMILY[model]](conversion.model.model_config))
    official_names = [official for official, _, _ in pairs]
    our_names = [ours for _, ours, _ in pairs]
    assert sorted(official_names) == sorted(facts["keys"])      # every official tensor, once
    assert sorted(our_names) == sorted(conversion.model.state_dict())  # every one of ours, once
    # The fixtures are the papers' default configurations, i.e. our registered defaults.
    default = create_model(model).state_dict()
    assert {k: v.shape for k, v in conversion.model.state_dict().items()} == {k: v.shape for k, v in default.items()}
    assert sum(p.numel() for p in conversion.model.parameters()) == facts["parameters"]


@pytest.mark.parametrize("model", MODELS)
def test_imported_model_reproduces_the_official_forward(model):
    state = official_state(model)
    ours = convert_official(model, state)
    image = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = ours.core(image)
        want = (efderain_forward(state, image),) if model == "efderain" else two_stage_forward(state, image)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert w.abs().max() > 0.1  # random weights keep a live signal through the whole network
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4 * w.abs().max().item())


def test_config_is_read_from_shapes_and_flags_must_agree():
    # efderain's official KPN is width 1.0 (64 channels first); --width describes the checkpoint.
    zeros = {k: torch.zeros(s) for k, s in fixture("efderain")["keys"].items()}
    assert match_official("efderain", zeros).model.model_config["width"] == 1.0
    assert match_official("efderain", zeros, {"width": 1}).ok
    with pytest.raises(ValueError, match=r"--width 0.25 disagrees with the checkpoint, whose shapes give width=1.0"):
        match_official("efderain", zeros, {"width": 0.25})
    # A DANet.py checkpoint at its defaults imported under the name danet keeps its own configuration.
    danet_plus = {k: torch.zeros(s) for k, s in fixture("danet_plus")["keys"].items()}
    assert match_official("danet", danet_plus).model.model_config == {"channels": 64, "cabs": 10, "edb_blocks": 1}
    with pytest.raises(ValueError, match="--model-arg channels=48 disagrees"):
        match_official("danet", danet_plus, {"channels": 48})


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(["import", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("wrap", ["state_dict", "model", "params"])
def test_training_script_wrappers_and_dataparallel_prefix_are_removed(wrap):
    state = {"dsnet.tail.weight": torch.ones(3, 32, 3, 3), "module.x": torch.zeros(1)}
    wrapped = {"epoch": 7, wrap: {f"module.{k}": v for k, v in state.items()}, "optimizer": {"state": {}}}
    assert unwrap_state_dict(wrapped).keys() == state.keys()
    assert unwrap_state_dict({"state_dict": {"model": state}}).keys() == state.keys()
    with pytest.raises(ValueError, match="holds no tensors and none of the wrappers state_dict/model/params"):
        unwrap_state_dict({"epoch": 7, "weights": [1, 2]})


def test_cli_import_writes_weights_that_load_and_run(tmp_path, capsys):
    state = official_state("elf_lw")
    # As the Magic-ELF/DANet training scripts save it, from a DataParallel model.
    payload = {"epoch": 7, "state_dict": {f"module.{k}": v for k, v in state.items()}, "optimizer": {"state": {}}}
    torch.save(payload, tmp_path / "model_best.pth")
    code, out, err = _cli(["--model", "elf_lw", "--from", "official", str(tmp_path / "model_best.pth"),
                           "--out", str(tmp_path / "paper")], capsys)
    assert code == 0, err
    assert "paper.safetensors" in out
    meta = read_sidecar(tmp_path / "paper.safetensors")
    assert meta["model"] == "elf_lw"
    assert meta["config"] == {"channels": 32, "rtb_blocks": 5, "rtb_heads": 1, "ffn_act": "gelu"}
    assert meta["imported_from"]["file"] == "model_best.pth" and meta["lineage"] == []
    model = load_model(tmp_path / "paper.safetensors")
    image = torch.rand(1, 3, 37, 53, generator=torch.Generator().manual_seed(2))  # not a multiple of 16
    with torch.no_grad():
        derained = model(image)
        padded = torch.nn.functional.pad(image, (0, 11, 0, 11), mode="reflect")
        want = two_stage_forward(state, padded)[0][..., :37, :53]
    assert derained.shape == image.shape
    torch.testing.assert_close(derained, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


def _one_line_error(code: int, err: str) -> str:
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_cli_lists_unmatched_keys_in_one_line(tmp_path, capsys):
    state = official_state("elf_lw")
    state["dsnet.tail.kernel"] = state.pop("dsnet.tail.weight")
    del state["ssnet.deep_conv.weight"]
    state["ssnet.tail.weight"] = torch.zeros(3, 7, 3, 3)
    torch.save({"state_dict": state}, tmp_path / "edited.pth")
    code, _, err = _cli(["--model", "elf_lw", "--from", "official", str(tmp_path / "edited.pth"),
                         "--out", str(tmp_path / "w")], capsys)
    err = _one_line_error(code, err)
    assert "1 checkpoint keys unmatched (e.g. dsnet.tail.kernel)" in err
    assert "2 expected keys missing (e.g. dsnet.tail.weight, ssnet.deep_conv.weight)" in err
    assert "1 shapes differ (e.g. ssnet.tail.weight: (3, 7, 3, 3) vs (3, 16, 3, 3))" in err
    assert not list(tmp_path.glob("w*")), "nothing is written when keys do not match"


def test_cli_names_the_architecture_a_checkpoint_looks_like(tmp_path, capsys):
    torch.save(official_state("danet_plus"), tmp_path / "danet.pth")
    code, _, err = _cli(["--model", "elf", "--from", "official", str(tmp_path / "danet.pth"),
                         "--out", str(tmp_path / "w")], capsys)
    err = _one_line_error(code, err)
    assert "its keys look like kuijiang94/DANet DANet.py: pass --model danet or danet_plus" in err


def test_cli_refuses_pickled_objects_and_missing_files(tmp_path, capsys):
    torch.save(torch.nn.Conv2d(3, 3, 3), tmp_path / "whole_model.pth")  # a module, not a state dict
    code, _, err = _cli(["--model", "elf", "--from", "official", str(tmp_path / "whole_model.pth"),
                         "--out", str(tmp_path / "w")], capsys)
    assert "torch.save(model.state_dict(), path)" in _one_line_error(code, err)
    code, _, err = _cli(["--model", "elf", "--from", "official", str(tmp_path / "absent.pth"),
                         "--out", str(tmp_path / "w")], capsys)
    assert "not found" in _one_line_error(code, err)


def test_official_variants_ours_cannot_compute_are_refused():
    state = official_state("elf")
    # ALformer.py (HEAD), ALformer1g/2: one-head MAM and a different background branch, same names.
    head = dict(state, **{"ssnet.stem.former.attn.temperature": torch.ones(1, 1, 1)})
    with pytest.raises(ValueError, match="ALformer.py .HEAD.* cannot represent it exactly"):
        convert_official("elf", head)
    # ALformer5.py: ALformer3's names and shapes, but GELU gating beside never-trained PReLU slopes.
    gelu = {k: torch.full_like(v, 0.25) if k.endswith(".ffn.act1.weight") else v for k, v in state.items()}
    with pytest.raises(ValueError, match="ALformer5.py"):
        convert_official("elf", gelu)
    # One PReLU per sub-network is saved under many names; they must agree.
    shared = dict(state, **{"dsnet.shallow_feat1.1.body.1.weight": torch.tensor([0.9])})
    with pytest.raises(ValueError, match="which the official code shares"):
        convert_official("elf", shared)
    with pytest.raises(ValueError, match="no official layout is known for model 'recanet'"):
        convert_official("recanet", state)
