"""Every config composes; bad values fail early with one clear line."""


import pytest
from omegaconf import OmegaConf

from pet.config.validate import validate
from pet.errors import ConfigError
from tests.conftest import REPO, compose_cfg

GROUPS = ["model", "data", "stage", "optim", "trainer", "generation", "tracking", "pruning", "shrink", "distill", "launcher"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_composes_and_validates(group, tmp_path):
    for option in options(group):
        extra = []
        if option == "parallel_text":
            extra = ["data.source=/x", "data.src_lang=fr", "data.tgt_lang=en"]
        cfg = compose_cfg(tmp_path, f"{group}={option}", *extra)
        if group == "tracking" and option != "none":
            continue  # validated below with a concrete uri
        validate(cfg)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(experiment, tmp_path):
    cfg = compose_cfg(tmp_path, f"experiment={experiment}")
    validate(cfg)
    OmegaConf.to_container(cfg.stage, resolve=True)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.dropout=1.5", "model.dropout=1.5 is out of range"),
        ("shrink.type=linear", "shrink.type='linear' is not valid; choose one of: arithmetic, geometric, oneshot"),
        ("trainer.device=tpu", "trainer.device='tpu' is not valid"),
        ("model.encoder_heads=3", "not divisible by model.encoder_heads=3"),
        ("pruning.compression_rate=1.0", "pruning.compression_rate=1.0 is out of range"),
        ("trainer.max_tokens=-5", "trainer.max_tokens=-5 is out of range; allowed: [1, inf)"),
    ],
)
def test_bad_values_name_the_key_and_the_allowed_values(override, message, tmp_path):
    cfg = compose_cfg(tmp_path, override)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        validate(cfg)


def test_unknown_keys_and_wrong_types_fail_at_composition(tmp_path):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose_cfg(tmp_path, "model.no_such_key=1")
    with pytest.raises(ConfigCompositionException):
        compose_cfg(tmp_path, "trainer.max_tokens=many")
