"""Config dataclasses: defaults < YAML < CLI options < --set, with errors that name the field."""

from dataclasses import dataclass

import pytest

from lifecycle.config import build, describe, field
from lifecycle.errors import UserError

pytestmark = pytest.mark.unit


@dataclass
class Cfg:
    steps: int = field(10, help="steps")
    lr: float = field(1e-3, help="learning rate")
    name: str = field("x", help="a name")
    flag: bool = field(False, help="a flag")
    losses: list[str] = field(["sigmoid"], help="loss terms")
    extra: dict = field({}, help="a mapping")


def test_precedence(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("steps: 20\nlr: 0.5\nname: yaml\nlosses: [ipo]\n")
    cfg = build(Cfg, y, {"name": "cli", "lr": None}, ["steps=30", "flag=true", "losses=sigmoid,sft"])
    assert (cfg.steps, cfg.lr, cfg.name, cfg.flag, cfg.losses) == (30, 0.5, "cli", True, ["sigmoid", "sft"])


def test_defaults_are_not_shared():
    a, b = build(Cfg), build(Cfg)
    a.losses.append("sft")
    assert b.losses == ["sigmoid"]


@pytest.mark.parametrize("sets, message", [
    (["stepz=3"], "unknown Cfg field"),
    (["steps=abc"], "'steps' expects int"),
    (["flag=maybe"], "'flag' expects bool"),
    (["steps"], "--set expects key=value"),
])
def test_errors_name_the_field(sets, message):
    with pytest.raises(UserError, match=message):
        build(Cfg, None, None, sets)


def test_yaml_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        build(Cfg, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(UserError, match="must hold a mapping"):
        build(Cfg, bad)


def test_describe_lists_every_field():
    text = describe(Cfg)
    for name in ("steps", "lr", "name", "flag", "losses", "extra"):
        assert f"{name} = " in text
